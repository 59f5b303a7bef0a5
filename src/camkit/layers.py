"""Target-layer resolution: a module, a dotted name, a list of them, or automatic choice."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence

from torch import nn

from camkit.engine import candidate_layers

__all__ = ["LayerSpec", "resolve_layers"]

logger = logging.getLogger("camkit")

LayerSpec = nn.Module | str | Sequence[nn.Module | str] | None


def _auto_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    shapes = candidate_layers(model, input_shape)
    for name, shape in reversed(shapes):
        if len(shape) == len(input_shape) + 1 and any(s != 1 for s in shape[2:]):
            logger.warning("no target_layer given: using %r (output shape %s)", name, shape)
            return name
    raise ValueError(
        f"no layer of the model outputs a spatial map for input_shape={tuple(input_shape)}; "
        "pass target_layer explicitly (see model.named_modules())"
    )


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
    names = dict(model.named_modules())
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
    return [_name_of(model, names, layer) for layer in layers]
