"""Turn pytorch-grad-cam's per-sample targets into one camkit batched target.

pytorch-grad-cam calls each target on one image's output (``target(output[b])``) and users pass a
list with one target per image. camkit's engine wants one callable ``target(output, rows) -> (B,)``
for the whole batch (``rows[b]`` = the image row ``b`` belongs to; perturbation methods send many
rows per image). :func:`batched_target` bridges the two:

* ``None`` → the top-scoring class of every row (:class:`camkit.targets.ClassTarget`); when the
  output holds no ``(N, num_classes)`` scores (a detector, a segmenter), a target that raises why
  the moment a method asks it for a score, so class-agnostic methods (EigenCAM, KPCA-CAM, FEM,
  RandomCAM) run on any output with ``targets=None``.
* a list of :class:`~camkit.targets.ClassifierOutputTarget` (or of its softmax twin) → one
  :class:`~camkit.targets.ClassTarget` with a class per image (one ``gather`` for the batch; one
  column when every image asks for the same class).
* anything else → :class:`PerSampleTargets`: rows grouped by image; a
  :class:`~camkit.targets.RowwiseTarget` is called once on all rows of its image, any other
  callable once per row on that row's output, and the scalars are stacked.

A model output's "row ``b``" is ``output[b]`` for a tensor, element ``b`` of a list (torchvision
detection: one dict per image), and the same selection applied to every tensor of a tuple or dict
(``{"out": (N, K, H, W)}`` of torchvision segmentation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from camkit.targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    ClassProbabilityTarget,
    ClassTarget,
    RowwiseTarget,
    Target,
    batch_size_of,
    logits_of,
    select_rows,
)
from camkit.targets._unresolved import UnresolvedTarget

__all__ = ["PerSampleTargets", "batch_size_of", "batched_target", "detach_output", "select_rows"]


PerSampleTarget = Callable[[Any], Any]


def _row(output: Any, b: int) -> Any:
    """Row ``b`` of a model output without its batch dim (what pytorch-grad-cam's targets see)."""
    if isinstance(output, (Tensor, list)):
        return output[b]
    if isinstance(output, Mapping):
        return {key: value[b] if isinstance(value, Tensor) and value.ndim else value for key, value in output.items()}
    if isinstance(output, tuple):
        return tuple(value[b] if isinstance(value, Tensor) and value.ndim else value for value in output)
    raise TypeError(f"cannot split a model output of type {type(output).__name__} into rows")


def detach_output(output: Any) -> Any:
    """A copy of a model output with every tensor detached from the graph (structure kept).

    Args:
        output: a tensor, or lists/tuples/dicts of them.

    Returns:
        The detached output.
    """
    if isinstance(output, Tensor):
        return output.detach()
    if isinstance(output, list):
        return [detach_output(v) for v in output]
    if isinstance(output, tuple):
        return tuple(detach_output(v) for v in output)
    if isinstance(output, Mapping):
        return {key: detach_output(value) for key, value in output.items()}
    return output


def _scalar(value: Any, target: object) -> Tensor:
    tensor = value if isinstance(value, Tensor) else torch.as_tensor(value)
    if tensor.numel() != 1:
        raise ValueError(
            f"target {target!r} returned shape {tuple(tensor.shape)} for one image's output; a per-image "
            "target must return one scalar (e.g. model_output[category])"
        )
    return tensor.reshape(())


class PerSampleTargets:
    """One batched camkit target made of per-image targets (pytorch-grad-cam's convention).

    Args:
        targets: one callable per image; ``targets[s](row_output)`` returns image ``s``'s scalar.

    Example:
        >>> both = PerSampleTargets([lambda out: out[0], lambda out: out[1] * 2])
        >>> both(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([1., 8.])
    """

    def __init__(self, targets: Sequence[PerSampleTarget]) -> None:
        self.targets = list(targets)

    def __call__(self, output: Any, rows: Tensor | None = None) -> Tensor:
        """The scalar of every output row, ``(B,)``; row ``b`` uses ``targets[rows[b]]``."""
        batch = batch_size_of(output)
        samples = list(range(batch)) if rows is None else [int(r) for r in rows.tolist()]
        if len(samples) != batch:
            raise ValueError(f"rows has {len(samples)} entries for an output of {batch} rows")
        if samples and max(samples) >= len(self.targets):
            raise ValueError(
                f"{len(self.targets)} targets were given but the output has rows of image {max(samples)}: "
                "pass one target per image"
            )
        groups: dict[int, list[int]] = {}
        for position, sample in enumerate(samples):
            groups.setdefault(sample, []).append(position)
        values: list[Tensor] = []
        order: list[int] = []
        for sample, positions in groups.items():
            target = self.targets[sample]
            if isinstance(target, RowwiseTarget):
                value = target(select_rows(output, positions)).reshape(-1)
                if value.numel() != len(positions):
                    raise ValueError(f"target {target!r} returned {value.numel()} values for {len(positions)} rows")
                values.append(value)
            else:
                values.append(torch.stack([_scalar(target(_row(output, p)), target) for p in positions]))
            order.extend(positions)
        stacked = torch.cat([v.to(values[0].dtype) for v in values])
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.as_tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return stacked[inverse.to(stacked.device)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.targets!r})"


