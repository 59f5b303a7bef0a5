"""The inputs of :func:`camkit.explain_detections`: images, given boxes and labels, checked (messages name the fix)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from camkit.detect._target import box_scores
from camkit.detect._types import Candidates, Detections, box_iou

if TYPE_CHECKING:
    pass


__all__ = ["check_boxes", "check_labels", "given_targets", "image_tensor", "images_of", "split_per_image", "top_boxes"]


def image_tensor(item: Any, index: int) -> Tensor:
    """One image as a float ``(3, H, W)`` tensor in ``[0, 1]`` (PIL, uint8 array, file or tensor)."""
    if isinstance(item, str | os.PathLike):
        from camkit.explanation import open_image

        item = open_image(item)
    if isinstance(item, Image.Image):
        item = np.array(item.convert("RGB"))
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
            raise ValueError(
                f"images[{index}] is a numpy array of dtype {item.dtype} and shape {item.shape}: pass (H, W, 3) uint8 "
                "pixels, or a float tensor (3, H, W) in [0, 1]"
            )
        item = torch.from_numpy(np.ascontiguousarray(item)).permute(2, 0, 1).float() / 255
    if not isinstance(item, Tensor):
        raise TypeError(
            f"images[{index}] is {type(item).__name__}: pass tensors (3, H, W) in [0, 1], PIL images, image files "
            "or (H, W, 3) uint8 arrays"
        )
    if item.ndim != 3 or item.shape[0] != 3:
        raise ValueError(f"images[{index}] has shape {tuple(item.shape)}: a detector image is (3, H, W)")
    image: Tensor = item if item.is_floating_point() else item.float() / 255
    return image


def images_of(images: Any) -> list[Tensor]:
    if isinstance(images, Tensor) and images.ndim == 4:
        items: list[Any] = list(images)
    elif isinstance(images, Tensor | Image.Image | np.ndarray | str | os.PathLike):
        items = [images]
    elif isinstance(images, Sequence):
        items = list(images)
    else:
        raise TypeError(
            f"images must be an image, a batch (N, 3, H, W) or a list of images; got {type(images).__name__}"
        )
    if not items:
        raise ValueError("images is empty: pass at least one image")
    return [image_tensor(item, i) for i, item in enumerate(items)]


def split_per_image(value: Any, count: int, name: str, width: int | None) -> list[Tensor]:
    """``boxes``/``labels`` as one tensor per image (one image's may be given bare)."""
    shape = "(K, 4)" if width else "(K,)"

    def one(item: Any, where: str) -> Tensor:
        try:
            tensor = torch.as_tensor(np.asarray(item.detach().cpu() if isinstance(item, Tensor) else item))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where} is not a {shape} array of numbers ({error})") from None
        if tensor.numel() == 0:
            return tensor.reshape(0, width) if width else tensor.reshape(0)
        if (width and (tensor.ndim != 2 or tensor.shape[1] != width)) or (not width and tensor.ndim != 1):
            raise ValueError(f"{where} has shape {tuple(tensor.shape)}; expected {shape}")
        return tensor

    if count == 1:
        try:
            return [one(value, name)]
        except ValueError:
            if not (isinstance(value, Sequence) and len(value) == 1):
                raise
    if not isinstance(value, Sequence | Tensor | np.ndarray) or len(value) != count:
        raise ValueError(f"{name} must hold one {shape} array per image ({count} images)")
    return [one(item, f"{name}[{i}]") for i, item in enumerate(value)]


def check_boxes(boxes: list[Tensor], images: list[Tensor]) -> list[Tensor]:
    checked = []
    for i, (found, image) in enumerate(zip(boxes, images, strict=True)):
        height, width = int(image.shape[-2]), int(image.shape[-1])
        found = found.float()
        for k, box in enumerate(found.tolist()):
            x1, y1, x2, y2 = box
            finite = all(np.isfinite(box))
            inside = -1e-3 <= x1 < x2 <= width + 1e-3 and -1e-3 <= y1 < y2 <= height + 1e-3
            if not (finite and inside):
                raise ValueError(
                    f"boxes[{i}][{k}] = {[round(v, 2) for v in box]} is not a box inside image {i} ({width}x{height} "
                    "pixels): boxes are (x1, y1, x2, y2) in the input image's pixels, x1 < x2, y1 < y2"
                )
        checked.append(found)
    return checked


def check_labels(labels: list[Tensor], boxes: list[Tensor], classes: int | None) -> list[Tensor]:
    checked = []
    for i, (found, box) in enumerate(zip(labels, boxes, strict=True)):
        if found.shape[0] != box.shape[0]:
            raise ValueError(f"labels[{i}] has {found.shape[0]} labels for {box.shape[0]} boxes: pass one per box")
        if found.numel() and (found.is_floating_point() and not bool((found == found.round()).all())):
            raise ValueError(f"labels[{i}] must be integer class indices, got {found.tolist()}")
        found = found.long()
        for k, label in enumerate(found.tolist()):
            if label < 0 or (classes is not None and label >= classes):
                accepted = f"0 … {classes - 1}" if classes is not None else ">= 0"
                raise ValueError(f"labels[{i}][{k}] = {label} is out of range: the model's classes are {accepted}")
        checked.append(found)
    return checked


def given_targets(
    boxes: list[Tensor], labels: list[Tensor] | None, candidates: list[Candidates], classes: int | None
) -> list[Detections]:
    """Given boxes as detections: label (given, else the best-matching class), score and one-hot vector."""
    found = []
    for i, (box, cand) in enumerate(zip(boxes, candidates, strict=True)):
        count = cand.probs.shape[1] if classes is None else classes
        box = box.to(cand.boxes)
        if labels is not None:
            label = labels[i].to(cand.boxes.device)
        elif len(cand) and box.shape[0]:
            overlap = box_iou(box, cand.boxes)[:, :, None] * cand.probs[None]  # (K, P, C)
            label = overlap.amax(dim=1).argmax(dim=1)
        else:
            label = torch.zeros(box.shape[0], dtype=torch.long, device=cand.boxes.device)
        score = box_scores(cand, box, label) if len(cand) else torch.zeros(box.shape[0], device=cand.boxes.device)
        vectors = F.one_hot(label, max(count, int(label.max()) + 1 if label.numel() else 1)).float()
        unmatched = (score <= 0).nonzero().flatten().tolist()
        if unmatched:
            warnings.warn(
                f"image {i}: box(es) {unmatched} match no prediction of their label (score 0), so a gradient map of "
                "them is empty; check the labels (labels=None takes the best-matching class)",
                UserWarning,
                stacklevel=3,
            )
        found.append(Detections(box, label, score, vectors))
    return found


def top_boxes(found: Detections, count: int) -> Detections:
    """The ``count`` highest-scoring detections."""
    keep = found.scores.detach().argsort(descending=True)[:count]
    vectors = None if found.vectors is None else found.vectors[keep]
    return Detections(found.boxes[keep], found.labels[keep], found.scores[keep], vectors)
