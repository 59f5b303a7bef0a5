r"""Transformer outputs as spatial grids: token and channels-last layouts, inferred from the model.

CAM methods weight maps ``(N, C, *S)``. Transformers emit other layouts, which camkit reads as grids:

* tokens ``(N, T, D)`` (ViT, DeiT, Hugging Face ViT): ``P`` prefix tokens (class, distillation,
  register) followed by an ``h × w`` patch grid in row-major order, so :math:`T = P + h w`;
* channels-last ``(N, H, W, C)`` (timm and torchvision Swin stages).

:func:`infer_layout` finds the layout of one layer output: with the model's patch size
(:func:`transformer_info`) the grid is the input size over it and :math:`P = T - h w`; without, the
smallest :math:`P \le 16` whose :math:`T - P` tokens form a grid with the input's aspect ratio.
:func:`grid_index` and :func:`scatter_grid` write a modified grid back into the layer's own layout
(perturbation methods re-run the network on it); they work for any ``reshape_transform`` that only
rearranges values. :func:`attention_kind` and :func:`multihead_self_attention` tell how a block's
attention probabilities can be read. Pure tensor code and tables; nothing imports the rest of camkit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MAX_PREFIX_TOKENS",
    "TokenLayout",
    "TransformerInfo",
    "attention_kind",
    "grid_index",
    "infer_layout",
    "is_windowed",
    "multihead_self_attention",
    "scatter_grid",
    "transformer_info",
]

#: Largest number of prefix tokens (class + distillation + register tokens) tried without a patch size.
MAX_PREFIX_TOKENS = 16

_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.pooling._AdaptiveAvgPoolNd)


@dataclass(frozen=True)
class TokenLayout:
    r"""How a layer output is read as an ``(N, C, height, width)`` grid; call it to convert.

    Attributes:
        kind: ``"tokens"`` for ``(N, prefix + height·width, C)`` or ``"channels_last"`` for
            ``(N, height, width, C)``.
        height: grid rows.
        width: grid columns.
        prefix: tokens before the grid (dropped), ``"tokens"`` only.

    Example:
        >>> TokenLayout("tokens", 2, 3, prefix=2)(torch.zeros(1, 8, 5)).shape
        torch.Size([1, 5, 2, 3])
    """

    kind: str
    height: int
    width: int
    prefix: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("tokens", "channels_last"):
            raise ValueError(f"kind must be 'tokens' or 'channels_last', got {self.kind!r}")
        if min(self.height, self.width) < 1 or self.prefix < 0:
            raise ValueError(f"height and width must be >= 1 and prefix >= 0, got {self}")

    def __call__(self, x: Tensor) -> Tensor:
        """The grid ``(N, C, height, width)`` of a layer output in this layout.

        Raises:
            ValueError: when ``x`` does not have this layout's shape.
        """
        if self.kind == "channels_last":
            if x.ndim != 4 or tuple(x.shape[1:3]) != (self.height, self.width):
                raise ValueError(f"expected (N, {self.height}, {self.width}, C), got {tuple(x.shape)}")
            return x.permute(0, 3, 1, 2)
        if x.ndim != 3 or x.shape[1] != self.prefix + self.height * self.width:
            raise ValueError(
                f"expected (N, {self.prefix} + {self.height}*{self.width}, C) tokens, got {tuple(x.shape)}"
            )
        return x[:, self.prefix :].transpose(1, 2).reshape(x.shape[0], x.shape[2], self.height, self.width)


@dataclass(frozen=True)
class TransformerInfo:
    """What a model says about its tokens (``None`` where it does not say).

    Attributes:
        patch_size: ``(height, width)`` of one patch in input pixels.
        image_size: the input size the model was built for.
        prefix_tokens: tokens before the patch grid in its blocks' outputs.
        channels_last: its 4-D feature maps are ``(N, H, W, C)`` (Swin).
        pools_patches: its head pools the patch tokens (Swin, timm ``global_pool="avg"``), not a
            prefix token.
    """

    patch_size: tuple[int, int] | None = None
    image_size: tuple[int, int] | None = None
    prefix_tokens: int | None = None
    channels_last: bool = False
    pools_patches: bool = False


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    return None


def transformer_info(model: nn.Module) -> TransformerInfo | None:
    """Read the patch size, input size, prefix tokens and channel order a transformer declares.

    Known: torchvision ``VisionTransformer`` (``patch_size``, ``image_size``, one class token) and
    ``SwinTransformer``; timm models with ``patch_embed`` (``patch_size``, ``img_size``,
    ``num_prefix_tokens``, ``output_fmt == "NHWC"`` for Swin); Hugging Face models with a
    ``config.patch_size``.

    Args:
        model: the model.

    Returns:
        The information, or ``None`` for a model that declares none of it (e.g. a CNN).

    Example:
        >>> from torchvision.models import VisionTransformer
        >>> vit = VisionTransformer(32, 8, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=8)
        >>> info = transformer_info(vit)
        >>> info.patch_size, info.image_size, info.prefix_tokens, info.pools_patches
        ((8, 8), (32, 32), 1, False)
    """
    channels_last = getattr(model, "output_fmt", None) == "NHWC" or type(model).__name__.startswith("SwinTransformer")
    pools = channels_last or getattr(model, "global_pool", None) in ("avg", "avgmax", "max")
    embed = getattr(model, "patch_embed", None)
    config = getattr(model, "config", None)
    if isinstance(embed, nn.Module) and _pair(getattr(embed, "patch_size", None)):  # timm
        prefix = getattr(model, "num_prefix_tokens", None)
        return TransformerInfo(
            _pair(embed.patch_size),
            _pair(getattr(embed, "img_size", None)),
            prefix if isinstance(prefix, int) else None,
            channels_last,
            pools,
        )
    if _pair(getattr(model, "patch_size", None)) and isinstance(getattr(model, "class_token", None), Tensor):
        # torchvision VisionTransformer
        return TransformerInfo(_pair(model.patch_size), _pair(getattr(model, "image_size", None)), 1)
    if config is not None and _pair(getattr(config, "patch_size", None)):  # Hugging Face
        return TransformerInfo(
            _pair(config.patch_size), _pair(getattr(config, "image_size", None)), None, channels_last
        )
    if channels_last:
        return TransformerInfo(channels_last=True, pools_patches=True)
    return None


def _proportional(rows: int, cols: int, size: Sequence[int]) -> bool:
    return rows * int(size[1]) == cols * int(size[0])


def _grid_of(count: int, size: Sequence[int]) -> tuple[int, int] | None:
    """The ``h × w = count`` grid with the aspect ratio of ``size``, if there is one."""
    g = math.gcd(int(size[0]), int(size[1]))
    a, b = int(size[0]) // g, int(size[1]) // g
    if count < 1 or count % (a * b):
        return None
    k = math.isqrt(count // (a * b))
    return (a * k, b * k) if a * b * k * k == count else None


def infer_layout(
    shape: Sequence[int], input_size: Sequence[int], info: TransformerInfo | None = None, module: Any = None
) -> TokenLayout | None:
    """Infer how a layer output of ``shape`` maps to a grid, for an image input of ``input_size``.

    * ``(N, T, D)``: with a patch size, the grid is ``input_size // patch_size`` (or rounded up) and
      the prefix ``T - h·w`` (at most :data:`MAX_PREFIX_TOKENS`); otherwise the smallest prefix
      whose remaining tokens form a grid with the input's aspect ratio.
    * ``(N, A, B, C)``: channels-last when the model is (``info.channels_last``), ``(A, B)`` has the
      input's aspect ratio and ``module`` is not a convolution, BatchNorm or pooling layer (those
      output channels first).

    Args:
        shape: the layer output's shape, batch included.
        input_size: the model input's spatial size ``(H, W)``.
        info: what the model declares, from :func:`transformer_info`.
        module: the layer that produced the output, if known.

    Returns:
        The layout, or ``None`` when the output is not a token or channels-last grid (e.g. a
        channels-first feature map, which needs no conversion, or tokens without a grid).

    Example:
        >>> infer_layout((2, 1 + 14 * 14, 768), (224, 224), TransformerInfo(patch_size=(16, 16)))
        TokenLayout(kind='tokens', height=14, width=14, prefix=1)
        >>> infer_layout((1, 2 + 16, 192), (64, 64))  # no patch size: DeiT's class + distillation tokens
        TokenLayout(kind='tokens', height=4, width=4, prefix=2)
    """
    if len(input_size) != 2 or min(input_size) < 1:
        return None
    if len(shape) == 4:
        rows, cols = int(shape[1]), int(shape[2])
        channels_first = isinstance(module, _CHANNELS_FIRST) or (
            _proportional(int(shape[2]), int(shape[3]), input_size) and not _proportional(rows, cols, input_size)
        )
        if info is not None and info.channels_last and not channels_first and _proportional(rows, cols, input_size):
            return TokenLayout("channels_last", rows, cols)
        return None
    if len(shape) != 3:
        return None
    tokens = int(shape[1])
    if info is not None and info.patch_size is not None:
        (ph, pw), (h, w) = info.patch_size, input_size
        grids = [(h // ph, w // pw), (-(-h // ph), -(-w // pw))]  # patches cut off, or padded
        fits = [TokenLayout("tokens", a, b, tokens - a * b) for a, b in grids if min(a, b) >= 1 and a * b <= tokens]
        fits = [f for f in fits if f.prefix <= MAX_PREFIX_TOKENS]
        if fits:  # the declared prefix count, else the fewest prefix tokens
            return min(fits, key=lambda f: (f.prefix != info.prefix_tokens, f.prefix))
    for prefix in range(min(tokens - 1, MAX_PREFIX_TOKENS) + 1):
        found = _grid_of(tokens - prefix, input_size)
        if found is not None:
            return TokenLayout("tokens", found[0], found[1], prefix)
    return None


def grid_index(transform: Callable[[Tensor], Tensor], sample: Tensor) -> Tensor:
    """Where each value of ``transform(x)`` comes from in ``x``: flat indices into one sample.

    ``transform`` is run on a sample-shaped tensor of ``0, 1, 2, ...`` (float64): a transform that only
    selects and rearranges values (drop tokens, reshape, permute) returns every index at most once.

    Args:
        transform: a layout (``TokenLayout``) or a user's ``reshape_transform``.
        sample: one layer output with its batch dim, e.g. ``activation[:1]``.

    Returns:
        Long tensor shaped like one sample of ``transform``'s output.

    Raises:
        ValueError: when ``transform`` computes new values instead of rearranging them.

    Example:
        >>> grid_index(TokenLayout("tokens", 1, 2, prefix=1), torch.zeros(1, 3, 2))
        tensor([[[2, 4]],
        <BLANKLINE>
                [[3, 5]]])
    """
    count = sample[0].numel()
    source = torch.arange(count, dtype=torch.float64, device=sample.device).view(1, *sample.shape[1:])
    out = transform(source)
    if not isinstance(out, Tensor) or out.shape[0] != 1:
        raise ValueError("reshape_transform must return a tensor with the same batch size as its input")
    flat = out.detach().reshape(-1).to(torch.float64)
    index = flat.round()
    if (
        not torch.equal(flat, index)
        or (index < 0).any()
        or (index >= count).any()
        or torch.unique(index).numel() != index.numel()
    ):
        raise ValueError(
            "reshape_transform computes new values instead of only selecting and rearranging the layer's "
            "output, so a modified map cannot be written back into the layer; leave reshape_transform=None "
            "(camkit infers ViT, DeiT and Swin layouts) or use a method that does not replace activations"
        )
    return index.long().view(out.shape[1:])


def scatter_grid(grid: Tensor, base: Tensor, index: Tensor) -> Tensor:
    """Write grids back into the layer's layout: a copy of ``base`` with the grid values at ``index``.

    Values the transform dropped (prefix tokens) keep their values from ``base``.

    Args:
        grid: ``(B, *grid shape)`` modified grids.
        base: ``(B, *layer shape)`` the layer outputs they came from (one row per grid row).
        index: from :func:`grid_index`.

    Returns:
        ``(B, *layer shape)``.

    Example:
        >>> layout = TokenLayout("tokens", 1, 2, prefix=1)
        >>> base = torch.arange(6.0).view(1, 3, 2)
        >>> scatter_grid(layout(base) * 10, base, grid_index(layout, base))
        tensor([[[ 0.,  1.],
                 [20., 30.],
                 [40., 50.]]])
    """
    out = base.reshape(base.shape[0], -1).clone()
    out[:, index.reshape(-1).to(out.device)] = grid.reshape(grid.shape[0], -1).to(out.dtype)
    return out.view(base.shape)


def attention_kind(module: nn.Module) -> str | None:
    """Which kind of self-attention module this is, as far as camkit can read its probabilities.

    * ``"timm"``: timm's ``Attention`` family (a ``fused_attn`` flag and an ``attn_drop`` dropout
      that receives the softmax probabilities when the flag is off);
    * ``"huggingface"``: a Hugging Face attention module (``q_proj``/``k_proj``/``v_proj`` and a
      ``config`` with ``_attn_implementation``) that returns ``(output, probabilities)`` in eager mode;
    * ``"torch"``: :class:`torch.nn.MultiheadAttention`.

    Args:
        module: any module.

    Returns:
        The kind, or ``None``.

    Example:
        >>> attention_kind(torch.nn.MultiheadAttention(8, 2, batch_first=True))
        'torch'
    """
    if isinstance(module, nn.MultiheadAttention):
        return "torch"
    if hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Dropout):
        return "timm"
    config = getattr(module, "config", None)
    if hasattr(config, "_attn_implementation") and all(
        isinstance(getattr(module, name, None), nn.Module) for name in ("q_proj", "k_proj", "v_proj")
    ):
        return "huggingface"
    return None


def is_windowed(module: nn.Module) -> bool:
    """Whether an attention module attends within local windows (Swin) instead of over all tokens.

    Args:
        module: an attention module.

    Returns:
        ``True`` for windowed attention.
    """
    return getattr(module, "window_size", None) is not None


def multihead_self_attention(module: nn.Module, args: Any, kwargs: Any) -> tuple[Tensor, Tensor] | None:
    r"""Recompute a self-attention call of :class:`torch.nn.MultiheadAttention` from its inputs and weights.

    .. math:: P_h = \mathrm{softmax}\big(Q_h K_h^\top / \sqrt{d}\big), \qquad
        O = \big[P_1 V_1, \dots, P_H V_H\big] W_o^\top + b_o

    Args:
        module: the attention module.
        args: the positional arguments of the call.
        kwargs: its keyword arguments.

    Returns:
        ``(P, O)``: the probabilities ``(N, heads, T, T)`` and the output in the module's layout, or
        ``None`` for a call that is not plain batched self-attention (masks, separate key/value
        inputs or projections, added key/value tokens).

    Example:
        >>> mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        >>> x = torch.rand(1, 5, 8)
        >>> probs, out = multihead_self_attention(mha, (x, x, x), {})
        >>> torch.allclose(out, mha(x, x, x)[0], atol=1e-6), probs.shape
        (True, torch.Size([1, 2, 5, 5]))
    """
    if not isinstance(module, nn.MultiheadAttention):
        return None
    call = dict(zip(("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask"), args, strict=False))
    call.update(kwargs)
    query: Tensor | None = call.get("query")
    if not isinstance(query, Tensor):
        return None
    x: Tensor = query if module.batch_first else query.transpose(0, 1)
    if (
        query.ndim != 3
        or call.get("key") is not query
        or call.get("value") is not query
        or call.get("attn_mask") is not None
        or call.get("key_padding_mask") is not None
        or module.in_proj_weight is None
        or module.bias_k is not None
        or module.add_zero_attn
    ):
        return None
    n, t, e = x.shape
    heads = module.num_heads
    q, k, v = (
        z.reshape(n, t, heads, e // heads).transpose(1, 2)
        for z in F.linear(x, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
    )
    probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(e // heads), dim=-1)
    out = F.linear((probs @ v).transpose(1, 2).reshape(n, t, e), module.out_proj.weight, module.out_proj.bias)
    return probs, out if module.batch_first else out.transpose(0, 1)
