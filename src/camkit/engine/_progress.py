"""A dependency-free progress line for long runs (perturbation methods, folders)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Counts work done and, when enabled, redraws one line on a stream (stderr by default).

    Args:
        total: units of work expected.
        label: what is counted, shown before the counts.
        enabled: draw the line; ``None`` draws only when the stream is a terminal.
        stream: where to draw.
        interval: seconds between redraws.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = Progress(4, "masks", enabled=True, stream=out, interval=0)
        >>> for _ in range(4):
        ...     bar.update(1)
        >>> bar.close()
        >>> out.getvalue().splitlines()[-1].strip()
        'masks: 4/4 (100%)'
    """

    def __init__(
        self,
        total: int,
        label: str,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float = 0.2,
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = is_tty if enabled is None else enabled
        self.interval = interval
        self._last = float("-inf")

    def update(self, amount: int) -> None:
        """Add ``amount`` units and redraw if enough time has passed.

        Args:
            amount: units of work just finished.
        """
        self.done += amount
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
            self._last = now
            percent = 100 * self.done // self.total if self.total else 100
            self.stream.write(f"\r{self.label}: {self.done}/{self.total} ({percent}%)")
            self.stream.flush()

    def close(self) -> None:
        """End the line (when anything was drawn)."""
        if self.enabled and self.done:
            self.stream.write("\n")
            self.stream.flush()
