r"""The scalar a gradient method explains for one box: how well the detector still finds it.

For a box :math:`b` with label :math:`l` and the detector's candidates :math:`j` (boxes
:math:`\hat b_j`, class probabilities :math:`\hat p_j`), the box score is the best-matching
candidate's class score times the overlap (``mode="product"``, the default):

.. math:: y_b = \mathrm{IoU}(b, \hat b_{j^*})\,\hat p_{j^*}[l], \qquad
    j^* = \arg\max_j \mathrm{IoU}(b, \hat b_j)\,\hat p_j[l]

(the choice of :math:`j^*` is not differentiated; the value is). ``mode="sum"`` is
pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``: :math:`j^*` is the candidate of highest IoU, and
the score is :math:`\mathrm{IoU} + \hat s_{j^*}` when that IoU exceeds ``iou_threshold`` and the
candidate's label is :math:`l`, else 0. Every box of every image is scored from ONE decode of the
model output: :class:`BoxScores` returns ``(N, K_max)``, and column ``k`` is the target of the
``k``-th box of every image (one backward per column, images batched).

Example:
    >>> import torch
    >>> from camkit.detect import Candidates
    >>> cand = Candidates(torch.tensor([[0.0, 0, 4, 4], [0, 0, 2, 4]]), torch.tensor([[0.2, 0.8], [0.0, 0.9]]),
    ...                   torch.tensor([0.8, 0.9]))
    >>> box_scores(cand, torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([1]))
    tensor([0.8000])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from camkit.detect._types import Candidates, box_iou

__all__ = ["MODES", "BoxColumn", "BoxScores", "box_scores"]

#: the box-score definitions (see the module docstring)
MODES = ("product", "sum")


def box_scores(
    candidates: Candidates, boxes: Tensor, labels: Tensor, mode: str = "product", iou_threshold: float = 0.5
) -> Tensor:
    """The score of each box ``(K,)`` among one image's candidates (differentiable).

    Args:
        candidates: the image's decoded predictions.
        boxes: ``(K, 4)`` boxes to explain, xyxy in input pixels.
        labels: ``(K,)`` their labels.
        mode: ``"product"`` (IoU × class score) or ``"sum"`` (pytorch-grad-cam's IoU + score).
        iou_threshold: the minimum IoU of ``"sum"``.

    Returns:
        ``(K,)`` scores; 0 (still in the graph) where no candidate matches.
    """
    probs = candidates.probs
    zero = probs.sum() * 0 + candidates.boxes.sum() * 0  # a zero that keeps the graph
    if len(candidates) == 0 or boxes.shape[0] == 0:
        return zero.expand(boxes.shape[0]).clone()
    ref = boxes.to(device=candidates.boxes.device, dtype=candidates.boxes.dtype)
    labels = labels.to(probs.device).long()
    iou = box_iou(ref, candidates.boxes)  # (K, P)
    if mode == "sum":
        best, index = iou.detach().max(dim=1)
        predicted = probs.detach().argmax(dim=1)
        matched = (best > iou_threshold) & (predicted[index] == labels)
        value = iou.gather(1, index[:, None])[:, 0] + probs.max(dim=1).values[index]
        return torch.where(matched, value, zero)
    score = probs[:, labels].t()  # (K, P): each box's class score at every candidate
    product = iou * score
    index = product.detach().argmax(dim=1)
    return product.gather(1, index[:, None])[:, 0] + zero


class BoxScores:
    """All boxes' scores of a batch ``(N, K_max)``, decoded once per model output.

    Args:
        decode: the raw model output → one :class:`~camkit.detect.Candidates` per image.
        boxes: per image, ``(K_i, 4)`` boxes to explain.
        labels: per image, ``(K_i,)`` labels.
        mode: see :func:`box_scores`.
        iou_threshold: see :func:`box_scores`.
    """

    def __init__(
        self,
        decode: Callable[[Any], Sequence[Candidates]],
        boxes: Sequence[Tensor],
        labels: Sequence[Tensor],
        mode: str = "product",
        iou_threshold: float = 0.5,
    ) -> None:
        self.decode = decode
        self.boxes = list(boxes)
        self.labels = list(labels)
        self.mode = mode
        self.iou_threshold = iou_threshold
        self.width = max((int(b.shape[0]) for b in self.boxes), default=0)
        self._cache: tuple[Any, Tensor] | None = None

    def __call__(self, output: Any) -> Tensor:
        """``(N, K_max)`` scores; columns past an image's own boxes are zeros in the graph."""
        if self._cache is not None and self._cache[0] is output:
            return self._cache[1]
        rows = []
        for cand, boxes, labels in zip(self.decode(output), self.boxes, self.labels, strict=True):
            values = box_scores(cand, boxes, labels, self.mode, self.iou_threshold)
            pad = self.width - values.shape[0]
            if pad:
                values = torch.cat([values, (cand.probs.sum() * 0).expand(pad)])
            rows.append(values)
        table = torch.stack(rows)
        self._cache = (output, table)
        return table


class BoxColumn:
    """The camkit target of the ``k``-th box of every image: ``target(output, rows=None) -> (N,)``.

    Args:
        scores: the shared :class:`BoxScores`.
        k: the box index.
    """

    def __init__(self, scores: BoxScores, k: int) -> None:
        self.scores = scores
        self.k = k

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """Column ``k`` of the batch's box scores."""
        return self.scores(output)[:, self.k]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(box {self.k}, mode={self.scores.mode!r})"
