"""Replay: a recording plays back as a live device with the same readings."""

from __future__ import annotations

import logging
from pathlib import Path

import mne
import numpy as np
import pytest

from dreamstate.devices.recording import Recorder
from dreamstate.devices.replay import ReplayDevice
from dreamstate.devices.simulator import SimulatedDevice
from dreamstate.engine.core.errors import DeviceError
from dreamstate.engine.core.records import (
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    ESense,
    Marker,
    RawChunk,
    Reading,
    SignalQuality,
)

SFREQ = 512
SCRIPT = [("relaxed", 3), ("blinking", 4), ("off_head", 4), ("neutral", 2)]


async def collect(dev: SimulatedDevice | ReplayDevice, limit: int | None = None) -> list[Reading]:
    out: list[Reading] = []
    async with dev:
        async for r in dev.readings():
            out.append(r)
            if limit is not None and sum(len(x.samples) for x in out
                                         if isinstance(x, RawChunk)) >= limit:
                break
    return out


def summary(rs: list[Reading]) -> dict[str, object]:
    return {
        "quality": [r.poor_signal for r in rs if isinstance(r, SignalQuality)],
        "esense": [(r.attention, r.meditation) for r in rs if isinstance(r, ESense)],
        "bands": [r.values for r in rs if isinstance(r, BandPowers)],
        "blinks": [r.strength for r in rs if isinstance(r, Blink)],
        "markers": [(r.label, r.duration) for r in rs if isinstance(r, Marker)],
    }


def raw_of(rs: list[Reading]) -> tuple[np.ndarray, list[int]]:
    chunks = [r for r in rs if isinstance(r, RawChunk)]
    idx = np.concatenate([np.arange(c.first_index, c.next_index) for c in chunks])
    return np.concatenate([c.samples for c in chunks]), idx.tolist()


