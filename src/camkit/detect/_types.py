"""The records passed between a detector adapter and the explainers: candidates, detections, frames.

Example:
    >>> import torch
    >>> found = Detections(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([1]), torch.tensor([0.9]))
    >>> len(found), found.labels.tolist()
    (1, [1])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Candidates", "Detections", "Frame", "box_iou"]


@dataclass
class Candidates:
    """Every prediction of one image, decoded, still in the autograd graph when the forward recorded one.

    Attributes:
        boxes: ``(P, 4)`` boxes ``(x1, y1, x2, y2)`` in the input image's pixels.
        probs: ``(P, C)`` class probabilities (a one-hot row times the score where the detector
            reports one class per box, as torchvision's).
        objectness: ``(P,)`` the probability that the box holds an object at all (DETR: one minus
            the no-object probability; detectors without one: the top class probability).
    """

    boxes: Tensor
    probs: Tensor
    objectness: Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class Detections:
    """The detections of one image.

    Attributes:
        boxes: ``(K, 4)`` boxes ``(x1, y1, x2, y2)`` in the input image's pixels.
        labels: ``(K,)`` class indices.
        scores: ``(K,)`` confidences (the class probability of the label; 0 for a given box that no
            prediction matches).
        vectors: ``(K, C)`` class-probability vectors (D-RISE compares them); a given box's is
            one-hot on its label.
    """

    boxes: Tensor
    labels: Tensor
    scores: Tensor
    vectors: Tensor | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def detach(self) -> Detections:
        """The same detections detached from the graph, on the CPU, boxes and scores as float32."""
        return Detections(
            self.boxes.detach().float().cpu(),
            self.labels.detach().long().cpu(),
            self.scores.detach().float().cpu(),
            None if self.vectors is None else self.vectors.detach().float().cpu(),
        )


@dataclass(frozen=True)
class Frame:
    """Where one image sits in the batch tensor the detector's layers saw.

    Detectors resize images and pad them to a common size at the bottom and right (torchvision's
    ``GeneralizedRCNNTransform``, YOLO's stride padding, DETR's pixel mask): a layer's grid spans
    the padded batch, and image ``i`` covers its top-left ``resized`` corner.

    Attributes:
        size: the input image's ``(H, W)``.
        resized: the image's ``(h, w)`` inside the batch tensor.
        padded: the batch tensor's ``(H_p, W_p)``.
    """

    size: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of ``(x1, y1, x2, y2)`` boxes (differentiable).

    Args:
        boxes1: ``(R, 4)``.
        boxes2: ``(P, 4)``.

    Returns:
        ``(R, P)`` IoUs (0 for boxes of zero area).

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2]]))
        tensor([[0.3333]])
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)
