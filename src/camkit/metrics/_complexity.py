r"""Complexity: how concentrated is the map? Sparseness, entropy, effective complexity, L1 complexity.

These read the maps only (no model). Sparseness, entropy and effective complexity use the absolute
values :math:`|a_i|` of the :math:`d` pixels, as their papers; maps holding NaN/inf are refused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from camkit.metrics._common import MapsLike, MetricResult, make_result, prepare_maps

__all__ = ["complexity", "effective_complexity", "l1_complexity", "sparseness"]


def _flat(maps: MapsLike, double: bool = True) -> Tensor:
    first = maps[0] if isinstance(maps, (list, tuple)) and maps else maps
    shape = tuple(first.shape)  # type: ignore[union-attr]
    if len(shape) < 2:
        raise ValueError(f"maps must have shape (N, *S) or (N, 1, *S), got {shape}")
    spatial = shape[2:] if len(shape) >= 4 and shape[1] == 1 else shape[1:]
    device = first.device if isinstance(first, Tensor) else torch.device("cpu")
    flat = prepare_maps(maps, shape[0], spatial, device).flatten(1)
    return flat.double() if double else flat


def _sorted(values: Tensor) -> Tensor:
    """A fresh ``values`` sorted along dim 1: in place by numpy on the CPU (several times torch's sort there)."""
    if values.device.type == "cpu" and values.is_contiguous():
        values.numpy().sort(axis=1)
        return values
    return values.sort(dim=1).values


def sparseness(maps: MapsLike) -> MetricResult:
    r"""Sparseness: the Gini index of the absolute map (higher is sparser).

    Chalasani et al., Concise Explanations of Neural Networks using Adversarial Training, ICML 2020.
    With :math:`|a|_{(1)} \le \dots \le |a|_{(d)}` sorted ascending,

    .. math:: G(a) = \frac{\sum_{i=1}^{d} (2i - d - 1)\, |a|_{(i)}}{d \sum_{i=1}^{d} |a|_{(i)}}

    0 for a flat map, :math:`(d - 1) / d` for a single non-zero pixel; NaN for an all-zero map.

    Args:
        maps: one map per sample (any method's output).

    Returns:
        Per-sample Gini indices and their mean.

    Example:
        >>> sparseness(torch.tensor([[[0.0, 0.0], [0.0, 2.0]]])).mean  # (2*4 - 4 - 1) * 2 / (4 * 2)
        0.75
    """
    values = _sorted(_flat(maps, double=False).abs()).double()  # sorting before the exact widening: same order
    d = values.shape[1]
    weights = 2 * torch.arange(1, d + 1, dtype=values.dtype, device=values.device) - d - 1
    total = values.sum(1)
    return make_result((weights * values).sum(1) / (d * torch.where(total > 0, total, torch.nan)))


def complexity(maps: MapsLike) -> MetricResult:
    r"""Complexity: the entropy of the map's fractional contributions (lower is simpler).

    Bhatt, Weller & Moura, Evaluating and Aggregating Feature-based Model Explanations, IJCAI 2020:
    with :math:`P_i = |a_i| / \sum_j |a_j|`,
    :math:`\mu_C = -\sum_i P_i \ln P_i` (:math:`0 \ln 0 = 0`), from 0 (one pixel) to :math:`\ln d`
    (flat). NaN for an all-zero map.

    Args:
        maps: one map per sample.

    Returns:
        Per-sample entropies (nats) and their mean.

    Example:
        >>> round(complexity(torch.ones(1, 2, 2)).mean, 6)  # ln 4
        1.386294
    """
    values = _flat(maps).abs()
    total = values.sum(1, keepdim=True)
    shares = values / torch.where(total > 0, total, torch.nan)
    return make_result(-torch.xlogy(shares, shares).sum(1))


def effective_complexity(maps: MapsLike, *, eps: float = 1e-5, normalise: bool = True) -> MetricResult:
    r"""Effective complexity: the number of pixels whose absolute attribution exceeds ``eps`` (lower is simpler).

    Nguyen & Martínez, On Quantitative Aspects of Model Interpretability, arXiv:2007.07584, 2020, in
    its attribution-threshold form (as Quantus): :math:`\mathrm{EC} = |\{i : |a_i| > \epsilon\}|`,
    with the map first divided by its maximum :math:`\max_i |a_i|` when ``normalise`` (so ``eps`` is a
    share of the peak).

    Args:
        maps: one map per sample.
        eps: the threshold :math:`\epsilon` (Quantus's default, 1e-5).
        normalise: divide each map by its maximum absolute value first.

    Returns:
        Per-sample counts (as floats) and their mean.

    Example:
        >>> effective_complexity(torch.tensor([[[0.0, 1e-7], [0.5, 1.0]]])).mean
        2.0
    """
    values = _flat(maps).abs()
    if normalise:
        peak = values.amax(1, keepdim=True)
        values = values / torch.where(peak > 0, peak, torch.ones_like(peak))
    return make_result((values > eps).sum(1).double())


def l1_complexity(maps: MapsLike) -> MetricResult:
    r"""L1 complexity: the mean absolute value :math:`\|L\|_1 / d` (pytorch-grad-cam's ``Complexity``; lower: simpler).

    Poppi et al., Revisiting the Evaluation of Class Activation Mapping for Explainability: A Novel
    Metric and Experimental Analysis, CVPR Workshops 2021 (the complexity term of ADCC); in [0, 1]
    for maps in [0, 1]. Named so to stand beside Bhatt et al.'s entropy :func:`complexity`.

    Args:
        maps: one map per sample.

    Returns:
        Per-sample values and their mean.

    Example:
        >>> l1_complexity(torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])).mean
        0.5
    """
    return make_result(_flat(maps).abs().mean(1))
