"""One failure policy for background jobs: an unexpected error in a thread or a fire-and-forget
task is logged with its traceback and context, counted, and the owner carries on; the tests see
every such error (DREAMSTATE_RAISE_BACKGROUND_ERRORS, set by conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import pytest

from dreamstate.engine.core.background import RAISE_ENV, report_background_error, take_background_errors, watch_task
from dreamstate.engine.core.metrics import Counters

log = logging.getLogger("dreamstate.test")


def test_reported_errors_are_logged_counted_and_kept_for_the_tests(caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    counters = Counters()
    with caplog.at_level(logging.ERROR):
        report_background_error("map refit", ValueError("bad row 7"), log, counters=counters, port="/dev/x")
    assert counters.get("background_errors") == 1
    record = caplog.records[-1]
    assert "map refit failed unexpectedly: ValueError: bad row 7" in record.getMessage()
    assert record.exc_info is not None and getattr(record, "port", None) == "/dev/x"
    assert [(w, str(e)) for w, e in take_background_errors()] == [("map refit", "bad row 7")]
    monkeypatch.setenv(RAISE_ENV, "0")  # in a show: logged and counted, nothing kept
    report_background_error("map refit", ValueError("again"), log, counters=counters)
    assert counters.get("background_errors") == 2 and take_background_errors() == []


async def test_a_fire_and_forget_task_error_is_reported() -> None:
    async def boom() -> None:
        raise KeyError("calm")

    counters = Counters()
    task = asyncio.create_task(boom(), name="calibration-fit")
    watch_task(task, log, counters=counters)
    await asyncio.sleep(0.05)
    assert counters.get("background_errors") == 1
    assert [w for w, _ in take_background_errors()] == ["calibration-fit"]


async def test_show_calibration_fit_error_is_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The calibration fit runs as a task in a thread; a bug in it used to vanish with the task."""
    from dreamstate.engine.runtime.app import ShowRuntime
    from dreamstate.engine.runtime.showfile import load_show

    rt = ShowRuntime(load_show(None, deep=False))
    stage = rt.signal_stage

    def broken() -> None:
        raise ZeroDivisionError("fold of zero windows")

    monkeypatch.setattr(stage.pipeline, "fit_calibration", broken)
    stage.fit_soon()
    for _ in range(100):
        if rt.counters.get("background_errors"):
            break
        await asyncio.sleep(0.02)
    assert rt.counters.get("background_errors") == 1
    (what, exc), = take_background_errors()
    assert what == "calibration-fit" and isinstance(exc, ZeroDivisionError)


def test_map_refit_thread_survives_an_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in a refit is reported and the refit thread keeps the previous map and runs on
    (it used to die, leaving the map frozen for the rest of the day)."""
    from dreamstate.engine.signal import embedding

    m = embedding.IncrementalMap(dim=3, method="pca", reference_size=30, refit_every_s=1.0)
    rng = np.random.default_rng(0)
    for i in range(40):
        m.add(rng.normal(size=3), i * 0.25)
    first = m.reference
    assert first is not None
    m.start()
    try:
        real = embedding.build_reference
        monkeypatch.setattr(embedding, "build_reference", lambda *a, **k: (_ for _ in ()).throw(TypeError("bug")))
        t = 20.0
        while m.counters.get("map_fit_errors") == 0 and t < 200:
            m.add(rng.normal(size=3), t)
            t += 0.5
            time.sleep(0.01)
        assert m.counters.get("map_fit_errors") == 1 and m.reference is first
        monkeypatch.setattr(embedding, "build_reference", real)
        while m.reference is first and t < 400:
            m.add(rng.normal(size=3), t)
            t += 0.5
            time.sleep(0.01)
        assert m.reference is not first, "the refit thread died with the first error"
    finally:
        m.close()
    (what, exc), = take_background_errors()
    assert what == "map refit" and isinstance(exc, TypeError)
