"""What a run did: :class:`RunReport`.

Example:
    >>> report = RunReport(computed=8, skipped=2, failed=[("bad.jpg", "OSError: truncated")], images_per_s=4.0)
    >>> print(report.summary().splitlines()[0])  # doctest: +ELLIPSIS
    8 computed, 2 skipped (already in the store), 1 failed; 4.0 images/s ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunReport"]

STAGES = ("decode", "model", "write", "wait", "total")


def _stages() -> dict[str, float]:
    return dict.fromkeys(STAGES, 0.0)


@dataclass
class RunReport:
    """The totals of a run (over every rank).

    Attributes:
        computed: images explained and committed by this run.
        skipped: images already in the store when the run started (finished, or failed and not
            retried), which it did not compute.
        failed: ``(key, reason)`` of the images this run could not read, sorted by key.
        images_per_s: ``computed`` divided by the wall time of the slowest rank's loop (decoding,
            model and writing; model loading and start-up are not counted).
        seconds: per stage: ``decode`` (in the DataLoader workers, summed over them), ``model``
            (forward, maps, copy to the host), ``write`` (shards and manifest), ``wait`` (the loop
            waiting for decoded batches), summed over ranks; ``total``: the slowest rank's loop.
        skipped_failed: how many of ``skipped`` had failed before (``retry_failed`` retries them).
        ranks: the number of processes.
        store: the store folder.
        sanity: the store's sanity verdicts (``camkit run --sanity``: the ``"sanity"`` entry of
            :mod:`camkit.runner.sanity`), computed by this run or read back; ``None`` without ``--sanity``.
    """

    computed: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    images_per_s: float = 0.0
    seconds: dict[str, float] = field(default_factory=_stages)
    skipped_failed: int = 0
    ranks: int = 1
    store: str = ""
    sanity: dict[str, Any] | None = None

    @classmethod
    def merge(cls, reports: Sequence[RunReport]) -> RunReport:
        """One report from the reports of every rank."""
        if len(reports) == 1:
            return reports[0]
        seconds = {stage: sum(r.seconds.get(stage, 0.0) for r in reports) for stage in STAGES}
        seconds["total"] = max(r.seconds.get("total", 0.0) for r in reports)
        computed = sum(r.computed for r in reports)
        return cls(
            computed=computed,
            skipped=sum(r.skipped for r in reports),
            failed=sorted(item for r in reports for item in r.failed),
            images_per_s=computed / seconds["total"] if seconds["total"] > 0 else 0.0,
            seconds=seconds,
            skipped_failed=sum(r.skipped_failed for r in reports),
            ranks=len(reports),
            store=reports[0].store,
            sanity=next((r.sanity for r in reports if r.sanity is not None), None),
        )

    def summary(self, limit: int = 10) -> str:
        """The report as text: one line of totals, then up to ``limit`` failed images with their reasons."""
        s = self.seconds
        before = (
            f"; {self.skipped_failed} of them had failed: --retry-failed retries them" if self.skipped_failed else ""
        )
        lines = [
            f"{self.computed} computed, {self.skipped} skipped (already in the store{before}), {len(self.failed)} "
            f"failed; {self.images_per_s:.1f} images/s over {s['total']:.1f} s (decode {s['decode']:.1f} s, "
            f"model {s['model']:.1f} s, write {s['write']:.1f} s, waiting for data {s['wait']:.1f} s; "
            f"{self.ranks} rank{'s' if self.ranks > 1 else ''})" + (f" -> {self.store}" if self.store else "")
        ]
        if self.sanity is not None:
            from camkit.runner.sanity import describe

            lines.append(describe(self.sanity))
        lines += [f"failed: {key}: {reason}" for key, reason in self.failed[:limit]]
        if len(self.failed) > limit:
            lines.append(f"... and {len(self.failed) - limit} more (camkit.open_store(STORE).failed lists them all)")
        return "\n".join(lines)
