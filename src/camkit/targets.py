"""Targets: which scalar of the model output a map explains.

A target is any callable ``target(output, rows=None) -> Tensor`` returning one scalar per output
row, shape ``(B,)``. ``rows`` says which original sample each output row belongs to (perturbation
methods run many rows per sample); ``None`` means row ``b`` is sample ``b``. The engine
differentiates the sum of these scalars, so per-sample targets cost one backward for the batch.

The targets that subclass :class:`RowwiseTarget` compute each row's scalar from that row alone,
the same way for every row. They therefore work both ways: on a batched output they return
``(B,)``, and on ONE sample's output (e.g. 1-D logits, one detection dict) they return a scalar,
which is how pytorch-grad-cam calls its targets (one per image, see
:mod:`camkit.compat.gradcam`).

Example:
    >>> import torch
    >>> ClassTarget([2, 0])(torch.tensor([[0.0, 1.0, 5.0], [3.0, 1.0, 0.0]]))
    tensor([5., 3.])
    >>> ClassifierOutputTarget(2)(torch.tensor([0.0, 1.0, 5.0]))  # one sample's logits
    tensor(5.)
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassProbabilityTarget",
    "ClassTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "RowwiseTarget",
    "SemanticSegmentationTarget",
    "SimilarityToConceptTarget",
    "Target",
    "box_iou",
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


def _category(value: Any, name: str = "category") -> int:
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

    Raises:
        TypeError: if ``class_idx`` is not an int or a sequence of ints.
        ValueError: if an index is negative.

    Example:
        >>> ClassTarget(1)(torch.tensor([[0.0, 4.0]]))
        tensor([4.])
    """

    def __init__(self, class_idx: int | Sequence[int]) -> None:
        if isinstance(class_idx, np.integer):
            class_idx = int(class_idx)
        if isinstance(class_idx, bool) or not isinstance(class_idx, (int, Sequence)):
            raise TypeError(
                f"class_idx must be an int or a list of ints (one per sample), got {type(class_idx).__name__}"
            )
        values = [class_idx] if isinstance(class_idx, int) else list(class_idx)
        values = [int(v) if isinstance(v, np.integer) else v for v in values]
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
        scores = logits_of(output)
        if scores.ndim == 1 and not self.per_sample:
            self.classes(1, scores.shape[0])
            return self._transform(scores)[self.indices[0]]
        if scores.ndim != 2:
            raise ValueError(
                f"class scores must have shape (N, num_classes), got {tuple(scores.shape)}"
                + (": add a batch dimension to the input (x.unsqueeze(0))" if scores.ndim == 1 else "")
            )
        if self.per_sample and rows is not None:
            classes = self.classes(len(self.indices), scores.shape[1])[rows.cpu()]
        else:
            classes = self.classes(scores.shape[0], scores.shape[1])
        classes = classes.to(scores.device)
        return self._transform(scores).gather(1, classes.view(-1, 1)).squeeze(1)

    def __repr__(self) -> str:
        value = self.indices if self.per_sample else self.indices[0]
        return f"{type(self).__name__}({value!r})"


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

    Raises:
        TypeError: if ``category`` is not an int.
        ValueError: if it is negative.

    Example:
        >>> ClassifierOutputTarget(1)(torch.tensor([[0.0, 4.0], [1.0, 2.0]]))
        tensor([4., 2.])
    """

    def __init__(self, category: int) -> None:
        self.category = _category(category)
        super().__init__(self.category)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category})"


class ClassifierOutputSoftmaxTarget(ClassProbabilityTarget, RowwiseTarget):
    r"""The softmax probability of ``category``: :math:`\mathrm{softmax}(Y)^{(c)}`.

    Args:
        category: the class index.

    Example:
        >>> ClassifierOutputSoftmaxTarget(0)(torch.zeros(4))
        tensor(0.2500)
    """

    def __init__(self, category: int) -> None:
        self.category = _category(category)
        super().__init__(self.category)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category})"


class ClassifierOutputReST(RowwiseTarget):
    r"""The score minus the cross-entropy of ``category`` (ReST, Cai, arXiv:2501.06261).

    .. math:: Y^{(c)} - \mathrm{CE}(Y, c) = Y^{(c)} + \log \mathrm{softmax}(Y)^{(c)}
              = 2\,Y^{(c)} - \log \sum_k e^{Y^{(k)}}

    It uses both the pre-softmax and the post-softmax output.

    Args:
        category: the class index.

    Example:
        >>> ClassifierOutputReST(0)(torch.zeros(1, 2))  # 0 - log 2
        tensor([-0.6931])
    """

    def __init__(self, category: int) -> None:
        self.category = _category(category)

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Score minus cross-entropy per row (a scalar for one sample's 1-D logits)."""
        scores = logits_of(output)
        if scores.ndim not in (1, 2) or self.category >= scores.shape[-1]:
            raise ValueError(
                f"ClassifierOutputReST({self.category}) needs logits (K,) or (N, K) with K > {self.category}, "
                f"got shape {tuple(scores.shape)}"
            )
        picked = scores[..., self.category]
        return 2 * picked - torch.logsumexp(scores, dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category})"


