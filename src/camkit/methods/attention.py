r"""Attention methods for vision transformers: :class:`LeGrad` and :class:`AttentionRollout`.

Both read the attention probabilities :math:`P^l \in \mathbb{R}^{N \times H \times T \times T}` of the
transformer blocks (``H`` heads, ``T`` tokens: prefix tokens, then the patch grid), captured by
:class:`camkit.engine.Capture` without changing the model's code, and combine all blocks into one
map. They are extractor classes, not registry entries: a registry method is a weight function of
one layer's activation (``fn(A, G, ctx) -> w``). Supported attention: timm ``Attention`` (ViT,
DeiT), ``torch.nn.MultiheadAttention`` (torchvision ``VisionTransformer``) and Hugging Face
attention (transformers >= 5); windowed attention (Swin: no class token, no global mixing) is
refused with an error that names the alternative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from camkit import ops
from camkit.engine import (
    NO_GRAD_HINT,
    CAMExtractor,
    Capture,
    DisconnectedTargetError,
    HookedExtractor,
    LayerSpec,
    attention_blocks,
    eval_mode,
    paused,
)
from camkit.reshape import TokenLayout, attention_kind, infer_layout, transformer_info
from camkit.targets import ClassTarget, Target, as_target

__all__ = [
    "HEAD_FUSIONS",
    "AttentionRollout",
    "LeGrad",
    "attention_rollout",
    "head_projection",
    "legrad_relevance",
]

#: How :func:`attention_rollout` fuses the heads of one block.
HEAD_FUSIONS = ("mean", "max", "min")


def head_projection(model: nn.Module) -> Callable[[Tensor], Any]:
    """LeGrad's per-block class scores: the model's final norm and head applied to the mean token.

    Known heads: torchvision ``VisionTransformer`` (``heads(encoder.ln(mean))``, as TorchCAM 0.5),
    timm ``VisionTransformer`` (``head(fc_norm(norm(mean)))``; distilled DeiT averages ``head`` and
    ``head_dist`` as at inference) and Hugging Face ``*ForImageClassification``
    (``classifier(base_model.layernorm(mean))``).

    Args:
        model: the model.

    Returns:
        A function from block tokens ``(N, T, D)`` to class scores ``(N, num_classes)``.

    Raises:
        ValueError: for a model whose head camkit does not know (pass ``score_projection=`` then).
    """
    encoder, heads = getattr(model, "encoder", None), getattr(model, "heads", None)
    norm = getattr(encoder, "ln", None)
    if isinstance(heads, nn.Module) and isinstance(norm, nn.Module):
        return lambda tokens: heads(norm(tokens.mean(dim=1)))
    head, final, fc_norm = getattr(model, "head", None), getattr(model, "norm", None), getattr(model, "fc_norm", None)
    if isinstance(head, nn.Linear) and isinstance(final, nn.Module):
        pooled_norm = fc_norm if isinstance(fc_norm, nn.Module) else nn.Identity()
        head_dist = getattr(model, "head_dist", None)

        def timm_head(tokens: Tensor) -> Tensor:
            feature = pooled_norm(final(tokens.mean(dim=1)))
            scores: Tensor = head(feature)
            return scores if not isinstance(head_dist, nn.Module) else (scores + head_dist(feature)) / 2

        return timm_head
    classifier, base = getattr(model, "classifier", None), getattr(model, "base_model", None)
    layernorm = getattr(base, "layernorm", None)
    if isinstance(classifier, nn.Module) and isinstance(layernorm, nn.Module):
        return lambda tokens: classifier(layernorm(tokens.mean(dim=1)))
    raise ValueError(
        f"LeGrad scores every block with the model's own head, but camkit does not know the head of "
        f"{type(model).__name__}: pass score_projection=<function from block tokens (N, T, D) to class scores "
        "(N, num_classes)>"
    )


def legrad_relevance(gradient: Tensor) -> Tensor:
    r"""LeGrad's relevance of every key token ``j``: the mean over heads and queries of the positive gradient.

    .. math:: E_j = \frac{1}{H T}\sum_{h,i} \mathrm{ReLU}\Big(\frac{\partial s}{\partial P_{h,i,j}}\Big)

    Args:
        gradient: ``(N, heads, T, T)`` gradient of a block's score with respect to its attention.

    Returns:
        ``(N, T)``.

    Example:
        >>> legrad_relevance(torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]]))
        tensor([[2., 2.]])
    """
    return gradient.clamp(min=0).mean(dim=(1, 2))


def attention_rollout(
    attentions: Sequence[Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    prefix: int = 1,
    pool_patches: bool = False,
) -> Tensor:
    r"""Attention rollout (Abnar & Zuidema, 2020): how much each token flows into the class token.

    .. math:: \hat P^l = \mathrm{rownorm}\big(D(\mathrm{fuse}_h P^l) + I\big), \qquad
       R = \hat P^{L} \cdots \hat P^{1}

    :math:`D` zeroes, in every row, the ``floor(discard_ratio · patches)`` smallest weights on patch
    tokens (prefix columns are kept). The result is row 0 of :math:`R` (the class token), or the
    mean of the patch tokens' rows for a model that pools them (``pool_patches``, or no prefix). With
    ``discard_ratio=0`` and mean fusion, :math:`\hat P = \tfrac12 P + \tfrac12 I` as in the paper.

    Args:
        attentions: per block, in forward order, ``(N, heads, T, T)`` probabilities.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction in ``[0, 1)`` of each row's lowest patch weights set to 0.
        prefix: number of prefix tokens (class, distillation, register).
        pool_patches: the head averages the patch tokens instead of reading the class token.

    Returns:
        ``(N, T)`` relevance of every token (prefix tokens included).

    Raises:
        ValueError: for an unknown fusion, a ratio outside ``[0, 1)`` or no attention.

    Example:
        >>> probs = torch.full((1, 2, 3, 3), 1 / 3)
        >>> attention_rollout([probs, probs], prefix=1)
        tensor([[0.5000, 0.2500, 0.2500]])
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
        raise ValueError(f"discard_ratio must be a number in [0, 1), got {discard_ratio!r}")
    if not attentions:
        raise ValueError("attention_rollout needs the attention of at least one block")
    steps = []
    for probs in attentions:
        probs = probs.float() if probs.dtype in (torch.float16, torch.bfloat16) else probs
        if head_fusion == "mean":
            fused = probs.mean(dim=1)
        else:
            fused = probs.amax(dim=1) if head_fusion == "max" else probs.amin(dim=1)
        tokens = fused.shape[-1]
        drop = int(discard_ratio * (tokens - prefix))
        if drop > 0:
            patches = fused[..., prefix:]
            lowest = patches.topk(drop, dim=-1, largest=False).indices
            fused = torch.cat([fused[..., :prefix], patches.scatter(-1, lowest, 0.0)], dim=-1)
        step = fused + torch.eye(tokens, dtype=fused.dtype, device=fused.device)
        steps.append(step / step.sum(dim=-1, keepdim=True))
    rollout = steps[0]
    for step in steps[1:]:
        rollout = step @ rollout
    return rollout[:, prefix:].mean(dim=1) if pool_patches or prefix == 0 else rollout[:, 0]


