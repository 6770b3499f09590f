"""One policy for errors in background tasks and threads.

A show must not stop because a helper thread (the dream worker, the map refit) or a
fire-and-forget task (a calibration fit) failed, so such errors are logged with context and
counted, and the owner carries on (restarts the worker, keeps the old map). The same errors
must not pass unnoticed in tests: with ``DREAMSTATE_RAISE_BACKGROUND_ERRORS=1`` (set by
``tests/conftest.py``, after MNE-LSL's ``MNE_LSL_RAISE_STREAM_ERRORS``) each one is also kept,
and the test fixture fails the test that caused it unless the test takes it with
:func:`take_background_errors` because it provoked it on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

from dreamstate.engine.core.metrics import Counters

RAISE_ENV = "DREAMSTATE_RAISE_BACKGROUND_ERRORS"

_kept: list[tuple[str, BaseException]] = []
_kept_lock = threading.Lock()


def raising() -> bool:
    """True when background errors are kept for the tests (``DREAMSTATE_RAISE_BACKGROUND_ERRORS``)."""
    return os.environ.get(RAISE_ENV, "").strip() not in ("", "0")


def report_background_error(what: str, exc: BaseException, logger: logging.Logger, *,
                            counters: Counters | None = None, counter: str = "background_errors",
                            **context: Any) -> None:
    """Log ``exc`` from the background job ``what`` with its traceback and ``context``, count it
    under ``counter``, and keep it for the tests when :func:`raising`."""
    logger.error("%s failed unexpectedly: %s: %s (traceback below; please report it)", what,
                 type(exc).__name__, exc, exc_info=exc, extra={"job": what, **context})
    if counters is not None:
        counters.inc(counter)
    if raising():
        with _kept_lock:
            _kept.append((what, exc))


def take_background_errors() -> list[tuple[str, BaseException]]:
    """The (job, error) pairs kept since the last call, oldest first; empties the list."""
    with _kept_lock:
        out = list(_kept)
        _kept.clear()
    return out


def watch_task(task: asyncio.Task[Any], logger: logging.Logger, *, counters: Counters | None = None,
               **context: Any) -> None:
    """Report an unexpected exception of a fire-and-forget ``task`` (asyncio would only print
    'Task exception was never retrieved' when the task is garbage-collected, if ever)."""

    def done(t: asyncio.Task[Any]) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            report_background_error(t.get_name(), exc, logger, counters=counters, **context)

    task.add_done_callback(done)
