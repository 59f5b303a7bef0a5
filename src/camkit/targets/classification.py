"""Classification targets: class scores, probabilities, binary and ReST heads."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from camkit.targets._output import OutputKey, find_output, key_repr

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassProbabilityTarget",
    "ClassTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "RowwiseTarget",
    "Target",
    "logits_of",
]


class Target(Protocol):
    """The protocol every target follows."""

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Scalars ``(B,)`` to explain, one per row of ``output``."""
        ...


class RowwiseTarget:
    """Base of the targets whose scalar for a row depends on that row only, never on ``rows``.

    Such a target accepts one sample's output (and returns a scalar) as well as any batch of rows
    (and returns ``(B,)``), so front doors may call it on a whole batch or on the rows of one
    sample at once instead of row by row.
    """

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Scalar(s) of ``output``; subclasses implement it."""
        raise NotImplementedError


def logits_of(output: Any, output_key: OutputKey | None = None) -> Tensor:
    """Find the class-score tensor in a model output.

    Accepts a tensor, a tuple/list (its first tensor), a dict, a Hugging Face ``ModelOutput`` or
    any object with ``logits``; ``output_key`` names another entry (see :func:`find_output`).

    Args:
        output: what the model returned.
        output_key: a key of a dict/``ModelOutput``, an index of a tuple, or a path of them.

    Returns:
        The ``(N, K)`` score tensor.

    Raises:
        TypeError: when no score tensor can be found; the message lists the keys and types found.
        ValueError: when ``output_key`` names an entry the output does not have.

    Example:
        >>> logits_of({"logits": torch.zeros(1, 3), "aux": torch.ones(1, 2)}, output_key="aux")
        tensor([[1., 1.]])
    """
    return find_output(output, output_key, ("logits",), "class scores")


def category_index(value: Any, name: str = "category") -> int:
    """``value`` as a class index >= 0 (anything ``operator.index`` accepts), else an error naming ``name``."""
    try:
        index = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if isinstance(value, bool) or index < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return index


class ClassTarget:
    r"""The raw score (logit) of one class per sample: :math:`Y^{(c)}`.

    Args:
        class_idx: one class index for the whole batch, or one per sample.
        output_key: where the scores are in a tuple/dict/``ModelOutput`` output (``None``: a
            tensor, the first tensor of a tuple, or ``logits``); see :func:`find_output`.

    Raises:
        TypeError: if ``class_idx`` is not an int or a sequence of ints.
        ValueError: if an index is negative.

    Example:
        >>> ClassTarget(1)(torch.tensor([[0.0, 4.0]]))
        tensor([4.])
    """

    def __init__(self, class_idx: int | Sequence[int], *, output_key: OutputKey | None = None) -> None:
        self.output_key = output_key
        if isinstance(class_idx, (int, np.integer)) and not isinstance(class_idx, bool):
            class_idx = int(class_idx)
            values = [class_idx]
        elif isinstance(class_idx, Sequence):
            values = [int(v) if isinstance(v, np.integer) else v for v in class_idx]
            if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
                raise TypeError(f"class_idx must contain ints, got {values!r}")
        else:
            raise TypeError(
                f"class_idx must be an int or a list of ints (one per sample), got {type(class_idx).__name__}"
            )
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
        self.validate(batch, num_classes)
        values = self.indices if self.per_sample else self.indices * batch
        return torch.tensor(values, dtype=torch.long)

    def validate(self, batch: int, num_classes: int | None = None) -> None:
        """Check the indices against a batch of ``batch`` samples and ``num_classes`` classes (see :meth:`classes`).

        Args:
            batch: the batch size.
            num_classes: the number of classes, when known.

        Raises:
            ValueError: on a list of the wrong length or an index out of range.
        """
        if self.per_sample and len(self.indices) != batch:
            raise ValueError(
                f"class_idx has {len(self.indices)} entries but the batch has {batch} samples: "
                "pass one class index per sample, or a single int for all"
            )
        if num_classes is not None and self.indices and max(self.indices) >= num_classes:
            raise ValueError(
                f"class_idx {max(self.indices)} is out of range: the model output has {num_classes} "
                f"classes, so valid indices are 0..{num_classes - 1}"
            )

    def scores_of(self, output: Any) -> Tensor:
        """The class-score tensor this target reads in ``output`` (``output_key`` applied).

        Args:
            output: what the model returned.

        Returns:
            The scores, ``(N, K)`` (or one sample's ``(K,)``).
        """
        return logits_of(output, self.output_key)

    def _transform(self, scores: Tensor) -> Tensor:
        """Map raw scores to the quantity picked (identity; softmax in subclasses), last dim = classes."""
        return scores

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Pick ``Y^(c)`` for each output row.

        Args:
            output: model output: ``(N, K)`` scores, or one sample's ``(K,)`` scores for a single class.
            rows: sample index of each output row (``None``: row b is sample b).

        Returns:
            ``(B,)`` scores (a 0-d scalar for one sample's 1-D scores).

        Raises:
            ValueError: for scores of the wrong shape or an index out of range.
        """
        scores = self.scores_of(output)
        if scores.ndim == 1 and not self.per_sample:
            self.validate(1, scores.shape[0])
            return self._transform(scores)[self.indices[0]]
        if scores.ndim != 2:
            raise ValueError(
                f"class scores must have shape (N, num_classes), got {tuple(scores.shape)}"
                + (": add a batch dimension to the input (x.unsqueeze(0))" if scores.ndim == 1 else "")
            )
        if not self.per_sample:  # one class for every row: a column, no index tensor to build
            self.validate(scores.shape[0], scores.shape[1])
            return self._transform(scores).select(1, self.indices[0])
        if rows is not None:
            classes = self.classes(len(self.indices), scores.shape[1])[rows.cpu()]
        else:
            classes = self.classes(scores.shape[0], scores.shape[1])
        classes = classes.to(scores.device)
        return self._transform(scores).gather(1, classes.view(-1, 1)).squeeze(1)

    def __repr__(self) -> str:
        value = self.indices if self.per_sample else self.indices[0]
        return f"{type(self).__name__}({value!r}{key_repr(self.output_key)})"


class ClassProbabilityTarget(ClassTarget):
    r"""The softmax probability of one class per sample: :math:`\mathrm{softmax}(Y)^{(c)}`.

    Example:
        >>> ClassProbabilityTarget(0)(torch.zeros(1, 4))
        tensor([0.2500])
    """

    def _transform(self, scores: Tensor) -> Tensor:
        return torch.softmax(scores, dim=-1)


class ClassifierOutputTarget(ClassTarget, RowwiseTarget):
    r"""The raw score of ``category``: :math:`Y^{(c)}` (pytorch-grad-cam's name).

    Called on one sample's logits ``(K,)`` it returns a 0-d scalar; on ``(N, K)`` it returns ``(N,)``.

    Args:
        category: the class index.
        output_key: where the scores are in a structured output (see :class:`ClassTarget`).

    Raises:
        TypeError: if ``category`` is not an int.
        ValueError: if it is negative.

    Example:
        >>> ClassifierOutputTarget(1)(torch.tensor([[0.0, 4.0], [1.0, 2.0]]))
        tensor([4., 2.])
    """

    def __init__(self, category: int, *, output_key: OutputKey | None = None) -> None:
        self.category = category_index(category)
        super().__init__(self.category, output_key=output_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category}{key_repr(self.output_key)})"


