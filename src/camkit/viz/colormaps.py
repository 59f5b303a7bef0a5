"""Colormaps as lookup tables: ``(K, 3)`` uint8 tensors, built in or read from matplotlib.

The built-in maps are generated here from their piecewise-linear definitions, so camkit draws
heatmaps without matplotlib. Any other name (``"viridis"``, ``"inferno"``, ``"turbo"``, ...) is
read from matplotlib at run time when it is installed. A value ``x`` in ``[0, 1]`` is drawn with
row ``min(floor(x * K), K - 1)`` of the table, matplotlib's own indexing, so camkit's heatmaps
equal matplotlib's byte for byte.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor

__all__ = ["ColormapLike", "apply_colormap", "builtin_colormaps", "get_colormap", "list_colormaps"]

ColormapLike: TypeAlias = "str | Tensor | np.ndarray[Any, Any]"
"""A colormap name, or a ``(K, 3)`` uint8 lookup table (tensor or array), ``K >= 2``."""

# Knots (x, y) of each channel: the value at x in [0, 1] is the linear interpolation between knots.
_Knots = Sequence[tuple[float, float]]

# MATLAB's classic "jet": blue -> cyan -> yellow -> red, dark at both ends.
_JET: tuple[_Knots, _Knots, _Knots] = (
    ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
)
_GRAY: tuple[_Knots, _Knots, _Knots] = (((0.0, 0.0), (1.0, 1.0)),) * 3
_BUILTIN: dict[str, tuple[_Knots, _Knots, _Knots]] = {"jet": _JET, "gray": _GRAY}
_ALIASES = {"grey": "gray"}


def _sample(knots: _Knots, size: int) -> list[float]:
    """Sample piecewise-linear knots at ``size`` evenly spaced points of ``[0, 1]``.

    The arithmetic is done in table-index units (knots and points scaled by ``size - 1``), as
    matplotlib does, so the samples are bit-identical to its own and truncate to the same bytes.
    """
    last = size - 1
    scaled = [(x * last, y) for x, y in knots]
    step = 1.0 / last
    values = [scaled[0][1]]
    for i in range(1, last):
        point = last * (i * step)
        k = next(k for k, (x, _) in enumerate(scaled) if x >= point)
        (x0, y0), (x1, y1) = scaled[k - 1], scaled[k]
        values.append((point - x0) / (x1 - x0) * (y1 - y0) + y0)
    values.append(scaled[-1][1])
    return [min(max(v, 0.0), 1.0) for v in values]


@functools.lru_cache(maxsize=16)
def _table_from_knots(channels: tuple[_Knots, _Knots, _Knots], size: int = 256) -> Tensor:
    """A ``(size, 3)`` uint8 table of the channels; bytes are ``floor(255 * y)`` (matplotlib's rule)."""
    columns = [_sample(knots, size) for knots in channels]
    rows = [[math.floor(255.0 * column[i]) for column in columns] for i in range(size)]
    return torch.tensor(rows, dtype=torch.uint8)


def _reversed_knots(knots: _Knots) -> _Knots:
    """The knots of ``x -> f(1 - x)``."""
    return tuple((1.0 - x, y) for x, y in reversed(knots))


def builtin_colormaps() -> list[str]:
    """Names of the colormaps available without matplotlib (each also reversed with ``_r``).

    Returns:
        Sorted names.

    Example:
        >>> builtin_colormaps()
        ['gray', 'gray_r', 'jet', 'jet_r']
    """
    return sorted([*_BUILTIN, *(f"{name}_r" for name in _BUILTIN)])


def _matplotlib_colormaps() -> Any | None:
    """The colormap registry of matplotlib, or None when matplotlib is not installed."""
    try:
        return importlib.import_module("matplotlib").colormaps
    except ImportError:
        return None


def list_colormaps() -> list[str]:
    """Names accepted by :func:`get_colormap`: the built-in maps, plus matplotlib's when installed.

    Returns:
        Sorted names.

    Example:
        >>> "jet" in list_colormaps()
        True
    """
    registry = _matplotlib_colormaps()
    extra = list(registry) if registry is not None else []
    return sorted({*builtin_colormaps(), *extra})


def _table_from_name(name: str) -> Tensor:
    base = name[:-2] if name.endswith("_r") else name
    base = _ALIASES.get(base, base)
    if base in _BUILTIN:
        channels = _BUILTIN[base]
        if name.endswith("_r"):
            red, green, blue = (_reversed_knots(knots) for knots in channels)
            channels = (red, green, blue)
        return _table_from_knots(channels).clone()
    registry = _matplotlib_colormaps()
    if registry is None:
        raise ValueError(
            f"colormap={name!r} needs matplotlib, which is not installed; built-in colormaps: "
            f"{', '.join(builtin_colormaps())} (or pip install matplotlib for viridis, inferno, turbo, ...)"
        )
    if name not in registry:
        raise ValueError(f"colormap={name!r} is not a known colormap; accepted: {', '.join(list_colormaps())}")
    cmap = registry[name]
    # Integer inputs index matplotlib's table directly: this reads its N colours as bytes.
    rgba = cmap(np.arange(cmap.N), bytes=True)
    return torch.from_numpy(np.ascontiguousarray(rgba[:, :3]))


def get_colormap(colormap: ColormapLike) -> Tensor:
    """Resolve a colormap name or table to a ``(K, 3)`` uint8 CPU lookup table.

    Args:
        colormap: a name from :func:`list_colormaps`, or a ``(K, 3)`` uint8 table, ``K >= 2``.

    Returns:
        The table, row 0 for the value 0 and row ``K - 1`` for the value 1.

    Raises:
        ValueError: for an unknown name (the message lists the accepted ones) or a table of the
            wrong shape.
        TypeError: for anything else, or a table that is not uint8.

    Example:
        >>> get_colormap("jet")[[0, -1]].tolist()
        [[0, 0, 127], [127, 0, 0]]
    """
    if isinstance(colormap, str):
        return _table_from_name(colormap)
    if isinstance(colormap, np.ndarray):
        colormap = torch.from_numpy(np.ascontiguousarray(colormap))
    if not isinstance(colormap, Tensor):
        raise TypeError(
            f"colormap must be a name or a (K, 3) uint8 table, got {type(colormap).__name__}; "
            f"names: {', '.join(list_colormaps())}"
        )
    if colormap.dtype != torch.uint8:
        raise TypeError(f"colormap table must be uint8 (bytes 0-255), got dtype {colormap.dtype}")
    if colormap.ndim != 2 or colormap.shape[1] != 3 or colormap.shape[0] < 2:
        raise ValueError(f"colormap table must have shape (K, 3) with K >= 2, got {tuple(colormap.shape)}")
    return colormap.detach().cpu()


def apply_colormap(values: Tensor, colormap: ColormapLike = "jet") -> Tensor:
    """Colour values in ``[0, 1]`` with a lookup table: ``table[min(floor(x * K), K - 1)]``.

    Values outside ``[0, 1]`` take the colour of the nearest end, matplotlib's default.

    Args:
        values: a float tensor of any shape ``S``, any device.
        colormap: a name from :func:`list_colormaps` or a ``(K, 3)`` uint8 table.

    Returns:
        A uint8 tensor ``(*S, 3)`` on ``values``' device.

    Raises:
        TypeError: if ``values`` is not a floating-point tensor.
        ValueError: if ``values`` holds NaN (or for a bad ``colormap``, see :func:`get_colormap`).

    Example:
        >>> apply_colormap(torch.tensor([0.0, 1.0]), "gray").tolist()
        [[0, 0, 0], [255, 255, 255]]
    """
    if not isinstance(values, Tensor) or not values.is_floating_point():
        raise TypeError(f"values must be a floating-point tensor, got {_describe(values)}")
    if torch.isnan(values).any():
        raise ValueError("values contain NaN: colour only finite maps (normalize them to [0, 1] first)")
    table = get_colormap(colormap).to(values.device)
    size = table.shape[0]
    index = torch.floor(values * size).clamp(0, size - 1).long()
    return table[index]


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__
