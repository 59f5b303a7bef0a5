"""What the perturbation metric families share: baselines, units (pixels, patches, segments), ordered removals.

A *unit* is what a metric removes at once: a pixel (all channels), a square patch, or a segment.
Every sample gets a ``(N, *S)`` map from pixel to the rank of its unit in the removal order; the
input after removing the first :math:`c` units is ``where(rank < c, baseline, x)``. The perturbed
inputs of all samples and steps are built lazily, ``batch_size`` per forward (see
:func:`camkit.metrics._common.forward_scores`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from camkit.engine import ImageArg, ModelInput
from camkit.metrics._common import (
    InputsLike,
    MapsLike,
    batch_of,
    forward_scores,
    positive_int,
    prepare_maps,
    split_inputs,
)

__all__ = ["Fill", "constant", "fill", "patch_ids", "rank_units", "score_removals", "setup", "unit_means"]

#: A replacement value: a number, ``"min"``/``"max"``/``"mean"`` of each sample (Quantus's
#: ``"black"``/``"white"``/``"mean"``), ``"uniform"`` noise in [0, 1), a tensor broadcastable to the
#: input, or a function of the input.
Fill = float | str | Tensor | Callable[[Tensor], Tensor]


def setup(
    inputs: InputsLike, maps: MapsLike, batch_size: int, image_arg: ImageArg = None
) -> tuple[Tensor, ModelInput | None, Tensor, int]:
    """The checked image, its call, the maps resized to it (finite, else ``ValueError``) and ``batch_size``."""
    image, call = split_inputs(inputs, image_arg)
    cams = prepare_maps(maps, image.shape[0], image.shape[2:], image.device)
    return image, call, cams, batch_of(batch_size, image.device)


def fill(value: Fill, inputs: Tensor, generator: torch.Generator | None = None, name: str = "baseline") -> Tensor:
    """The replacement values, one per input value.

    Raises:
        ValueError: for an unknown string or a tensor that does not broadcast to the input.
        TypeError: for a value of another type.

    Example:
        >>> fill("min", torch.tensor([[[[1.0, 2.0]]], [[[3.0, 5.0]]]])).flatten().tolist()
        [1.0, 1.0, 3.0, 3.0]
    """
    dims = tuple(range(1, inputs.ndim))
    if isinstance(value, str):
        if value == "uniform":
            return torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype, device="cpu").to(inputs.device)
        stats = {"min": lambda: inputs.amin(dims, True), "max": lambda: inputs.amax(dims, True)}
        stats["mean"] = lambda: inputs.mean(dims, keepdim=True)
        if value not in stats:
            raise ValueError(
                f"{name} must be a number, 'min', 'max', 'mean', 'uniform', a tensor or a callable; got {value!r}"
            )
        return stats[value]().expand_as(inputs)
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, 'min', 'max', 'mean', 'uniform', a tensor or a callable; got a bool")
    if isinstance(value, (int, float)):
        return torch.full_like(inputs, float(value))
    made = value(inputs) if callable(value) and not isinstance(value, Tensor) else value
    if not isinstance(made, Tensor):
        raise TypeError(
            f"{name} must be a number, a string, a tensor or a callable returning one, got {type(made).__name__}"
        )
    try:
        return torch.broadcast_to(made.to(inputs), inputs.shape)
    except RuntimeError:
        raise ValueError(
            f"{name} of shape {tuple(made.shape)} does not broadcast to the input {tuple(inputs.shape)}"
        ) from None


def patch_ids(size: tuple[int, ...], patch_size: int, device: torch.device) -> tuple[Tensor, int]:
    r"""The patch of every pixel of a 2-D image, on a grid of ``patch_size`` squares centred as Quantus pads.

    An image whose side is not a multiple of the patch size gets partial patches at both borders
    (the padding :math:`p - (H \bmod p)` split floor/ceil before/after, as Quantus's ``get_padding_size``).

    Returns:
        ``(H, W)`` patch indices (row-major over the grid) and the number of patches.
    """
    if len(size) != 2:
        raise ValueError(f"patches need a 2-D input (N, C, H, W), got spatial size {size}")
    patch_size = positive_int(patch_size, "patch_size")
    axes = []
    for length in size:
        pad = (patch_size - length % patch_size) % patch_size
        axes.append((torch.arange(length, device=device) + pad // 2) // patch_size)
    across = math.ceil((size[1] + (patch_size - size[1] % patch_size) % patch_size) / patch_size)
    grid = axes[0].view(-1, 1) * across + axes[1].view(1, -1)
    return grid, int(grid.max()) + 1


def unit_means(cams: Tensor, units: Tensor, count: int, mean: bool) -> Tensor:
    """``(N, count)`` sum (or mean) of each sample's map over each unit; ``units`` is ``(N, *S)`` or ``(*S)``."""
    flat = cams.flatten(1).double()
    ids = units.reshape(-1).expand(flat.shape[0], -1) if units.ndim == cams.ndim - 1 else units.flatten(1)
    sums = torch.zeros(flat.shape[0], count, dtype=flat.dtype, device=flat.device).scatter_add_(1, ids, flat)
    if not mean:
        return sums
    sizes = torch.zeros_like(sums).scatter_add_(1, ids, torch.ones_like(flat))
    return sums / sizes.clamp(min=1)


def rank_units(values: Tensor, descending: bool = True) -> Tensor:
    """``(N, U)`` rank of each unit when sorted by ``values`` (stable: ties keep their index order)."""
    order = torch.argsort(values, dim=1, descending=descending, stable=True)
    positions = torch.arange(values.shape[1], device=values.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)  # the inverse permutation, without a second sort


def constant(value: Fill, inputs: Tensor, generator: torch.Generator | None = None) -> Tensor | float:
    """:func:`fill`, but a plain number stays a number (the removals then fill in place, nothing gathered)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return fill(value, inputs, generator)


def score_removals(
    model: nn.Module,
    inputs: Tensor,
    call: ModelInput | None,
    target: Callable[..., Tensor],
    pixel_rank: Tensor,
    samples: Tensor,
    counts: Tensor,
    base: Tensor | float,
    batch_size: int,
    insert: bool = False,
) -> Tensor:
    """Scores of ``samples[i]`` with its units of rank < ``counts[i]`` replaced by ``base`` (``insert``: put on it).

    ``base`` is a tensor like ``inputs`` or one number (see :func:`constant`).
    """
    spatial = [1] * (pixel_rank.ndim - 1)
    small = torch.int32 if pixel_rank[0].numel() < 2**31 - 1 else torch.int64  # ranks < pixels: half the traffic
    pixel_rank, counts = pixel_rank.to(small), counts.to(small)

    def make(part: slice) -> Tensor:
        rows = samples[part]
        changed = (pixel_rank.index_select(0, rows) < counts[part].view(-1, *spatial)).unsqueeze(1)
        if isinstance(base, float):
            if insert:
                return torch.where(changed, inputs.index_select(0, rows), base)
            return inputs.index_select(0, rows).masked_fill_(changed, base)
        first, second = (inputs[rows], base[rows]) if insert else (base[rows], inputs[rows])
        return torch.where(changed, first, second)

    return forward_scores(model, target, samples, make, batch_size, call)
