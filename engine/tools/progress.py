"""Progress of a long command, on a terminal or in a log.

``dreamstate dream``, ``feedback``, ``map`` and ``calibrate`` can run for minutes. On a terminal
they show a rich progress bar. When stdout is not a terminal (a pipe, a kiosk's journal, a CI
log, ``nohup``) a bar would stay silent until the end, so :class:`ProgressReporter` logs one
line at a steady rate instead, plus a first and a last line::

    12:00:00 INFO dreamstate.progress: started task='feedback a.png (640x360)' total=125
    12:00:10 INFO dreamstate.progress: progress task='feedback a.png (640x360)' done=21 total=125
        percent=16.8 elapsed_s=10.0 left_s=49.5
    12:01:02 INFO dreamstate.progress: finished task='feedback a.png (640x360)' done=125 elapsed_s=62.0

Lifecycle: use it as a context manager; ``update(done, total)`` may be called as often as the
work likes (it is cheap: it logs at most once per ``interval_s``); leaving the block logs the
last line (or stops the bar).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger("dreamstate.progress")


def default_interval() -> float:
    """Seconds between progress log lines: ``DREAMSTATE_PROGRESS_S`` (a positive number) or 10."""
    text = os.environ.get("DREAMSTATE_PROGRESS_S", "")
    try:
        value = float(text)
    except ValueError:
        if text:
            log.warning("DREAMSTATE_PROGRESS_S is not a number; using 10 s", extra={"value": text})
        return 10.0
    if not (value > 0 and value < 1e6):
        log.warning("DREAMSTATE_PROGRESS_S must be above 0; using 10 s", extra={"value": text})
        return 10.0
    return value


class ProgressReporter:
    """A rich bar when ``terminal`` (default: stdout is a TTY), else log lines every
    ``interval_s`` seconds (default :func:`default_interval`). ``total`` may be None (unknown)
    and set later."""

    def __init__(self, label: str, total: int | None = None, *, terminal: bool | None = None,
                 interval_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self.interval_s = float(interval_s) if interval_s is not None else default_interval()
        self.clock = clock
        self.logger = logger
        self.lines = 0
        self._bar: Any = None
        self._task: Any = None
        self._t0 = 0.0
        self._last = 0.0

    def __enter__(self) -> ProgressReporter:
        self._t0 = self._last = self.clock()
        if self.terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(self.label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                 TimeRemainingColumn(), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total)
        else:
            self._log("started", total=self.total if self.total is not None else "unknown")
        return self

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units of ``total`` (the total may change, e.g. once it is known)."""
        self.done = int(done)
        if total is not None:
            self.total = int(total)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, total=self.total)
            return
        now = self.clock()
        if now - self._last >= self.interval_s:
            self._last = now
            self._log("progress", **self._figures(now))

    def _figures(self, now: float) -> dict[str, Any]:
        elapsed = now - self._t0
        out: dict[str, Any] = {"done": self.done, "total": self.total if self.total is not None else "unknown",
                               "elapsed_s": round(elapsed, 1)}
        if self.total:
            frac = min(1.0, self.done / self.total)
            out["percent"] = round(100.0 * frac, 1)
            if frac > 0:
                out["left_s"] = round(elapsed * (1.0 - frac) / frac, 1)
        return out

    def _log(self, what: str, **extra: Any) -> None:
        self.lines += 1
        self.logger.info(what, extra={"task": self.label, **extra})

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            return
        figures = self._figures(self.clock())
        self._log("finished" if exc_type is None else "stopped", **figures)
