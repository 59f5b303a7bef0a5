"""Per-record metric values of a run (``camkit run --metric``), stored in the manifest with the maps.

Each method's map of the first explained class is scored on the batch it was computed on, with
the functions of :mod:`camkit.metrics`; the values are stored per record as
``{method: {metric: value}}`` (non-finite values as ``null``), which ``camkit view`` shows and
sorts by.

========== ==================================================================== =========== ==================
metric     what                                                                 better      extra forwards
========== ==================================================================== =========== ==================
drop       average drop %: how much the class score falls on the map-masked input lower       1 per method
increase   1 when the map-masked input scores higher than the input, else 0     higher      (with drop)
deletion   area under the score curve as the most important pixels are removed  lower       ``steps`` / method
insertion  area under the curve as they are inserted into a blurred input       higher      ``steps`` / method
========== ==================================================================== =========== ==================

Example:
    >>> check_metrics(["drop", "deletion", "drop"])
    ['drop', 'deletion']
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["METRICS", "METRIC_STEPS", "check_metrics", "score_maps"]

#: the metrics a run can store, and whether lower values are better
METRICS = {"drop": "lower", "increase": "higher", "deletion": "lower", "insertion": "higher"}
#: deletion and insertion steps (as ``camkit report``'s default)
METRIC_STEPS = 16


def check_metrics(names: Sequence[str]) -> list[str]:
    """The metric names, deduplicated in order, or a ``ValueError`` naming the closest known one.

    Example:
        >>> check_metrics(["dorp"])
        Traceback (most recent call last):
        ...
        ValueError: metric 'dorp' is not known; did you mean 'drop'? (known: drop, increase, deletion, insertion)
    """
    if isinstance(names, str):
        names = [names]
    for name in names:
        if name not in METRICS:
            close = difflib.get_close_matches(str(name), list(METRICS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"metric {name!r} is not known; {hint}(known: {', '.join(METRICS)})")
    return list(dict.fromkeys(names))


def score_maps(
    model: nn.Module,
    x: Tensor,
    maps: dict[str, Tensor],
    classes: Tensor,
    metrics: Sequence[str],
    batch_size: int,
) -> list[dict[str, dict[str, float | None]]]:
    """Per image of the batch: method → metric → value, for the first explained class.

    Args:
        model: the classifier (in eval mode; the metric functions restore what they change).
        x: the batch the maps were computed on ``(N, C, H, W)``.
        maps: method → ``(N, K, h, w)`` maps (any resolution; the metrics upsample them).
        classes: ``(N, K)`` explained classes.
        metrics: names from :data:`METRICS`.
        batch_size: images per forward of the metric functions.

    Returns:
        One dict per image; a non-finite value is ``None``.
    """
    from camkit.metrics import confidence_change, deletion, insertion

    targets = classes[:, 0].tolist()
    out: list[dict[str, dict[str, float | None]]] = [{} for _ in targets]
    for method, cams in maps.items():
        first = cams[:, 0]
        columns: dict[str, list[float]] = {}
        if "drop" in metrics or "increase" in metrics:
            change = confidence_change(model, x, first, targets, batch_size=batch_size)
            columns["drop"] = change.drop.per_sample.tolist()
            columns["increase"] = change.increase.per_sample.tolist()
        if "deletion" in metrics:
            deleted = deletion(
                model, x, first, targets, steps=METRIC_STEPS, baseline=0.0, batch_size=batch_size, progress=False
            )
            columns["deletion"] = deleted.per_sample.tolist()
        if "insertion" in metrics:
            inserted = insertion(
                model, x, first, targets, steps=METRIC_STEPS, baseline="blur", batch_size=batch_size, progress=False
            )
            columns["insertion"] = inserted.per_sample.tolist()
        for i in range(len(targets)):
            out[i][method] = {
                name: (float(columns[name][i]) if math.isfinite(columns[name][i]) else None) for name in metrics
            }
    return out