@pytest.fixture
async def session(tmp_path: Path) -> tuple[Path, list[Reading]]:
    """A simulated session with a marker, recorded to FIF."""
    original = await collect(SimulatedDevice(SCRIPT, seed=21, loop=False, speed=0))
    original.insert(len(original) // 3, Marker("calm", 0.0, duration=2.0))
    rec = Recorder(tmp_path / "s_raw.dsj")
    await rec.start()
    for r in original:
        rec.add(r)
    result = await rec.finalise(tmp_path / "s.fif")
    return result.fif, original


async def test_a_replayed_fif_produces_the_same_readings_as_the_original_session(
        session: tuple[Path, list[Reading]]) -> None:
    fif, original = session
    replayed = await collect(ReplayDevice(fif, speed=0))
    assert isinstance(replayed[0], DeviceEvent) and replayed[0].kind == DeviceEventKind.CONNECTED
    assert isinstance(replayed[-1], DeviceEvent)
    assert replayed[-1].kind == DeviceEventKind.END_OF_STREAM
    raw_a, idx_a = raw_of(original)
    raw_b, idx_b = raw_of(replayed)
    assert idx_a == idx_b
    np.testing.assert_allclose(raw_b, raw_a, atol=1e-3)
    a, b = summary(original), summary(replayed)
    assert a == b
    assert len(a["quality"]) == 13 and 200 in a["quality"]  # type: ignore[arg-type,operator]
    # Each report comes right after the same raw sample as in the original.
    def positions(rs: list[Reading]) -> list[tuple[str, int]]:
        out, nxt = [], 0
        for r in rs:
            if isinstance(r, RawChunk):
                nxt = r.next_index
            elif isinstance(r, SignalQuality | ESense | BandPowers | Blink):
                out.append((type(r).__name__, nxt))
        return sorted(out)
    assert positions(original) == positions(replayed)


async def test_replay_loops_with_continuing_indices(session: tuple[Path, list[Reading]]) -> None:
    fif, _ = session
    n = 13 * SFREQ
    replayed = await collect(ReplayDevice(fif, speed=0, loop=True), limit=n + 1000)
    raw, idx = raw_of(replayed)
    assert idx[:n + 1000] == list(range(n + 1000))
    np.testing.assert_array_equal(raw[n:n + 1000], raw[:1000])
    assert not any(isinstance(r, DeviceEvent) and r.kind == DeviceEventKind.END_OF_STREAM
                   for r in replayed)


async def test_replay_from_edf_exported_by_mne(session: tuple[Path, list[Reading]],
                                               tmp_path: Path) -> None:
    fif, original = session
    raw = mne.io.read_raw_fif(fif, preload=True, verbose="error").pick(["Fp1"])
    edf = tmp_path / "s.edf"
    mne.export.export_raw(edf, raw, overwrite=True, verbose="error")
    replayed = await collect(ReplayDevice(edf, speed=0))
    raw_a, _ = raw_of(original)
    raw_b, idx_b = raw_of(replayed)
    assert idx_b[0] == 0 and len(raw_b) == len(raw_a)
    # EDF stores 16-bit integers over the channel's range: ~0.1 µV steps here.
    span = float(raw_a.max() - raw_a.min())
    np.testing.assert_allclose(raw_b, raw_a, atol=span / 65535 * 2)
    a, b = summary(original), summary(replayed)
    assert b["blinks"] == a["blinks"] and b["markers"] == a["markers"]
    assert b["esense"] == []  # an EEG-only file carries no eSense


async def test_replay_resamples_other_rates(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    sf = 256.0
    t = np.arange(int(4 * sf)) / sf
    info = mne.create_info(["EEG 001", "ECG"], sf, ["eeg", "ecg"])
    x = np.vstack([20e-6 * np.sin(2 * np.pi * 10 * t), 1e-3 * np.sin(2 * np.pi * t)])
    raw = mne.io.RawArray(x, info, verbose="error")
    raw.set_annotations(mne.Annotations([1.0], [0.5], ["stimulus"]))
    path = tmp_path / "foreign_raw.fif"
    raw.save(path, verbose="error")
    with caplog.at_level(logging.INFO, logger="dreamstate.devices.replay"):
        replayed = await collect(ReplayDevice(path, speed=0))
    assert "resampling" in caplog.text
    uv, idx = raw_of(replayed)
    assert len(uv) == 4 * SFREQ and idx == list(range(4 * SFREQ))
    mid = uv[SFREQ:3 * SFREQ]
    assert 18 < float(np.abs(mid).max()) < 22  # 20 µV sine survives
    f = np.fft.rfftfreq(len(mid), 1 / SFREQ)
    assert f[np.argmax(np.abs(np.fft.rfft(mid)))] == pytest.approx(10.0, abs=0.5)
    assert summary(replayed)["markers"] == [("stimulus", 0.5)]


async def test_replay_errors_name_the_file_and_channels(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="does not exist"):
        await ReplayDevice(tmp_path / "missing_raw.fif").open()
    info = mne.create_info(["ECG", "RESP"], 512.0, ["ecg", "resp"])
    path = tmp_path / "noeeg_raw.fif"
    mne.io.RawArray(np.zeros((2, 512)), info, verbose="error").save(path, verbose="error")
    with pytest.raises(DeviceError, match=r"no EEG channel; channels: ECG \(ecg\), RESP \(resp\)"):
        await ReplayDevice(path).open()
    junk = tmp_path / "junk.edf"
    junk.write_bytes(b"this is not an EDF file at all")
    with pytest.raises(DeviceError, match=r"junk\.edf"):
        await ReplayDevice(junk).open()


async def test_replay_paced_does_not_run_ahead(session: tuple[Path, list[Reading]]) -> None:
    import time

    fif, _ = session
    dev = ReplayDevice(fif, speed=4.0)
    samples = 0
    async with dev:
        t0 = time.monotonic()
        async for r in dev.readings():
            if isinstance(r, RawChunk):
                samples += len(r.samples)
                assert samples <= (time.monotonic() - t0) * SFREQ * 4 + dev.chunk + 1
            if time.monotonic() - t0 > 0.3:
                await dev.close()
    assert samples > 0


def _annotated_raw(meas_date: bool, crop: float) -> mne.io.RawArray:
    """10 s of Fp1 with a marker and a blink at recording seconds 5.0 and 6.5, then cropped."""
    import datetime as dt

    sf = 512.0
    data = (np.random.default_rng(0).standard_normal((1, int(sf * 10))) * 20e-6)
    raw = mne.io.RawArray(data, mne.create_info(["Fp1"], sf, ["eeg"]), verbose="error")
    if meas_date:
        raw.set_meas_date(dt.datetime(2024, 5, 1, tzinfo=dt.UTC))
    raw.set_annotations(mne.Annotations([5.0, 6.5], [0.0, 0.0], ["marker:look", "blink:3"],
                                        orig_time=raw.info["meas_date"]))
    if crop:
        raw.crop(tmin=crop)
    if not meas_date:
        raw.set_meas_date(None)
    return raw


@pytest.mark.parametrize("fmt", ["fif", "edf"])
@pytest.mark.parametrize("crop", [0.0, 2.0])
@pytest.mark.parametrize("meas_date", [True, False])
def test_replayed_annotations_land_on_their_samples(tmp_path: Path, fmt: str, crop: float, meas_date: bool) -> None:
    """Every combination of meas_date, cropping and format: the marker and blink come at the
    sample they annotate (they came 2.0 s late for a cropped FIF without meas_date)."""
    from dreamstate.devices.replay import load_replay

    raw = _annotated_raw(meas_date, crop)
    path = tmp_path / ("s_raw.fif" if fmt == "fif" else "s.edf")
    if fmt == "fif":
        raw.save(path, verbose="error")
    else:
        mne.export.export_raw(path, raw, verbose="error")
    plan = load_replay(path)
    found = {spec[0]: i for i, specs in plan.events.items() for spec in specs}
    assert found["marker"] == round((5.0 - crop) * 512), (found, crop, meas_date, fmt)
    assert found["blink"] == round((6.5 - crop) * 512)


def test_edf_with_latin1_annotations_is_read_and_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An EDF+ whose annotation holds a Latin-1 byte ('Ruhe-Phase, Äpfel'): read as Latin-1,
    with a log line saying so (it died with a traceback before)."""
    from dreamstate.devices.replay import load_replay

    raw = _annotated_raw(True, 0.0)
    raw.set_annotations(mne.Annotations([5.0], [1.0], ["marker:Ruhe-Phase, Apfel"], orig_time=raw.info["meas_date"]))
    path = tmp_path / "latin1.edf"
    mne.export.export_raw(path, raw, verbose="error")
    data = path.read_bytes()
    assert data.count(b"Ruhe-Phase, Apfel") == 1
    path.write_bytes(data.replace(b"Ruhe-Phase, Apfel", "Ruhe-Phase, Äpfel".encode("latin-1")))
    with caplog.at_level(logging.WARNING, logger="dreamstate.devices"):
        plan = load_replay(path)
    labels = [spec[1][0] for specs in plan.events.values() for spec in specs if spec[0] == "marker"]
    assert labels == ["Ruhe-Phase, Äpfel"]
    assert any("Latin-1" in r.getMessage() for r in caplog.records)


def test_an_unreadable_recording_is_one_clear_error(tmp_path: Path) -> None:
    from dreamstate.devices.replay import load_replay

    raw = _annotated_raw(True, 0.0)
    path = tmp_path / "cut.edf"
    mne.export.export_raw(path, raw, verbose="error")
    path.write_bytes(path.read_bytes()[:300])  # a truncated header
    with pytest.raises(DeviceError, match=r"cannot read replay file .*cut\.edf"):
        load_replay(path)
