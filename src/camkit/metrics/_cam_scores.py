r"""CAM-specific aggregate scores: average gain, coherency, ADCC and ARCC.

* Average gain (Zhang et al., Opti-CAM, 2023) complements the average drop of Grad-CAM++.
* Coherency, L1 complexity and ADCC (Poppi et al., CVPR Workshops 2021): ADCC is the harmonic mean
  of coherency, :math:`1 -` complexity and :math:`1 -` average drop.
* ARCC (pytorch-grad-cam 1.5.7's ``ARCC``): ADCC with the average drop replaced by ROAD combined.

Coherency re-runs the explanation on the input multiplied by its map: ``explain`` is a camkit
extractor or a callable ``explain(inputs, classes) -> maps`` (see :mod:`camkit.metrics._robustness`).
``targets`` are class indices (an int, one per sample, or ``None`` for the predicted classes); the
scores are their softmax probabilities, or their logits with ``logits=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from camkit.engine import eval_mode
from camkit.metrics._common import (
    MapsLike,
    MetricResult,
    batch_of,
    check_inputs,
    make_result,
    prepare_maps,
)
from camkit.metrics._complexity import l1_complexity
from camkit.metrics._confidence import confidence_change
from camkit.metrics._road import road_combined
from camkit.metrics._robustness import ExplainLike, explain_maps, explained_classes
from camkit.targets import ClassProbabilityTarget, ClassTarget

__all__ = ["adcc", "arcc", "average_gain", "coherency"]

ClassesLike = int | Sequence[int] | Tensor | None


def _target(classes: Tensor, logits: bool) -> Callable[..., Tensor]:
    chosen = [int(c) for c in classes.tolist()]
    return ClassTarget(chosen) if logits else ClassProbabilityTarget(chosen)


def average_gain(
    model: nn.Module,
    inputs: Tensor,
    maps: MapsLike,
    targets: ClassesLike = None,
    *,
    batch_size: int | None = None,
) -> MetricResult:
    r"""Average gain: the relative rise of the score when the input is multiplied by its map (higher is better).

    Zhang et al., Opti-CAM: Optimizing Saliency Maps for Interpretability, arXiv:2301.07002, 2023
    (CVIU 2024): with :math:`Y` the clean probability and :math:`O = f(x \odot L)`,

    .. math:: \mathrm{AG} = \frac1N \sum_i \frac{\max(0,\, O_i - Y_i)}{1 - Y_i}

    as a fraction (the paper reports percent). NaN where :math:`Y_i = 1`.

    Args:
        model: the classifier; run in eval mode.
        inputs: ``(N, C, *S)`` model inputs.
        maps: one map per sample, usually in [0, 1].
        targets: class indices (``None``: predicted); the score is their softmax probability.
        batch_size: inputs per forward (``None``: 8 on a CPU, 32 on a GPU).

    Returns:
        Per-sample gains and their mean.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> average_gain(model, torch.rand(2, 1, 4, 4), torch.ones(2, 4, 4)).mean  # nothing changes
        0.0
    """
    image = check_inputs(inputs)
    classes = explained_classes(model, image, targets)
    change = confidence_change(model, image, maps, _target(classes, False), batch_size=batch_size)
    gain = (change.masked - change.original).clamp(min=0).double() / (1 - change.original.double())
    return make_result(torch.where(change.original < 1, gain, torch.nan))


def _pearson(a: Tensor, b: Tensor, eps: float) -> Tensor:
    """Row-wise Pearson correlation; ``eps > 0``: pytorch-grad-cam's form (sample deviations + eps; 0 if flat)."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    if eps == 0:
        return (a * b).sum(1) / ((a * a).sum(1) * (b * b).sum(1)).sqrt()
    dof = a.shape[1] - 1
    return ((a * b).sum(1) / dof) / (((a * a).sum(1) / dof).sqrt() * ((b * b).sum(1) / dof).sqrt() + eps)


def _coherency(
    model: nn.Module,
    image: Tensor,
    cams: Tensor,
    explain: ExplainLike,
    classes: Tensor,
    batch_size: int,
    eps: float = 0.0,
) -> Tensor:
    with eval_mode(model):
        again = torch.cat(
            [
                explain_maps(
                    explain,
                    image[s : s + batch_size] * cams[s : s + batch_size].unsqueeze(1),
                    classes[s : s + batch_size],
                )
                for s in range(0, image.shape[0], batch_size)
            ]
        )
    return (_pearson(again.flatten(1).double(), cams.flatten(1).double(), eps) + 1) / 2


def coherency(
    model: nn.Module,
    inputs: Tensor,
    maps: MapsLike,
    explain: ExplainLike,
    targets: ClassesLike = None,
    *,
    batch_size: int | None = None,
) -> MetricResult:
    r"""Coherency: does the map stay the same when only what it shows is kept? (higher is better).

    Poppi et al., Revisiting the Evaluation of Class Activation Mapping for Explainability, CVPR
    Workshops 2021 (pytorch-grad-cam's ``Coherency``): with :math:`L = L^c(x)` and the Pearson
    correlation :math:`\rho`,

    .. math:: \mathrm{Coherency}(x) = \tfrac12 \big(1 + \rho(L^c(x \odot L),\, L)\big)

    in [0, 1]; NaN when either map is flat.

    Args:
        model: the classifier (its predictions pick the classes for ``targets=None``).
        inputs: ``(N, C, *S)`` model inputs.
        maps: :math:`L`, one map per sample in [0, 1] (the explanation of ``inputs``).
        explain: a camkit extractor or ``explain(inputs, classes) -> maps``: the same method.
        targets: class indices (``None``: predicted).
        batch_size: inputs explained at once (``None``: 8 on a CPU, 32 on a GPU).

    Returns:
        Per-sample coherencies and their mean.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> explain = lambda x, classes: x[:, 0]  # the "map" of an input is the input itself
        >>> x = torch.linspace(0.5, 1.0, 16).view(1, 1, 4, 4)
        >>> round(coherency(model, x, x[:, 0], explain, 0).mean, 4)  # (1 + corr(x * x, x)) / 2
        0.9979
    """
    image = check_inputs(inputs)
    batch_size = batch_of(batch_size, image.device)
    cams = prepare_maps(maps, image.shape[0], image.shape[2:], image.device)
    classes = explained_classes(model, image, targets)
    return make_result(_coherency(model, image, cams, explain, classes, batch_size))


