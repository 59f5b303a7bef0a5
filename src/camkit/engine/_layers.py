"""Target-layer resolution: a module, a dotted name, a list of them, or automatic choice.

Automatic choice (``target_layer=None``) runs one dummy forward and takes the last layer whose output
is a spatial map. Transformers get their own rule (see ``docs/transformers.md``):

* a transformer whose blocks carry prefix tokens and whose head reads them (ViT, DeiT: the class
  token): the normalization before the last block's attention (timm ``blocks[-1].norm1``,
  torchvision ``encoder.layers[-1].ln_1``, Hugging Face ``layernorm_before``). After the last
  attention the patch tokens no longer reach the class token, so their gradients would be zero;
* otherwise (Swin, ViTs with ``global_pool="avg"``): the last layer whose output is a token or
  channels-last grid, e.g. Swin's final ``norm``, the layer that global average pooling reads.

:func:`attention_blocks` finds the blocks and attention modules that LeGrad and attention rollout read.
"""

from __future__ import annotations

import difflib
import logging
import weakref
from collections.abc import Sequence
from typing import Any

from torch import nn

from camkit.engine._gate import candidate_layers
from camkit.reshape import attention_kind, infer_layout, is_windowed, transformer_info

__all__ = ["LayerSpec", "attention_blocks", "resolve_layers"]

logger = logging.getLogger("camkit")

LayerSpec = nn.Module | str | Sequence[nn.Module | str] | None

#: the automatic layer choices already logged, per model (once per model and layer, not on every call)
_ANNOUNCED: weakref.WeakKeyDictionary[nn.Module, set[str]] = weakref.WeakKeyDictionary()


def _announce(model: nn.Module, layer: str, message: str, *args: Any) -> None:
    """Log the automatic choice of ``layer`` (a WARNING) unless it was already said for this model."""
    said = _ANNOUNCED.setdefault(model, set())
    if layer in said:
        return
    said.add(layer)
    logger.warning(message + " (said once per model)", *args)


def forget_announcements() -> None:
    """Forget which automatic layer choices were logged, so that the next ones are logged again.

    Internal (tests): the message "no target_layer given: using ..." is logged once per model and
    layer; this starts over.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten())
        >>> resolve_layers(model, None, (3, 8, 8))  # logs the choice once for this model
        ['1']
        >>> model in _ANNOUNCED
        True
        >>> forget_announcements()
        >>> model in _ANNOUNCED
        False
    """
    _ANNOUNCED.clear()


def _spatial(shape: tuple[int, ...], input_shape: Sequence[int]) -> bool:
    return len(shape) == len(input_shape) + 1 and any(s != 1 for s in shape[2:])


#: Names of the normalization before a block's attention (timm, torchvision, Hugging Face).
_PRE_ATTENTION_NORMS = ("norm1", "ln_1", "layernorm_before")


def _transformer_layer(model: nn.Module, shapes: list[tuple[str, tuple[int, ...]]], size: Sequence[int]) -> str | None:
    info = transformer_info(model)
    modules = dict(model.named_modules())
    attention = [n for n, m in modules.items() if attention_kind(m) and not is_windowed(m)]
    if info is None and not attention:
        return None
    layouts = {name: infer_layout(shape, size, info, modules[name]) for name, shape in shapes if shape[0] == 1}
    if attention:  # the first LayerNorm the last block runs, and the prefix tokens of its output
        block = attention[-1].rpartition(".")[0]
        norms = [n for n, _ in shapes if n.startswith(f"{block}.") and isinstance(modules[n], nn.LayerNorm)]
        norm, carrier = (norms[0] if norms else None), block
    else:  # attention camkit cannot read: the last pre-attention norm known by name
        norms = [n for n, _ in shapes if n.rsplit(".", 1)[-1] in _PRE_ATTENTION_NORMS]
        norm = carrier = norms[-1] if norms else None
    last = layouts.get(carrier) if carrier else None
    if norm and layouts.get(norm) and last and last.prefix > 0 and not (info is not None and info.pools_patches):
        _announce(
            model,
            norm,
            "no target_layer given: using %r (output shape %s), the normalization before the last block's "
            "attention: the head reads a prefix (class) token, which the patch tokens reach only through it",
            norm,
            dict(shapes)[norm],
        )
        return norm
    for name, shape in reversed(shapes):
        layout = layouts.get(name)
        if (layout is not None and layout.height * layout.width > 1) or (
            layout is None and _spatial(shape, (0, *size))
        ):
            kind = f", a {layout.kind.replace('_', '-')} grid {layout.height}x{layout.width}" if layout else ""
            _announce(model, name, "no target_layer given: using %r (output shape %s%s)", name, shape, kind)
            return name
    return None


def _auto_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    try:
        shapes = candidate_layers(model, input_shape)
    except ValueError as exc:
        info = transformer_info(model)
        size = None if info is None else info.image_size
        if size is None or tuple(input_shape[1:]) == size:
            raise
        raise ValueError(
            f"{exc}; this model was built for {size[0]}x{size[1]} inputs: input_shape=(3, {size[0]}, {size[1]})"
        ) from exc
    if len(input_shape) == 3:
        chosen = _transformer_layer(model, shapes, input_shape[1:])
        if chosen is not None:
            return chosen
    for name, shape in reversed(shapes):
        if _spatial(shape, input_shape):
            _announce(model, name, "no target_layer given: using %r (output shape %s)", name, shape)
            return name
    raise ValueError(
        f"no layer of the model outputs a spatial map for input_shape={tuple(input_shape)}; "
        "pass target_layer explicitly (see model.named_modules())"
    )