class ClassifierOutputSoftmaxTarget(ClassProbabilityTarget, RowwiseTarget):
    r"""The softmax probability of ``category``: :math:`\mathrm{softmax}(Y)^{(c)}`.

    Args:
        category: the class index.
        output_key: where the scores are in a structured output (see :class:`ClassTarget`).

    Example:
        >>> ClassifierOutputSoftmaxTarget(0)(torch.zeros(4))
        tensor(0.2500)
    """

    def __init__(self, category: int, *, output_key: OutputKey | None = None) -> None:
        self.category = category_index(category)
        super().__init__(self.category, output_key=output_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category}{key_repr(self.output_key)})"


class ClassifierOutputReST(RowwiseTarget):
    r"""The score minus the cross-entropy of ``category`` (ReST, Cai, arXiv:2501.06261).

    .. math:: Y^{(c)} - \mathrm{CE}(Y, c) = Y^{(c)} + \log \mathrm{softmax}(Y)^{(c)}
              = 2\,Y^{(c)} - \log \sum_k e^{Y^{(k)}}

    It uses both the pre-softmax and the post-softmax output.

    Args:
        category: the class index.
        output_key: where the scores are in a structured output (see :class:`ClassTarget`).

    Example:
        >>> ClassifierOutputReST(0)(torch.zeros(1, 2))  # 0 - log 2
        tensor([-0.6931])
    """

    def __init__(self, category: int, *, output_key: OutputKey | None = None) -> None:
        self.category = category_index(category)
        self.output_key = output_key

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Score minus cross-entropy per row (a scalar for one sample's 1-D logits)."""
        scores = logits_of(output, self.output_key)
        if scores.ndim not in (1, 2) or self.category >= scores.shape[-1]:
            raise ValueError(
                f"ClassifierOutputReST({self.category}) needs logits (K,) or (N, K) with K > {self.category}, "
                f"got shape {tuple(scores.shape)}"
            )
        picked = scores[..., self.category]
        return 2 * picked - torch.logsumexp(scores, dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category}{key_repr(self.output_key)})"


class BinaryClassifierOutputTarget(RowwiseTarget):
    r"""The single logit of a binary head, signed for the class: :math:`\pm Y`.

    ``+Y`` explains class 1, ``-Y`` class 0 (any other ``category``). The head may output ``(N, 1)``
    or ``(N,)``; one sample's output (``(1,)`` or a 0-d scalar) gives its value unbatched.

    Args:
        category: 1 for the positive class, anything else for the negative class.
        output_key: where the logit is in a structured output (see :class:`ClassTarget`).

    Raises:
        ValueError: when the output has more than one value per sample.

    Example:
        >>> BinaryClassifierOutputTarget(0)(torch.tensor([[2.0], [-1.0]]))
        tensor([-2.,  1.])
        >>> BinaryClassifierOutputTarget(1)(torch.tensor([2.0, -1.0]))  # an (N,) head
        tensor([ 2., -1.])
    """

    def __init__(self, category: int, *, output_key: OutputKey | None = None) -> None:
        self.category = category
        self.output_key = output_key

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """``sign * Y`` per row: ``(N, 1)`` or ``(N,)`` give ``(N,)``; one sample's ``(1,)`` gives ``(1,)``."""
        scores = logits_of(output, self.output_key)
        sign = 1.0 if self.category == 1 else -1.0
        if scores.ndim >= 2:
            flat = scores.reshape(scores.shape[0], -1)
            if flat.shape[1] != 1:
                raise ValueError(
                    f"BinaryClassifierOutputTarget expects one logit per sample, got output shape "
                    f"{tuple(scores.shape)}; use ClassifierOutputTarget for several classes"
                )
            return flat[:, 0] * sign
        return scores * sign

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category!r}{key_repr(self.output_key)})"