def top_classes(output: Any) -> list[int]:
    """The highest-scoring class of every row of a classifier output.

    Args:
        output: ``(N, K)`` scores (or a tuple/dict/object holding them).

    Returns:
        One class index per row.

    Raises:
        ValueError: when the output is not ``(N, K)`` scores (then targets must be given).
    """
    try:
        scores = logits_of(output)
    except TypeError as exc:
        raise ValueError(f"targets=None picks the top class, but {exc}") from exc
    if scores.ndim != 2:
        raise ValueError(
            f"targets=None picks the top class of (N, num_classes) scores, but the model output has shape "
            f"{tuple(scores.shape)}: pass targets=[...] with one target per image "
            "(e.g. SemanticSegmentationTarget, FasterRCNNBoxScoreTarget)"
        )
    return [int(c) for c in scores.detach().argmax(dim=1).tolist()]


def _one_or_each(classes: list[Any]) -> Any:
    """One class when every image asks for the same (a column of the scores, no gather), else the list."""
    return classes[0] if len(set(classes)) == 1 else classes


def batched_target(targets: Sequence[PerSampleTarget] | None, output: Any, batch: int) -> Target:
    """Build the batched camkit target for a pytorch-grad-cam ``targets`` argument.

    Args:
        targets: ``None`` (top class of each row; a target that raises why when the output holds no
            class scores), or a list with one per-image target per image;
            a list of ONE target is used for every image.
        output: the model output of the forward being explained (for ``None``).
        batch: the number of images.

    Returns:
        A camkit target ``target(output, rows) -> (B,)``.

    Raises:
        TypeError: when ``targets`` is not a list of callables.
        ValueError: when the list length is neither 1 nor the batch size.

    Example:
        >>> from camkit.targets import ClassifierOutputTarget
        >>> batched_target([ClassifierOutputTarget(3), ClassifierOutputTarget(1)], None, 2)
        ClassTarget([3, 1])
    """
    if targets is None:
        try:
            return ClassTarget(_one_or_each(top_classes(output)))
        except ValueError as error:  # no class scores: fine for class-agnostic methods (EigenCAM, FEM, ...)
            return UnresolvedTarget(str(error))  # raises this same error when a method asks it for a score
    if callable(targets) or not isinstance(targets, Sequence):
        raise TypeError(
            f"targets must be a list with one target per image (or None), got {type(targets).__name__}; "
            "e.g. targets=[ClassifierOutputTarget(281)]"
        )
    items = list(targets)
    if len(items) == 1 and batch != 1:
        items = items * batch
    if len(items) != batch:
        raise ValueError(
            f"got {len(items)} targets for {batch} images: pass one target per image, or a single target for all"
        )
    for item in items:
        if not callable(item):
            raise TypeError(f"every target must be callable on a model output, got {type(item).__name__}")
    kinds = {type(item) for item in items}
    keys = {repr(getattr(item, "output_key", None)) for item in items}
    if kinds <= {ClassifierOutputTarget} and len(keys) == 1:
        key = getattr(items[0], "output_key", None)
        return ClassTarget(_one_or_each([item.category for item in items]), output_key=key)  # type: ignore[attr-defined]
    if kinds <= {ClassifierOutputSoftmaxTarget}:
        return ClassProbabilityTarget([item.category for item in items])  # type: ignore[attr-defined]
    return PerSampleTargets(items)