class BinaryClassifierOutputTarget(RowwiseTarget):
    r"""The single logit of a binary classifier, signed for the class: :math:`\pm Y`.

    ``+Y`` explains class 1, ``-Y`` class 0 (any other ``category``).

    Args:
        category: 1 for the positive class, anything else for the negative class.

    Raises:
        ValueError: when the output has more than one value per sample.

    Example:
        >>> BinaryClassifierOutputTarget(0)(torch.tensor([[2.0], [-1.0]]))
        tensor([-2.,  1.])
    """

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """``sign * Y`` per row: ``(N, 1)`` or ``(N,)`` give ``(N,)``; one sample's ``(1,)`` gives ``(1,)``."""
        scores = logits_of(output)
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
        return f"{type(self).__name__}({self.category!r})"


def _as_tensor(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numpy array or a tensor, got {type(value).__name__}") from exc


class SemanticSegmentationTarget(RowwiseTarget):
    r"""The sum of the ``category`` scores inside a binary spatial mask: :math:`\sum_{ij} M_{ij} Y^{(c)}_{ij}`.

    The output may be ``(N, K, H, W)`` (one scalar per row), one sample's ``(K, H, W)`` (a scalar),
    or torchvision segmentation's dict ``{"out": ...}``.

    Args:
        category: the class channel.
        mask: ``(H, W)`` numpy array or tensor (any numeric dtype), broadcast over the rows.

    Raises:
        ValueError: when the mask does not match the output's spatial size.

    Example:
        >>> target = SemanticSegmentationTarget(1, torch.tensor([[1.0, 0.0]]))
        >>> target(torch.arange(4.0).view(1, 2, 1, 2))  # channel 1 = [2, 3], mask keeps 2
        tensor([2.])
    """

    def __init__(self, category: int, mask: Any) -> None:
        self.category = _category(category)
        self.mask = _as_tensor(mask, "mask")
        if self.mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (H, W), got shape {tuple(self.mask.shape)}")

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Masked sum of the category channel per row (a scalar for one sample's ``(K, H, W)``)."""
        if isinstance(output, Mapping) and isinstance(output.get("out"), Tensor):
            output = output["out"]
        scores = logits_of(output)
        if scores.ndim not in (3, 4) or self.category >= scores.shape[-3]:
            raise ValueError(
                f"SemanticSegmentationTarget({self.category}) needs scores (K, H, W) or (N, K, H, W) with "
                f"K > {self.category}, got shape {tuple(scores.shape)}"
            )
        if tuple(scores.shape[-2:]) != tuple(self.mask.shape):
            raise ValueError(
                f"mask has shape {tuple(self.mask.shape)} but the segmentation output is "
                f"{tuple(scores.shape[-2:])} pixels: pass a mask of the output's spatial size"
            )
        mask = self.mask.to(device=scores.device, dtype=scores.dtype)
        return (scores[..., self.category, :, :] * mask).sum(dim=(-2, -1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.category}, mask={tuple(self.mask.shape)})"


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of ``(x1, y1, x2, y2)`` boxes.

    Args:
        boxes1: ``(R, 4)``.
        boxes2: ``(P, 4)``.

    Returns:
        ``(R, P)`` IoUs.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2]]))
        tensor([[0.3333]])
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


