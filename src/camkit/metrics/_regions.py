r"""Faithfulness by region removal: region perturbation (AOPC), selectivity, IROF.

Regions are square patches on a grid (region perturbation, selectivity) or segments such as
superpixels (IROF); each is ranked by the map's sum (patches) or mean (segments) over it and
removed in that order, cumulatively. All samples and steps are scored batched, in eval mode, under
``inference_mode``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camkit.engine import ImageArg, eval_mode
from camkit.metrics._common import CurveResult, InputsLike, MapsLike, TargetLike, clean_scores, nanmean, positive_int
from camkit.metrics._perturb import Fill, constant, patch_ids, rank_units, score_removals, setup, unit_means

__all__ = ["irof", "region_perturbation", "selectivity"]


def _patch_curve(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike,
    patch_size: int,
    order: str,
    regions: int | None,
    baseline: Fill,
    generator: torch.Generator | None,
    batch_size: int,
    image_arg: ImageArg,
) -> tuple[Tensor, Tensor, int]:
    image, call, cams, batch_size = setup(inputs, maps, batch_size, image_arg)
    n = image.shape[0]
    ids, count = patch_ids(tuple(image.shape[2:]), patch_size, image.device)
    sums = unit_means(cams, ids, count, mean=False)
    if order == "random":
        sums = torch.rand(sums.shape, generator=generator, dtype=sums.dtype).to(sums.device)
    elif order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf', 'lerf' or 'random', got {order!r}")
    rank = rank_units(sums, descending=order != "lerf").gather(1, ids.reshape(1, -1).expand(n, -1)).view_as(cams)
    steps = count if regions is None else min(positive_int(regions, "regions_evaluation"), count)
    counts = torch.arange(1, steps + 1, device=image.device)
    samples = torch.arange(n, device=image.device).repeat_interleave(steps)
    with eval_mode(model):
        target, clean = clean_scores(model, image, targets, batch_size, call)
        base = constant(baseline, image, generator)
        scores = score_removals(model, image, call, target, rank, samples, counts.repeat(n), base, batch_size)
    return clean.to(scores.dtype), scores.view(n, steps), count


def region_perturbation(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    patch_size: int = 9,
    order: str = "morf",
    regions_evaluation: int = 100,
    baseline: Fill = "uniform",
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    image_arg: ImageArg = None,
) -> CurveResult:
    r"""Region perturbation: the area over the perturbation curve (AOPC) as patches are removed (MoRF: higher better).

    Samek et al., Evaluating the Visualization of What a Deep Neural Network Has Learned, IEEE TNNLS
    2017 (arXiv 2015). The image is cut into ``patch_size`` squares (a grid; partial patches at the
    borders when the side is not a multiple), ranked by the map's sum over each; step :math:`k`
    replaces the first :math:`k` patches (``"morf"``: most relevant first, ``"lerf"``: least,
    ``"random"``) by the baseline, for :math:`L` = ``regions_evaluation`` steps:

    .. math:: \mathrm{AOPC} = \frac{1}{L + 1} \sum_{k=0}^{L} \big(f(x^{(0)}) - f(x^{(k)})\big)

    Args:
        model: the classifier; run in eval mode.
        inputs: ``(N, C, H, W)`` model inputs.
        maps: one map per sample.
        targets: the score (default: the predicted class's probability).
        patch_size: the patch side (the paper: 9 × 9; Quantus: 8).
        order: ``"morf"``, ``"lerf"`` or ``"random"``.
        regions_evaluation: the number of steps :math:`L` (the paper and Quantus: 100; at most the
            number of patches).
        baseline: what replaces a patch: ``"uniform"`` noise in [0, 1) as in the paper (default),
            a number, ``"min"`` (Quantus's ``"black"``), ``"mean"``, a tensor or a function.
        generator: random generator for ``"uniform"`` and ``order="random"``.
        batch_size: perturbed inputs per forward.
        image_arg: which argument of a tuple/dict ``inputs`` is the image.

    Returns:
        Per-sample AOPC, its mean, the ``curve`` :math:`f(x^{(0)}) - f(x^{(k)})`, ``k = 0..L`` and the
        ``fractions`` :math:`k / L`.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x, cam = torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4)
        >>> result = region_perturbation(model, x, cam, 0, patch_size=2, baseline=0.0)
        >>> result.curve.shape, float(result.curve[0, 0])
        (torch.Size([1, 5]), 0.0)
    """
    clean, scores, _ = _patch_curve(
        model, inputs, maps, targets, patch_size, order, regions_evaluation, baseline, generator, batch_size, image_arg
    )
    curve = torch.cat([torch.zeros_like(clean).unsqueeze(1), clean.unsqueeze(1) - scores], dim=1)
    aopc = curve.mean(dim=1)
    fractions = torch.arange(curve.shape[1], dtype=curve.dtype, device=curve.device) / scores.shape[1]
    return CurveResult(aopc, nanmean(aopc), curve, fractions)


def selectivity(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    patch_size: int = 8,
    baseline: Fill = 0.0,
    batch_size: int = 64,
    image_arg: ImageArg = None,
) -> CurveResult:
    r"""Selectivity: how fast the score falls as the most relevant patches are removed (lower area is better).

    Montavon, Samek & Müller, Methods for Interpreting and Understanding Deep Neural Networks,
    Digital Signal Processing 2018. Patches (as in :func:`region_perturbation`) are removed most
    relevant first until none is left; the curve is :math:`s_0 = f(x), s_1, \dots, s_P` and the
    per-sample value its area over the removed fraction :math:`k / P` (trapezoid rule).

    Args:
        model: the classifier; run in eval mode.
        inputs: ``(N, C, H, W)`` model inputs.
        maps: one map per sample.
        targets: the score (default: the predicted class's probability).
        patch_size: the patch side (Quantus's default, 8).
        baseline: the replacement: a number (default 0), ``"min"`` (Quantus's ``"black"``), ...
        batch_size: perturbed inputs per forward.
        image_arg: which argument of a tuple/dict ``inputs`` is the image.

    Returns:
        Per-sample areas, their mean, the ``curve`` ``(N, P + 1)`` and its ``fractions``.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> selectivity(model, torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4), 0, patch_size=2).fractions.tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    clean, scores, count = _patch_curve(
        model, inputs, maps, targets, patch_size, "morf", None, baseline, None, batch_size, image_arg
    )
    curve = torch.cat([clean.unsqueeze(1), scores], dim=1)
    fractions = torch.arange(count + 1, dtype=curve.dtype, device=curve.device) / count
    area = torch.trapezoid(curve, fractions, dim=1)
    return CurveResult(area, nanmean(area), curve, fractions)


def _segments(segments: Any, image: Tensor) -> Tensor:
    if isinstance(segments, str):
        if segments != "slic":
            raise ValueError(f"segments must be 'slic', a patch size or (N, H, W) labels, got {segments!r}")
        try:
            from skimage.segmentation import slic
        except ImportError:  # pragma: no cover - scikit-image comes with the test extras
            raise ImportError(
                "segments='slic' needs scikit-image (pip install scikit-image); or pass your own (N, H, W) labels"
            ) from None
        pictures = image.detach().cpu().double().movedim(1, -1).numpy()
        found = np.stack([slic(picture, start_label=0) for picture in pictures])
        return torch.from_numpy(found).to(image.device)
    if isinstance(segments, (int, np.integer)) and not isinstance(segments, bool):
        ids, _ = patch_ids(tuple(image.shape[2:]), int(segments), image.device)
        return ids.expand(image.shape[0], *ids.shape)
    labels = torch.as_tensor(segments).to(image.device)
    if labels.shape != (image.shape[0], *image.shape[2:]) or labels.is_floating_point():
        raise ValueError(
            f"segments must be integer labels (N, *S) = {(image.shape[0], *image.shape[2:])}, got "
            f"{labels.dtype} {tuple(labels.shape)}"
        )
    return labels


def _dense_labels(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Each sample's labels renumbered 0..K-1 in increasing order ``(N, *S)`` and the counts K ``(N,)``.

    Example:
        >>> ids, sizes = _dense_labels(torch.tensor([[[7, 3], [7, 9]], [[2, 2], [2, 2]]]))
        >>> ids.tolist(), sizes.tolist()
        ([[[1, 0], [1, 2]], [[0, 0], [0, 0]]], [3, 1])
    """
    flat = labels.flatten(1)
    ordered, order = flat.sort(dim=1)
    starts = torch.ones_like(ordered, dtype=torch.long)
    starts[:, 1:] = (ordered[:, 1:] != ordered[:, :-1]).long()
    dense = starts.cumsum(dim=1) - 1
    ids = torch.empty_like(dense).scatter_(1, order, dense)
    return ids.view_as(labels), dense[:, -1] + 1


def irof(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    segments: str | int | Tensor | np.ndarray[Any, Any] = "slic",
    baseline: Fill = "mean",
    batch_size: int = 64,
    image_arg: ImageArg = None,
) -> CurveResult:
    r"""IROF, Iterative Removal Of Features: the area over the score curve as segments are removed (higher is better).

    Rieger & Hansen, IROF: a Low Resource Evaluation Metric for Explanation Methods, ICLR Workshop
    2020. The image is split into segments (SLIC superpixels in the paper), ranked by the map's mean
    over each, and removed most relevant first (replaced by the baseline, the image's mean in the
    paper), cumulatively. With :math:`S` segments and :math:`s_k` the score after :math:`k` removals,

    .. math:: \mathrm{IROF} = 1 - \sum_{k=1}^{S} \frac{1}{S} \cdot \frac{s_{k-1} + s_k}{2 s_0}

    the area over the normalized curve :math:`s_k / s_0`, in [0, 1] for probabilities that fall.

    Args:
        model: the classifier; run in eval mode.
        inputs: ``(N, C, H, W)`` model inputs.
        maps: one map per sample.
        targets: the score (default: the predicted class's probability); must be positive.
        segments: ``"slic"`` (scikit-image's SLIC with its defaults, computed on the CPU), an int
            (square patches of that side), or ``(N, H, W)`` integer labels.
        baseline: the replacement: ``"mean"`` of each sample (default), a number, ``"min"``, ...
        batch_size: perturbed inputs per forward.
        image_arg: which argument of a tuple/dict ``inputs`` is the image.

    Returns:
        Per-sample IROF, its mean, the ``curve`` :math:`s_k / s_0` padded with NaN past a sample's
        segment count, and ``fractions`` ``(N, S_max + 1)``.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> result = irof(model, torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4), 0, segments=2)
        >>> result.curve.shape
        torch.Size([1, 5])
    """
    image, call, cams, batch_size = setup(inputs, maps, batch_size, image_arg)
    n = image.shape[0]
    labels = _segments(segments, image)
    ids, sizes = _dense_labels(labels)
    most = int(sizes.max())
    means = unit_means(cams, ids, most, mean=True)
    means = torch.where(torch.arange(most, device=image.device) < sizes.unsqueeze(1), means, -torch.inf)
    rank = rank_units(means).gather(1, ids.flatten(1)).view_as(cams)
    samples = torch.arange(n, device=image.device).repeat_interleave(sizes)
    ladder = torch.arange(1, most + 1, device=image.device).expand(n, most)
    counts = ladder[ladder <= sizes.unsqueeze(1)]  # 1..size of each sample, samples one after the other
    with eval_mode(model):
        target, clean = clean_scores(model, image, targets, batch_size, call)
        base = constant(baseline, image)
        scores = score_removals(model, image, call, target, rank, samples, counts, base, batch_size)
    curve = torch.full((n, most + 1), float("nan"), dtype=torch.float64, device=image.device)
    curve[:, 0] = 1.0
    curve[samples, counts] = scores.double() / clean.double()[samples]
    fractions = torch.arange(most + 1, device=image.device).double() / sizes.unsqueeze(1)
    steps = torch.arange(1, most + 1, device=image.device) <= sizes.unsqueeze(1)
    widths = torch.where(steps, 1.0 / sizes.unsqueeze(1), torch.zeros((), dtype=torch.float64, device=image.device))
    heights = (torch.nan_to_num(curve[:, :-1]) + torch.nan_to_num(curve[:, 1:])) / 2
    value = 1 - (widths * heights).sum(dim=1)
    value = torch.where(clean > 0, value, torch.full_like(value, float("nan")))
    return CurveResult(value, nanmean(value), curve, fractions)
