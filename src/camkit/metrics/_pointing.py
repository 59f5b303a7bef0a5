r"""Localization metrics: the pointing game and the energy-based pointing game.

Both compare a map with the ground-truth region of the object, given as boxes or as masks. They
need no model.

* Pointing game (Zhang et al., Top-down Neural Attention by Excitation Backprop, ECCV 2016): a hit
  when the map's maximum lies in the region, or within ``tolerance`` pixels of it (the paper uses
  15). The per-sample value is 1 (hit) or 0 (miss).
* Energy-based pointing game (Wang et al., Score-CAM, CVPR Workshops 2020): the share of the map's
  energy that falls inside the region, for a non-negative map :math:`L` and region :math:`B`:

  .. math:: \mathrm{Proportion} = \frac{\sum_{(i,j) \in B} L_{ij}}{\sum_{(i,j)} L_{ij}}

Boxes are ``(x1, y1, x2, y2)`` in pixels of the resized map (``size``): pixel ``(y, x)`` is inside
when its centre ``(x + 0.5, y + 0.5)`` is, so the integer box ``(0, 0, W, H)`` covers the image.
A sample may have several boxes ``(K, 4)``; the region is their union.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor

from camkit.metrics._common import MapsLike, MetricResult, make_result, prepare_maps, valid_rows

__all__ = ["BoxesLike", "boxes_to_masks", "energy_pointing_game", "pointing_game"]

#: Boxes: ``(N, 4)``, or one ``(4,)`` / ``(K, 4)`` box array per sample.
BoxesLike: TypeAlias = "Tensor | np.ndarray[Any, Any] | Sequence[Any]"


def boxes_to_masks(boxes: BoxesLike, size: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """Rasterize boxes ``(x1, y1, x2, y2)`` into boolean masks ``(N, H, W)`` (pixel centres inside).

    Args:
        boxes: ``(N, 4)``, or a list with one ``(4,)`` or ``(K, 4)`` set of boxes per sample.
        size: ``(H, W)``.
        device: where the masks go (default: the boxes' device, or the CPU).

    Returns:
        The union of each sample's boxes as a mask.

    Raises:
        ValueError: for boxes that are not 4 numbers each, or a ``size`` that is not 2-D.

    Example:
        >>> boxes_to_masks(torch.tensor([[1, 0, 3, 1]]), (2, 4)).int()
        tensor([[[0, 1, 1, 0],
                 [0, 0, 0, 0]]], dtype=torch.int32)
    """
    if len(size) != 2:
        raise ValueError(f"boxes need a 2-D size (H, W), got {tuple(size)}")
    if isinstance(boxes, (Tensor, np.ndarray)):
        per_sample = [boxes[i] for i in range(boxes.shape[0])] if boxes.ndim == 2 else None
        if per_sample is None:
            raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    else:
        per_sample = list(boxes)
    if device is None:
        device = boxes.device if isinstance(boxes, Tensor) else None
    height, width = int(size[0]), int(size[1])
    ys = torch.arange(height, device=device, dtype=torch.float64).view(-1, 1) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float64).view(1, -1) + 0.5
    masks = []
    for index, item in enumerate(per_sample):
        box = item if isinstance(item, Tensor) else torch.as_tensor(np.asarray(item, dtype=np.float64))
        if box.numel() == 0 or box.numel() % 4:
            raise ValueError(f"boxes[{index}] must be (x1, y1, x2, y2) or (K, 4), got {item!r}")
        box = box.to(device=device, dtype=torch.float64).reshape(-1, 4)
        inside = (
            (xs.unsqueeze(0) >= box[:, 0, None, None])
            & (xs.unsqueeze(0) <= box[:, 2, None, None])
            & (ys.unsqueeze(0) >= box[:, 1, None, None])
            & (ys.unsqueeze(0) <= box[:, 3, None, None])
        )
        masks.append(inside.any(dim=0))
    return torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.bool, device=device)


def _maps_device(maps: MapsLike) -> torch.device:
    first = maps[0] if isinstance(maps, (list, tuple)) and len(maps) else maps
    return first.device if isinstance(first, Tensor) else torch.device("cpu")


def _map_size(maps: MapsLike) -> tuple[int, int]:
    layers = list(maps) if isinstance(maps, (list, tuple)) else [maps]
    shapes = [tuple(np.shape(layer)) for layer in layers]
    if not shapes or any(len(s) < 3 for s in shapes):
        raise ValueError(f"maps must have shape (N, H, W) or (N, 1, H, W), got {shapes}")
    return max(s[-2] for s in shapes), max(s[-1] for s in shapes)


def _prepare(
    maps: MapsLike, boxes: BoxesLike | None, masks: Tensor | np.ndarray[Any, Any] | None, size: Sequence[int] | None
) -> tuple[Tensor, Tensor, Tensor]:
    if (boxes is None) == (masks is None):
        raise ValueError("pass exactly one of boxes=(N, 4) or per-sample box lists, and masks=(N, *S)")
    device = _maps_device(maps)
    if masks is not None:
        region = torch.as_tensor(masks).to(device)
        if region.ndim >= 4 and region.shape[1] == 1:
            region = region.squeeze(1)
        if size is not None and tuple(region.shape[1:]) != tuple(size):
            raise ValueError(f"masks have size {tuple(region.shape[1:])} but size={tuple(size)} was given")
        region = region.bool() if region.dtype == torch.bool else region != 0
    elif boxes is not None:
        region = boxes_to_masks(boxes, size if size is not None else _map_size(maps), device)
    batch = region.shape[0]
    cams = prepare_maps(maps, batch, region.shape[1:], device)
    empty = ~region.flatten(1).any(dim=1)
    if bool(empty.any()):
        raise ValueError(
            f"the ground-truth region of sample(s) {empty.nonzero().flatten().tolist()} is empty: every sample needs "
            "a box or mask that covers at least one pixel"
        )
    return cams, region, valid_rows(cams)


def pointing_game(
    maps: MapsLike,
    boxes: BoxesLike | None = None,
    masks: Tensor | np.ndarray[Any, Any] | None = None,
    *,
    size: Sequence[int] | None = None,
    tolerance: float = 0.0,
) -> MetricResult:
    """Pointing game: 1 when the map's maximum falls in the object's region (within ``tolerance``), else 0.

    Zhang et al., Top-down Neural Attention by Excitation Backprop, ECCV 2016. When several pixels
    share the maximum, the first in row-major order is used. A flat map has no maximum point: its
    value is NaN and the mean skips it; a map holding NaN/inf is refused (``ValueError``).

    Args:
        maps: one map per sample (any method's output), resized to ``size``.
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)``, or one ``(K, 4)`` set per sample.
        masks: ``(N, *S)`` boolean (or 0/1) regions, instead of boxes.
        size: the spatial size boxes refer to (default: the masks' size, else the maps' size).
        tolerance: a hit also when a region pixel lies within this Euclidean distance (pixels) of the
            maximum; the paper uses 15.

    Returns:
        ``per_sample`` hits (1.0 / 0.0 / NaN) and their ``mean``, the pointing accuracy.

    Raises:
        ValueError: without exactly one of ``boxes`` and ``masks``, for an empty region, a negative
            ``tolerance``, or maps of the wrong shape or batch.

    Example:
        >>> cam = torch.zeros(1, 4, 4)
        >>> cam[0, 1, 2] = 1.0  # the maximum is at row 1, column 2
        >>> pointing_game(cam, boxes=torch.tensor([[2, 0, 4, 2]])).mean
        1.0
        >>> pointing_game(cam, boxes=torch.tensor([[0, 0, 2, 2]])).mean
        0.0
        >>> pointing_game(cam, boxes=torch.tensor([[0, 0, 2, 2]]), tolerance=1).mean
        1.0
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance!r}")
    cams, region, valid = _prepare(maps, boxes, masks, size)
    flat = torch.nan_to_num(cams.flatten(1))
    peak = flat.argmax(dim=1)
    valid = valid & (flat.amax(dim=1) > flat.amin(dim=1))
    if tolerance == 0:
        hit = region.flatten(1).gather(1, peak.unsqueeze(1)).squeeze(1)
    else:
        shape = region.shape[1:]
        grid = torch.stack(
            torch.meshgrid(*[torch.arange(s, device=cams.device) for s in shape], indexing="ij")
        ).flatten(1)  # (D, P)
        where = grid[:, peak].T  # (N, D)
        distance2 = ((grid.unsqueeze(0) - where.unsqueeze(2)) ** 2).sum(dim=1)  # (N, P)
        hit = (region.flatten(1) & (distance2 <= tolerance**2)).any(dim=1)
    values = hit.to(cams.dtype)
    return make_result(torch.where(valid, values, torch.full_like(values, float("nan"))))


