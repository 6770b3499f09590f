"""Benchmark plumbing: busy processes that stand in for a shared or thermally throttled machine
(``bench --load N``), and a median timer.

:func:`busy_load` starts ``n`` processes that each keep one CPU core busy with a pure-Python
loop, for as long as the ``with`` block runs. They are bounded three ways, so a benchmark that
dies never leaves them behind: the context manager terminates (then kills) them on exit, each
one stops by itself after ``max_s`` seconds, and each one stops as soon as its parent process is
gone (it checks its parent's pid twice a second).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """``fn`` once to warm up, then ``max(1, repeats)`` timed calls; the median wall time in seconds."""
    fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


MAX_LOAD = 16
"""the most busy processes a benchmark may start (a typo such as ``--load 100`` is refused)"""


def _spin(parent: int, deadline: float) -> None:
    """Keep one core busy until ``deadline`` (``time.monotonic``) or until ``parent`` is gone."""
    x = 0
    while True:
        for _ in range(200_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        if time.monotonic() >= deadline or os.getppid() != parent:
            return


@contextlib.contextmanager
def busy_load(n: int, *, max_s: float = 3600.0) -> Iterator[list[int]]:
    """Run ``n`` (0..``MAX_LOAD``) busy processes for the ``with`` block; yields their pids.

    Raises ``ValueError`` for ``n`` outside 0..MAX_LOAD or a ``max_s`` that is not positive.
    After the block (also on an exception) every process has ended: terminated, then killed
    after 2 s."""
    if not 0 <= n <= MAX_LOAD:
        raise ValueError(f"--load {n}: give 0..{MAX_LOAD} busy processes")
    if max_s <= 0:
        raise ValueError(f"max_s {max_s} must be positive")
    ctx = multiprocessing.get_context("spawn")  # no copy of the benchmark's threads or sessions
    deadline = time.monotonic() + max_s  # CLOCK_MONOTONIC is system-wide on Linux: the children share it
    procs = [ctx.Process(target=_spin, args=(os.getpid(), deadline), name=f"dreamstate-load-{i}", daemon=True)
             for i in range(n)]
    try:
        for p in procs:
            p.start()
        yield [p.pid for p in procs if p.pid is not None]
    finally:
        started = [p for p in procs if p.pid is not None]  # a start that failed leaves the rest unstarted
        for p in started:
            if p.is_alive():
                p.terminate()
        for p in started:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(2.0)
