"""The live terminal monitor: model, rendering, state panel, and the real CLI."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.text import Text

from dreamstate.devices.simulator import EegSimulator, SimulatedDevice
from dreamstate.engine.core.records import (
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    ESense,
    RawChunk,
    Reading,
    SignalQuality,
)
from dreamstate.engine.core.show import MapConfig, SignalConfig, StatesConfig
from dreamstate.engine.tools.monitor import MonitorModel, PipelinePanel, render_monitor, run_monitor, sparkline

SFREQ = 512


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def text_of(renderable: object, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def sim_readings(script: list[tuple[str, float]], seed: int = 1) -> list[Reading]:
    sim = EegSimulator(script, seed=seed, loop=False)
    block = sim.advance(round(sum(s for _, s in script) * SFREQ))
    return sim.readings(block, t0=0.0)


def test_render_shows_quality_esense_bands_raw_and_counters() -> None:
    clock = FakeClock()
    model = MonitorModel(clock=clock)
    readings = sim_readings([("blinking", 3)])
    for r in readings:
        model.feed(r)
    model.feed(DeviceEvent(DeviceEventKind.CONNECTED, 0.0, detail="/dev/pts/9"))
    last = [r for r in readings if isinstance(r, ESense)][-1]
    bands = [r for r in readings if isinstance(r, BandPowers)][-1]
    out = text_of(render_monitor(model, counters={"checksum_errors": 3, "reconnects": 1,
                                                  "dongle_commands": 2}))
    assert "GOOD contact (0)" in out
    assert re.search(rf"attention\s+{last.attention}\b", out)
    assert re.search(rf"meditation\s+{last.meditation}\b", out)
    for name, value in zip(("delta", "mid_gamma"), (bands.values[0], bands.values[7]), strict=True):
        assert re.search(rf"{name}\s+{value:,d}", out)
    assert re.search(r"checksum errors\s+3", out) and re.search(r"reconnects\s+1", out)
    assert re.search(r"dongle commands\s+2", out)
    assert f"blinks {sum(isinstance(r, Blink) for r in readings)}" in out
    assert "connected: /dev/pts/9" in out
    assert "raw EEG (Fp1)" in out and "rms" in out
    assert model.samples == 3 * SFREQ


def test_off_head_railing_and_stale_are_loud() -> None:
    clock = FakeClock()
    model = MonitorModel(clock=clock)
    assert "WAITING FOR DATA" in text_of(render_monitor(model))
    model.feed(RawChunk(0, np.full(512, 7190.0, dtype=np.float32), 0.0))
    model.feed(SignalQuality(200, 0.0))
    out = text_of(render_monitor(model))
    assert "OFF HEAD (200)" in out and "RAILING" in out
    model.feed(SignalQuality(80, 0.0))
    assert "POOR contact (80)" in text_of(render_monitor(model))
    clock.t += 5.0
    assert "NO DATA for 5 s" in text_of(render_monitor(model))


def test_gaps_are_counted() -> None:
    model = MonitorModel()
    model.feed(RawChunk(0, np.zeros(16, dtype=np.float32), 0.0))
    model.feed(RawChunk(20, np.zeros(16, dtype=np.float32), 0.0))
    assert (model.gaps, model.lost_samples, model.samples) == (1, 4, 32)
    assert "1 / 4" in text_of(render_monitor(model))


def test_sparkline() -> None:
    text, lo, hi = sparkline(np.linspace(-10, 10, 1024, dtype=np.float32), width=8)
    assert text == "▁▂▃▄▅▆▇█" and (lo, hi) == (-10.0, 10.0)
    assert sparkline(np.zeros(0, dtype=np.float32)) == ("", 0.0, 0.0)
    flat, _, _ = sparkline(np.ones(100, dtype=np.float32), width=10)
    assert len(flat) == 10 and len(set(flat)) == 1


def test_pipeline_panel_shows_the_live_state() -> None:
    from dreamstate.engine.signal.pipeline import SignalPipeline

    pipeline = SignalPipeline(SignalConfig(), MapConfig(method="pca", reference_size=20),
                              StatesConfig())
    panel = PipelinePanel(pipeline)
    try:
        for r in sim_readings([("relaxed", 8)], seed=2):
            panel.feed(r)
    finally:
        pipeline.close()
    assert panel.errors == 0
    state = pipeline.latest_state
    assert state is not None
    out = text_of(render_monitor(MonitorModel(), panels=[panel]))
    assert "EEG state and map" in out and re.search(rf"state\s+{state.label}", out)
    assert f"state={state.label}" in panel.summary()
    assert pipeline.latest_point is not None
    assert "●" in out and len(panel.points) >= 10  # the newest point and its trail
    assert panel.points[-1] == (pipeline.latest_point.x, pipeline.latest_point.y)


def test_a_failing_panel_does_not_stop_the_monitor() -> None:
    class Broken:
        latest_state = None
        latest_point = None

        def feed(self, reading: Reading) -> None:
            raise ValueError("boom")

    panel = PipelinePanel(Broken())
    readings = sim_readings([("neutral", 2)])
    for r in readings:
        panel.feed(r)
    assert panel.errors == len(readings)
    assert "errors" in text_of(panel.render())


async def test_run_monitor_plain_until_the_stream_ends() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=100, color_system=None)
    dev = SimulatedDevice([("focused", 3)], seed=3, loop=False, speed=0)
    model = await run_monitor(dev, seconds=30, console=console, refresh_hz=20)
    assert model.ended and model.samples == 3 * SFREQ
    out = buf.getvalue()
    assert "end of stream: simulator script ended" in out
    assert "GOOD contact" in out


def test_cli_monitor_simulated_prints_live_values(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "dreamstate", "monitor", "--simulate", "--seconds",
                          "2.5", "--no-state"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=90, check=False)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("signal=")]
    assert len(lines) >= 1
    m = re.search(r"attention=(\d+) meditation=(\d+) samples/s=(\d+) samples=(\d+)", lines[-1])
    assert m, lines[-1]
    assert 1 <= int(m.group(1)) <= 100 and int(m.group(4)) > SFREQ
    assert "dreamstate monitor" in res.stdout and "band powers" in res.stdout


async def test_run_monitor_live_view_on_a_terminal() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=110, force_terminal=True, color_system=None)
    dev = SimulatedDevice([("relaxed", 2)], seed=4, loop=False, speed=0)
    model = await run_monitor(dev, seconds=30, console=console, refresh_hz=20)
    out = buf.getvalue()
    assert model.ended
    assert "signal=" not in out  # redrawn panels, not plain lines
    assert "dreamstate monitor" in out and "band powers (log scale)" in out


# ---------------------------------------------------------------- issue 11, item 9: no contradictions
def _tracked(probs_seq: list[dict[str, float]], *, dwell_s: float = 1.0, hysteresis: float = 0.15) -> object:
    from dreamstate.engine.signal.states import StateTracker

    tracker = StateTracker(["calm", "focused", "neutral"], dwell_s=dwell_s, hysteresis=hysteresis)
    state = None
    for i, p in enumerate(probs_seq):
        state = tracker.update(p, 0.5 * i)
    return state


class _Fixed:
    """A pipeline stand-in that holds one state (the panel only reads ``latest_state``)."""

    latest_point = None

    def __init__(self, state: object) -> None:
        self.latest_state = state

    def feed(self, reading: Reading) -> list[object]:
        return []


def test_a_challenger_waiting_out_the_dwell_is_named_not_contradicted() -> None:
    state = _tracked([{"focused": 1.0}] * 3 + [{"calm": 1.0}] * 2)  # calm leads for 0.5 of 1.0 s
    assert state.label == "focused" and state.confidence == 0.0
    assert state.leading == "calm" and state.leading_s == 0.5 and state.dwell_s == 1.0
    panel = PipelinePanel(_Fixed(state))
    assert panel.summary() == "state=focused(0.00) leading=calm(1.00,0.5/1.0s)"
    out = text_of(panel.render())
    assert "calm leads, takes over after 1.0 s (0.5 s so far)" in out
    assert state.describe() == "focused 0.00; calm leads with 1.00 for 0.5 of 1.0 s"
    after = _tracked([{"focused": 1.0}] * 3 + [{"calm": 1.0}] * 4)
    assert after.label == "calm" and after.leading is None and "leads" not in PipelinePanel(_Fixed(after)).summary()


def test_a_challenger_within_the_hysteresis_is_said_to_be_ahead() -> None:
    state = _tracked([{"neutral": 1.0}, {"neutral": 0.45, "calm": 0.55}])
    assert state.label == "neutral" and state.leading is None and state.ahead() == "calm"
    assert PipelinePanel(_Fixed(state)).summary() == "state=neutral(0.45) ahead=calm(0.55,within-hysteresis)"
    assert "calm is ahead, not by the hysteresis margin yet" in text_of(PipelinePanel(_Fixed(state)).render())


def test_before_any_window_the_state_says_so_instead_of_zero_confidence() -> None:
    from dreamstate.engine.signal.states import StateTracker

    state = StateTracker(["calm", "focused", "neutral"]).neutral(0.0)
    panel = PipelinePanel(_Fixed(state))
    assert panel.summary() == "state=neutral(no-windows-yet)"
    assert "0.00" not in text_of(panel.render())


async def test_log_lines_during_the_live_view_go_through_it(capfd: object) -> None:
    """A log line written behind the live view's back shifts the terminal; its redraw then
    leaves stale header copies and the wrapped tail of the line (a stray quote) on screen."""
    import logging

    from dreamstate.engine.core.logs import KeyValueFormatter
    from dreamstate.engine.tools.monitor import logs_through_console

    buf = io.StringIO()
    console = Console(file=buf, width=60, height=40, force_terminal=True, color_system=None)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    saved = list(root.handlers)
    root.handlers[:] = [handler]
    long_value = "x" * 150
    try:
        from rich.live import Live

        with Live(Text("view"), console=console, auto_refresh=False, redirect_stderr=False) as live, \
                logs_through_console(live.console):
            logging.getLogger("dreamstate.test").warning("a long line", extra={"detail": long_value})
            live.update(Text("view 2"), refresh=True)
        assert root.handlers == [handler]  # restored
    finally:
        root.handlers[:] = saved
    assert "a long line" not in capfd.readouterr().err  # type: ignore[attr-defined]
    out = buf.getvalue()
    flat = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n", "", out)
    assert f"detail='{long_value}'" in flat
    # rich wrapped the 150+ characters itself, at the console width
    assert all(len(line) <= 60 for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", out).split("\n"))
