r"""Localisation: does the map's relevance lie on the object? Maps against a binary mask or boxes.

The region :math:`GT` of a sample is a boolean mask ``(N, *S)`` or the union of its boxes
``(x1, y1, x2, y2)`` (see :func:`camkit.metrics.boxes_to_masks`); maps are resized to the region's
size. An empty region is refused (``ValueError``), as by the pointing games. No model is run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from camkit.metrics._common import MapsLike, MetricResult, make_result, positive_int
from camkit.metrics._pointing import BoxesLike
from camkit.metrics._pointing import _prepare as prepare_region

__all__ = [
    "attribution_localisation",
    "auc",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "top_k_intersection",
]

MaskLike = Tensor | np.ndarray[Any, Any] | None


def _region(
    maps: MapsLike, boxes: BoxesLike | None, masks: MaskLike, size: Sequence[int] | None
) -> tuple[Tensor, Tensor]:
    cams, region, _ = prepare_region(maps, boxes, masks, size)
    return cams.flatten(1).double(), region.flatten(1)


def relevance_mass_accuracy(
    maps: MapsLike, boxes: BoxesLike | None = None, masks: MaskLike = None, *, size: Sequence[int] | None = None
) -> MetricResult:
    r"""Relevance mass accuracy: the share of the map's relevance inside the region (higher is better).

    Arras, Osman & Samek, CLEVR-XAI: A Benchmark Dataset for the Ground Truth Evaluation of Neural
    Network Explanations, Information Fusion 2022:
    :math:`\mathrm{Mass} = R_{\mathrm{within}} / R_{\mathrm{total}} = \sum_{p \in GT} R_p / \sum_p R_p`.
    NaN when the map sums to 0.

    Args:
        maps: one map per sample (any method's output).
        boxes: ``(N, 4)`` boxes or one ``(K, 4)`` set per sample.
        masks: ``(N, *S)`` boolean regions, instead of boxes.
        size: the spatial size boxes refer to (default: the masks', else the maps' size).

    Returns:
        Per-sample accuracies and their mean.

    Example:
        >>> cam = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
        >>> relevance_mass_accuracy(cam, masks=torch.tensor([[[0, 1], [0, 1]]])).mean
        0.875
    """
    cams, region = _region(maps, boxes, masks, size)
    total = cams.sum(1)
    return make_result((cams * region).sum(1) / torch.where(total != 0, total, torch.nan))


def _top(cams: Tensor, count: Tensor | int) -> Tensor:
    """``(N, P)`` True for each sample's ``count`` highest values (ties: lower index first)."""
    order = torch.argsort(cams, dim=1, descending=True, stable=True)
    positions = torch.arange(cams.shape[1], device=cams.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # the inverse permutation, without a second sort
    limit = count.unsqueeze(1) if isinstance(count, Tensor) else count
    return rank < limit


def relevance_rank_accuracy(
    maps: MapsLike, boxes: BoxesLike | None = None, masks: MaskLike = None, *, size: Sequence[int] | None = None
) -> MetricResult:
    r"""Relevance rank accuracy: the share of the :math:`|GT|` most relevant pixels in the region (higher is better).

    Arras, Osman & Samek, CLEVR-XAI, Information Fusion 2022:
    :math:`\mathrm{Rank} = |P_{\mathrm{top}K} \cap GT| / |GT|`. Ties are ranked in row-major order.

    Args:
        maps: one map per sample.
        boxes: boxes, as for :func:`relevance_mass_accuracy`.
        masks: regions, instead of boxes.
        size: the spatial size boxes refer to.

    Returns:
        Per-sample accuracies and their mean.

    Example:
        >>> cam = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
        >>> relevance_rank_accuracy(cam, masks=torch.tensor([[[1, 1], [0, 0]]])).mean
        0.5
    """
    cams, region = _region(maps, boxes, masks, size)
    count = region.sum(1)
    hits = (_top(cams, count) & region).sum(1).double()
    return make_result(hits / count)


def top_k_intersection(
    maps: MapsLike,
    boxes: BoxesLike | None = None,
    masks: MaskLike = None,
    *,
    k: int = 1000,
    concept_influence: bool = False,
    size: Sequence[int] | None = None,
) -> MetricResult:
    r"""Top-k intersection: the share of the ``k`` most relevant pixels inside the region (higher is better).

    Theiner, Müller-Budack & Ewerth, Interpretable Semantic Photo Geolocation, WACV 2022 (arXiv 2021):
    :math:`|P_{\mathrm{top}k} \cap GT| / k`; with ``concept_influence`` multiplied by
    :math:`d / |GT|` (the share relative to the region's share of the image). Ties are ranked in
    row-major order.

    Args:
        maps: one map per sample.
        boxes: boxes, as for :func:`relevance_mass_accuracy`.
        masks: regions, instead of boxes.
        k: the number of top pixels (Quantus's default, 1000); at most the pixel count.
        concept_influence: scale by the inverse share of the region.
        size: the spatial size boxes refer to.

    Returns:
        Per-sample intersections and their mean.

    Raises:
        ValueError: for ``k`` larger than the number of pixels.

    Example:
        >>> cam = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
        >>> top_k_intersection(cam, masks=torch.tensor([[[0, 1], [1, 0]]]), k=2).mean
        0.5
    """
    k = positive_int(k, "k")
    cams, region = _region(maps, boxes, masks, size)
    if k > cams.shape[1]:
        raise ValueError(f"k must be at most the {cams.shape[1]} pixels of the maps, got {k}: pass a smaller k")
    share = (_top(cams, k) & region).sum(1).double() / k
    if concept_influence:
        share = share * cams.shape[1] / region.sum(1)
    return make_result(share)


def attribution_localisation(
    maps: MapsLike,
    boxes: BoxesLike | None = None,
    masks: MaskLike = None,
    *,
    weighted: bool = False,
    positive_only: bool = True,
    size: Sequence[int] | None = None,
) -> MetricResult:
    r"""Attribution localisation: the share of positive relevance inside the region (higher is better).

    Kohlbrenner et al., Towards Best Practice in Explaining Neural Network Decisions with LRP, IJCNN
    2020: :math:`\mu = R_{\mathrm{in}} / R_{\mathrm{tot}}` over positive relevance; the weighted
    version :math:`\mu_w = \mu \cdot S_{\mathrm{tot}} / S_{\mathrm{in}}` rewards small regions
    (:math:`S`: pixel counts). NaN when there is no positive relevance.

    Args:
        maps: one map per sample.
        boxes: boxes, as for :func:`relevance_mass_accuracy`.
        masks: regions, instead of boxes.
        weighted: return :math:`\mu_w`.
        positive_only: keep only positive relevance, as in the paper (``False``: the raw map).
        size: the spatial size boxes refer to.

    Returns:
        Per-sample values and their mean.

    Example:
        >>> cam = torch.tensor([[[1.0, -3.0], [0.0, 4.0]]])
        >>> attribution_localisation(cam, masks=torch.tensor([[[0, 0], [0, 1]]])).mean  # 4 / (1 + 4)
        0.8
    """
    cams, region = _region(maps, boxes, masks, size)
    if positive_only:
        cams = cams.clamp(min=0)
    total = cams.sum(1)
    share = (cams * region).sum(1) / torch.where(total > 0, total, torch.nan)
    if weighted:
        share = share * cams.shape[1] / region.sum(1)
    return make_result(share)


def auc(
    maps: MapsLike, boxes: BoxesLike | None = None, masks: MaskLike = None, *, size: Sequence[int] | None = None
) -> MetricResult:
    r"""ROC AUC of the map as a pixel classifier of the region (higher is better; 0.5 is chance).

    Fawcett, An Introduction to ROC Analysis, Pattern Recognition Letters 2006: the area under the
    curve of true- against false-positive rate over all thresholds, computed exactly as the
    Mann-Whitney statistic with ties counted half,

    .. math:: \mathrm{AUC} = \frac{1}{|GT|\,|\overline{GT}|} \sum_{p \in GT} \sum_{q \notin GT}
        \big(\mathbb{1}[R_p > R_q] + \tfrac12 \mathbb{1}[R_p = R_q]\big)

    NaN when the region covers the whole map.

    Args:
        maps: one map per sample.
        boxes: boxes, as for :func:`relevance_mass_accuracy`.
        masks: regions, instead of boxes.
        size: the spatial size boxes refer to.

    Returns:
        Per-sample AUCs and their mean.

    Example:
        >>> cam = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
        >>> auc(cam, masks=torch.tensor([[[0, 1], [0, 1]]])).mean
        1.0
    """
    cams, region = _region(maps, boxes, masks, size)
    ordered = cams.sort(dim=1).values
    below = torch.searchsorted(ordered, cams, side="left").double()
    above = torch.searchsorted(ordered, cams, side="right").double()
    ranks = (below + above + 1) / 2  # average 1-based ranks
    positives = region.sum(1).double()
    negatives = region.shape[1] - positives
    statistic = (ranks * region).sum(1) - positives * (positives + 1) / 2
    return make_result(statistic / torch.where(negatives > 0, positives * negatives, torch.nan))