class FasterRCNNBoxScoreTarget(RowwiseTarget):
    r"""How well the detections still match reference boxes (pytorch-grad-cam's detection target).

    .. math:: \sum_r [\mathrm{IoU}_r > t \wedge l_r = \hat l_r]\,(\mathrm{IoU}_r + \hat s_r)

    For every reference box, the predicted box with the highest IoU is taken; when that IoU
    exceeds ``iou_threshold`` and its label equals the reference label, IoU plus its score is added.

    The output is a torchvision detection output: a list of dicts with ``boxes``, ``labels`` and
    ``scores`` (one per image; returns ``(N,)``), or one such dict (returns a scalar).

    Args:
        labels: reference labels ``(R,)``.
        bounding_boxes: reference boxes ``(R, 4)`` as ``(x1, y1, x2, y2)`` (numpy or tensor).
        iou_threshold: minimum IoU for a match.

    Example:
        >>> target = FasterRCNNBoxScoreTarget([1], [[0.0, 0.0, 2.0, 2.0]])
        >>> det = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "labels": torch.tensor([1]),
        ...        "scores": torch.tensor([0.5])}
        >>> target([det])
        tensor([1.5000])
    """

    def __init__(self, labels: Any, bounding_boxes: Any, iou_threshold: float = 0.5) -> None:
        self.labels = _as_tensor(labels, "labels").long().reshape(-1)
        self.bounding_boxes = _as_tensor(bounding_boxes, "bounding_boxes").reshape(-1, 4)
        if self.labels.numel() != self.bounding_boxes.shape[0]:
            raise ValueError(
                f"got {self.labels.numel()} labels for {self.bounding_boxes.shape[0]} bounding_boxes: "
                "pass one label per box"
            )
        self.iou_threshold = float(iou_threshold)

    def _one(self, detection: Any) -> Tensor:
        if not isinstance(detection, Mapping) or not all(k in detection for k in ("boxes", "labels", "scores")):
            raise TypeError(
                "FasterRCNNBoxScoreTarget expects a torchvision detection output: a dict with 'boxes', "
                f"'labels' and 'scores' per image, got {type(detection).__name__}"
            )
        boxes, labels, scores = detection["boxes"], detection["labels"], detection["scores"]
        if boxes.shape[0] == 0 or self.labels.numel() == 0:
            zero: Tensor = scores.sum() * 0  # zero, still connected to the graph
            return zero
        reference = self.bounding_boxes.to(device=boxes.device, dtype=boxes.dtype)
        ious = box_iou(reference, boxes)
        best, index = ious.max(dim=1)
        matched = (best > self.iou_threshold) & (labels[index] == self.labels.to(labels.device))
        gain = best + scores[index].to(best.dtype)
        return torch.where(matched, gain, torch.zeros_like(gain)).sum()

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """The match score of each image's detections (a scalar for one image's dict)."""
        if isinstance(output, Mapping):
            return self._one(output)
        if not isinstance(output, (list, tuple)):
            raise TypeError(
                "FasterRCNNBoxScoreTarget expects a list of detection dicts (one per image) or one dict, "
                f"got {type(output).__name__}"
            )
        return torch.stack([self._one(d) for d in output])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.labels.numel()} boxes, iou_threshold={self.iou_threshold})"


class SimilarityToConceptTarget(RowwiseTarget):
    r"""Cosine similarity of the output embedding to a concept vector: :math:`\cos(f(x), v)`.

    Args:
        concept_features: the concept embedding ``(D,)`` (numpy or tensor).

    Example:
        >>> SimilarityToConceptTarget(torch.tensor([1.0, 0.0]))(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
        tensor([1., 0.])
    """

    def __init__(self, concept_features: Any) -> None:
        self.concept_features = _as_tensor(concept_features, "concept_features").reshape(-1)

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Cosine similarity per row (a scalar for one sample's 1-D embedding)."""
        embedding = logits_of(output)
        concept = self.concept_features.to(device=embedding.device, dtype=embedding.dtype)
        if embedding.ndim == 1:
            return F.cosine_similarity(embedding, concept, dim=0)
        flat = embedding.reshape(embedding.shape[0], -1)
        if flat.shape[1] != concept.numel():
            raise ValueError(
                f"the embedding has {flat.shape[1]} features per sample but the concept has {concept.numel()}"
            )
        return F.cosine_similarity(flat, concept.unsqueeze(0), dim=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.concept_features.numel()})"
