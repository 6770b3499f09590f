"""Watching the event loop from outside it: loop lag, and a shutdown that cannot hang.

``LoopLagMonitor`` is a thread that pings the asyncio loop every ``interval_s`` (a callback
scheduled with ``call_soon_threadsafe``) and measures how late the callback runs. A lag over
``stall_s`` (default 250 ms) is a *stall*: counted, and logged once per stall with its length
when the loop answers again. ``responsive(max_age_s)`` says whether the loop answered
recently: the kiosk watchdog of the installation layer builds on it. Percentiles of recent
lags are in ``snapshot()``.

``ShutdownSignals`` owns SIGINT and SIGTERM while a show runs. The first signal asks the show to
stop (on the loop, like ``loop.add_signal_handler``) and arms a deadline; if the process is
still alive ``hard_exit_s`` later, or when a second signal arrives, every open journal is
flushed (``devices.recording.flush_all``) and the process exits at once with ``128 + signal``.
The signals are noticed by a watcher thread through ``signal.set_wakeup_fd``, so this works
even while the event loop, or the main thread, is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from dreamstate.engine.core.metrics import Counters

log = logging.getLogger("dreamstate.runtime")


class LoopLagMonitor:
    """See the module docstring. ``start()`` from the loop's thread; ``stop()`` from anywhere."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, interval_s: float = 0.1, stall_s: float = 0.25,
                 keep: int = 3000) -> None:
        self.loop = loop
        self.interval_s = interval_s
        self.stall_s = stall_s
        self.counters = Counters()
        self.lags: deque[float] = deque(maxlen=keep)
        self.last_answer = time.monotonic()
        self.worst_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-lag", daemon=True)
        self._lock = threading.Lock()
        self._pending: float | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _pong(self, sent: float) -> None:
        now = time.monotonic()
        lag = now - sent
        with self._lock:
            self.lags.append(lag)
            self.last_answer = now
            self._pending = None
        if lag > self.stall_s:
            self.counters.inc("stalls")
            self.worst_s = max(self.worst_s, lag)
            log.warning("the event loop was blocked for %.0f ms", lag * 1000,
                        extra={"stalls": self.counters.get("stalls")})

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                if self._pending is not None:
                    continue  # the last ping has not been answered: the loop is still stuck
                self._pending = sent = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(self._pong, sent)
            except RuntimeError:  # the loop is closed
                return

    def responsive(self, max_age_s: float = 1.0) -> bool:
        """True when the loop answered a ping within the last ``max_age_s`` seconds."""
        with self._lock:
            pending = self._pending
        return pending is None or time.monotonic() - pending < max_age_s

    def snapshot(self) -> dict[str, float]:
        """Lag p50/p99/max over the kept pings (seconds) and the stall count."""
        with self._lock:
            lags = sorted(self.lags)
        if not lags:
            return {"p50_s": 0.0, "p99_s": 0.0, "max_s": 0.0, "stalls": 0}
        return {"p50_s": lags[len(lags) // 2], "p99_s": lags[min(len(lags) - 1, int(0.99 * len(lags)))],
                "max_s": lags[-1], "stalls": self.counters.get("stalls")}


class ShutdownSignals:
    """See the module docstring. ``install()`` in the main thread; ``uninstall()`` after."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, loop: asyncio.AbstractEventLoop, request_stop: Callable[[str], None], *,
                 hard_exit_s: float = 10.0, flush: Callable[[], None] | None = None,
                 exit: Callable[[int], Any] = os._exit) -> None:
        self.loop = loop
        self.request_stop = request_stop
        self.hard_exit_s = hard_exit_s
        self.flush = flush or _flush_journals
        self.exit = exit
        self.received = 0
        self._first_at: float | None = None
        self._previous: dict[int, Any] = {}
        self._old_wakeup = -1
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(True)
        self._writer.setblocking(False)
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        self._old_wakeup = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="signal-watch", daemon=True)
        self._thread.start()
        return True

    def uninstall(self) -> None:
        if not self._previous:
            return
        self._done.set()
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            self._reader.close()

    def _handler(self, signum: int, _frame: object) -> None:
        """Runs in the main thread when it gets to a bytecode boundary (the watcher thread
        covers the case where it does not)."""
        name = signal.Signals(signum).name
        if self.received <= 1:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self.loop.call_soon_threadsafe(self.request_stop, name)

    def _watch(self) -> None:
        reader = self._reader
        assert reader is not None
        while not self._done.is_set():
            reader.settimeout(0.2)
            try:
                data = reader.recv(64)
            except TimeoutError:
                data = b""
            except OSError:
                return
            for signum in data:
                self.received += 1
                if self.received == 1:
                    self._first_at = time.monotonic()
                    log.info("%s received: stopping; a second one exits at once", signal.Signals(signum).name)
                else:
                    self._hard_exit(signum, "a second signal during shutdown")
                    return
            if self._first_at is not None and time.monotonic() - self._first_at > self.hard_exit_s:
                log.error("shutdown did not finish in %.0f s; what was still running:\n%s",
                          self.hard_exit_s, still_running(self.loop))
                self._hard_exit(signal.SIGTERM, f"shutdown did not finish in {self.hard_exit_s:.0f} s")
                return

    def _hard_exit(self, signum: int, why: str) -> None:
        log.error("exiting at once (%s); open journals are flushed first", why)
        try:
            self.flush()
        finally:
            for h in logging.getLogger().handlers:
                with contextlib.suppress(Exception):  # best effort on the way out
                    h.flush()
            self.exit(128 + int(signum))


def still_running(loop: asyncio.AbstractEventLoop) -> str:
    """Where a stuck shutdown waits, for the log: each unfinished asyncio task of ``loop`` with
    the line it waits on, and each other thread with its innermost frames. Best effort from
    another thread (the loop is not paused): a task that ends meanwhile may be missing."""
    import sys
    import traceback

    lines: list[str] = []
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError:  # the set changed while copying; the threads still tell a lot
        tasks = []
    for task in tasks:
        frames = task.get_stack(limit=1)
        where = ""
        if frames:
            f = frames[-1]
            where = f" at {f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
        lines.append(f"  task {task.get_name()}{where}")
    current = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if ident == current:
            continue
        stack = traceback.extract_stack(frame)[-3:]
        where = " <- ".join(f"{fs.filename}:{fs.lineno} in {fs.name}" for fs in reversed(stack))
        lines.append(f"  thread {names.get(ident, ident)}: {where}")
    return "\n".join(lines) or "  (nothing found)"


def _flush_journals() -> None:
    try:
        from dreamstate.devices.recording import flush_all
    except ImportError:  # pragma: no cover - the devices package always ships
        return
    flush_all()
