"""Supervisor: restarts with backoff, isolation between stages, clean signal shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dreamstate.engine.core.backoff import Backoff
from dreamstate.engine.runtime import FunctionStage, Stage, StageStatus, Supervisor


def test_backoff_is_capped_and_jittered() -> None:
    b = Backoff(base=0.1, cap=1.0, jitter=0.5, rng=random.Random(1))
    delays = [b.delay(n) for n in range(1, 12)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert delays[0] <= 0.1
    assert max(delays[6:]) <= 1.0
    assert len({round(d, 6) for d in delays[6:]}) > 1, "jitter must vary the capped delays"


class Flaky(Stage):
    """Crashes on its first two runs, then runs until cancelled."""

    def __init__(self) -> None:
        self.name = "flaky"
        self.starts = 0
        self.stops = 0

    async def start(self) -> None:
        self.starts += 1

    async def run(self) -> None:
        if self.starts <= 2:
            raise RuntimeError(f"boom {self.starts}")
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stops += 1


async def test_crashed_stage_restarts_while_others_keep_running() -> None:
    flaky = Flaky()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    sup = Supervisor([flaky, FunctionStage("ticker", ticker)],
                     backoff=Backoff(base=0.01, cap=0.02, jitter=0.1))
    task = asyncio.create_task(sup.run(handle_signals=False))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if flaky.starts >= 3 and sup.status["flaky"] is StageStatus.RUNNING:
            break
    ticks_mid = ticks
    await asyncio.sleep(0.05)
    assert ticks > ticks_mid, "the healthy stage kept running"
    assert sup.counters.get("flaky.crashes") == 2
    assert sup.counters.get("flaky.restarts") == 2
    assert "boom 2" in sup.last_error["flaky"]
    sup.request_stop("test")
    await asyncio.wait_for(task, timeout=2)
    assert flaky.stops == flaky.starts == 3, "stop() follows every start()"
    assert sup.status["ticker"] is StageStatus.STOPPED


async def test_critical_stage_finishing_stops_the_show() -> None:
    async def short() -> None:
        await asyncio.sleep(0.02)

    async def forever() -> None:
        await asyncio.Event().wait()

    sup = Supervisor([FunctionStage("timer", short, critical=True), FunctionStage("loop", forever)])
    await asyncio.wait_for(sup.run(handle_signals=False), timeout=2)
    assert sup.status["timer"] is StageStatus.FINISHED
    assert sup.status["loop"] is StageStatus.STOPPED
    assert "timer" in sup.stop_reason


async def test_stage_that_ignores_stop_is_abandoned_in_time() -> None:
    class Stubborn(Stage):
        name = "stubborn"
        stop_timeout = 0.2

        async def run(self) -> None:
            await asyncio.Event().wait()

        async def stop(self) -> None:
            await asyncio.sleep(10)

    sup = Supervisor([Stubborn()])
    task = asyncio.create_task(sup.run(handle_signals=False))
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    sup.request_stop()
    await asyncio.wait_for(task, timeout=2)
    assert time.monotonic() - t0 < 1.5
    assert sup.counters.get("stubborn.stop_timeouts") == 1


def test_duplicate_stage_names_are_refused() -> None:
    async def noop() -> None:
        return None

    with pytest.raises(ValueError, match="unique"):
        Supervisor([FunctionStage("a", noop), FunctionStage("a", noop)])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_shuts_down_within_two_seconds(sig: signal.Signals) -> None:
    script = textwrap.dedent("""
        import asyncio, sys
        from dreamstate.engine.runtime import FunctionStage, Supervisor

        async def forever():
            print("ready", flush=True)  # from a stage: the signal handlers are in place by now
            while True:
                await asyncio.sleep(0.01)

        async def main():
            sup = Supervisor([FunctionStage("a", forever), FunctionStage("b", forever)])
            await sup.run()
            print("clean", sup.stop_reason, flush=True)

        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.1)
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=5)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0
    assert f"clean {sig.name}" in out
    assert elapsed < 2.0, f"shutdown took {elapsed:.2f} s"


@pytest.mark.parametrize("expected", [True, False])
async def test_retries_log_one_line_each_and_the_traceback_once(expected: bool,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A stage that keeps failing (a missing headset, a port in use): one line per retry with
    the thing and the fix; the traceback once, at debug for expected failures."""
    from dreamstate.engine.core.errors import DeviceError

    async def failing() -> None:
        if expected:
            raise DeviceError("serial port /dev/ttyUSB9 not found", hint="plug the dongle in or fix [device] port")
        raise RuntimeError("something unexpected")

    sup = Supervisor([FunctionStage("device", failing)], backoff=Backoff(base=0.01, cap=0.02, jitter=0.0))
    with caplog.at_level(logging.DEBUG, logger="dreamstate.runtime"):
        task = asyncio.create_task(sup.run(handle_signals=False))
        for _ in range(200):
            if sup.counters.get("device.crashes") >= 5:
                break
            await asyncio.sleep(0.01)
        sup.request_stop("test")
        await task
    retries = [r for r in caplog.records if r.levelno == logging.WARNING and "retrying in" in r.getMessage()]
    with_trace = [r for r in caplog.records if r.exc_info]
    assert len(retries) >= 4 and all(r.exc_info is None for r in retries)
    assert len(with_trace) == 1
    assert with_trace[0].levelno == (logging.DEBUG if expected else logging.ERROR)
    if expected:
        assert "/dev/ttyUSB9" in retries[0].getMessage() and "plug the dongle in" in retries[0].getMessage()


def test_opentsne_chatter_is_kept_out_of_the_installation_log(capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from openTSNE import TSNE

    from dreamstate.engine.core.logs import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("openTSNE").level
    try:
        setup_logging(0)
        x = np.random.default_rng(0).standard_normal((60, 5))
        TSNE(n_components=2, perplexity=10, initialization=x[:, :2] * 1e-4, n_iter=20, n_jobs=1).fit(x)
        logging.getLogger("dreamstate.test").info("a line of our own")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("openTSNE").setLevel(saved[2])
    err = capsys.readouterr().err
    assert "a line of our own" in err
    assert "Ignoring initalization" not in err


async def test_a_task_group_failure_is_named_by_its_one_error(caplog: pytest.LogCaptureFixture) -> None:
    """A stage whose TaskGroup fails logs the error inside, not 'unhandled errors in a
    TaskGroup (1 sub-exception)'."""
    from dreamstate.engine.core.errors import NetworkError

    async def grouped() -> None:
        async def bad() -> None:
            raise NetworkError("OSC telemetry target 'nohost':7000 cannot be reached", hint="fix the host")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(bad())

    sup = Supervisor([FunctionStage("osc", grouped)], backoff=Backoff(base=0.01, cap=0.02, jitter=0.0))
    with caplog.at_level(logging.WARNING, logger="dreamstate.runtime"):
        task = asyncio.create_task(sup.run(handle_signals=False))
        for _ in range(200):
            if sup.counters.get("osc.crashes") >= 2:
                break
            await asyncio.sleep(0.01)
        sup.request_stop("test")
        await task
    retry = next(r for r in caplog.records if "retrying in" in r.getMessage())
    assert "'nohost':7000 cannot be reached" in retry.getMessage() and "sub-exception" not in retry.getMessage()
