"""Progress of long commands when stdout is not a terminal (issue 11, item 11).

The kind of fault: ``dream``, ``feedback``, ``map`` and ``calibrate`` drew a rich bar, which
prints nothing until the end when stdout is a pipe or a log; offline ``feedback`` ran for six
minutes in silence. ``engine.tools.progress.ProgressReporter`` logs a line at a steady rate instead.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.tools.progress import ProgressReporter, default_interval


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_off_a_terminal_lines_come_at_a_steady_rate(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    with caplog.at_level(logging.INFO, "dreamstate.progress"), \
            ProgressReporter("work", 1000, terminal=False, interval_s=10.0, clock=clock) as bar:
        for i in range(1, 1001):
            clock.t = i * 0.035  # 35 s of work, 1000 updates
            bar.update(i)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["started", "progress", "progress", "progress", "finished"]
    first = caplog.records[1]
    assert first.done == 286 and first.percent == 28.6 and first.elapsed_s == 10.0  # type: ignore[attr-defined]
    assert first.left_s == pytest.approx(25.0, abs=0.1)  # type: ignore[attr-defined]
    assert caplog.records[-1].done == 1000  # type: ignore[attr-defined]


def test_on_a_terminal_it_draws_a_bar_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "dreamstate.progress"), ProgressReporter("work", 3, terminal=True) as bar:
        for i in range(4):
            bar.update(i)
    assert not caplog.records and bar.lines == 0


def test_an_error_ends_with_a_stopped_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "dreamstate.progress"), pytest.raises(RuntimeError), \
            ProgressReporter("work", 10, terminal=False) as bar:
        bar.update(4)
        raise RuntimeError("boom")
    assert caplog.records[-1].getMessage() == "stopped"


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMSTATE_PROGRESS_S", "2.5")
    assert default_interval() == 2.5
    for bad in ("0", "-1", "nan", "soon"):
        monkeypatch.setenv("DREAMSTATE_PROGRESS_S", bad)
        assert default_interval() == 10.0


def test_feedback_into_a_pipe_logs_progress(tmp_path: Path) -> None:
    from dreamstate.engine.core.images import save_image

    save_image(tmp_path / "a.png", np.random.default_rng(0).random((48, 64, 3), dtype=np.float32))
    env = {**os.environ, "DREAMSTATE_PROGRESS_S": "0.05"}
    res = subprocess.run([sys.executable, "-m", "dreamstate", "feedback", str(tmp_path / "a.png"), "--model", "starter",
                          "--seconds", "2", "--fps", "8", "--out", str(tmp_path / "o.avi")],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "dreamstate.progress" in ln]
    assert "started" in lines[0] and "finished" in lines[-1]
    assert sum(" progress " in ln for ln in lines) >= 2, lines