def energy_pointing_game(
    maps: MapsLike,
    boxes: BoxesLike | None = None,
    masks: Tensor | np.ndarray[Any, Any] | None = None,
    *,
    size: Sequence[int] | None = None,
) -> MetricResult:
    r"""Energy-based pointing game: the share of the map's energy inside the object's region.

    Wang et al., Score-CAM, CVPR Workshops 2020:
    :math:`\sum_{(i,j) \in B} L_{ij} / \sum_{(i,j)} L_{ij}`. Maps must be non-negative (e.g. the
    normalized maps extractors return). An all-zero map has no energy: its value is NaN and the mean
    skips it.

    Args:
        maps: one non-negative map per sample (any method's output), resized to ``size``.
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)``, or one ``(K, 4)`` set per sample.
        masks: ``(N, *S)`` boolean (or 0/1) regions, instead of boxes.
        size: the spatial size boxes refer to (default: the masks' size, else the maps' size).

    Returns:
        ``per_sample`` proportions in ``[0, 1]`` and their ``mean``.

    Raises:
        ValueError: for negative map values, without exactly one of ``boxes`` and ``masks``, for an
            empty region, or maps of the wrong shape or batch.

    Example:
        >>> cam = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
        >>> energy_pointing_game(cam, boxes=torch.tensor([[1, 0, 2, 2]])).mean  # (3 + 4) / 8
        0.875
    """
    cams, region, valid = _prepare(maps, boxes, masks, size)
    cams = torch.where(valid.view(-1, *[1] * (cams.ndim - 1)), cams, torch.zeros_like(cams))
    if bool((cams < 0).any()):
        raise ValueError(
            f"maps must be non-negative for the energy pointing game, got a minimum of {float(cams.min()):.4g}: "
            "apply ReLU or min-max normalize them (camkit.ops.normalize)"
        )
    inside = (cams * region).flatten(1).sum(dim=1)
    total = cams.flatten(1).sum(dim=1)
    share = inside / torch.where(total > 0, total, torch.ones_like(total))
    share = torch.where(valid & (total > 0), share, torch.full_like(share, float("nan")))
    return make_result(share)
