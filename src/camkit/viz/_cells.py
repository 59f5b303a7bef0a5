"""Table cells of the report that carry more than a number (a sanity-check verdict)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real

from torch import Tensor

__all__ = ["SanityCell"]


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (Real, Tensor))
        and not isinstance(value, bool)
        and (not isinstance(value, Tensor) or value.numel() == 1)
    )


@dataclass(frozen=True)
class SanityCell:
    """One method's sanity-check verdict in a report (see :mod:`camkit.sanity`).

    Attributes:
        passed: whether the method passed.
        similarity: measure name -> the similarity the verdict reads (e.g. ``{"ρ": 0.02, "SSIM": 0.1}``).

    Example:
        >>> SanityCell(True, {"ρ": 0.02}).text()
        'pass ρ 0.02'
    """

    passed: bool
    similarity: Mapping[str, float]

    def __post_init__(self) -> None:
        if not isinstance(self.passed, bool):
            raise TypeError(f"SanityCell.passed must be a bool, got {self.passed!r}")
        if not isinstance(self.similarity, Mapping) or not all(
            isinstance(k, str) and _is_number(v) for k, v in self.similarity.items()
        ):
            raise TypeError(f"SanityCell.similarity must map measure names to numbers, got {self.similarity!r}")

    def text(self) -> str:
        """The verdict, then each measure's value (as the page shows it)."""
        values = " ".join(f"{name} {float(v):.2f}" for name, v in self.similarity.items())
        return f"{'pass' if self.passed else 'fail'} {values}".rstrip()
