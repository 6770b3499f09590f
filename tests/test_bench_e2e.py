"""``dreamstate bench e2e`` runs end to end at a tiny size and prints its three figures.

Only that the figures exist and are numbers is checked here: how fast they are is the
benchmark's business (docs/BENCHMARKS.md), not a test's, on a shared 2-core machine.
"""

from __future__ import annotations

import math
import re

import pytest

from dreamstate.engine.tools import bench_e2e
from dreamstate.engine.tools.cli import main as cli_main

ROWS = ("state -> first frame shown", "OSC set -> echo, loopback", "node skew via mosquitto")


@pytest.mark.slow
def test_bench_e2e_prints_three_measured_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["bench", "e2e", "--seconds", "3", "--changes", "2", "--repeats", "10", "--warmup", "0.5",
                     "--dream-size", "64x48", "--output-size", "320x240"])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ROWS:
        line = next((ln for ln in out.splitlines() if ln.startswith(name)), None)
        assert line is not None, f"no row {name!r} in:\n{out}"
        m = re.match(re.escape(name) + r"\s+(\d+)\s+(\S+)\s+(\S+)\s+p99 <=.*\s(PASS|MISS)$", line)
        assert m is not None, line
        n, p50, p99 = int(m[1]), float(m[2]), float(m[3])
        assert n >= 1 and math.isfinite(p50) and math.isfinite(p99) and 0 <= p50 <= p99, line
    assert "machine:" in out and "cores" in out


def test_the_figures_are_paired_and_split_as_documented() -> None:
    """The arithmetic behind the rows, on made-up figures: a change counts from its state's sample
    time to the first newer-or-equal generation shown; render nodes pair by scene within 0.5 s."""
    one = {"ready": 10.0, "changes": [(1, "calm", 10.2, 10.1),      # before the warm-up: skipped
                                      (2, "focused", 12.05, 12.0),  # shown at 12.10
                                      (3, "calm", 13.04, 13.0),     # superseded: counts to gen 4 at 13.30
                                      (4, "focused", 13.2, None)],  # not caused by a state
           "shown": [(0, 10.0), (1, 10.3), (2, 12.1), (4, 13.3)]}
    total, pick, draw = bench_e2e.state_to_frame(one, warmup_s=1.0)
    assert [round(x) for x in total] == [100, 300]
    assert [round(x) for x in pick] == [50, 40]
    assert [round(x) for x in draw] == [50, 260]
    a = {"wall_minus_mono": 1000.0, "changes": [(1, "calm", 1.0, None), (2, "focused", 2.0, None),
                                                (3, "calm", 3.0, None)]}
    b = {"wall_minus_mono": 999.0, "changes": [(1, "calm", 2.002, None), (2, "focused", 3.0, None),
                                               (3, "neutral", 4.0, None)]}
    skews, unpaired = bench_e2e.pair_changes(a, b, since_wall=1000.5)
    assert [round(x) for x in skews] == [2, 0] and unpaired == 2  # a's calm at 1003 has no partner, nor b's neutral
    assert bench_e2e.pct([3.0, 1.0, 2.0], 50) == 2.0 and bench_e2e.pct([1.0] * 99 + [9.0], 99) == 1.0
    assert math.isnan(bench_e2e.pct([], 50))


def test_the_director_records_each_scene_change_and_the_state_behind_it() -> None:
    from dreamstate.engine.core.records import EegState
    from dreamstate.engine.runtime.showfile import load_show
    from dreamstate.engine.scenes import SceneChange, SceneDirector

    now = [100.0]
    director = SceneDirector(load_show(None, deep=False).show, clock=lambda: now[0])
    director.on_state(EegState("calm", {"calm": 1.0}, 1.0, time=99.5))  # already the default scene
    assert not director.changes
    now[0] = 101.0
    director.on_state(EegState("focused", {"focused": 1.0}, 1.0, time=100.75))
    now[0] = 102.0
    director.set_scene("neutral")
    assert list(director.changes) == [SceneChange(1, "focused", 101.0, 100.75), SceneChange(2, "neutral", 102.0, None)]
