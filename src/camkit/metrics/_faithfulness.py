r"""Faithfulness by feature removal: faithfulness correlation, monotonicity, pixel flipping, infidelity.

A *feature* is a pixel with all its channels (maps are spatial); the map value of a pixel is its
attribution. Every metric runs the model batched, in eval mode, under ``inference_mode``; targets
are the engine's (an int or one per sample: that class's softmax probability; ``None``: the
predicted class's; ``ClassTarget(c)`` for the logit, as Quantus scores some of these).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from camkit.engine import ImageArg, eval_mode
from camkit.metrics._common import (
    CurveResult,
    InputsLike,
    MapsLike,
    MetricResult,
    TargetLike,
    clean_scores,
    forward_scores,
    make_result,
    nanmean,
    positive_int,
)
from camkit.metrics._perturb import Fill, constant, fill, rank_units, score_removals, setup

__all__ = ["faithfulness_correlation", "infidelity", "monotonicity", "pixel_flipping"]

#: random values drawn at once for faithfulness correlation's subsets (64 MiB of float32)
_DRAW_VALUES = 1 << 24


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation (NaN for a constant row), in float64."""
    a, b = a.double() - a.double().mean(1, keepdim=True), b.double() - b.double().mean(1, keepdim=True)
    return (a * b).sum(1) / ((a * a).sum(1) * (b * b).sum(1)).sqrt()