class _AttentionExtractor(HookedExtractor):
    """Lifecycle shared by the attention methods (context manager, hook control), like CAMExtractor's."""

    #: the method differentiates block scores (keep block outputs and a graph from the input)
    uses_gradients: ClassVar[bool] = False

    def __init__(self, model: nn.Module, target_layer: LayerSpec = None, *, enable_hooks: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        pairs = attention_blocks(model, target_layer)
        self.model = model
        self.target_names = [block for block, _ in pairs]
        self.attention_names = [attention for _, attention in pairs]
        self._info = transformer_info(model)
        blocks = self.target_names if self.uses_gradients else []
        capture = Capture(
            model, blocks, input_grad=self.uses_gradients, attention=self.attention_names, check=self._check_forward
        )
        self._own(capture, enable_hooks)

    def _check_forward(self, capture: Capture, idx: int) -> None:
        """Refuse a forward this method cannot explain, from target block ``idx``'s hook; nothing to refuse here."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_layer={self.target_names})"

    @property
    def hook_attn(self) -> list[Tensor | None]:
        """TorchCAM's attribute: the last forward's attention probabilities ``(N, heads, T, T)`` per block.

        ``None`` where none was captured; read-only (the capture owns them).
        """
        return list(self._capture.state.attention)

    @staticmethod
    def _target(class_idx: int | Sequence[int] | None, targets: Target | None) -> Target:
        """What to explain: exactly one of ``class_idx`` and ``targets``."""
        if (class_idx is None) == (targets is None):
            raise ValueError("pass exactly one of class_idx (int or one per sample) and targets")
        return ClassTarget(class_idx) if targets is None else as_target(targets)  # type: ignore[arg-type]

    @staticmethod
    def fuse_cams(cams: list[Tensor], target_shape: Sequence[int] | None = None) -> Tensor:
        """The single map of a call (these methods return one map for all blocks), as TorchCAM's ``fuse_cams``."""
        return CAMExtractor.fuse_cams(cams, target_shape)

    def _layout(self, tokens: int) -> TokenLayout:
        size = self._capture.input_size or (None if self._info is None else self._info.image_size)
        layout = None if size is None else infer_layout((1, tokens, 1), size, self._info)
        if layout is None:
            raise ValueError(
                f"cannot tell the patch grid of {tokens} tokens for input size {size}: run the forward on image "
                "batches (N, C, H, W) whose patch grid has the input's aspect ratio"
            )
        return layout

    def _grid(self, relevance: Tensor, normalized: bool) -> list[Tensor]:
        cam = self._layout(relevance.shape[-1])(relevance.unsqueeze(-1))[:, 0]
        return [ops.normalize(cam) if normalized else cam]


class LeGrad(_AttentionExtractor):
    r"""LeGrad: positive gradients of every block's class score with respect to its attention.

    .. math:: L = \frac{1}{|\mathcal{B}|}\sum_{l \in \mathcal{B}} \frac{1}{H\,T}\sum_{h,i}
        \mathrm{ReLU}\Big(\frac{\partial s^l}{\partial P^l_{h,i,j}}\Big)_{j \in \text{patches}},
        \qquad s^l = \mathrm{head}\big(\mathrm{norm}(\tfrac{1}{T}\textstyle\sum_t z^l_t)\big)_c

    where :math:`z^l` are block ``l``'s output tokens and :math:`P^l` its attention probabilities.
    Attention values are not multiplied into the gradients (TorchCAM 0.5's semantics). The forward
    must run with gradients enabled; camkit hands the model a copy of its input that requires grad,
    so frozen models work. Bousselham et al., "LeGrad: An Explainability Method for Vision
    Transformers via Feature Formation Sensitivity", arXiv:2404.03214, 2024.

    Args:
        model: a vision transformer (see :func:`camkit.engine.attention_blocks`).
        target_layer: the blocks :math:`\mathcal{B}` (modules or names); ``None``: every block.
            TorchCAM's example uses the last four (``list(model.encoder.layers)[-4:]``).
        score_projection: block tokens ``(N, T, D)`` to class scores; default :func:`head_projection`.
        enable_hooks: start with the hooks recording.

    Raises:
        ValueError: for a model without supported global attention, or an unknown head.

    Example:
        >>> from torchvision.models import VisionTransformer
        >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=16).eval()
        >>> with LeGrad(vit) as extractor:
        ...     scores = vit(torch.rand(2, 3, 32, 32))
        ...     cams = extractor(class_idx=[1, 2], scores=scores)
        >>> cams[0].shape
        torch.Size([2, 4, 4])
    """

    uses_gradients = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        *,
        score_projection: Callable[[Tensor], Any] | None = None,
        prefix_tokens: int | None = None,
        grid_shape: tuple[int, int] | None = None,
        enable_hooks: bool = True,
    ) -> None:
        if score_projection is not None and not callable(score_projection):
            raise TypeError(f"score_projection must be callable, got {type(score_projection).__name__}")
        if prefix_tokens is not None:
            if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int):
                raise TypeError(
                    f"prefix_tokens must be an integer (class/register tokens before the patches, e.g. 1), "
                    f"got {prefix_tokens!r}"
                )
            if prefix_tokens < 0:
                raise ValueError(f"prefix_tokens must be non-negative, got {prefix_tokens}")
        if grid_shape is not None:
            if (
                not isinstance(grid_shape, tuple)
                or len(grid_shape) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in grid_shape)
            ):
                raise TypeError(f"grid_shape must be a tuple of two integers (height, width), got {grid_shape!r}")
            if min(grid_shape) < 1:
                raise ValueError(f"grid_shape dimensions must be positive, got {grid_shape}")
        if isinstance(target_layer, (list, tuple)) and not target_layer:
            raise ValueError(
                "LeGrad needs at least one explicit target block, got an empty list: pass transformer blocks "
                "(modules or names), or target_layer=None for all of them"
            )
        _check_blocks(model, target_layer)
        self.prefix_tokens = prefix_tokens
        self.grid_shape = grid_shape
        super().__init__(model, target_layer, enable_hooks=enable_hooks)
        try:
            self.score_projection = score_projection or head_projection(model)
        except ValueError:
            self.remove_hooks()
            raise

    def __call__(
        self,
        class_idx: int | Sequence[int] | None = None,
        scores: Any = None,
        normalized: bool = True,
        retain_graph: bool = False,
        *,
        targets: Target | None = None,
    ) -> list[Tensor]:
        """The LeGrad map of the last forward.

        Args:
            class_idx: class to explain: one int for the batch, or one per sample.
            scores: the model output (accepted for symmetry with the CAM extractors; not needed).
            normalized: min-max normalize the map to ``[0, 1]``.
            retain_graph: keep the autograd graph for another call on the same forward.
            targets: a :mod:`camkit.targets` object instead of ``class_idx`` (called on the block scores).

        Returns:
            ``[map]`` with the map ``(N, h, w)`` on the patch grid.

        Raises:
            ValueError: without a graph (forward under ``no_grad``), or on a misuse.
        """
        target = self._target(class_idx, targets)
        blocks, attentions = self._capture.sources(), self._capture.attention()
        if not all(t.requires_grad for t in (*blocks, *attentions)):
            raise ValueError(f"LeGrad differentiates each block's score with respect to its attention: {NO_GRAD_HINT}")
        relevance = []
        with paused(), eval_mode(self.model):
            for i, (tokens, probs) in enumerate(zip(blocks, attentions, strict=True)):
                if tokens.ndim != 3 or tokens.shape[1] != probs.shape[-1]:
                    raise ValueError(
                        f"the attention keys and target-block tokens must have matching lengths: block "
                        f"{self.target_names[i]!r} outputs {tuple(tokens.shape)} for attention over "
                        f"{probs.shape[-1]} tokens; pass blocks that keep every token (batch, tokens, embedding)"
                    )
                score = target(self.score_projection(tokens)).sum()
                if not score.requires_grad:
                    raise DisconnectedTargetError(
                        f"the class score of block {self.target_names[i]!r} is not connected to its tokens: "
                        "score_projection must compute the scores from the tokens it is given (no .detach(), "
                        "torch.no_grad() or .item())"
                    )
                keep = retain_graph or i < len(blocks) - 1
                (grad,) = torch.autograd.grad(score, probs, retain_graph=keep, allow_unused=True)
                if grad is None:
                    raise DisconnectedTargetError(
                        f"the score of block {self.target_names[i]!r} is not connected to (does not depend on) "
                        f"{self.attention_names[i]!r}: pass the blocks that contain the attention modules, and a "
                        "score_projection that computes the scores from the tokens it is given (no .detach())"
                    )
                relevance.append(legrad_relevance(grad.detach()))
        return self._grid(torch.stack(relevance).mean(dim=0), normalized)

    compute_cams = __call__

    def _check_forward(self, capture: Capture, idx: int) -> None:
        """LeGrad's checks of target block ``idx`` in a forward, raised from it as TorchCAM's LeGrad does.

        Raises:
            ValueError: attention LeGrad cannot read (cross-attention, masks), attention dropout
                active (training mode), a block that does not return tokens ``(N, T, D)``, or a
                ``score_projection`` that does not return class logits ``(N, num_classes)``.
            DisconnectedTargetError: the forward runs without gradient tracking (also a ``RuntimeError``).
        """
        name, error = self.target_names[idx], capture.state.attention_errors[idx]
        if error is not None:
            raise ValueError(f"LeGrad needs self-attention probabilities: {error}")
        attention = self.model.get_submodule(self.attention_names[idx])
        dropout = _attention_dropout(attention)
        if attention.training and dropout > 0:
            raise ValueError(
                f"attention dropout is active in {self.attention_names[idx]!r} (training mode, p={dropout}): LeGrad "
                "reads the attention probabilities the output was computed from; run the model in eval mode "
                "(model.eval()) or set the attention dropout to 0"
            )
        tokens = capture.state.sources[idx]
        if not isinstance(tokens, Tensor) or tokens.ndim != 3:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(
                f"LeGrad target blocks must return tokens (batch, tokens, embedding): block {name!r} returned "
                f"{shape}; pass the transformer blocks themselves"
            )
        if not tokens.requires_grad:
            raise DisconnectedTargetError(
                f"LeGrad needs gradient tracking in the forward: block {name!r} returned tokens without an "
                f"autograd graph; {NO_GRAD_HINT}"
            )
        with paused(), torch.no_grad():
            scores = self.score_projection(tokens.detach())
        if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[0] != tokens.shape[0]:
            got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(
                f"score_projection must return class logits (N, num_classes) for block tokens {tuple(tokens.shape)}, "
                f"got {got}"
            )

    @property
    def hook_a(self) -> list[Tensor | None]:
        """TorchCAM's attribute: the last forward's output tokens ``(N, T, D)`` of each target block (read-only)."""
        return list(self._capture.state.sources)  # type: ignore[arg-type]

    def _layout(self, tokens: int) -> TokenLayout:
        """The grid of ``tokens`` tokens: ``prefix_tokens``/``grid_shape`` when given, else inferred."""
        if self.prefix_tokens is None and self.grid_shape is None:
            return super()._layout(tokens)
        if self.grid_shape is not None:
            height, width = self.grid_shape
            prefix = tokens - height * width if self.prefix_tokens is None else self.prefix_tokens
            if prefix < 0 or prefix + height * width != tokens:
                raise ValueError(
                    f"grid_shape={self.grid_shape} does not match the number of patch tokens: the blocks output "
                    f"{tokens} tokens" + ("" if self.prefix_tokens is None else f" with {prefix} prefix tokens")
                )
            return TokenLayout("tokens", height, width, prefix=prefix)
        prefix = int(self.prefix_tokens or 0)
        patches = tokens - prefix
        if patches < 1:
            raise ValueError(
                f"prefix_tokens={prefix} must leave at least one patch token; the blocks output {tokens} tokens"
            )
        size = self._capture.input_size
        side = math.isqrt(patches)
        shapes = [(side, side)] if side * side == patches else []
        if size is not None and len(size) == 2:
            h = round(math.sqrt(patches * size[0] / size[1]))
            if h >= 1 and patches % h == 0 and h * size[1] == (patches // h) * size[0]:
                shapes.insert(0, (h, patches // h))
        if not shapes:
            raise ValueError(
                f"unable to infer the patch grid of {patches} tokens: neither a square patch grid nor the input's "
                f"aspect ratio; specify grid_shape=(height, width)"
            )
        return TokenLayout("tokens", *shapes[0], prefix=prefix)


def _attention_dropout(module: nn.Module) -> float:
    """The dropout probability applied to an attention module's probabilities (0 when it has none)."""
    if isinstance(module, nn.MultiheadAttention):
        return float(module.dropout)
    for name in ("attn_drop", "attention_dropout", "dropout"):  # timm, then Hugging Face's spellings
        value = getattr(module, name, None)
        if isinstance(value, nn.Dropout):
            return float(value.p)
        if isinstance(value, float):
            return value
    return 0.0


def _check_blocks(model: nn.Module, target_layer: LayerSpec) -> None:
    """Refuse, before hooking, target blocks LeGrad cannot read (no attention; attention with extra tokens).

    Raises:
        TypeError: for a block without an attention module.
        ValueError: for ``nn.MultiheadAttention`` with separate key/value sizes or added key/value tokens.
    """
    if target_layer is None or not isinstance(model, nn.Module):
        return
    names = {module: name for name, module in model.named_modules()}
    for item in target_layer if isinstance(target_layer, (list, tuple)) else [target_layer]:
        if isinstance(item, str):
            try:
                block = model.get_submodule(item)
            except AttributeError:
                continue  # attention_blocks names the unknown layer
        elif isinstance(item, nn.Module):
            block = item
        else:
            continue
        name = item if isinstance(item, str) else names.get(block, type(block).__name__)
        found = [m for m in block.modules() if attention_kind(m)]
        if not found:
            raise TypeError(
                f"target block {name!r} ({type(block).__name__}) contains no attention module: pass transformer "
                "blocks, e.g. torchvision's EncoderBlock (its self_attention: nn.MultiheadAttention), a timm Block "
                "or a Hugging Face encoder layer"
            )
        for attention in found:
            if not isinstance(attention, nn.MultiheadAttention):
                continue
            if attention.in_proj_weight is None:
                raise ValueError(
                    f"target block {name!r} requires shared-dimension Q/K/V projections (kdim = vdim = embed_dim); "
                    "its nn.MultiheadAttention projects keys and values from other sizes"
                )
            if attention.bias_k is not None or attention.add_zero_attn:
                raise ValueError(
                    f"target block {name!r} does not support added attention tokens (add_bias_kv=True or "
                    "add_zero_attn=True change the attention's key tokens)"
                )


class AttentionRollout(_AttentionExtractor):
    r"""Attention rollout: the attention of all blocks multiplied through, read at the class token.

    .. math:: \hat P^l = \mathrm{rownorm}\big(D(\mathrm{fuse}_h P^l) + I\big), \qquad
        L = \big(\hat P^{L} \cdots \hat P^{1}\big)_{0,\text{patches}}

    For a model that averages its patch tokens (timm ``global_pool="avg"``) the map is the mean of
    the patch tokens' rows. Class-agnostic: ``class_idx``, ``scores`` and ``targets`` are accepted and ignored, and the
    forward may run under ``torch.no_grad()`` or ``torch.inference_mode()``. See
    :func:`attention_rollout` for ``head_fusion`` and ``discard_ratio`` (default 0: the paper's
    rollout; the popular ``vit-explain`` code uses e.g. 0.9 with ``"max"`` fusion). Abnar &
    Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.

    Args:
        model: a vision transformer (see :func:`camkit.engine.attention_blocks`).
        target_layer: the blocks, in forward order; ``None``: every block.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"``.
        discard_ratio: fraction in ``[0, 1)`` of each row's lowest patch weights set to 0.
        enable_hooks: start with the hooks recording.

    Raises:
        ValueError: for a bad option or a model without supported global attention.

    Example:
        >>> from torchvision.models import VisionTransformer
        >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=16).eval()
        >>> with AttentionRollout(vit) as extractor, torch.inference_mode():
        ...     _ = vit(torch.rand(1, 3, 32, 32))
        ...     cams = extractor()
        >>> cams[0].shape
        torch.Size([1, 4, 4])
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = None,
        *,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        enable_hooks: bool = True,
    ) -> None:
        attention_rollout([torch.full((1, 1, 2, 2), 0.5)], head_fusion, discard_ratio)  # validates the options
        super().__init__(model, target_layer, enable_hooks=enable_hooks)
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio

    def __call__(
        self,
        class_idx: int | Sequence[int] | None = None,
        scores: Any = None,
        normalized: bool = True,
        retain_graph: bool = False,
        *,
        targets: Target | None = None,
    ) -> list[Tensor]:
        """The rollout map of the last forward (class-agnostic; the arguments but ``normalized`` are ignored).

        Returns:
            ``[map]`` with the map ``(N, h, w)`` on the patch grid.
        """
        attentions = [p.detach() for p in self._capture.attention()]
        layout = self._layout(attentions[0].shape[-1])
        with torch.no_grad():
            pools = self._info is not None and self._info.pools_patches
            relevance = attention_rollout(attentions, self.head_fusion, self.discard_ratio, layout.prefix, pools)
        return self._grid(relevance, normalized)
