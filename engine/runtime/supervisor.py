"""Supervise long-lived stages as named tasks in one ``asyncio.TaskGroup``.

A ``Stage`` has a three-call lifecycle:

* ``start()``: acquire resources (open a port, load a model). After it returns the stage is
  ready to run. It must finish within ``start_timeout`` seconds.
* ``run()``: the long-lived loop. It returns when the stage is finished for good (a replay
  reached its end) and raises when the stage crashed.
* ``stop()``: release everything. Idempotent; called after every ``start()``, whether ``run()``
  returned, raised or was cancelled. It must finish within ``stop_timeout`` seconds.

The ``Supervisor`` runs each stage in its own named task. A stage that raises is stopped,
logged with its name, counted, and started again after a capped, jittered exponential backoff,
while the other stages keep running. A stage that returns normally is not restarted; when it is
``critical`` (the output window was closed, a ``--seconds`` timer ran out) the whole show
stops. ``request_stop()`` (also wired to SIGINT and SIGTERM) cancels every stage and stops them
all; the whole shutdown is bounded by ``shutdown_timeout`` (default 1.8 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from dreamstate.engine.core.aio import wait_for
from dreamstate.engine.core.backoff import Backoff
from dreamstate.engine.core.metrics import Counters

if TYPE_CHECKING:
    from dreamstate.engine.runtime.watch import LoopLagMonitor

log = logging.getLogger("dreamstate.runtime")


class Stage:
    """Base class for a supervised stage. Override ``run`` and, when needed, ``start``/``stop``."""

    name: str = "stage"
    critical: bool = False
    restart: bool = True
    start_timeout: float = 30.0
    stop_timeout: float = 1.0

    async def start(self) -> None:
        """Acquire resources. After it returns, ``run`` may be called."""

    async def run(self) -> None:
        """Run until finished (return) or crashed (raise)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Release resources. Idempotent; safe after a failed ``start``."""


class FunctionStage(Stage):
    """A stage made from a coroutine function; handy for small loops and timers."""

    def __init__(self, name: str, fn: Callable[[], Awaitable[None]], *, critical: bool = False,
                 restart: bool = True) -> None:
        self.name = name
        self._fn = fn
        self.critical = critical
        self.restart = restart

    async def run(self) -> None:
        await self._fn()


class StageStatus(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FINISHED = "finished"
    STOPPED = "stopped"


class Supervisor:
    """Runs stages until ``request_stop()`` or a critical stage finishes.

    After ``run()`` returns, every stage has been stopped (or abandoned after its stop timeout,
    which is logged), and no task of the supervisor is left.
    """

    def __init__(self, stages: Iterable[Stage], *, backoff: Backoff | None = None,
                 shutdown_timeout: float = 1.8, hard_exit_s: float = 10.0) -> None:
        self.stages = list(stages)
        names = [s.name for s in self.stages]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"stage names must be unique, repeated: {sorted(dupes)}")
        self.backoff = backoff or Backoff()
        self.shutdown_timeout = shutdown_timeout
        self.hard_exit_s = hard_exit_s
        self.lag: LoopLagMonitor | None = None  # while run() runs
        self.counters = Counters()
        self.status: dict[str, StageStatus] = {s.name: StageStatus.PENDING for s in self.stages}
        self.last_error: dict[str, str] = {}
        self.latest_error = ""
        """The most recent stage failure as ``stage: Type: message`` ("" when none yet)."""
        self._seen_errors: set[str] = set()
        self._stopping = asyncio.Event()
        self.stop_reason = ""

    def request_stop(self, reason: str = "requested") -> None:
        """Ask every stage to stop. Safe to call from signal handlers and callbacks."""
        if not self._stopping.is_set():
            self.stop_reason = reason
            log.info("shutting down", extra={"reason": reason})
            self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run every stage until stopped. With ``handle_signals``, SIGINT/SIGTERM stop the show,
        and a second one (or a shutdown stuck for ``hard_exit_s``) exits at once after
        flushing the journals (``engine.runtime.watch.ShutdownSignals``). A loop-lag monitor
        (``lag``) runs meanwhile."""
        from dreamstate.engine.runtime.watch import LoopLagMonitor, ShutdownSignals

        loop = asyncio.get_running_loop()
        self.lag = LoopLagMonitor(loop)
        self.lag.start()
        signals = ShutdownSignals(loop, self.request_stop, hard_exit_s=self.hard_exit_s) if handle_signals else None
        if signals is not None and not signals.install():
            log.debug("not the main thread: signals are not handled by this supervisor")
            signals = None
        try:
            async with asyncio.TaskGroup() as tg:
                for stage in self.stages:
                    tg.create_task(self._supervise(stage), name=f"stage:{stage.name}")
        finally:
            self.lag.stop()
            if signals is not None:
                signals.uninstall()

    async def _supervise(self, stage: Stage) -> None:
        retries = self.backoff.retries()
        while not self._stopping.is_set():
            self.status[stage.name] = StageStatus.STARTING
            retries.started()
            try:
                await wait_for(stage.start(), timeout=stage.start_timeout)
                self.status[stage.name] = StageStatus.RUNNING
                finished = await self._run_until_stop(stage)
            except Exception as exc:
                self.counters.inc(f"{stage.name}.crashes")
                self.last_error[stage.name] = f"{type(exc).__name__}: {exc}"
                self.latest_error = f"{stage.name}: {self.last_error[stage.name]}"
                await self._stop_stage(stage)
                if not stage.restart:
                    log.error("stage failed and is not restarted", exc_info=exc,
                              extra={"stage": stage.name})
                    self.status[stage.name] = StageStatus.STOPPED
                    if stage.critical:
                        self.request_stop(f"critical stage {stage.name} failed")
                    return
                delay = retries.failed()
                self.status[stage.name] = StageStatus.BACKOFF
                self._log_retry(stage, exc, retries.attempt, delay)
                self.counters.inc(f"{stage.name}.restarts")
                with contextlib.suppress(TimeoutError):
                    await wait_for(self._stopping.wait(), timeout=delay)
                continue
            await self._stop_stage(stage)
            if finished:
                self.status[stage.name] = StageStatus.FINISHED
                log.info("stage finished", extra={"stage": stage.name})
                if stage.critical:
                    self.request_stop(f"stage {stage.name} finished")
            else:
                self.status[stage.name] = StageStatus.STOPPED
            return
        self.status[stage.name] = StageStatus.STOPPED

    def _log_retry(self, stage: Stage, exc: BaseException, attempt: int, delay: float) -> None:
        """One line per retry naming the stage, the error and its fix; the traceback once per
        distinct error: at debug level for expected failures (a ``DreamstateError``: a missing
        headset, a port in use), at error level for anything else (a bug worth reporting)."""
        from dreamstate.engine.core.errors import DreamstateError

        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # a TaskGroup's one failure: say what it was, not "1 sub-exception"
        text = f"{type(exc).__name__}: {exc}"
        first = text not in self._seen_errors
        self._seen_errors.add(text)
        expected = isinstance(exc, DreamstateError)
        if first and not expected:
            log.error("stage %s crashed with an unexpected error (traceback below; please report it)",
                      stage.name, exc_info=exc, extra={"stage": stage.name})
        elif first:
            log.debug("stage %s failed", stage.name, exc_info=exc, extra={"stage": stage.name})
        log.warning("stage %s failed: %s; retrying in %.1f s (attempt %d)", stage.name,
                    exc if expected else text, delay, attempt,
                    extra={"stage": stage.name, "attempt": attempt, "delay_s": round(delay, 3)})

    async def _run_until_stop(self, stage: Stage) -> bool:
        """Run the stage; True when it finished by itself, False when stopped. Raises on crash."""
        run_task = asyncio.create_task(stage.run(), name=f"{stage.name}.run")
        stop_task = asyncio.create_task(self._stopping.wait(), name=f"{stage.name}.stopwatch")
        try:
            await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_task.cancel()
        if run_task.done():
            run_task.result()  # re-raises the crash
            return True
        run_task.cancel()
        # asyncio.wait, not wait_for: wait_for would wait on, unbounded, for a task that lost its
        # cancellation (see engine.core.aio); such a task is named here and left to asyncio.run,
        # whose teardown cancels every remaining task once more
        await asyncio.wait({run_task}, timeout=self.shutdown_timeout / 2)
        if not run_task.done():
            self.counters.inc(f"{stage.name}.cancel_ignored")
            frames = run_task.get_stack(limit=1)
            where = f"{frames[-1].f_code.co_filename}:{frames[-1].f_lineno}" if frames else "?"
            log.warning("stage %s did not end %.1f s after it was cancelled (waiting at %s); shutting down "
                        "without it", stage.name, self.shutdown_timeout / 2, where,
                        extra={"stage": stage.name})
        elif not run_task.cancelled() and (exc := run_task.exception()) is not None:
            log.warning("stage raised while cancelling", exc_info=exc, extra={"stage": stage.name})
        return False

    async def _stop_stage(self, stage: Stage) -> None:
        try:
            await wait_for(stage.stop(), timeout=stage.stop_timeout)
        except TimeoutError:
            self.counters.inc(f"{stage.name}.stop_timeouts")
            log.warning("stage did not stop in time", extra={"stage": stage.name,
                                                              "timeout_s": stage.stop_timeout})
        except Exception as exc:
            self.counters.inc(f"{stage.name}.stop_errors")
            log.warning("stage failed to stop cleanly", exc_info=exc, extra={"stage": stage.name})