def adcc(
    model: nn.Module,
    inputs: Tensor,
    maps: MapsLike,
    explain: ExplainLike,
    targets: ClassesLike = None,
    *,
    batch_size: int | None = None,
) -> MetricResult:
    r"""ADCC: the harmonic mean of coherency, 1 - complexity and 1 - average drop (higher is better).

    Poppi et al., Revisiting the Evaluation of Class Activation Mapping for Explainability: A Novel
    Metric and Experimental Analysis, CVPR Workshops 2021:

    .. math:: \mathrm{ADCC}(x) = 3 \Big(\frac{1}{\mathrm{Coherency}(x)} + \frac{1}{1 - \mathrm{Complexity}(x)}
        + \frac{1}{1 - \mathrm{AverageDrop}(x)}\Big)^{-1}

    with :func:`coherency`, :func:`l1_complexity` (:math:`\|L\|_1 / d`) and the per-sample drop
    :math:`\max(0, Y - O) / Y` of the class probability (:func:`average_drop`). 0 when a term is 0.

    Args:
        model: the classifier; run in eval mode.
        inputs: ``(N, C, *S)`` model inputs.
        maps: one map per sample in [0, 1].
        explain: the method that produced ``maps`` (extractor or callable).
        targets: class indices (``None``: predicted).
        batch_size: inputs per forward and per explanation (``None``: 8 on a CPU, 32 on a GPU).

    Returns:
        Per-sample ADCC and its mean.
    """
    image = check_inputs(inputs)
    batch_size = batch_of(batch_size, image.device)
    cams = prepare_maps(maps, image.shape[0], image.shape[2:], image.device)
    classes = explained_classes(model, image, targets)
    coherent = _coherency(model, image, cams, explain, classes, batch_size)
    simple = 1 - l1_complexity(cams).per_sample
    kept = (
        1
        - confidence_change(model, image, cams, _target(classes, False), batch_size=batch_size).drop.per_sample.double()
    )
    return make_result(3 / (1 / coherent + 1 / simple + 1 / kept))


def arcc(
    model: nn.Module,
    inputs: Tensor,
    maps: MapsLike,
    explain: ExplainLike,
    targets: ClassesLike = None,
    *,
    percentiles: Sequence[float] = (20, 40, 60, 80),
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    logits: bool = False,
    batch_size: int | None = None,
) -> MetricResult:
    r"""ARCC (pytorch-grad-cam): harmonic mean of coherency, 1 - complexity and scaled ROAD (higher is better).

    pytorch-grad-cam 1.5.7, ``pytorch_grad_cam.metrics.arcc.ARCC``: with :math:`R` the ROAD combined
    score (:func:`road_combined` over ``percentiles``) mapped to :math:`R' = \mathrm{clip}(2R, 0, 1)`,

    .. math:: \mathrm{ARCC}(x) = 3 \Big(\frac{1}{\mathrm{Coh} + 10^{-8}} + \frac{1}{1 - \mathrm{Cx} + 10^{-8}}
        + \frac{1}{R' + 10^{-8}}\Big)^{-1}

    (the :math:`10^{-8}` as in pytorch-grad-cam; its docstring says "geometric mean", the code
    computes this harmonic mean). Its coherency is pytorch-grad-cam's too: sample standard deviations
    plus :math:`10^{-8}` in the correlation's denominator, so a flat map has coherency 0.5 (NaN in
    :func:`coherency`).

    Args:
        model: the classifier; run in eval mode.
        inputs: ``(N, C, H, W)`` model inputs.
        maps: one map per sample in [0, 1].
        explain: the method that produced ``maps`` (extractor or callable).
        targets: class indices (``None``: predicted).
        percentiles: ROAD's percents removed (pytorch-grad-cam's 20, 40, 60, 80).
        noise: ROAD's imputation noise (0.01).
        generator: random generator for the noise.
        logits: score ROAD on raw logits (pytorch-grad-cam's ``ClassifierOutputTarget``) instead of
            probabilities.
        batch_size: inputs per forward and per explanation (``None``: 8 on a CPU, 32 on a GPU).

    Returns:
        Per-sample ARCC and its mean.
    """
    image = check_inputs(inputs)
    batch_size = batch_of(batch_size, image.device)
    cams = prepare_maps(maps, image.shape[0], image.shape[2:], image.device)
    classes = explained_classes(model, image, targets)
    coherent = _coherency(model, image, cams, explain, classes, batch_size, eps=1e-8)
    simple = 1 - l1_complexity(cams).per_sample
    road = road_combined(
        model,
        image,
        cams,
        _target(classes, logits),
        percentiles=percentiles,
        noise=noise,
        generator=generator,
        batch_size=batch_size,
    ).per_sample.double()
    scaled = (2 * road).clamp(0, 1)
    return make_result(3 / (1 / (coherent + 1e-8) + 1 / (simple + 1e-8) + 1 / (scaled + 1e-8)))
