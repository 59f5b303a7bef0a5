"""A stand-in target for class-agnostic methods when no class can be chosen from the model output.

Eigen-CAM, KPCA-CAM, FEM and Random-CAM (registered with ``needs_target=False``) never read the
target: their map depends on the activations only. When the caller names no target and the model
output holds no ``(N, num_classes)`` scores (a detector's tuple or list of dicts, a segmenter, an
embedding model), the front doors hand these methods an :class:`UnresolvedTarget` instead of
failing. It raises the reason no target could be chosen the moment anything asks it for a score or
a class, so a method that does need one still fails with the same message as before.

Example:
    >>> import torch
    >>> target = UnresolvedTarget("targets=None picks the top class, but the output is a tuple")
    >>> target(torch.zeros(2, 3))
    Traceback (most recent call last):
    ...
    ValueError: targets=None picks the top class, but the output is a tuple
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["UnresolvedTarget"]


class UnresolvedTarget:
    """A target that could not be chosen; it raises ``ValueError(reason)`` when used.

    Args:
        reason: why no target was chosen and what to pass instead (the error message).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __call__(self, output: Any, rows: Any = None) -> NoReturn:
        """Raise the reason: a method asked for the score of a target that was never chosen.

        Raises:
            ValueError: always, with :attr:`reason`.
        """
        raise ValueError(self.reason)

    def classes(self, batch: int, num_classes: int) -> NoReturn:
        """Raise the reason: a method (CAM) asked for the classes of a target that was never chosen.

        Raises:
            ValueError: always, with :attr:`reason`.
        """
        raise ValueError(self.reason)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r})"
