"""The classes a dataset run explains (the maps come from :func:`camkit.passes.run_methods`).

Example:
    >>> import torch
    >>> choose = chooser(("topk", 2), [None, None])
    >>> choose(torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])).tolist()
    [[1, 2], [0, 2]]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["chooser"]


def chooser(rule: tuple[str, int], labels: list[int | None]) -> Callable[[Tensor], Tensor]:
    """The classes to explain, from the probabilities ``(N, classes)``: ``(N, K)`` indices.

    Args:
        rule: a parsed target (:func:`camkit.runner.data.parse_target`).
        labels: the batch's labels (for ``("label", 1)``).

    Returns:
        A function of the probabilities; it raises ``ValueError`` for a class out of range.
    """
    kind, value = rule

    def choose(probabilities: Tensor) -> Tensor:
        count, classes = probabilities.shape
        if kind == "topk":
            return probabilities.topk(min(value, classes), dim=1).indices
        picked = [value] * count if kind == "class" else [int(label or 0) for label in labels]
        wrong = [c for c in picked if not 0 <= c < classes]
        if wrong:
            what = f"target class:{value}" if kind == "class" else f"label {wrong[0]} (--target label)"
            raise ValueError(
                f"{what} is out of range: the model has {classes} classes (0..{classes - 1}); "
                + (
                    "pick a class in range"
                    if kind == "class"
                    else "the class sub-folders must follow the model's classes"
                )
            )
        return torch.tensor(picked, device=probabilities.device).view(-1, 1)

    return choose