def _has_submodule(model: nn.Module, name: str) -> bool:
    """Whether ``name`` is a non-empty dotted path to a submodule (one walk down the path)."""
    if not name:
        return False
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _name_of(model: nn.Module, names: dict[str, nn.Module], layer: nn.Module | str) -> str:
    if isinstance(layer, str):
        if layer in names and layer:
            return layer
        keys = [k for k in names if k]
        last = layer.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(layer, keys, n=5, cutoff=0.6)
        close += [k for k in keys if (k.endswith("." + layer) or k.rsplit(".", 1)[-1] == last) and k not in close]
        if close:
            hint = f"; did you mean {', '.join(repr(c) for c in close[:6])}?"
        else:
            hint = f"; its top-level submodules are {', '.join(repr(k) for k in keys if '.' not in k)[:300]}"
        raise ValueError(
            f"target_layer {layer!r} is not a submodule name of {type(model).__name__}{hint} "
            "(list them with `[n for n, _ in model.named_modules()]`)"
        )
    if isinstance(layer, nn.Module):
        for name, module in names.items():
            if module is layer and name:
                return name
        raise ValueError(
            f"the module passed as target_layer ({type(layer).__name__}) is not a submodule of the model; "
            "pass a module reached from the model itself (e.g. model.layer4) or its dotted name"
        )
    raise TypeError(
        f"target_layer must be a module, a dotted name, a list of those or None; got {type(layer).__name__}"
    )


def resolve_layers(model: nn.Module, target_layer: LayerSpec, input_shape: Sequence[int]) -> list[str]:
    """Turn ``target_layer`` (module, dotted name, list, or ``None``) into dotted names.

    Args:
        model: the model.
        target_layer: what the user passed; ``None`` picks the last spatial layer by a dummy forward.
        input_shape: input shape without batch dim, for the dummy forward.

    Returns:
        One dotted name per target layer.

    Raises:
        ValueError: for an unknown name (close candidates are listed) or a foreign module.
        TypeError: for an argument of the wrong type.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if target_layer is None:
        return [_auto_layer(model, input_shape)]
    if isinstance(target_layer, (str, nn.Module)):
        layers: list[nn.Module | str] = [target_layer]
    elif isinstance(target_layer, (list, tuple)):
        layers = list(target_layer)
    else:
        raise TypeError(
            f"target_layer must be a module, a dotted name, a list of those or None; got {type(target_layer).__name__}"
        )
    if not layers:
        raise ValueError("target_layer is an empty list: pass at least one layer")
    if all(isinstance(layer, str) and _has_submodule(model, layer) for layer in layers):
        return [str(layer) for layer in layers]  # the common case, without listing every module
    names = dict(model.named_modules())
    return [_name_of(model, names, layer) for layer in layers]


_SUPPORTED = (
    "timm's Attention (ViT, DeiT), torch.nn.MultiheadAttention (torchvision VisionTransformer) "
    "or Hugging Face attention (transformers >= 5)"
)


def attention_blocks(model: nn.Module, target_layer: LayerSpec = None) -> list[tuple[str, str]]:
    """The transformer blocks to read and the attention module inside each.

    Args:
        model: the model.
        target_layer: blocks (modules or dotted names) that each contain one attention module, or
            attention modules themselves; ``None``: the parent of every attention module, in
            definition order.

    Returns:
        ``(block name, attention module name)`` pairs.

    Raises:
        ValueError: when no supported attention is found, a block holds none or several, or the
            attention is windowed (Swin).

    Example:
        >>> from torchvision.models import VisionTransformer
        >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=8)
        >>> attention_blocks(vit)[-1]
        ('encoder.layers.encoder_layer_1', 'encoder.layers.encoder_layer_1.self_attention')
    """
    modules = dict(model.named_modules())
    found = [name for name, module in modules.items() if name and attention_kind(module)]
    if target_layer is None:
        if not found:
            raise ValueError(f"{type(model).__name__} has no attention module camkit can read: expected {_SUPPORTED}")
        blocks = [name.rpartition(".")[0] or name for name in found]
    else:
        blocks = resolve_layers(model, target_layer, ())
    pairs = []
    for block in blocks:
        inside = [block] if block in found else [n for n in found if n.startswith(f"{block}.")]
        if len(inside) != 1:
            raise ValueError(
                f"block {block!r} contains {len(inside)} attention modules ({', '.join(inside[:4]) or 'none'}); pass "
                f"transformer blocks that each contain one ({_SUPPORTED}), or target_layer=None for all of them"
            )
        if is_windowed(modules[inside[0]]):
            raise ValueError(
                f"{inside[0]!r} attends within local windows (Swin): attention rollout and LeGrad need global "
                "self-attention over a class token and the patch tokens; use a CAM method instead (e.g. GradCAM "
                "with target_layer=None, which picks the final norm of a Swin)"
            )
        pairs.append((block, inside[0]))
    return pairs
