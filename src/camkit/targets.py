"""Targets: which scalar of the model output a map explains.

A target is any callable ``target(output, rows=None) -> Tensor`` returning one scalar per output
row, shape ``(B,)``. ``rows`` says which original sample each output row belongs to (perturbation
methods run many rows per sample); ``None`` means row ``b`` is sample ``b``. The engine
differentiates the sum of these scalars, so per-sample targets cost one backward for the batch.

Example:
    >>> import torch
    >>> ClassTarget([2, 0])(torch.tensor([[0.0, 1.0, 5.0], [3.0, 1.0, 0.0]]))
    tensor([5., 3.])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["ClassProbabilityTarget", "ClassTarget", "Target", "logits_of"]


class Target(Protocol):
    """The protocol every target follows."""

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Scalars ``(B,)`` to explain, one per row of ``output``."""
        ...


def logits_of(output: Any) -> Tensor:
    """Find the class-score tensor in a model output.

    Accepts a tensor, a tuple/list (its first tensor), a mapping or an object with ``logits``.

    Args:
        output: what the model returned.

    Returns:
        The ``(N, K)`` score tensor.

    Raises:
        TypeError: when no score tensor can be found; the message says what was found.
    """
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                return item
    if isinstance(output, Mapping):
        found = output.get("logits")
        if isinstance(found, Tensor):
            return found
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise TypeError(
        f"cannot find class scores in a model output of type {type(output).__name__}: expected a "
        "tensor (N, num_classes), a tuple whose first tensor holds them, or a mapping/object with "
        "'logits'; otherwise pass a target callable that picks the score"
    )


class ClassTarget:
    r"""The raw score (logit) of one class per sample: :math:`Y^{(c)}`.

    Args:
        class_idx: one class index for the whole batch, or one per sample.

    Raises:
        TypeError: if ``class_idx`` is not an int or a sequence of ints.
        ValueError: if an index is negative.

    Example:
        >>> ClassTarget(1)(torch.tensor([[0.0, 4.0]]))
        tensor([4.])
    """

    def __init__(self, class_idx: int | Sequence[int]) -> None:
        if isinstance(class_idx, bool) or not isinstance(class_idx, (int, Sequence)):
            raise TypeError(
                f"class_idx must be an int or a list of ints (one per sample), got {type(class_idx).__name__}"
            )
        values = [class_idx] if isinstance(class_idx, int) else list(class_idx)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise TypeError(f"class_idx must contain ints, got {values!r}")
        if any(v < 0 for v in values):
            raise ValueError(f"class_idx must be >= 0, got {class_idx!r}")
        self.per_sample = not isinstance(class_idx, int)
        self.indices = values

    def classes(self, batch: int, num_classes: int | None = None) -> Tensor:
        """The class index of each of ``batch`` samples, checked against ``num_classes``.

        Args:
            batch: the batch size.
            num_classes: the number of classes, when known.

        Returns:
            A long tensor ``(batch,)``.

        Raises:
            ValueError: on a list of the wrong length or an index out of range.
        """
        if self.per_sample and len(self.indices) != batch:
            raise ValueError(
                f"class_idx has {len(self.indices)} entries but the batch has {batch} samples: "
                "pass one class index per sample, or a single int for all"
            )
        if num_classes is not None and max(self.indices) >= num_classes:
            raise ValueError(
                f"class_idx {max(self.indices)} is out of range: the model output has {num_classes} "
                f"classes, so valid indices are 0..{num_classes - 1}"
            )
        values = self.indices if self.per_sample else self.indices * batch
        return torch.tensor(values, dtype=torch.long)

    def _scores(self, output: Any) -> Tensor:
        scores = logits_of(output)
        if scores.ndim != 2:
            raise ValueError(
                f"class scores must have shape (N, num_classes), got {tuple(scores.shape)}"
                + (": add a batch dimension to the input (x.unsqueeze(0))" if scores.ndim == 1 else "")
            )
        return scores

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Pick ``Y^(c)`` for each output row.

        Args:
            output: model output.
            rows: sample index of each output row (``None``: row b is sample b).

        Returns:
            ``(B,)`` scores.
        """
        scores = self._scores(output)
        if self.per_sample and rows is not None:
            classes = self.classes(len(self.indices), scores.shape[1])[rows.cpu()]
        else:
            classes = self.classes(scores.shape[0], scores.shape[1])
        classes = classes.to(scores.device)
        return scores.gather(1, classes.view(-1, 1)).squeeze(1)

    def __repr__(self) -> str:
        value = self.indices if self.per_sample else self.indices[0]
        return f"{type(self).__name__}({value!r})"


class ClassProbabilityTarget(ClassTarget):
    r"""The softmax probability of one class per sample: :math:`\mathrm{softmax}(Y)^{(c)}`.

    Example:
        >>> ClassProbabilityTarget(0)(torch.zeros(1, 4))
        tensor([0.2500])
    """

    def _scores(self, output: Any) -> Tensor:
        return torch.softmax(super()._scores(output), dim=1)
