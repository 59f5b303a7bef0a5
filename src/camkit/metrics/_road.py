r"""ROAD, RemOve And Debias: faithfulness by removing pixels without leaking their shape.

Rong et al., A Consistent and Efficient Evaluation Strategy for Attribution Methods, ICML 2022.

A fraction :math:`r` of the pixels is removed in order of map value, and the removed pixels are
filled by *noisy linear imputation*: each takes the weighted mean of its 8 neighbours (a sparse
linear system, see :mod:`camkit.metrics._imputation`; solved in torch on the input's device by
multigrid-preconditioned conjugate gradients in float64, to a relative residual of 1e-10) plus
Gaussian noise of standard deviation ``noise`` (0.01 in the paper). Imputing from neighbours
instead of pasting a constant keeps the removal's shape from leaking class information.

* MoRF (most relevant first) removes the highest-valued pixels: a faithful map makes the score
  fall (lower is better). LeRF (least relevant first) removes the lowest: the score should hold.
* Per percentile the value is the score change :math:`s_r - s_0` of the imputed input (as in
  pytorch-grad-cam); the per-sample value is its mean over the percentiles.
* Combined: :math:`\frac{1}{|R|}\sum_{r \in R} (s^{\mathrm{LeRF}}_r - s^{\mathrm{MoRF}}_r) / 2`
  (higher is better).

Which pixels: for :math:`n` pixels and ``r`` percent, the pixels whose map value is at or above
the :math:`(100 - r)`-th percentile (numpy's linear interpolation) for MoRF, at or below the
:math:`r`-th for LeRF, counted by rank: :math:`k = n - \lceil (n - 1)(100 - r) / 100 \rceil`
pixels, ties broken in row-major order. On maps with distinct values this is exactly
pytorch-grad-cam's threshold; on ties (e.g. the zeros of a ReLU'd map) pytorch-grad-cam removes
every tied pixel, up to the whole image, while camkit removes exactly :math:`k`.

``percentiles`` in the functions below are the percent of pixels **removed** (the paper's
convention). The classes named after pytorch-grad-cam's keep its meaning, the percent of pixels
**kept**: ``ROADMostRelevantFirst(percentile=80)`` removes the 20 % most relevant pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import torch
from torch import Tensor, nn

from camkit.engine import ImageArg, Progress, eval_mode
from camkit.metrics._common import (
    CurveResult,
    InputsLike,
    MapsLike,
    MetricResult,
    TargetLike,
    batch_of,
    check_inputs,
    clean_scores,
    forward_scores,
    make_result,
    nanmean,
    prepare_maps,
    split_inputs,
    valid_rows,
)
from camkit.metrics._deletion import counted_target
from camkit.metrics._imputation import linear_imputation

__all__ = [
    "DEFAULT_PERCENTILES",
    "checked_percentiles",
    "noisy_linear_imputation",
    "removal_masks",
    "road",
    "road_at",
    "road_combined",
]

#: The percentiles pytorch-grad-cam averages over by default.
DEFAULT_PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_ORDERS = ("morf", "lerf")
#: pixels x channels imputed at once (bounds the solver's memory to a few hundred MB)
_IMPUTE_PIXELS = 2**21


def checked_percentiles(percentiles: Sequence[float], name: str = "percentiles") -> list[float]:
    """The percentiles as a list of numbers strictly between 0 and 100.

    Raises:
        TypeError: for strings (pytorch-grad-cam's ``"auto"``) or non-numbers.
        ValueError: for values outside (0, 100).
    """
    if isinstance(percentiles, str) or any(isinstance(p, str) for p in percentiles):
        raise TypeError(
            f"{name} must be numbers in (0, 100), got {percentiles!r}; pytorch-grad-cam's 'auto' (Otsu) threshold "
            "is not offered (its version swaps most- and least-relevant-first)"
        )
    if isinstance(percentiles, (int, float)):
        percentiles = [percentiles]
    values = list(percentiles)
    if not values or any(isinstance(p, bool) or not isinstance(p, (int, float)) for p in values):
        raise TypeError(f"{name} must be a non-empty list of numbers, got {percentiles!r}")
    if any(not 0 < p < 100 for p in values):
        raise ValueError(f"{name} must lie strictly between 0 and 100, got {values}")
    return [float(p) for p in values]


def _removed_count(pixels: int, percent: float) -> int:
    kept = math.ceil(Fraction(pixels - 1) * (100 - Fraction(percent)) / 100)
    return pixels - kept


def removal_masks(maps: Tensor, percentiles: Sequence[float], order: str = "morf") -> Tensor:
    """Which pixels ROAD removes, for each map and percentile.

    Args:
        maps: ``(N, H, W)`` maps at input resolution.
        percentiles: percent of pixels removed, each strictly between 0 and 100.
        order: ``"morf"`` (highest values first) or ``"lerf"`` (lowest first).

    Returns:
        ``(N, len(percentiles), H, W)`` booleans, True for removed pixels.

    Raises:
        ValueError: for an unknown ``order`` or percentiles outside ``(0, 100)``.

    Example:
        >>> removal_masks(torch.tensor([[[0.1, 0.9], [0.5, 0.3]]]), [50]).int()
        tensor([[[[0, 1],
                  [1, 0]]]], dtype=torch.int32)
    """
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    percents = checked_percentiles(percentiles)
    flat = maps.flatten(1)
    ranking = torch.argsort(flat, dim=1, descending=order == "morf", stable=True)
    ranks = torch.argsort(ranking, dim=1)
    counts = torch.tensor([_removed_count(flat.shape[1], p) for p in percents], device=maps.device)
    return (ranks.unsqueeze(1) < counts.view(1, -1, 1)).view(maps.shape[0], len(percents), *maps.shape[1:])


def noisy_linear_imputation(
    inputs: Tensor, removed: Tensor, *, noise: float = 0.01, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill removed pixels with the weighted mean of their neighbours plus Gaussian noise (ROAD).

    Each removed pixel :math:`i` satisfies :math:`x_i = \sum_j w_{ij} x_j / \sum_j w_{ij}` over its
    in-image 8-neighbours (weight 1/6 orthogonal, 1/12 diagonal), known pixels keep their values,
    then :math:`\mathcal{N}(0, \mathrm{noise}^2)` is added to the removed pixels (Rong et al., ICML
    2022). Solved in torch (multigrid-preconditioned CG in float64) on the input's device.

    Args:
        inputs: ``(N, C, H, W)`` images.
        removed: ``(N, H, W)`` or ``(N, 1, H, W)`` booleans, True where a pixel is imputed.
        noise: standard deviation of the added noise (0 for none).
        generator: random generator for the noise (default: torch's global one).

    Returns:
        The imputed images, same shape and dtype as ``inputs``.

    Raises:
        ValueError: for mismatched shapes, a negative ``noise``, or an image with every pixel removed.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> removed = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> removed[0, 1:3, 1:3] = True
        >>> noisy_linear_imputation(x, removed, noise=0.0).allclose(x)  # a linear ramp is rebuilt exactly
        True
    """
    inputs = check_inputs(inputs)
    if inputs.ndim != 4:
        raise ValueError(f"ROAD imputes 2-D images: inputs must be (N, C, H, W), got {tuple(inputs.shape)}")
    if removed.ndim == 4 and removed.shape[1] == 1:
        removed = removed.squeeze(1)
    if tuple(removed.shape) != (inputs.shape[0], *inputs.shape[2:]):
        raise ValueError(
            f"removed must have shape (N, H, W) = {(inputs.shape[0], *inputs.shape[2:])}, got {tuple(removed.shape)}"
        )
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    removed = removed.to(device=inputs.device, dtype=torch.bool)
    full = removed.flatten(1).all(dim=1)
    if bool(full.any()):
        raise ValueError(
            f"every pixel of sample(s) {full.nonzero().flatten().tolist()} is removed: nothing is left to impute from"
        )
    filled = linear_imputation(inputs.detach(), removed)
    if noise > 0:
        draw = torch.randn(filled.shape, generator=generator, device=filled.device, dtype=filled.dtype)
        filled = filled + noise * draw * removed.unsqueeze(1)
    return filled


def _road_scores(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike,
    percents: list[float],
    orders: Sequence[str],
    noise: float,
    generator: torch.Generator | None,
    batch_size: int | None,
    keep_images: bool = False,
    image_arg: ImageArg = None,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Clean scores ``(N,)``, imputed scores ``(N, len(orders), P)``, valid rows, and the images if asked."""
    inputs, call = split_inputs(inputs, image_arg)
    if inputs.ndim != 4:
        raise ValueError(f"ROAD works on 2-D images: inputs must be (N, C, H, W), got {tuple(inputs.shape)}")
    batch_size = batch_of(batch_size, inputs.device)
    if inputs.shape[2] * inputs.shape[3] < 2:
        raise ValueError(f"ROAD needs images of at least 2 pixels, got {tuple(inputs.shape[2:])}")
    n = inputs.shape[0]
    cams = prepare_maps(maps, n, inputs.shape[2:], inputs.device)
    valid = valid_rows(cams)
    cams = torch.where(valid.view(-1, 1, 1), cams, torch.zeros_like(cams))
    masks = torch.stack([removal_masks(cams, percents, order) for order in orders], dim=1).flatten(1, 2)
    per_sample = masks.shape[1]
    rows = torch.arange(n, device=inputs.device).repeat_interleave(per_sample)
    chunk = max(1, _IMPUTE_PIXELS // max(1, inputs[0].numel()))
    images: list[Tensor] = []

    def make(part: slice) -> Tensor:
        sample = rows[part]
        removed = masks.flatten(0, 1)[part]
        pieces = [
            noisy_linear_imputation(
                inputs[sample[i : i + chunk]], removed[i : i + chunk], noise=noise, generator=generator
            )
            for i in range(0, sample.shape[0], chunk)
        ]
        built = torch.cat(pieces)
        if keep_images:
            images.append(built.clone())
        return built

    with eval_mode(model):
        target, clean = clean_scores(model, inputs, targets, batch_size, call)
        bar = Progress(rows.shape[0], "ROAD imputed inputs", progress)
        try:
            scores = forward_scores(model, counted_target(target, bar), rows, make, batch_size, call)
        finally:
            bar.close()
        scores = scores.view(n, len(orders), len(percents))
    return clean.to(scores.dtype), scores, valid, torch.cat(images) if keep_images else None


def _nan_rows(values: Tensor, valid: Tensor) -> Tensor:
    shape = (-1, *[1] * (values.ndim - 1))
    return torch.where(valid.view(shape), values, torch.full_like(values, float("nan")))


def road(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    order: str = "morf",
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    image_arg: ImageArg = None,
    progress: bool | None = None,
) -> CurveResult:
    r"""ROAD score change after removing the most (``"morf"``) or least (``"lerf"``) relevant pixels.

    For each percent :math:`r` removed, :math:`s_r - s_0` where :math:`s_r` is the score of the input
    with those pixels imputed (see the module docstring; Rong et al., ICML 2022); the per-sample
    value is the mean over the percentiles. MoRF: lower is better; LeRF: higher is better.

    Args:
        model: the classifier; run in eval mode (its flags are restored afterwards).
        inputs: ``(N, C, H, W)`` model inputs.
        maps: one map per sample (any method's output; resized to ``(H, W)``).
        targets: a target object, a class index or one per sample (its softmax probability), or
            ``None`` for the predicted class's probability.
        order: ``"morf"`` or ``"lerf"``.
        percentiles: percent of pixels removed, each in ``(0, 100)``.
        noise: standard deviation of the imputation noise.
        generator: random generator for the noise.
        batch_size: imputed inputs per forward (``None``: 8 on a CPU, 32 on a GPU).
        image_arg: for tuple/dict ``inputs`` (a model with several inputs), which argument is the
            image; only the image is imputed (see :class:`camkit.engine.ModelInput`).
        progress: a progress line (rate, ETA) counting the imputed inputs scored: ``True``
            always, ``False`` never, ``None`` only for work that lasts a few seconds (see
            :class:`camkit.engine.Progress`).

    Returns:
        ``per_sample`` mean changes, their ``mean``, the ``curve`` ``(N, P)`` of changes and the
        removed ``fractions`` ``(P,)``.

    Raises:
        ValueError: for an unknown ``order``, bad percentiles, non-2-D inputs or maps of the wrong shape.
        TypeError: for arguments of the wrong type.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> result = road(model, torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4), percentiles=[25, 50])
        >>> result.curve.shape, result.fractions
        (torch.Size([2, 2]), tensor([0.2500, 0.5000]))
    """
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    percents = checked_percentiles(percentiles)
    clean, scores, valid, _ = _road_scores(
        model,
        inputs,
        maps,
        targets,
        percents,
        [order],
        noise,
        generator,
        batch_size,
        image_arg=image_arg,
        progress=progress,
    )
    curve = _nan_rows(scores[:, 0] - clean.unsqueeze(1), valid)
    per_sample = curve.mean(dim=1)
    fractions = torch.tensor(percents, dtype=curve.dtype, device=curve.device) / 100
    return CurveResult(per_sample=per_sample, mean=nanmean(per_sample), curve=curve, fractions=fractions)


def road_combined(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    image_arg: ImageArg = None,
    progress: bool | None = None,
) -> CurveResult:
    r"""ROAD combined: :math:`\frac{1}{|R|}\sum_r (s^{\mathrm{LeRF}}_r - s^{\mathrm{MoRF}}_r) / 2` (higher is better).

    Both orders and all percentiles are imputed and scored in one batched pass (Rong et al., ICML
    2022; the combination is pytorch-grad-cam's ``ROADCombined``).

    Args:
        model: the classifier; run in eval mode (its flags are restored afterwards).
        inputs: ``(N, C, H, W)`` model inputs.
        maps: one map per sample.
        targets: as for :func:`road`.
        percentiles: percent of pixels removed, each in ``(0, 100)``.
        noise: standard deviation of the imputation noise.
        generator: random generator for the noise.
        batch_size: imputed inputs per forward (``None``: 8 on a CPU, 32 on a GPU).
        image_arg: for tuple/dict ``inputs`` (a model with several inputs), which argument is the
            image; only the image is imputed (see :class:`camkit.engine.ModelInput`).
        progress: a progress line (rate, ETA) counting the imputed inputs scored: ``True``
            always, ``False`` never, ``None`` only for work that lasts a few seconds (see
            :class:`camkit.engine.Progress`).

    Returns:
        ``per_sample`` combined scores, their ``mean``, the ``curve`` ``(N, P)`` of
        :math:`(s^{\mathrm{LeRF}}_r - s^{\mathrm{MoRF}}_r) / 2` and the removed ``fractions``.

    Raises:
        ValueError: as for :func:`road`.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(1, 1, 4, 4)
        >>> road_combined(model, x, torch.ones(1, 4, 4) * 0.5, percentiles=[50], noise=0.0).mean  # a flat map
        0.0
    """
    percents = checked_percentiles(percentiles)
    _, scores, valid, _ = _road_scores(
        model,
        inputs,
        maps,
        targets,
        percents,
        ["morf", "lerf"],
        noise,
        generator,
        batch_size,
        image_arg=image_arg,
        progress=progress,
    )
    curve = _nan_rows((scores[:, 1] - scores[:, 0]) / 2, valid)
    per_sample = curve.mean(dim=1)
    fractions = torch.tensor(percents, dtype=curve.dtype, device=curve.device) / 100
    return CurveResult(per_sample=per_sample, mean=nanmean(per_sample), curve=curve, fractions=fractions)


def road_at(
    order: str,
    percentile: float,
    inputs: Tensor,
    maps: MapsLike,
    targets: TargetLike,
    model: nn.Module,
    return_visualization: bool,
    return_diff: bool,
    noise: float,
    generator: torch.Generator | None,
    batch_size: int | None,
    progress: bool | None = None,
) -> MetricResult | tuple[MetricResult, Tensor]:
    """ROAD at one percentile of *kept* pixels (pytorch-grad-cam's convention) in one order.

    Args:
        order: ``"morf"`` or ``"lerf"``.
        percentile: percent of the pixels kept.
        inputs: the images.
        maps: the maps.
        targets: what to score.
        model: the model.
        return_visualization: also return the imputed images.
        return_diff: the score change instead of the imputed score.
        noise: imputation noise.
        generator: its random generator.
        batch_size: images per forward (``None``: 8 on a CPU, 32 on a GPU).
        progress: a progress line (see :func:`road`).

    Returns:
        The per-sample result (and the images when asked).
    """
    kept = checked_percentiles([percentile], "percentile")[0]
    clean, scores, valid, images = _road_scores(
        model,
        inputs,
        maps,
        targets,
        [100 - kept],
        [order],
        noise,
        generator,
        batch_size,
        return_visualization,
        progress=progress,
    )
    values = scores[:, 0, 0] - clean if return_diff else scores[:, 0, 0]
    result = make_result(_nan_rows(values, valid))
    if return_visualization and images is not None:
        return result, images
    return result
