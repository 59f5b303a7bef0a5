r"""Black-box methods: maps from the model's scores on perturbed inputs, without reading any layer.

RISE and occlusion are registered with ``black_box=True``: they take no target layer, their weight
function is handed the model input as ``A`` and returns the map at the input's size. They work on
any model that maps an image to scores (TorchScript included, through :func:`camkit.explain`,
:func:`camkit.compare` and the :mod:`camkit.compat.gradcam` classes, which are given the input).
Every perturbed input runs through the engine's probe: eval mode, ``inference_mode``,
``batch_size`` inputs per forward, channels-last batches on CPU, a progress line on long runs.

:func:`gaussian_blur` is the blurred baseline shared with Group-CAM (:mod:`camkit.methods.masking`)
and the ``baseline="blur"`` of occlusion.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from camkit.ops import interpolation_mode
from camkit.registry import MethodContext, Option, Probe, register

__all__ = ["gaussian_blur", "occlusion", "rise", "rise_grids", "rise_masks"]


def input_and_probe(ctx: MethodContext, name: str) -> tuple[Tensor, Probe]:
    """The captured model input and the probe of a method that re-runs the model.

    Raises:
        ValueError: when the extractor captured no input (the forward ran before it was created).
    """
    if ctx.input is None or ctx.probe is None:
        raise ValueError(f"{name} re-runs the model on its input: run the forward after creating the extractor")
    return ctx.input, ctx.probe


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int ``>= 1``.

    Raises:
        ValueError: naming the option and the value.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def gaussian_blur(x: Tensor, kernel_size: int = 51, sigma: float = 50.0) -> Tensor:
    r"""Blur every channel of ``x`` ``(N, C, *S)`` with a separable Gaussian kernel (reflected borders).

    .. math:: k(t) \propto \exp\left(-\frac{t^2}{2\sigma^2}\right),\quad |t| \le r

    with radius :math:`r = \lfloor \text{kernel\_size} / 2 \rfloor`, cut to :math:`S_d - 1` along a
    spatial dim shorter than the kernel (so small inputs can be reflected). The defaults (51, 50)
    are Group-CAM's blurred baseline.

    Args:
        x: the batch, 1 to 3 spatial dims.
        kernel_size: odd kernel width in pixels.
        sigma: the Gaussian's standard deviation in pixels.

    Returns:
        The blurred batch, same shape and dtype.

    Raises:
        ValueError: for an even or non-positive ``kernel_size`` or a non-positive ``sigma``.

    Example:
        >>> x = torch.zeros(1, 1, 5, 5)
        >>> x[0, 0, 2, 2] = 1.0
        >>> blurred = gaussian_blur(x, 3, 1.0)
        >>> round(float(blurred.sum()), 4), bool(blurred[0, 0, 2, 2] < 1)
        (1.0, True)
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
    if not float(sigma) > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    out = x
    for dim in range(2, x.ndim):
        radius = min(kernel_size // 2, x.shape[dim] - 1)
        if radius == 0:
            continue
        t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
        kernel = torch.exp(-(t**2) / (2 * float(sigma) ** 2))
        kernel = (kernel / kernel.sum()).to(x.dtype).view(1, 1, -1)
        moved = out.movedim(dim, -1)
        rows = moved.reshape(-1, 1, moved.shape[-1])
        blurred = F.conv1d(F.pad(rows, (radius, radius), mode="reflect"), kernel)
        out = blurred.view(moved.shape).movedim(-1, dim)
    return out.contiguous()


# RISE ------------------------------------------------------------------------------------------


def rise_grids(
    num_masks: int, spatial_dims: int, cell_size: int, p: float, size: Sequence[int], generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """The random draws of RISE: binary grids and the shift of each mask (on the generator's device).

    Args:
        num_masks: how many masks.
        spatial_dims: the input's spatial dims (2 for images).
        cell_size: cells per side of each grid (the paper's :math:`s`).
        p: probability of keeping a cell.
        size: the input's spatial size (the shifts are drawn below one cell's size).
        generator: a seeded ``torch.Generator`` for reproducible masks, or ``None``.

    Returns:
        ``grids`` ``(M, 1, s, ..., s)`` of 0/1 float32 and ``shifts`` ``(M, spatial_dims)`` int64.

    Example:
        >>> grids, shifts = rise_grids(3, 2, 7, 0.5, (224, 224), torch.Generator().manual_seed(0))
        >>> grids.shape, shifts.shape, bool(((shifts >= 0) & (shifts < 32)).all())
        (torch.Size([3, 1, 7, 7]), torch.Size([3, 2]), True)
    """
    device = generator.device if generator is not None else torch.device("cpu")
    shape = (num_masks, 1, *[cell_size] * spatial_dims)
    grids = (torch.rand(shape, generator=generator, device=device) < p).float()
    cells = [-(-int(n) // cell_size) for n in size]
    shifts = torch.stack(
        [torch.randint(0, cell, (num_masks,), generator=generator, device=device) for cell in cells], dim=1
    )
    return grids, shifts


def rise_masks(grids: Tensor, shifts: Tensor, size: Sequence[int]) -> Tensor:
    r"""RISE's masks: each grid upsampled (bi/trilinear) to :math:`(s+1)\lceil H/s\rceil` and cropped at its shift.

    Args:
        grids: ``(M, 1, s, ..., s)`` binary grids from :func:`rise_grids`.
        shifts: ``(M, d)`` crop offsets, each below one cell.
        size: the input's spatial size ``(H, W)`` (``d`` entries).

    Returns:
        Masks ``(M, *size)`` in ``[0, 1]``.

    Example:
        >>> grids, shifts = rise_grids(2, 2, 4, 0.5, (16, 16), torch.Generator().manual_seed(0))
        >>> rise_masks(grids, shifts, (16, 16)).shape
        torch.Size([2, 16, 16])
    """
    size = tuple(int(n) for n in size)
    s = grids.shape[2:]
    cells = [-(-n // k) for n, k in zip(size, s, strict=True)]
    big = [(k + 1) * c for k, c in zip(s, cells, strict=True)]
    out = F.interpolate(grids, size=big, mode=interpolation_mode(len(size)), align_corners=False)[:, 0]
    shifts = shifts.to(out.device)
    for d, n in enumerate(size):  # crop dim d at each mask's own offset
        view = [1] * out.ndim
        view[d + 1] = n
        index = shifts[:, d].view(-1, *[1] * len(size)) + torch.arange(n, device=out.device).view(view)
        target = list(out.shape)
        target[d + 1] = n
        out = out.gather(d + 1, index.expand(target))
    return out


@register(
    "rise",
    class_name="RISE",
    black_box=True,
    options={
        "num_masks": Option(1000, (int,), "number of random masks (the paper uses 4000 for ResNet-50)"),
        "cell_size": Option(7, (int,), "cells per side of each mask's low-resolution grid (the paper's s)"),
        "p": Option(0.5, (float, int), "probability of keeping a cell"),
        "generator": Option(None, (torch.Generator,), "a torch.Generator for reproducible masks"),
        "centered": Option(True, (bool,), "subtract the mean score of the masked inputs (False: the paper's sum)"),
    },
    positional=("batch_size",),
    cost="num_masks",
    stochastic=True,
    output="map",
    notes=(
        "Black-box: no target layer (one given is ignored), the map has the input's size. The masks are "
        "shared by the samples of a batch; they are built ``batch_size`` masked inputs at a time from grids "
        "drawn once (``generator`` makes them reproducible), so memory does not grow with ``num_masks``. "
        "The default ``num_masks=1000`` is a quarter of the paper's 4000 for ResNet-50, at a quarter of the cost: "
        "centered (below), the map's mass share on the patch of the tests' known-answer model is 0.48 with 1000 "
        "masks and 0.53 with 4000; pass ``num_masks=4000`` for the paper's setting. The score is the target's "
        "(the logit for a class index, as in the other "
        "perturbation methods); the paper uses the softmax probability. With ``centered=True`` (the default) "
        "the mean score :math:`\\bar Y` of the masked inputs is subtracted: the map is the paper's minus "
        ":math:`\\bar Y \\sum_i M_i / (N p)`, which is :math:`\\bar Y` up to the masks' sampling noise. The "
        "normalized maps agree in expectation, but the centered one does not carry that noise (large when the "
        "score is a logit far from 0), does not depend on the score's offset, and is signed (ReLU keeps the "
        "regions that raise the score, as for every CAM). ``centered=False`` is the paper's estimator; give it "
        "a non-negative score (a probability), as the paper does, or its ReLU can remove the map."
    ),
    needs_gradients=False,
    family="perturbation",
    summary="RISE: random masks weighted by the score of the input they keep (black-box).",
    paper="Petsiuk et al., RISE, BMVC 2018",
)
def rise(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""RISE map :math:`L = \frac{1}{N p} \sum_{i=1}^{N} \big(Y(X \odot M_i) - c\big)\, M_i`.

    Each mask :math:`M_i` is an :math:`s \times s` grid whose cells are kept with probability
    :math:`p`, upsampled bilinearly to :math:`(s+1)\lceil H/s \rceil` and cropped to :math:`H \times W`
    at a random shift below one cell (:func:`rise_grids`, :func:`rise_masks`). With ``centered``
    (the default) :math:`c = \bar Y = \frac1N \sum_i Y(X \odot M_i)`; with ``centered=False``
    :math:`c = 0`, the paper's formula. Options: ``num_masks`` (:math:`N`), ``cell_size``
    (:math:`s`), ``p``, ``generator``, ``centered``.
    """
    x, probe = input_and_probe(ctx, "RISE")
    num = positive_int("num_masks", ctx.options["num_masks"])
    cells = positive_int("cell_size", ctx.options["cell_size"])
    p = float(ctx.options["p"])
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {ctx.options['p']!r}")
    n, size = x.shape[0], tuple(x.shape[2:])
    grids, shifts = rise_grids(num, len(size), cells, p, size, ctx.options["generator"])
    total = torch.zeros(n, *size, dtype=a.dtype, device=x.device)
    score_sum = torch.zeros(n, dtype=a.dtype, device=x.device)
    mask_sum = torch.zeros(size, dtype=a.dtype, device=x.device)
    ones = [1] * len(size)
    for _, part in probe.chunks(n * num, label="masked inputs"):
        row = torch.arange(part.start, part.stop, device=x.device)
        first, last = part.start // n, (part.stop - 1) // n + 1
        dtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32
        masks = rise_masks(grids[first:last].to(x.device, dtype), shifts[first:last], size)
        mask, sample = masks[row // n - first], row % n
        scores = probe.scores(x[sample] * mask.unsqueeze(1).to(x.dtype), sample).to(a.dtype)
        total.index_add_(0, sample, scores.view(-1, *ones) * mask.to(a.dtype))
        score_sum.index_add_(0, sample, scores)
        mask_sum += mask[sample == 0].to(a.dtype).sum(0)  # every mask once (the samples share them)
    if ctx.options["centered"]:
        total -= (score_sum / num).view(-1, *ones) * mask_sum
    return total / (num * p)


# occlusion -------------------------------------------------------------------------------------


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of each window along one dim: every ``stride``, plus one flush with the end.

    Example:
        >>> window_starts(10, 4, 3), window_starts(3, 8, 2)
        ([0, 3, 6], [0])
    """
    window = min(window, size)
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


_BASELINES = ("mean", "blur")


def occlusion_baseline(x: Tensor, baseline: Any) -> Tensor:
    """What an occluded window holds: a value, each channel's mean (``"mean"``) or the blurred input (``"blur"``).

    Raises:
        ValueError: for another string or type.
    """
    if isinstance(baseline, str):
        if baseline == "mean":
            return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x)
        if baseline == "blur":
            return gaussian_blur(x)
    elif isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    raise ValueError(f"baseline must be a number, 'mean' or 'blur', got {baseline!r}")


@register(
    "occlusion",
    class_name="Occlusion",
    black_box=True,
    options={
        "window": Option(32, (int,), "side of the occluding window in pixels (cut to the input's size)"),
        "stride": Option(16, (int,), "step between windows in pixels"),
        "baseline": Option(
            0.0, (float, int, str), "what a window holds: a value, 'mean' (each channel's mean) or 'blur'"
        ),
    },
    positional=("batch_size",),
    cost="(-(-(224 - min(window, 224)) // stride) + 1) ** 2 + 1",
    output="map",
    notes=(
        "Black-box: no target layer (one given is ignored), the map has the input's size. Windows start every "
        "``stride`` pixels along each dim, plus one flush with the far edge, so every pixel is covered; the "
        "cost shown is for a 224x224 input. The default baseline 0 is the dataset mean of a normalized input "
        "(Zeiler & Fergus occlude with a gray square)."
    ),
    needs_gradients=False,
    family="perturbation",
    summary="Occlusion: score drop when a sliding window is occluded, averaged per pixel (black-box).",
    paper="Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
)
def occlusion(a: Tensor, g: None, ctx: MethodContext) -> Tensor:
    r"""Occlusion map :math:`L(u) = \frac{1}{|W_u|} \sum_{w \in W_u} \big(Y(X) - Y(X_{w \leftarrow b})\big)`.

    :math:`W_u` are the windows that cover pixel :math:`u`, and :math:`X_{w \leftarrow b}` is the
    input with window :math:`w` replaced by the baseline :math:`b`. Options: ``window``, ``stride``,
    ``baseline`` (a value, ``"mean"``: each channel's mean, ``"blur"``: :func:`gaussian_blur`).
    """
    x, probe = input_and_probe(ctx, "occlusion")
    window = positive_int("window", ctx.options["window"])
    stride = positive_int("stride", ctx.options["stride"])
    base = occlusion_baseline(x, ctx.options["baseline"])
    n, size = x.shape[0], tuple(x.shape[2:])
    starts = [window_starts(s, window, stride) for s in size]
    corners = torch.tensor(list(itertools.product(*starts)), device=x.device).view(-1, len(size))
    grids = [torch.arange(s, device=x.device) for s in size]
    widths = [min(window, s) for s in size]

    def windows(index: Tensor) -> Tensor:
        """Boolean masks ``(B, *S)`` of the windows ``index``."""
        inside = torch.ones(index.shape[0], *size, dtype=torch.bool, device=x.device)
        for d, (grid, width) in enumerate(zip(grids, widths, strict=True)):
            start = corners[index, d].view(-1, *[1] * len(size))
            view = [1] * (len(size) + 1)
            view[d + 1] = size[d]
            pos = grid.view(view)
            inside = inside & (pos >= start) & (pos < start + width)
        return inside

    # sums in float64 (where the device has it): k equal float32 drops then average to exactly that drop,
    # so a map whose windows all score the same is exactly flat (and normalizes to zeros, not to noise)
    acc = a.dtype if x.device.type == "mps" else torch.float64
    samples = torch.arange(n, device=x.device)
    clean = probe.scores(x, samples).to(a.dtype)
    count = windows(torch.arange(corners.shape[0], device=x.device)).sum(0).to(acc)
    total = torch.zeros(n, *size, dtype=acc, device=x.device)
    for _, part in probe.chunks(n * corners.shape[0], label="occluded inputs"):
        row = torch.arange(part.start, part.stop, device=x.device)
        sample, inside = row % n, windows(row // n)
        occluded = torch.where(inside.unsqueeze(1), base[sample], x[sample])
        drop = clean[sample] - probe.scores(occluded, sample).to(a.dtype)
        total.index_add_(0, sample, drop.to(acc).view(-1, *[1] * len(size)) * inside.to(acc))
    return (total / count).to(a.dtype)
