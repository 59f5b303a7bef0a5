"""A dependency-free progress line for long runs (perturbation methods, folders, datasets, metrics).

Where the line goes decides how it is drawn:

* on a terminal, one line redrawn in place: ``masks: 120/1,281 (9%) 35.2/s, ETA 0:33``;
* anywhere else (CI logs, ``2>file``, a Jupyter notebook), plain lines, at most one every
  :attr:`Progress.LINE_INTERVAL` seconds, and a final one.

With ``enabled=None`` (the default of every caller) short work stays silent: nothing is drawn on a
terminal before :attr:`Progress.TERMINAL_DELAY` seconds, nor written to a log before
:attr:`Progress.LINE_DELAY` seconds.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


def _in_notebook() -> bool:
    """Whether this process is an IPython kernel (Jupyter, VS Code notebooks, Colab)."""
    return "ipykernel" in sys.modules


def _duration(seconds: float) -> str:
    """``M:SS`` or ``H:MM:SS``.

    Example:
        >>> _duration(33.4), _duration(3725)
        ('0:33', '1:02:05')
    """
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(max(round(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class Progress:
    """Counts work done and shows it with its rate and ETA on a stream (stderr by default).

    On a terminal one line is redrawn in place; on any other stream (a log file, CI output) and in
    a Jupyter notebook, plain lines are written, throttled, and a final line on :meth:`close`.

    Args:
        total: units of work expected.
        label: what is counted, shown before the counts.
        enabled: ``True``: always show the progress (from the first update); ``False``: never;
            ``None``: only work that lasts: on a terminal after :attr:`TERMINAL_DELAY` seconds,
            elsewhere after :attr:`LINE_DELAY` seconds (shorter runs stay silent).
        stream: where to write.
        interval: seconds between two redraws; ``None``: 0.2 on a terminal and
            :attr:`LINE_INTERVAL` for plain lines.
        clock: the time in seconds (``time.monotonic``; tests pass a fake one).

    Example:
        >>> import io
        >>> out, now = io.StringIO(), [0.0]
        >>> bar = Progress(4, "masks", enabled=True, stream=out, interval=0, clock=lambda: now[0])
        >>> for _ in range(4):
        ...     now[0] += 0.5
        ...     bar.update(1)
        >>> bar.close()
        >>> out.getvalue().splitlines()[0]
        'masks: 1/4 (25%) 2.0/s, ETA 0:02'
        >>> out.getvalue().splitlines()[-1]
        'masks: 4/4 (100%) 2.0/s, done in 0:02'
    """

    #: seconds before the first redraw on a terminal, with ``enabled=None``
    TERMINAL_DELAY = 1.0
    #: seconds of work before the first plain line (logs, notebooks), with ``enabled=None``
    LINE_DELAY = 5.0
    #: seconds between two plain lines, unless ``interval`` says otherwise
    LINE_INTERVAL = 10.0

    def __init__(
        self,
        total: int,
        label: str,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        interval: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        #: ``"terminal"`` (one redrawn line) or ``"lines"`` (plain, throttled lines)
        self.mode = "terminal" if is_tty and not _in_notebook() else "lines"
        self.enabled = enabled is not False
        if enabled is None:
            self.delay = self.TERMINAL_DELAY if self.mode == "terminal" else self.LINE_DELAY
        else:
            self.delay = 0.0
        if interval is None:
            interval = 0.2 if self.mode == "terminal" else self.LINE_INTERVAL
        self.interval = interval
        self._clock = clock
        self._start = clock()
        self._last = float("-inf")
        self._width = 0  # of the line drawn on a terminal
        self._drawn = False
        self._finished = False
        self._closed = False

    def update(self, amount: int) -> None:
        """Add ``amount`` units and show them if enough time has passed.

        Args:
            amount: units of work just finished.
        """
        self.done += amount
        if not self.enabled or self._closed:
            return
        now = self._clock()
        elapsed = now - self._start
        if self.done >= self.total:  # the final state: drawn now, in case close() is never reached
            if self._drawn or elapsed >= self.delay:
                self._show(self._text(elapsed, final=True))
                self._finished = True
            return
        if elapsed >= self.delay and now - self._last >= self.interval:
            self._last = now
            self._show(self._text(elapsed, final=False))

    def close(self) -> None:
        """Show the final state (when anything was shown, or the work lasted) and end the line."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled or (self.done == 0 and not self._drawn):
            return
        elapsed = self._clock() - self._start
        if not self._finished and (self._drawn or elapsed >= self.delay):
            self._show(self._text(elapsed, final=True))
        if self._drawn and self.mode == "terminal":
            self.stream.write("\n")
            self.stream.flush()

    def _text(self, elapsed: float, final: bool) -> str:
        percent = min(100 * self.done // self.total, 100) if self.total else 100
        text = f"{self.label}: {self.done:,}/{self.total:,} ({percent}%)"
        if elapsed <= 0 or self.done <= 0:
            return text
        rate = self.done / elapsed
        speed = f"{rate:,.1f}/s" if rate >= 1 else f"{1 / rate:,.1f} s each"
        if final:
            ending = "done in" if self.done >= self.total else "stopped after"
            return f"{text} {speed}, {ending} {_duration(elapsed)}"
        return f"{text} {speed}, ETA {_duration(max(self.total - self.done, 0) / rate)}"

    def _show(self, text: str) -> None:
        if self.mode == "terminal":
            self.stream.write(f"\r{text}{' ' * max(self._width - len(text), 0)}")
            self._width = len(text)
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()
        self._drawn = True
