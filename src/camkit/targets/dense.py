"""Targets for dense outputs: segmentation masks, detection boxes, embedding similarity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from camkit.targets._output import OutputKey, find_output, key_repr
from camkit.targets.classification import RowwiseTarget, category_index

__all__ = [
    "FasterRCNNBoxScoreTarget",
    "SemanticSegmentationTarget",
    "SimilarityToConceptTarget",
    "box_iou",
]


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
    torchvision segmentation's dict ``{"out": ...}``, or an output with ``logits`` (Hugging Face).

    Args:
        category: the class channel.
        mask: ``(H, W)`` numpy array or tensor (any numeric dtype), broadcast over the rows.
        output_key: where the scores are in a structured output (``None``: ``out`` or ``logits``);
            see :func:`camkit.targets.find_output`.

    Raises:
        ValueError: when the mask does not match the output's spatial size.

    Example:
        >>> target = SemanticSegmentationTarget(1, torch.tensor([[1.0, 0.0]]))
        >>> target(torch.arange(4.0).view(1, 2, 1, 2))  # channel 1 = [2, 3], mask keeps 2
        tensor([2.])
    """

    def __init__(self, category: int, mask: Any, *, output_key: OutputKey | None = None) -> None:
        self.category = category_index(category)
        self.output_key = output_key
        self.mask = _as_tensor(mask, "mask")
        if self.mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (H, W), got shape {tuple(self.mask.shape)}")

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Masked sum of the category channel per row (a scalar for one sample's ``(K, H, W)``)."""
        scores = find_output(output, self.output_key, ("out", "logits"), "segmentation scores")
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
        return f"{type(self).__name__}({self.category}, mask={tuple(self.mask.shape)}{key_repr(self.output_key)})"


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
        output_key: where the embedding is in a structured output (``None``: a tensor, a tuple's
            first tensor, or ``logits``); see :func:`camkit.targets.find_output`.

    Example:
        >>> SimilarityToConceptTarget(torch.tensor([1.0, 0.0]))(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
        tensor([1., 0.])
    """

    def __init__(self, concept_features: Any, *, output_key: OutputKey | None = None) -> None:
        self.concept_features = _as_tensor(concept_features, "concept_features").reshape(-1)
        self.output_key = output_key

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Cosine similarity per row (a scalar for one sample's 1-D embedding)."""
        embedding = find_output(output, self.output_key, ("logits",), "embedding")
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
        return f"{type(self).__name__}(dim={self.concept_features.numel()}{key_repr(self.output_key)})"
