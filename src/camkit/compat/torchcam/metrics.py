"""``torchcam.metrics``: TorchCAM's dataset metrics over :mod:`camkit.metrics`.

* :class:`ClassificationMetric`: camkit's own (average drop and increase in confidence).
* :class:`DeletionInsertionMetric`: TorchCAM's accumulator over :func:`camkit.metrics.deletion`
  and :func:`camkit.metrics.insertion`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from camkit.engine import eval_mode, paused
from camkit.metrics import CAMExtractorLike, ClassificationMetric, deletion, insertion
from camkit.targets import ClassTarget, logits_of

__all__ = ["ClassificationMetric", "DeletionInsertionMetric"]


class DeletionInsertionMetric:
    r"""Deletion and insertion AUCs over a dataset (Petsiuk et al., RISE, BMVC 2018), TorchCAM's way.

    For each batch, :meth:`update` runs the model, applies ``logits_fn``, computes the maps of
    ``class_idx`` (default: the top class) from those scores, fuses them over the layers, and
    accumulates the areas under the deletion and insertion curves of that class's score (read after
    ``logits_fn``) from :func:`camkit.metrics.deletion` / :func:`camkit.metrics.insertion`. Samples
    whose map holds NaN are skipped and counted in ``nan_count``.

    Differences from TorchCAM 0.5.0: the curve has ``steps + 1`` evenly spaced points (camkit's
    schedule; TorchCAM rounds its step size up, so with a number of positions that ``steps`` does
    not divide its curve has fewer points); ``update(targets=...)`` is not supported;
    :meth:`summary` before any update raises ``ValueError``.

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
                raise TypeError(f"{name} must be an int (e.g. 20), got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if baseline is not None and not isinstance(baseline, Tensor) and not callable(baseline):
            raise TypeError("baseline must be a tensor, a function of the input, or None (zeros)")
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
            targets: not supported (TorchCAM's per-sample output targets).

        Raises:
            NotImplementedError: when ``targets`` is given (pass ``class_idx``, or use
                :func:`camkit.metrics.deletion` with a camkit target).
        """
        if targets is not None:
            raise NotImplementedError(
                "DeletionInsertionMetric.update(targets=...) is not mirrored: pass class_idx, or call "
                "camkit.metrics.deletion/insertion with a camkit target"
            )
        model = self.cam_extractor.model
        with eval_mode(model):
            scores = self._scores(model(input_tensor))
            chosen = logits_of(scores).argmax(dim=-1).tolist() if class_idx is None else class_idx
            cam = self.cam_extractor.fuse_cams(self.cam_extractor(chosen, scores)).detach()
        keep = ~torch.isnan(cam.reshape(cam.shape[0], -1)).any(dim=-1)
        nan_count = int((~keep).sum())
        if not keep.any():
            self.nan_count += nan_count
            return
        rows = keep.nonzero().flatten()
        classes = chosen if isinstance(chosen, int) else [chosen[i] for i in rows.tolist()]
        inputs = input_tensor.detach()[rows]
        base = ClassTarget(classes)

        def target(output: Any, rows: Tensor | None = None) -> Tensor:
            return base(self._scores(output), rows)

        baseline: Any = 0.0 if self.baseline is None else self.baseline
        with paused():  # the extractor's hooks ignore the perturbed forwards
            common: dict[str, Any] = {"steps": self.steps, "baseline": baseline, "batch_size": self.batch_size}
            deleted = deletion(model, inputs, cam[rows], target, **common)
            inserted = insertion(model, inputs, cam[rows], target, **common)
        self.deletion += float(deleted.per_sample.double().sum())
        self.insertion += float(inserted.per_sample.double().sum())
        self.total += rows.numel()
        self.nan_count += nan_count

    def summary(self) -> dict[str, float]:
        """The mean AUCs so far: ``{"deletion_auc": ..., "insertion_auc": ...}``.

        Raises:
            ValueError: before any sample was added.
        """
        if self.total == 0:
            raise ValueError("call update() with at least one batch (with a valid map) before summary()")
        return {"deletion_auc": self.deletion / self.total, "insertion_auc": self.insertion / self.total}

    def reset(self) -> None:
        """Forget every sample added."""
        self.deletion = 0.0
        self.insertion = 0.0
        self.total = 0
        self.nan_count = 0
