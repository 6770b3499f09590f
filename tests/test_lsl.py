"""Lab Streaming Layer in and out, on loopback with the real liblsl (through mne-lsl): dreamstate's
outlets read back by MNE-LSL's StreamLSL and StreamInlet, and LSL streams from MNE-LSL's PlayerLSL
(in this process or in a child process that is killed) driving a show."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import mne
import numpy as np
import pytest

from dreamstate.devices.lsl import LslDevice, liblsl, list_streams
from dreamstate.devices.lsl_outlet import BAND_CHANNELS, LslOutlets, SampleClock
from dreamstate.devices.resample import StreamResampler
from dreamstate.devices.simulator import EegSimulator
from dreamstate.engine.core.errors import DeviceError
from dreamstate.engine.core.records import (
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    EegState,
    ESense,
    MapPoint,
    RawChunk,
    SignalQuality,
)

lsl = liblsl()


def _uid() -> str:
    return uuid.uuid4().hex[:8]


# --- pure parts -------------------------------------------------------------------------------------
@pytest.mark.parametrize("src", [250.0, 256.0, 500.0, 1000.0, 2048.0, 512.0])
def test_resampler_gives_the_same_output_for_any_split_with_unit_gain(src: float) -> None:
    rs = StreamResampler(src, 512.0)
    t = np.arange(int(src * 4)) / src
    x = np.sin(2 * np.pi * 10 * t) + 0.5 * np.sin(2 * np.pi * 31 * t)
    whole = rs.process(x)
    rs.reset()
    rng = np.random.default_rng(1)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 50))
        parts.append(rs.process(x[i:i + n]))
        i += n
    assert np.array_equal(np.concatenate(parts), whole)
    assert len(whole) == 4 * 512
    # the output is the input sampled at 512 Hz, delayed by the filter's delay
    tt = np.arange(len(whole)) / 512 - rs.delay_s
    mid = slice(400, 1800)
    expected = np.sin(2 * np.pi * 10 * tt) + 0.5 * np.sin(2 * np.pi * 31 * tt)
    assert np.abs(whole[mid] - expected[mid]).max() < 0.01


def test_a_downsampled_stream_loses_what_512_hz_cannot_carry() -> None:
    rs = StreamResampler(2048.0, 512.0)
    t = np.arange(2048 * 2) / 2048
    y = rs.process(np.sin(2 * np.pi * 400 * t))  # 400 Hz would alias to 112 Hz
    assert np.abs(y[200:]).max() < 0.01


def test_sample_clock_keeps_gaps_and_follows_a_drifting_headset() -> None:
    clock = SampleClock(512.0)
    rate = 512.0 * (1 + 2e-4)  # the headset's crystal runs 200 ppm fast
    stamps, idx = [], 0
    rng = np.random.default_rng(0)
    for k in range(512 * 120 // 16):
        if k == 100:
            idx += 37  # a lost packet: 37 samples never arrive
        arrival = 1000.0 + (idx + 15) / rate + 0.02 + float(rng.uniform(0, 0.01))  # latency and jitter
        stamps.append((idx, clock.stamps(idx, 16, arrival)))
        idx += 16
    flat = np.concatenate([s for _, s in stamps])
    assert np.all(np.diff(flat) > 0)
    before, after = stamps[99], stamps[100]
    gap = after[1][0] - before[1][-1]
    assert gap == pytest.approx(38 / 512, abs=1.1e-4)  # the gap stays a gap (less at most the slew bound)
    # after two minutes the stamps still sit just before the arrivals, drift and all
    last_idx, last = stamps[-1]
    arrival = 1000.0 + (last_idx + 15) / rate + 0.025
    assert -0.02 < arrival - last[-1] < 0.03
    assert clock.counters.get("reanchors") == 0


def test_sample_clock_reanchors_when_the_device_starts_again() -> None:
    clock = SampleClock(512.0)
    a = clock.stamps(5000, 16, 50.0)
    b = clock.stamps(0, 16, 50.0)  # a new device counts from 0 and arrives at the same moment
    assert b[0] > a[-1]
    assert clock.counters.get("reanchors") == 1


# --- the outlets, read back -----------------------------------------------------------------------
@pytest.fixture
def outlets() -> Iterator[LslOutlets]:
    out = LslOutlets(prefix=f"t{_uid()}", source_id=f"test-{_uid()}", labels=["calm", "focused"], device="simulated")
    out.open()
    yield out
    out.close()


def _inlet(name: str) -> object:
    found = lsl.resolve_streams(timeout=5.0, name=name, minimum=1)
    assert found, f"{name} not visible"
    inlet = lsl.StreamInlet(found[0])
    inlet.open_stream(timeout=10.0)
    inlet.get_sinfo(timeout=10.0)
    return inlet


def _pull_all(inlet: object, want: int, timeout: float = 5.0) -> tuple[list[object], list[float]]:
    data: list[object] = []
    stamps: list[float] = []
    end = time.monotonic() + timeout
    while len(data) < want and time.monotonic() < end:
        chunk, ts = inlet.pull_chunk(timeout=0.1)  # type: ignore[attr-defined]
        data.extend(list(chunk))
        stamps.extend(ts.tolist())
    return data, stamps


def test_stream_lsl_reads_back_the_eeg_with_its_gaps_and_metadata(outlets: LslOutlets) -> None:
    from mne_lsl.stream import StreamLSL

    names = outlets.names
    stream = StreamLSL(bufsize=10, name=names["eeg"], source_id=f"{outlets.source_id}-eeg")
    stream.connect(timeout=5.0, processing_flags=None)
    try:
        assert outlets._outlets["eeg"].wait_for_consumers(5.0)
        rng = np.random.default_rng(2)
        sent: list[RawChunk] = []
        t0, idx = time.monotonic(), 0
        for k in range(40):
            if k == 20:
                idx += 24  # 24 samples lost on the link
            chunk = RawChunk(idx, rng.normal(0, 20, 16).astype(np.float32), t0 + (idx + 16) / 512)
            sent.append(chunk)
            outlets.push_readings([chunk])
            idx += 16
        deadline = time.monotonic() + 5.0
        while stream.n_new_samples < 640 and time.monotonic() < deadline:
            time.sleep(0.02)
        data, ts = stream.get_data(winsize=640 / 512)
        assert data.shape == (1, 640)
        assert np.array_equal(data[0].astype(np.float32), np.concatenate([c.samples for c in sent]))
        steps = np.diff(ts)
        assert np.all(steps > 0)
        assert steps[319] == pytest.approx(25 / 512, abs=2e-5)  # the lost packet is a gap in time
        assert np.delete(steps, 319) == pytest.approx(1 / 512, abs=2e-5)
        # timestamps are on the LSL clock, near the moments the chunks arrived
        assert abs(ts[-1] - (sent[-1].time + outlets.offset)) < 0.01
        info = stream.info
        assert info["ch_names"] == ["Fp1"] and info["sfreq"] == 512.0
        sinfo = stream._inlet.get_sinfo()
        assert sinfo.get_channel_units() == ["microvolts"] and sinfo.get_channel_types() == ["EEG"]
        assert sinfo.stype == "EEG" and sinfo.source_id == f"{outlets.source_id}-eeg"
    finally:
        stream.disconnect()


def test_bands_state_and_markers_arrive_with_their_channels(outlets: LslOutlets) -> None:
    names = outlets.names
    bands, state, markers = _inlet(names["bands"]), _inlet(names["state"]), _inlet(names["markers"])
    for name in ("bands", "state", "markers"):
        assert outlets._outlets[name].wait_for_consumers(5.0)
    t = time.monotonic()
    outlets.push_readings([SignalQuality(26, t), ESense(61, 40, t), BandPowers((1, 2, 3, 4, 5, 6, 7, 8), t),
                           Blink(80, t + 0.1), DeviceEvent(DeviceEventKind.STALLED, t + 0.2)])
    outlets.push_state(EegState("calm", {"calm": 0.8, "focused": 0.2}, 0.8, t + 0.3), MapPoint(0.25, 0.75, 3))
    outlets.push_state(EegState("calm", {"calm": 0.7, "focused": 0.3}, 0.7, t + 0.55), None)
    outlets.push_state(EegState("absent", {}, 0.0, t + 0.8), None)
    b, bts = _pull_all(bands, 1)
    assert np.array_equal(np.asarray(b[0]), np.array([61, 40, 26, 1, 2, 3, 4, 5, 6, 7, 8], dtype=np.float32))
    assert bts[0] == pytest.approx(t + outlets.offset, abs=1e-6)
    s, _ = _pull_all(state, 3)
    assert np.asarray(s[0]) == pytest.approx([0, 0.8, 0.8, 0.2, 0.25, 0.75])
    assert np.asarray(s[2])[0] == -1 and np.isnan(np.asarray(s[1])[-1])
    m, mts = _pull_all(markers, 4)
    assert [row[0] for row in m] == ["blink:80", "device:stalled", "state:calm", "state:absent"]  # type: ignore[index]
    assert np.all(np.diff(mts) > 0)
    sinfo = bands.get_sinfo(timeout=10.0)  # type: ignore[attr-defined]
    assert sinfo.get_channel_names() == [c[0] for c in BAND_CHANNELS]
    assert sinfo.sfreq == 0.0 and sinfo.stype == "EEGFeatures"
    st_info = state.get_sinfo(timeout=10.0)  # type: ignore[attr-defined]
    assert st_info.get_channel_names() == ["state_index", "confidence", "p_calm", "p_focused", "map_x", "map_y"]
    assert "<state>focused</state>" in st_info.as_xml


# --- the inlet ---------------------------------------------------------------------------------------
def _outlet(name: str, *, n: int = 1, sfreq: float = 256.0, dtype: str = "float32",
            labels: list[str] | None = None, unit: str = "microvolts") -> object:
    info = lsl.StreamInfo(name, "EEG", n, sfreq, dtype, f"src-{name}")
    if labels:
        chans = info.desc.append_child("channels")
        for lab in labels:
            ch = chans.append_child("channel")
            ch.append_child_value("label", lab)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", "EEG")
    return lsl.StreamOutlet(info)


async def test_a_missing_stream_names_the_query_and_lists_what_is_visible() -> None:
    other = f"visible{_uid()}"
    keep = _outlet(other)
    dev = LslDevice(name=f"absent{_uid()}", timeout_s=0.5)
    with pytest.raises(DeviceError) as err:
        await dev.open()
    text = str(err.value)
    assert "no LSL stream with name='absent" in text and "within 0.5 s" in text
    assert repr(other) in text and "fix:" in text
    del keep


@pytest.mark.parametrize(("kwargs", "wanted", "says"), [
    ({"sfreq": 0.0}, (), "irregular rate"),
    ({"sfreq": 64.0}, (), "runs at 64 Hz"),
    ({"dtype": "string"}, (), "carries strings"),
    ({"n": 4, "labels": ["TP9", "AF7", "AF8", "TP10"]}, ("Fp1",), "no channel 'Fp1'; its 4 channels are TP9, AF7"),
])
async def test_a_stream_dreamstate_cannot_use_is_refused_at_start_with_the_reason(
        kwargs: dict[str, object], wanted: tuple[str, ...], says: str) -> None:
    name = f"bad{_uid()}"
    keep = _outlet(name, **kwargs)  # type: ignore[arg-type]
    dev = LslDevice(name=name, channels=wanted, timeout_s=3.0)
    with pytest.raises(DeviceError, match=says):
        await dev.open()
    del keep


async def test_channels_are_averaged_scaled_and_nan_becomes_a_counted_gap() -> None:
    name = f"muse{_uid()}"
    out = _outlet(name, n=4, sfreq=256.0, labels=["TP9", "AF7", "AF8", "TP10"], unit="millivolts")
    dev = LslDevice(name=name, channels=["af7", "AF8"], timeout_s=3.0)
    await dev.open()
    try:
        assert dev.plan is not None and dev.plan.scale == 1e3 and dev.plan.labels == ("AF7", "AF8")
        assert out.wait_for_consumers(5.0)  # type: ignore[attr-defined]
        data = np.zeros((256, 4), dtype=np.float32)
        data[:, 1], data[:, 2] = 0.010, 0.030  # mV: the mean of AF7 and AF8 is 20 µV
        data[100:110, 1] = np.nan
        out.push_chunk(data)  # type: ignore[attr-defined]
        got: list[RawChunk] = []
        async with asyncio.timeout(5.0):
            async for r in dev.readings():
                if isinstance(r, RawChunk):
                    got.append(r)
                    if got[-1].next_index >= 500:
                        break
        assert dev.counters.get("nonfinite_samples") == 10 and dev.counters.get("gap_samples") == 20
        indices = np.concatenate([np.arange(c.first_index, c.next_index) for c in got])
        assert np.all(np.diff(indices) > 0)
        # the 10 NaN input samples (100..110 at 256 Hz) are a gap of 20 sample indices at 512 Hz,
        # right where they were (chunks may arrive in pieces on a loaded machine: look for the gap)
        gaps = [(a.next_index, b.first_index) for a, b in itertools.pairwise(got) if b.first_index > a.next_index]
        assert gaps and 200 <= gaps[0][0] <= 260 and gaps[0][1] - gaps[0][0] == 20, gaps
        steady = np.concatenate([c.samples[30:] for c in got if len(c.samples) > 60])
        assert steady == pytest.approx(20.0, abs=1e-3)
    finally:
        await dev.close()


def _session_fif(path: Path, *, sfreq: float = 512.0) -> np.ndarray:
    """A simulated session (relaxed, focused, relaxed) as a FIF with only Fp1; returns its µV."""
    sim = EegSimulator([("relaxed", 9.0), ("focused", 9.0), ("relaxed", 9.0)], seed=5, loop=False)
    uv = sim.advance(512 * 27).uv()
    raw = mne.io.RawArray(uv[None, :].astype(np.float64) * 1e-6, mne.create_info(["Fp1"], 512.0, ["eeg"]),
                          verbose="error")
    if sfreq != 512.0:
        raw.resample(sfreq, verbose="error")
    raw.save(path, overwrite=True, verbose="error")
    return np.asarray(uv, dtype=np.float32)


SHOW = """
[show]
name = "lsl-{uid}"
model = "starter"
[device]
kind = "{kind}"
{device}
[states]
mode = "rules"
labels = ["calm", "focused", "neutral"]
dwell_s = 0.5
rules = [{{ state = "calm", when = "alpha_rel > 0.30" }}, {{ state = "focused", when = "beta_rel > 0.30" }}]
[scenes.calm]
layers = {{ block2 = 1.0 }}
[scenes.focused]
layers = {{ block3 = 1.0 }}
[scenes.attract]
layers = {{ block2 = 0.5 }}
[output]
kind = "none"
size = [64, 48]
dream_size = [48, 32]
fps = 10
"""


def _changes(results: list[tuple[int, str]], offset: int = 0) -> list[tuple[int, str]]:
    """(file sample, label) at each state change."""
    out: list[tuple[int, str]] = []
    for end, label in results:
        if not out or out[-1][1] != label:
            out.append((end + offset, label))
    return out


async def _replay_changes(fif: Path, show_text: str, tmp_path: Path) -> list[tuple[int, str]]:
    from dreamstate.devices.replay import ReplayDevice
    from dreamstate.engine.runtime.showfile import load_show
    from dreamstate.engine.signal.pipeline import SignalPipeline

    (tmp_path / "replay.toml").write_text(show_text)
    show = load_show(tmp_path / "replay.toml").show
    results: list[tuple[int, str]] = []
    with SignalPipeline(show.signal, show.map, show.states) as pipe:
        async with ReplayDevice(fif, speed=0, loop=False) as dev:
            async for r in dev.readings():
                results += [(w.window.end_sample, w.state.label) for w in pipe.feed(r)]
    return _changes(results)


@pytest.mark.slow
async def test_a_show_driven_by_a_player_lsl_reaches_the_states_the_replay_device_does(tmp_path: Path) -> None:
    """The same FIF, once through the replay device and once played by MNE-LSL's PlayerLSL
    into a show with ``kind = "lsl"``: the same state changes, each within one window hop."""
    from mne_lsl.player import PlayerLSL

    from dreamstate.engine.runtime.app import ShowRuntime
    from dreamstate.engine.runtime.showfile import load_show
    from dreamstate.models.dream import DreamModel

    uid = _uid()
    fif = tmp_path / "session_raw.fif"
    uv = _session_fif(fif)
    reference = await _replay_changes(fif, SHOW.format(uid=uid, kind="replay", device='file = "session_raw.fif"'),
                                      tmp_path)
    assert [lab for _, lab in reference][-3:] == ["calm", "focused", "calm"]
    (tmp_path / "show.toml").write_text(SHOW.format(uid=uid, kind="lsl", device=f'lsl = {{ name = "play{uid}" }}'))
    model = DreamModel.load("starter", ["block2", "block3"])
    player = PlayerLSL(fif, chunk_size=16, n_repeat=1, name=f"play{uid}", source_id=f"play{uid}").start()
    try:
        rt = ShowRuntime(load_show(tmp_path / "show.toml"), seconds=28.5, load_model=lambda _l, _y, _g: model)
        raw_q = rt.readings.subscribe(200_000, name="test")
        pipe = rt.signal_stage.pipeline
        seen: list[tuple[int, str]] = []
        feed = pipe.feed

        def recording_feed(reading: object) -> list[object]:  # instrumentation: the show's own results
            results = feed(reading)  # type: ignore[arg-type]
            seen.extend((w.window.end_sample, w.state.label) for w in results)
            return results  # type: ignore[return-value]

        pipe.feed = recording_feed  # type: ignore[method-assign]
        await asyncio.wait_for(rt.run(handle_signals=False), 60)
    finally:
        if player.running:
            player.stop()
    chunks = [r for r in raw_q.drain() if isinstance(r, RawChunk)]
    first = chunks[0]
    n = len(first.samples)
    windows = np.lib.stride_tricks.sliding_window_view(uv, n)
    at = int(np.argmin(np.abs(windows - first.samples).sum(axis=1)))
    assert np.allclose(uv[at:at + n], first.samples, atol=1e-3)  # the same samples, bit for bit near enough
    offset = at - first.first_index
    hop = 128
    start = offset + 3 * 512  # past the filter's settling and the first dwell
    live = [c for c in _changes(seen, offset) if c[0] >= start]
    ref = [c for c in reference if c[0] >= start]
    assert [lab for _, lab in live] == [lab for _, lab in ref], (live, ref)
    assert all(abs(a - b) <= hop for (a, _), (b, _) in zip(live, ref, strict=True)), (live, ref)
    assert rt.supervisor.counters.get("device.crashes") == 0


PLAYER = """
import sys, time
import numpy as np
from mne_lsl.player import PlayerLSL
import mne
raw = mne.io.read_raw_fif(sys.argv[1], preload=True, verbose="error")
PlayerLSL(raw, chunk_size=16, n_repeat=np.inf, name=sys.argv[2], source_id=sys.argv[2]).start()
print("playing", flush=True)
time.sleep(600)
"""


def _start_player(fif: Path, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", PLAYER, str(fif), name], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for _ in range(50):  # MNE may print before it
        if proc.stdout.readline().strip() == "playing":
            return proc
    raise AssertionError("the player did not start")


def _reap(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.slow
async def test_killing_the_player_mid_show_and_starting_it_again_the_show_carries_on(tmp_path: Path) -> None:
    from dreamstate.engine.runtime.app import ShowRuntime
    from dreamstate.engine.runtime.showfile import load_show
    from dreamstate.models.dream import DreamModel

    uid = _uid()
    fif = tmp_path / "session_raw.fif"
    _session_fif(fif)
    (tmp_path / "show.toml").write_text(SHOW.format(uid=uid, kind="lsl",
                                                    device=f'lsl = {{ name = "kill{uid}", stall_s = 1.0 }}'))
    model = DreamModel.load("starter", ["block2", "block3"])
    player = _start_player(fif, f"kill{uid}")
    rt = ShowRuntime(load_show(tmp_path / "show.toml"), load_model=lambda _l, _y, _g: model)
    q = rt.readings.subscribe(200_000, name="test")
    task = asyncio.create_task(rt.run(handle_signals=False))
    events: list[DeviceEvent] = []
    last_index, received = -1, 0

    async def until(pred: object, timeout: float) -> None:
        nonlocal last_index, received
        async with asyncio.timeout(timeout):
            while not pred():  # type: ignore[operator]
                r = await q.get()
                if isinstance(r, DeviceEvent):
                    events.append(r)
                elif isinstance(r, RawChunk):
                    assert r.first_index > last_index  # indices never go back
                    last_index = r.next_index - 1
                    received += len(r.samples)

    try:
        await until(lambda: last_index > 512 * 4, 30)
        assert rt.latest_state is not None and rt.latest_state.label != "absent"
        os.kill(player.pid, signal.SIGKILL)
        _reap(player)
        await until(lambda: any(e.kind in (DeviceEventKind.DISCONNECTED, DeviceEventKind.STALLED) for e in events), 10)
        await asyncio.sleep(2.5)
        assert rt.latest_state is not None and rt.latest_state.label == "absent"
        before, got_before, killed_at = last_index, received, time.monotonic()
        player = _start_player(fif, f"kill{uid}")
        await until(lambda: received > got_before + 512 * 4, 40)
        assert [e.kind for e in events].count(DeviceEventKind.CONNECTED) >= 1
        # the time it was away is a gap in the indices (an estimate, as for the serial link)
        away = last_index - before - (received - got_before)
        assert 0.5 * 512 * 2.5 < away < 512 * (time.monotonic() - killed_at)
        await asyncio.sleep(1.0)
        assert rt.latest_state is not None and rt.latest_state.label != "absent"
        dev = rt.device_stage.device
        assert dev is not None and dev.counters.get("reconnects") == 1
        assert rt.supervisor.counters.get("device.crashes") == 0
        assert rt.supervisor.status["render"] == "running"
    finally:
        _reap(player)
        rt.supervisor.request_stop("test over")
        await asyncio.wait_for(task, 20)


def test_devices_lists_visible_lsl_streams(capsys: pytest.CaptureFixture[str]) -> None:
    from dreamstate.engine.tools.cli import main

    name = f"listed{_uid()}"
    keep = _outlet(name, n=4, sfreq=256.0)
    assert any(s.name == name and s.n_channels == 4 for s in list_streams(2.0))
    assert main(["devices", "--lsl-timeout", "2"]) == 0
    out = capsys.readouterr().out
    assert f'{name}: [device] kind = "lsl", lsl = {{ name = "{name}" }}' in out
    del keep
