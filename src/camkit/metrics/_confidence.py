r"""Confidence metrics: what happens to the score when the input is multiplied by the map.

For a sample with clean score :math:`Y` (by default the predicted class's probability) and score
:math:`O` of the input multiplied by its map :math:`E` (resized to the input, shared by channels),
:math:`O = f(E \odot x)`, the Grad-CAM++ paper (Chattopadhyay et al., WACV 2018) defines

.. math::
    \mathrm{AverageDrop} = \frac1N \sum_i \frac{\max(0,\, Y_i - O_i)}{Y_i}, \qquad
    \mathrm{IncreaseInConfidence} = \frac1N \sum_i \mathbb{1}[Y_i < O_i]

both as fractions (lower drop and higher increase are better). pytorch-grad-cam's
``CamMultImageConfidenceChange`` reports :math:`O - Y` per sample.

* :func:`confidence_change` computes all of them for maps you already have, batched.
* :class:`ClassificationMetric` behaves like TorchCAM's: it computes the maps with an extractor and
  accumulates over batches (``update``, ``summary``, ``reset``).
* ``camkit.metrics`` also has pytorch-grad-cam's ``CamMultImageConfidenceChange``,
  ``DropInConfidence`` and ``IncreaseInConfidence`` classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from camkit.engine import ImageArg, ModelInput, eval_mode
from camkit.metrics._common import (
    InputsLike,
    MapsLike,
    MetricResult,
    TargetLike,
    batch_of,
    check_inputs,
    clean_scores,
    forward_scores,
    make_result,
    prepare_maps,
    split_inputs,
    valid_rows,
)
from camkit.targets import ClassTarget, logits_of

__all__ = [
    "CAMExtractorLike",
    "ClassificationMetric",
    "ConfidenceChange",
    "average_drop",
    "confidence_change",
    "increase_in_confidence",
]


@dataclass(frozen=True)
class ConfidenceChange:
    r"""Scores of the clean and the map-multiplied inputs, and the metrics derived from them.

    Attributes:
        original: ``(N,)`` clean scores :math:`Y`.
        masked: ``(N,)`` scores :math:`O` of the input multiplied by its map.
        change: :math:`O - Y` (pytorch-grad-cam's ``CamMultImageConfidenceChange``).
        drop: :math:`\max(0, Y - O) / Y` (NaN where :math:`Y \le 0`; the mean is the average drop).
        increase: :math:`\mathbb{1}[O > Y]` (the mean is the increase in confidence).
    """

    original: Tensor
    masked: Tensor
    change: MetricResult
    drop: MetricResult
    increase: MetricResult


def _nan_where(values: Tensor, bad: Tensor) -> Tensor:
    return torch.where(bad, torch.full_like(values, float("nan")), values)


def _derive(original: Tensor, masked: Tensor, valid: Tensor) -> ConfidenceChange:
    original = original.to(masked.dtype)
    positive = original > 0
    drop = torch.clamp(original - masked, min=0) / torch.where(positive, original, torch.ones_like(original))
    return ConfidenceChange(
        original=original,
        masked=masked,
        change=make_result(_nan_where(masked - original, ~valid)),
        drop=make_result(_nan_where(drop, ~(valid & positive))),
        increase=make_result(_nan_where((masked > original).to(masked.dtype), ~valid)),
    )


def _masked_scores(
    model: nn.Module,
    inputs: Tensor,
    cams: Tensor,
    target: Callable[..., Tensor],
    size: int,
    call: ModelInput | None = None,
) -> Tensor:
    rows = torch.arange(inputs.shape[0], device=inputs.device)
    weights = cams.unsqueeze(1).to(inputs.dtype)
    return forward_scores(model, target, rows, lambda part: inputs[part] * weights[part], size, call)


def _check_positive(change: ConfidenceChange, what: str) -> None:
    bad = (change.original <= 0) & ~torch.isnan(change.change.per_sample)
    if bool(bad.any()):
        raise ValueError(
            f"{what} divides by the clean score, which is <= 0 for sample(s) {bad.nonzero().flatten().tolist()} "
            f"(values {change.original[bad].tolist()}): score probabilities instead (targets=class index or "
            "ClassProbabilityTarget, or logits_fn=softmax)"
        )


def confidence_change(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    batch_size: int | None = None,
    image_arg: ImageArg = None,
) -> ConfidenceChange:
    r"""Score change when each input is multiplied by its map: change, drop and increase per sample.

    See the module docstring for the formulas (Chattopadhyay et al., Grad-CAM++, WACV 2018).

    Args:
        model: the classifier; run in eval mode (its flags are restored afterwards).
        inputs: ``(N, C, *S)`` model inputs; for a model with several inputs, a tuple or dict of its
            arguments (only the image is masked; see :class:`camkit.engine.ModelInput`).
        maps: one map per sample (any method's output, resized to ``S``), usually in ``[0, 1]``.
        targets: a target object, a class index or one per sample (its softmax probability), or
            ``None`` for the predicted class's probability.
        batch_size: inputs per forward (``None``: 8 on a CPU, 32 on a GPU).
        image_arg: which argument of a tuple/dict ``inputs`` is the image.

    Returns:
        A :class:`ConfidenceChange`.

    Raises:
        ValueError: for maps of the wrong shape or batch, maps or inputs holding NaN/inf (the samples
            named), or ``batch_size`` < 1.
        TypeError: for arguments of the wrong type.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> result = confidence_change(model, x, torch.ones(2, 4, 4))  # all-ones maps change nothing
        >>> result.drop.mean, result.increase.mean
        (0.0, 0.0)
    """
    inputs, call = split_inputs(inputs, image_arg)
    batch_size = batch_of(batch_size, inputs.device)
    cams = prepare_maps(maps, inputs.shape[0], inputs.shape[2:], inputs.device)
    valid = valid_rows(cams)
    cams = torch.where(valid.view(-1, *[1] * (cams.ndim - 1)), cams, torch.zeros_like(cams))
    with eval_mode(model):
        target, original = clean_scores(model, inputs, targets, batch_size, call)
        masked = _masked_scores(model, inputs, cams, target, batch_size, call)
    return _derive(original, masked, valid)


def average_drop(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    batch_size: int | None = None,
    image_arg: ImageArg = None,
) -> MetricResult:
    r"""Average drop :math:`\frac1N \sum_i \max(0, Y_i - O_i) / Y_i` (a fraction; lower is better).

    Arguments as for :func:`confidence_change` (Chattopadhyay et al., Grad-CAM++, WACV 2018).

    Args:
        model: the classifier.
        inputs: ``(N, C, *S)`` model inputs.
        maps: one map per sample.
        targets: as for :func:`confidence_change`; the scores must be positive.
        batch_size: inputs per forward (``None``: 8 on a CPU, 32 on a GPU).
        image_arg: as for :func:`confidence_change`.

    Returns:
        The per-sample drops and their mean.

    Raises:
        ValueError: when a clean score is <= 0 (use probabilities), or as :func:`confidence_change`.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> average_drop(model, torch.rand(1, 1, 4, 4), torch.ones(1, 4, 4)).mean
        0.0
    """
    change = confidence_change(model, inputs, maps, targets, batch_size=batch_size, image_arg=image_arg)
    _check_positive(change, "average drop")
    return change.drop


def increase_in_confidence(
    model: nn.Module,
    inputs: InputsLike,
    maps: MapsLike,
    targets: TargetLike = None,
    *,
    batch_size: int | None = None,
    image_arg: ImageArg = None,
) -> MetricResult:
    r"""Increase in confidence :math:`\frac1N \sum_i \mathbb{1}[Y_i < O_i]` (a fraction; higher is better).

    Arguments as for :func:`confidence_change` (Chattopadhyay et al., Grad-CAM++, WACV 2018).

    Args:
        model: the classifier.
        inputs: ``(N, C, *S)`` model inputs.
        maps: one map per sample.
        targets: as for :func:`confidence_change`.
        batch_size: inputs per forward (``None``: 8 on a CPU, 32 on a GPU).
        image_arg: as for :func:`confidence_change`.

    Returns:
        Per-sample 0/1 values and their mean.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> increase_in_confidence(model, torch.rand(1, 1, 4, 4), torch.ones(1, 4, 4)).mean
        0.0
    """
    return confidence_change(model, inputs, maps, targets, batch_size=batch_size, image_arg=image_arg).increase


class CAMExtractorLike(Protocol):
    """What :class:`ClassificationMetric` needs of an extractor (camkit's TorchCAM-style ones)."""

    model: nn.Module

    def __call__(
        self,
        class_idx: Any = None,
        scores: Any = None,
        normalized: bool = True,
        retain_graph: bool = False,
        *,
        targets: Any = None,
    ) -> list[Tensor]:
        """Maps of the last forward, one per target layer."""
        ...

    def fuse_cams(self, cams: list[Tensor]) -> Tensor:
        """Fuse the maps of several layers into one."""
        ...


class ClassificationMetric:
    r"""Average drop and increase in confidence over a dataset, TorchCAM's way.

    For each batch, :meth:`update` runs the model (with the extractor's hooks), applies
    ``logits_fn`` (e.g. ``partial(torch.softmax, dim=-1)``) to the output, computes the maps of
    ``class_idx`` (default: the top class) **from those scores**, fuses and resizes them, runs the
    input multiplied by the map (hooks paused, ``inference_mode``) and accumulates
    :math:`\max(0, Y - O) / Y` and :math:`\mathbb{1}[Y < O]` (Chattopadhyay et al., Grad-CAM++, WACV
    2018). Samples whose map holds NaN are skipped and counted in ``nan_count``. The model's flags
    are restored after each update.

    Differences from TorchCAM 0.5.0: the drop divides by :math:`Y` exactly (TorchCAM adds 1e-7) and
    raises a ``ValueError`` when :math:`Y \le 0` (raw logits), where TorchCAM returns a negative
    "drop"; :meth:`summary` before any update raises ``ValueError`` (TorchCAM: ``AssertionError``).

    Args:
        cam_extractor: a camkit extractor (``camkit.methods.GradCAM(model, "layer4")``, ...).
        logits_fn: applied to the model output before the scores are read (``None``: raw output).

    Example:
        >>> from functools import partial
        >>> from torch import nn
        >>> from camkit.methods import GradCAM
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> with GradCAM(model, "0") as extractor:
        ...     metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
        ...     metric.update(torch.rand(2, 3, 8, 8))
        >>> sorted(metric.summary())
        ['avg_drop', 'conf_increase']
    """

    def __init__(self, cam_extractor: CAMExtractorLike, logits_fn: Callable[[Any], Any] | None = None) -> None:
        self.cam_extractor = cam_extractor
        self.logits_fn = logits_fn
        self.reset()

    def _scores(self, output: Any) -> Any:
        return output if self.logits_fn is None else self.logits_fn(output)

    def update(
        self,
        input_tensor: Tensor,
        class_idx: int | list[int] | None = None,
        *,
        targets: Callable[..., Tensor] | None = None,
    ) -> None:
        """Add a batch: compute its maps with the extractor, then its drop and increase.

        Args:
            input_tensor: ``(N, C, *S)`` preprocessed inputs.
            class_idx: class to explain, one int or one per sample (default: the top class).
            targets: a camkit target object instead of ``class_idx`` (read on the ``logits_fn`` scores).

        Raises:
            ValueError: when both ``class_idx`` and ``targets`` are given, or a clean score is <= 0.
        """
        if targets is not None and class_idx is not None:
            raise ValueError("pass either class_idx or targets, not both")
        inputs = check_inputs(input_tensor)
        model = self.cam_extractor.model
        with eval_mode(model):
            scores = self._scores(model(inputs))
            if targets is None:
                chosen = logits_of(scores).argmax(dim=-1).tolist() if class_idx is None else class_idx
                target: Callable[..., Tensor] = ClassTarget(chosen)
                cams = self.cam_extractor(chosen, scores)
            else:
                target = targets
                cams = self.cam_extractor(scores=scores, targets=targets)
            fused = self.cam_extractor.fuse_cams(cams)
            # TorchCAM's ClassificationMetric skips and counts unusable maps (its nan_count): keep that
            cam = prepare_maps(fused, inputs.shape[0], inputs.shape[2:], inputs.device, finite=False)
            original = target(scores).detach()
            valid = valid_rows(cam)
            keep = valid.nonzero().flatten()
            if keep.numel() == 0:
                self.nan_count += int((~valid).sum())
                return

            def masked_target(output: Any, rows: Tensor | None = None) -> Tensor:
                return target(self._scores(output), keep[rows] if rows is not None else keep)

            masked = _masked_scores(model, inputs[keep], cam[keep], masked_target, keep.numel())
        change = _derive(original[keep], masked, torch.ones_like(keep, dtype=torch.bool))
        _check_positive(change, "average drop")
        self.nan_count += int((~valid).sum())
        self.drops.append(change.drop.per_sample.cpu())
        self.increases.append(change.increase.per_sample.cpu())
        self.drop += float(change.drop.per_sample.double().sum())
        self.increase += float(change.increase.per_sample.double().sum())
        self.total += keep.numel()

    def summary(self) -> dict[str, float]:
        """The metrics so far: ``{"avg_drop": ..., "conf_increase": ...}`` (fractions).

        Raises:
            ValueError: before any sample was added.
        """
        if self.total == 0:
            raise ValueError("call update() with at least one batch (with a valid map) before summary()")
        return {"avg_drop": self.drop / self.total, "conf_increase": self.increase / self.total}

    def per_sample(self) -> tuple[Tensor, Tensor]:
        """Per-sample drops and increases of every sample added so far (NaN-map samples left out)."""
        empty = torch.zeros(0)
        drops = torch.cat(self.drops) if self.drops else empty
        return drops, torch.cat(self.increases) if self.increases else empty

    def reset(self) -> None:
        """Forget every sample added."""
        self.drop = 0.0
        self.increase = 0.0
        self.total = 0
        self.nan_count = 0
        self.drops: list[Tensor] = []
        self.increases: list[Tensor] = []
