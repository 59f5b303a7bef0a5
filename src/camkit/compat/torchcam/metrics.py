"""``torchcam.metrics``: TorchCAM's dataset metrics over :mod:`camkit.metrics`.

* :class:`ClassificationMetric`: camkit's own (average drop and increase in confidence), with
  TorchCAM's ``update(targets=...)`` (per-sample ``OutputTarget``s) and its ``summary()`` error.
* :class:`DeletionInsertionMetric`: TorchCAM's accumulator over :func:`camkit.metrics.deletion`
  and :func:`camkit.metrics.insertion`.

:meth:`summary` before any usable sample raises :class:`NoSamplesError`, which is both the
``AssertionError`` TorchCAM raises and the ``ValueError`` camkit's own metrics raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from camkit.engine import eval_mode, paused
from camkit.metrics import CAMExtractorLike, deletion, insertion
from camkit.metrics import ClassificationMetric as _ClassificationMetric
from camkit.targets import ClassTarget, as_target, logits_of

__all__ = ["ClassificationMetric", "DeletionInsertionMetric", "NoSamplesError"]


class NoSamplesError(ValueError, AssertionError):
    """``summary()`` before any usable sample: TorchCAM's ``AssertionError``, camkit's ``ValueError``."""


_NO_SAMPLES = (
    "you need to update the metric before getting the summary: call update() with at least one batch "
    "whose map is finite"
)


def _one_of(class_idx: Any, targets: Any) -> None:
    if class_idx is not None and targets is not None:
        raise ValueError("provide either class_idx or targets, not both")


class ClassificationMetric(_ClassificationMetric):
    """camkit's :class:`camkit.metrics.ClassificationMetric` with TorchCAM's ``targets`` and ``summary``.

    ``update(targets=...)`` also takes TorchCAM's per-sample ``OutputTarget`` (a callable of one
    sample's scores, or a list with one per sample), read on the ``logits_fn`` scores.

    Example:
        >>> from functools import partial
        >>> from torch import nn
        >>> from camkit.methods import GradCAM
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> with GradCAM(model, "0") as extractor:
        ...     metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
        ...     metric.update(torch.rand(2, 3, 8, 8), targets=lambda sample: sample[1])
        >>> sorted(metric.summary())
        ['avg_drop', 'conf_increase']
    """

    def update(
        self,
        input_tensor: Tensor,
        class_idx: int | list[int] | None = None,
        *,
        targets: Any = None,
    ) -> None:
        """Add a batch (see :meth:`camkit.metrics.ClassificationMetric.update`).

        Raises:
            ValueError: for both ``class_idx`` and ``targets``, or a list of targets that does not
                match the batch.
            TypeError: for ``targets`` that are neither a callable nor a list of callables.
        """
        _one_of(class_idx, targets)
        if targets is not None:
            batch = input_tensor.shape[0] if isinstance(input_tensor, Tensor) else None
            targets = as_target(targets, batch)
        super().update(input_tensor, class_idx, targets=targets)

    def summary(self) -> dict[str, float]:
        """The metrics so far: ``{"avg_drop": ..., "conf_increase": ...}``.

        Raises:
            NoSamplesError: before any sample was added.
        """
        if self.total == 0:
            raise NoSamplesError(_NO_SAMPLES)
        return super().summary()


class DeletionInsertionMetric:
    r"""Deletion and insertion AUCs over a dataset (Petsiuk et al., RISE, BMVC 2018), TorchCAM's way.

    For each batch, :meth:`update` runs the model, applies ``logits_fn``, computes the maps of
    ``class_idx`` (default: the top class) from those scores, fuses them over the layers, and
    accumulates the areas under the deletion and insertion curves of that class's score (read after
    ``logits_fn``) from :func:`camkit.metrics.deletion` / :func:`camkit.metrics.insertion`. Samples
    whose map holds NaN are skipped and counted in ``nan_count``.

    Difference from TorchCAM 0.5.0: the curve has ``steps + 1`` evenly spaced points (camkit's
    schedule; TorchCAM rounds its step size up, so with a number of positions that ``steps`` does
    not divide its curve has fewer points and its AUC differs slightly).

    Args:
        cam_extractor: a camkit extractor (``GradCAM(model, "layer4")``, ...).
        logits_fn: applied to the model output before the scores are read (``None``: raw output).
        steps: number of perturbation intervals.
        baseline: what replaces removed positions: a tensor broadcastable to the input, a function
            of the input, or ``None`` for zeros.
        batch_size: perturbed inputs per forward.

    Raises:
        TypeError: for ``steps``/``batch_size`` that are not ints, or a bad ``baseline`` type.
        ValueError: for ``steps`` or ``batch_size`` < 1.

    Example:
        >>> from functools import partial
        >>> from torch import nn
        >>> from camkit.methods import GradCAM
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> with GradCAM(model, "0") as extractor:
        ...     metric = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=4)
        ...     metric.update(torch.rand(2, 3, 8, 8))
        >>> sorted(metric.summary())
        ['deletion_auc', 'insertion_auc']
    """

    def __init__(
        self,
        cam_extractor: CAMExtractorLike,
        logits_fn: Callable[[Any], Any] | None = None,
        *,
        steps: int = 20,
        baseline: Tensor | Callable[[Tensor], Tensor] | None = None,
        batch_size: int = 32,
    ) -> None:
        for name, value in (("steps", steps), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer (e.g. 20), got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if baseline is not None and not isinstance(baseline, Tensor) and not callable(baseline):
            raise TypeError(
                f"baseline must be a tensor, a callable, or None (zeros), got {type(baseline).__name__}: "
                "e.g. torch.zeros_like(x) or lambda x: x.mean()"
            )
        self.cam_extractor = cam_extractor
        self.logits_fn = logits_fn
        self.steps = steps
        self.baseline = baseline
        self.batch_size = batch_size
        self.reset()

    def _scores(self, output: Any) -> Any:
        return output if self.logits_fn is None else self.logits_fn(output)

    def update(
        self,
        input_tensor: Tensor,
        class_idx: int | list[int] | None = None,
        *,
        targets: Any = None,
    ) -> None:
        """Add a batch: compute its maps with the extractor, then its deletion and insertion AUCs.

        Args:
            input_tensor: ``(N, C, *S)`` preprocessed inputs.
            class_idx: class to explain, one int or one per sample (default: the top class).
            targets: instead of ``class_idx``: a camkit target, or TorchCAM's per-sample
                ``OutputTarget`` (a callable of one sample's scores, or a list with one per
                sample), read on the ``logits_fn`` scores.

        Raises:
            ValueError: for both ``class_idx`` and ``targets``, or a baseline that does not
                broadcast to the input.
            TypeError: for a baseline function that does not return a tensor.
        """
        _one_of(class_idx, targets)
        model = self.cam_extractor.model
        with eval_mode(model):
            scores = self._scores(model(input_tensor))
            if targets is None:
                chosen = logits_of(scores).argmax(dim=-1).tolist() if class_idx is None else class_idx
                base: Callable[..., Tensor] = ClassTarget(chosen)
                cams = self.cam_extractor(chosen, scores)
            else:
                base = as_target(targets, input_tensor.shape[0])
                cams = self.cam_extractor(scores=scores, targets=base)
            cam = self.cam_extractor.fuse_cams(cams).detach()
        keep = ~torch.isnan(cam.reshape(cam.shape[0], -1)).any(dim=-1)
        nan_count = int((~keep).sum())
        if not keep.any():
            self.nan_count += nan_count
            return
        rows = keep.nonzero().flatten()
        inputs = input_tensor.detach()[rows]

        def target(output: Any, picked: Tensor | None = None) -> Tensor:
            return base(self._scores(output), rows[picked] if picked is not None else rows)

        baseline = self._baseline(input_tensor.detach())[rows] if self.baseline is not None else 0.0
        with paused():  # the extractor's hooks ignore the perturbed forwards
            common: dict[str, Any] = {"steps": self.steps, "baseline": baseline, "batch_size": self.batch_size}
            deleted = deletion(model, inputs, cam[rows], target, **common)
            inserted = insertion(model, inputs, cam[rows], target, **common)
        self.deletion += float(deleted.per_sample.double().sum())
        self.insertion += float(inserted.per_sample.double().sum())
        self.total += rows.numel()
        self.nan_count += nan_count

    def _baseline(self, inputs: Tensor) -> Tensor:
        """The baseline for ``inputs`` (a function of the input is called once per batch), at the input's shape."""
        made = self.baseline(inputs) if callable(self.baseline) else self.baseline
        if not isinstance(made, Tensor):
            raise TypeError(f"baseline callable must return a tensor, got {type(made).__name__}")
        try:
            return torch.broadcast_to(made.to(inputs), inputs.shape)
        except RuntimeError as exc:
            raise ValueError(
                f"baseline must be broadcastable to the input shape {tuple(inputs.shape)}, got {tuple(made.shape)}"
            ) from exc

    def summary(self) -> dict[str, float]:
        """The mean AUCs so far: ``{"deletion_auc": ..., "insertion_auc": ...}``.

        Raises:
            NoSamplesError: before any sample was added.
        """
        if self.total == 0:
            raise NoSamplesError(_NO_SAMPLES)
        return {"deletion_auc": self.deletion / self.total, "insertion_auc": self.insertion / self.total}

    def reset(self) -> None:
        """Forget every sample added."""
        self.deletion = 0.0
        self.insertion = 0.0
        self.total = 0
        self.nan_count = 0