def faithfulness_correlation(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    nr_runs: int = 100,
    subset_size: int = 224,
    baseline: Fill = 0.0,
    subsets: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    image_arg: ImageArg = None,
) -> MetricResult:
    r"""Faithfulness correlation: does the attribution of a random subset predict the score lost by removing it?

    Bhatt, Weller & Moura, Evaluating and Aggregating Feature-based Model Explanations, IJCAI 2020:

    .. math:: \mu_F = \operatorname{corr}_{S \subset \{1..d\},\, |S| = k}
        \Big(\sum_{i \in S} g_i(x),\; f(x) - f(x_{[x_S = \bar x_S]})\Big)

    the Pearson correlation over ``nr_runs`` random subsets :math:`S` of ``subset_size`` pixels,
    replaced by the baseline :math:`\bar x`. Higher is better (in [-1, 1]); NaN when either side is
    constant over the runs.

    Args:
        model: the classifier; run in eval mode (flags restored).
        inputs: ``(N, C, *S)`` model inputs (or a tuple/dict call, see :class:`camkit.engine.ModelInput`).
        maps: one map per sample (any method's output; resized to ``S``).
        targets: the score :math:`f` (Quantus reads the logit: pass ``ClassTarget(c)``).
        nr_runs: number of random subsets (Quantus's default, 100).
        subset_size: pixels per subset :math:`k` (Quantus's default, 224).
        baseline: the replacement :math:`\bar x`: a number (default 0), ``"min"`` (Quantus's
            ``"black"``), ``"max"``, ``"mean"``, ``"uniform"``, a tensor or a function of the input.
        subsets: ``(N, nr_runs, subset_size)`` pixel indices (row-major) instead of random ones.
        generator: random generator for the subsets.
        batch_size: perturbed inputs per forward.
        image_arg: which argument of a tuple/dict ``inputs`` is the image.

    Returns:
        Per-sample correlations and their mean.

    Raises:
        ValueError: for ``subset_size`` not below the pixel count, ``subsets`` of the wrong shape,
            NaN/inf maps, or as the other metrics.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> cams = model[1].weight[0].detach().view(1, 4, 4).expand(2, 4, 4)  # the class-0 weights
        >>> from camkit.targets import ClassTarget
        >>> round(faithfulness_correlation(model, x, cams * x[:, 0], ClassTarget(0), subset_size=4).mean, 4)
        1.0
    """
    image, call, cams, batch_size = setup(inputs, maps, batch_size, image_arg)
    n, pixels = image.shape[0], cams[0].numel()
    if subsets is None:
        runs, size = positive_int(nr_runs, "nr_runs"), positive_int(subset_size, "subset_size")
        if size >= pixels:
            raise ValueError(f"subset_size must be smaller than the {pixels} pixels of the input, got {size}")
        chunk = max(1, _DRAW_VALUES // (n * pixels))  # runs drawn at once: the same stream as one at a time
        draws = [
            torch.rand(min(chunk, runs - start), n, pixels, generator=generator).topk(size, dim=2).indices
            for start in range(0, runs, chunk)
        ]
        subsets = torch.cat(draws).transpose(0, 1).to(image.device)
    elif subsets.ndim != 3 or subsets.shape[0] != n:
        raise ValueError(f"subsets must be (N={n}, nr_runs, subset_size) pixel indices, got {tuple(subsets.shape)}")
    subsets = subsets.to(image.device).long()
    if subsets.numel() and (int(subsets.min()) < 0 or int(subsets.max()) >= pixels):
        raise ValueError(f"subsets must hold pixel indices in [0, {pixels}) (row-major), got {int(subsets.max())}")
    runs = subsets.shape[1]
    base = constant(baseline, image, generator)
    flat_subsets = subsets.reshape(n * runs, -1)
    rows = torch.arange(n, device=image.device).repeat_interleave(runs)

    channels = image.shape[1]

    def make(part: slice) -> Tensor:  # the subset's pixels (all channels) set in place: no mask is built
        picked = rows[part]
        out = image.index_select(0, picked)
        where = flat_subsets[part].unsqueeze(1).expand(-1, channels, -1)
        if isinstance(base, float):
            out.view(out.shape[0], channels, pixels).scatter_(2, where, base)
        else:
            values = base.index_select(0, picked).reshape(out.shape[0], channels, pixels).gather(2, where)
            out.view(out.shape[0], channels, pixels).scatter_(2, where, values)
        return out

    with eval_mode(model):
        target, clean = clean_scores(model, image, targets, batch_size, call)
        scores = forward_scores(model, target, rows, make, batch_size, call).view(n, runs)
    deltas = clean.double().unsqueeze(1) - scores.double()
    sums = cams.flatten(1).double().gather(1, subsets.flatten(1)).view(n, runs, -1).sum(-1)
    return make_result(_pearson(sums, deltas))


def _steps(pixels: int, features_in_step: int) -> Tensor:
    step = positive_int(features_in_step, "features_in_step")
    return torch.tensor([min(k * step, pixels) for k in range(1, math.ceil(pixels / step) + 1)])


def monotonicity(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    features_in_step: int = 1,
    baseline: Fill = 0.0,
    batch_size: int = 64,
    image_arg: ImageArg = None,
) -> CurveResult:
    r"""Monotonicity (Arya et al. 2019, Quantus's name): does the score rise as features are added by importance?

    Arya et al., One Explanation Does Not Fit All: A Toolkit and Taxonomy of AI Explainability
    Techniques (AIX360), arXiv:1909.03012, 2019. Starting from the baseline, the pixels are put back
    ``features_in_step`` at a time in order of **increasing** attribution; with :math:`s_k` the
    score after step :math:`k` (:math:`k = 1..K`, :math:`K = \lceil d / \text{step} \rceil`),

    .. math:: \mathrm{Mono}(x) = \mathbb{1}\big[s_{k+1} \ge s_k\ \forall k\big]

    1 (monotonic) or 0 per sample; the mean is the share of monotonic samples (higher is better).
    Not to be confused with Nguyen & Martinez's monotonicity *correlation*.

    Args:
        model: the classifier; run in eval mode.
        inputs: ``(N, C, *S)`` model inputs.
        maps: one map per sample.
        targets: the score (default: the predicted class's probability, as Quantus's softmax).
        features_in_step: pixels added per step (the paper and Quantus: 1).
        baseline: the starting image: a number (default 0), ``"min"`` (Quantus's ``"black"``), ...
        batch_size: perturbed inputs per forward.
        image_arg: which argument of a tuple/dict ``inputs`` is the image.

    Returns:
        Per-sample 1.0/0.0, their mean, the ``curve`` :math:`s_1..s_K` and its ``fractions``.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     _ = model[1].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]))
        >>> x = torch.ones(1, 1, 2, 2)
        >>> monotonicity(model, x, torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]), 0).mean
        1.0
    """
    image, call, cams, batch_size = setup(inputs, maps, batch_size, image_arg)
    n, pixels = image.shape[0], cams[0].numel()
    counts = _steps(pixels, features_in_step).to(image.device)
    rank = rank_units(cams.flatten(1), descending=False).view_as(cams)
    samples = torch.arange(n, device=image.device).repeat_interleave(counts.numel())
    with eval_mode(model):
        target, _ = clean_scores(model, image, targets, batch_size, call)
        base = constant(baseline, image)
        curve = score_removals(
            model, image, call, target, rank, samples, counts.repeat(n), base, batch_size, insert=True
        ).view(n, -1)
    values = (curve.diff(dim=1) >= 0).all(dim=1).to(curve.dtype)
    return CurveResult(values, nanmean(values), curve, counts.to(curve.dtype) / pixels)


def pixel_flipping(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    features_in_step: int = 1,
    baseline: Fill = 0.0,
    batch_size: int = 64,
    image_arg: ImageArg = None,
) -> CurveResult:
    r"""Pixel flipping: the score as the most relevant pixels are replaced, one step at a time (lower area is better).

    Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
    Relevance Propagation, PLoS ONE 2015. Pixels are ranked by attribution, highest first (stable);
    step :math:`k` replaces the first :math:`c_k = \min(k \cdot \text{step}, d)` of the :math:`d`
    pixels by the baseline. The curve is :math:`s_0 = f(x), s_1, \dots, s_K` and the per-sample
    value its area over the flipped fraction :math:`c_k / d` (trapezoid rule), in score units:

    .. math:: \mathrm{PF} = \sum_{k=1}^{K} \frac{c_k - c_{k-1}}{d} \cdot \frac{s_{k-1} + s_k}{2}

    Args:
        model: the classifier; run in eval mode.
        inputs: ``(N, C, *S)`` model inputs.
        maps: one map per sample.
        targets: the score (default: the predicted class's probability, as Quantus's softmax).
        features_in_step: pixels flipped per step (Quantus's default, 1).
        baseline: the replacement: a number (default 0), ``"min"`` (Quantus's ``"black"``), ...
        batch_size: perturbed inputs per forward.
        image_arg: which argument of a tuple/dict ``inputs`` is the image.

    Returns:
        Per-sample areas, their mean, the ``curve`` ``(N, K + 1)`` and the ``fractions``.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> result = pixel_flipping(model, torch.rand(1, 1, 2, 2), torch.rand(1, 2, 2), 0)
        >>> result.curve.shape, result.fractions.tolist()
        (torch.Size([1, 5]), [0.0, 0.25, 0.5, 0.75, 1.0])
    """
    image, call, cams, batch_size = setup(inputs, maps, batch_size, image_arg)
    n, pixels = image.shape[0], cams[0].numel()
    counts = _steps(pixels, features_in_step).to(image.device)
    rank = rank_units(cams.flatten(1)).view_as(cams)
    samples = torch.arange(n, device=image.device).repeat_interleave(counts.numel())
    with eval_mode(model):
        target, clean = clean_scores(model, image, targets, batch_size, call)
        base = constant(baseline, image)
        scores = score_removals(model, image, call, target, rank, samples, counts.repeat(n), base, batch_size)
    curve = torch.cat([clean.to(scores.dtype).unsqueeze(1), scores.view(n, -1)], dim=1)
    fractions = torch.cat([counts.new_zeros(1), counts]).to(curve.dtype) / pixels
    area = torch.trapezoid(curve, fractions, dim=1)
    return CurveResult(area, nanmean(area), curve, fractions)


def infidelity(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    n_perturb_samples: int = 10,
    patch_size: int = 4,
    baseline: Fill = 0.0,
    perturbations: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    image_arg: ImageArg = None,
) -> MetricResult:
    r"""Infidelity: how badly the attribution predicts the score change of random perturbations (lower is better).

    Yeh et al., On the (In)fidelity and Sensitivity of Explanations, NeurIPS 2019:

    .. math:: \mathrm{INFD}(\Phi, f, x) = \mathbb{E}_{I \sim \mu_I}
        \Big[\big(I^\top \Phi(x) - (f(x) - f(x - I))\big)^2\Big]

    with the map broadcast over channels. The default :math:`\mu_I` is the paper's *square
    removal*: a ``patch_size`` square at a uniformly random position is replaced by the baseline,
    :math:`I = x - \tilde x`; the expectation is the mean over ``n_perturb_samples`` draws. Pass
    ``perturbations`` for any other :math:`\mu_I` (e.g. Gaussian noise, the paper's noisy baseline).

    Args:
        model: the classifier; run in eval mode.
        inputs: ``(N, C, H, W)`` model inputs.
        maps: one map per sample (not normalized: the metric compares it with score changes).
        targets: the score :math:`f` (Quantus reads the logit: pass ``ClassTarget(c)``).
        n_perturb_samples: draws of :math:`I` (Quantus's default, 10).
        patch_size: side of the removed square (Quantus's default, 4).
        baseline: the replacement: a number (default 0), ``"min"`` (Quantus's ``"black"``), ...
        perturbations: ``(N, M, C, *S)`` explicit :math:`I` instead of random squares.
        generator: random generator for the square positions.
        batch_size: perturbed inputs per forward.
        image_arg: which argument of a tuple/dict ``inputs`` is the image.

    Returns:
        Per-sample infidelities and their mean.

    Example:
        >>> from torch import nn
        >>> from camkit.targets import ClassTarget
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
        >>> cams = model[1].weight[0].detach().view(1, 4, 4)  # the exact attribution of a linear model
        >>> infidelity(model, torch.rand(1, 1, 4, 4), cams, ClassTarget(0), patch_size=2).mean < 1e-10
        True
    """
    image, call, cams, batch_size = setup(inputs, maps, batch_size, image_arg)
    n = image.shape[0]
    if perturbations is None:
        draws, side = positive_int(n_perturb_samples, "n_perturb_samples"), positive_int(patch_size, "patch_size")
        if image.ndim != 4 or side > min(image.shape[2:]):
            raise ValueError(
                f"square removal needs (N, C, H, W) inputs at least patch_size={side} wide, got {tuple(image.shape)}"
            )
        height, width = image.shape[2:]
        top = torch.randint(0, height - side + 1, (n, draws), generator=generator).to(image.device)
        left = torch.randint(0, width - side + 1, (n, draws), generator=generator).to(image.device)
        ys, xs = torch.arange(height, device=image.device), torch.arange(width, device=image.device)
        inside_y = (ys >= top[..., None]) & (ys < top[..., None] + side)
        inside_x = (xs >= left[..., None]) & (xs < left[..., None] + side)
        square = (inside_y[..., :, None] & inside_x[..., None, :]).unsqueeze(2)  # (N, M, 1, H, W)
        perturbations = torch.where(
            square, (image - fill(baseline, image)).unsqueeze(1), torch.zeros((), device=image.device)
        )
    elif (
        perturbations.ndim != image.ndim + 1
        or perturbations.shape[0] != n
        or perturbations.shape[2:] != image.shape[1:]
    ):
        raise ValueError(
            f"perturbations must be (N, M, C, *S) with N={n} and (C, *S)={tuple(image.shape[1:])}, "
            f"got {tuple(perturbations.shape)}"
        )
    shifts = perturbations.to(image)
    draws = shifts.shape[1]
    rows = torch.arange(n, device=image.device).repeat_interleave(draws)
    flat = shifts.reshape(n * draws, *image.shape[1:])
    with eval_mode(model):
        target, clean = clean_scores(model, image, targets, batch_size, call)
        scores = forward_scores(model, target, rows, lambda part: image[rows[part]] - flat[part], batch_size, call)
    deltas = clean.double().unsqueeze(1) - scores.double().view(n, draws)
    predicted = (shifts.double() * cams.double().unsqueeze(1).unsqueeze(2)).flatten(2).sum(-1)
    return make_result(((predicted - deltas) ** 2).mean(dim=1))
