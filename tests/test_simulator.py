"""The simulated headset: deterministic, realistic, at the real rates, and encodable."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import numpy.typing as npt
import pytest
from scipy import signal as sps

from dreamstate.devices import thinkgear as tg
from dreamstate.devices.simulator import (
    ASIC_BANDS,
    EegSimulator,
    SimBlink,
    SimBlock,
    SimStatus,
    SimulatedDevice,
    parse_script,
)
from dreamstate.engine.core.errors import DeviceError
from dreamstate.engine.core.records import (
    UV_PER_COUNT,
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    ESense,
    RawChunk,
    SignalQuality,
)

SFREQ = 512


def run(sim: EegSimulator, sizes: list[int]) -> list[SimBlock]:
    return [sim.advance(n) for n in sizes]


def joined(blocks: list[SimBlock]) -> tuple[npt.NDArray[np.int16], list[SimStatus], list[SimBlink]]:
    raw = np.concatenate([b.raw for b in blocks])
    return raw, [s for b in blocks for s in b.statuses], [x for b in blocks for x in b.blinks]


def test_same_seed_same_stream_whatever_the_block_sizes() -> None:
    script = [("relaxed", 4), ("blinking", 4), ("off_head", 3)]
    a = joined(run(EegSimulator(script, seed=7), [SFREQ] * 11))
    b = joined(run(EegSimulator(script, seed=7), [1, 5, 17, 1000, 3, 2000, 974, 11 * SFREQ - 4000]))
    assert len(a[0]) == len(b[0]) == 11 * SFREQ
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    assert a[2] == b[2]
    c = joined(run(EegSimulator(script, seed=8), [11 * SFREQ]))
    assert not np.array_equal(a[0], c[0])


def test_script_labels_loop_and_finite_end() -> None:
    sim = EegSimulator(script=[("relaxed", 20), ("focused", 20)], seed=1)
    assert sim.state_at(0) == "relaxed"
    assert sim.state_at(20 * SFREQ - 1) == "relaxed"
    assert sim.state_at(20 * SFREQ) == "focused"
    assert sim.state_at(40 * SFREQ) == "relaxed"  # loops
    block = sim.advance(25 * SFREQ)
    assert block.labels == ((0, "relaxed"), (20 * SFREQ, "focused"))
    labels = sim.state_labels(19 * SFREQ, 2 * SFREQ)
    assert labels.count("relaxed") == SFREQ and labels.count("focused") == SFREQ

    once = EegSimulator(script=[("neutral", 2)], seed=1, loop=False)
    assert len(once.advance(3 * SFREQ).raw) == 2 * SFREQ
    assert once.finished
    assert len(once.advance(10).raw) == 0
    assert once.state_at(10 * SFREQ) == "neutral"


def band_share(x_uv: np.ndarray, lo: float, hi: float) -> float:
    f, p = sps.welch(x_uv, fs=SFREQ, nperseg=SFREQ)
    sel = (f >= 1) & (f <= 45)
    band = (f >= lo) & (f <= hi)
    return float(p[band].sum() / p[sel].sum())


def test_relaxed_has_alpha_focused_has_beta_at_eeg_amplitudes() -> None:
    sim = EegSimulator(script=[("relaxed", 20), ("focused", 20)], seed=1, loop=False)
    relaxed = sim.advance(20 * SFREQ).uv()[2 * SFREQ:]  # skip the crossfade
    focused = sim.advance(20 * SFREQ).uv()[2 * SFREQ:]
    assert band_share(relaxed, 8, 12) > 2 * band_share(focused, 8, 12)
    assert band_share(focused, 13, 30) > 2 * band_share(relaxed, 13, 30)
    for x in (relaxed, focused):
        # Median absolute level of scalp EEG: tens of µV, not mV, not nV.
        assert 5 < float(np.median(np.abs(x - np.median(x)))) < 60
    # Mains hum is present but small.
    f, p = sps.welch(focused, fs=SFREQ, nperseg=SFREQ)
    assert p[f == 50][0] > 3 * np.median(p[(f > 52) & (f < 60)])


def test_status_once_a_second_with_bands_from_that_second() -> None:
    sim = EegSimulator(script=[("neutral", 6)], seed=3, loop=False)
    raw, statuses, _ = joined(run(sim, [6 * SFREQ]))
    assert [s.index for s in statuses] == [k * SFREQ + SFREQ - 1 for k in range(6)]
    for k, s in enumerate(statuses):
        x = raw[k * SFREQ:(k + 1) * SFREQ].astype(np.float64)
        f, p = sps.periodogram(x, fs=SFREQ, window="hann", detrend="constant", scaling="spectrum")
        mine = [float(p[(f >= lo) & (f <= hi)].sum()) for lo, hi in ASIC_BANDS]
        got = np.array(s.bands, dtype=np.float64)
        # An independent periodogram gives the same band proportions.
        np.testing.assert_allclose(got / got.sum(), np.array(mine) / sum(mine), rtol=0.02,
                                   atol=1e-4)
        assert all(0 <= v < 1 << 24 for v in s.bands)
        assert s.poor_signal == 0
        assert 1 <= s.attention <= 100 and 1 <= s.meditation <= 100


def test_esense_follows_state_and_is_zero_without_contact() -> None:
    sim = EegSimulator(script=[("relaxed", 15), ("focused", 15), ("off_head", 8), ("neutral", 6)],
                       seed=2, loop=False)
    statuses = joined(run(sim, [44 * SFREQ]))[1]
    by_state: dict[str, list[SimStatus]] = {}
    for s in statuses:
        by_state.setdefault(sim.state_at(s.index), []).append(s)
    relaxed, focused = by_state["relaxed"][3:], by_state["focused"][3:]
    assert np.mean([s.meditation for s in relaxed]) > np.mean([s.meditation for s in focused]) + 20
    assert np.mean([s.attention for s in focused]) > np.mean([s.attention for s in relaxed]) + 20
    for s in statuses:
        if s.poor_signal:
            assert s.attention == 0 and s.meditation == 0
    off = [s.poor_signal for s in by_state["off_head"]]
    assert off == sorted(off) and off[-1] == 200 and 0 < off[0] < 200  # ramps up
    assert by_state["neutral"][-1].poor_signal == 0  # contact is back


def test_off_head_raw_rails_and_recovers() -> None:
    sim = EegSimulator(script=[("neutral", 3), ("off_head", 5), ("neutral", 5)], seed=4,
                       loop=False)
    uv = sim.advance(13 * SFREQ).uv()
    off = uv[5 * SFREQ:8 * SFREQ]
    assert np.mean(np.abs(off) > 7000) > 0.1  # railing at the int16 limits
    assert float(np.abs(uv[:3 * SFREQ]).max()) < 1000
    assert float(np.abs(uv[11 * SFREQ:]).max()) < 1000


def test_blinks_are_big_slow_frontal_deflections() -> None:
    sim = EegSimulator(script=[("blinking", 20)], seed=5, loop=False)
    raw, _, blinks = joined(run(sim, [20 * SFREQ]))
    uv = raw * UV_PER_COUNT
    assert 8 <= len(blinks) <= 40
    for b in blinks:
        assert 1 <= b.strength <= 255
        seg = uv[max(0, b.index - round(0.4 * SFREQ)):b.index + 1]
        assert seg.max() - np.median(uv) > 80  # a positive deflection of ~100-300 µV
    assert all(b2.index - b1.index > 0.25 * SFREQ for b1, b2 in itertools.pairwise(blinks))


def test_encode_parses_back_to_the_same_values_at_the_real_byte_rate() -> None:
    sim = EegSimulator(script=[("blinking", 5)], seed=6, loop=False)
    block = sim.advance(5 * SFREQ)
    data = sim.encode(block)
    assert 4000 < len(data) / 5 < 4300  # 512 x 8-byte raw packets + 36-byte packet per second
    packets = tg.expand(tg.ThinkGearParser().feed(data))
    raw: list[int] = []
    statuses: list[tuple[int, int, int, tuple[int, ...]]] = []
    blinks: list[int] = []
    for p in packets:
        assert isinstance(p, tg.Packet)
        rows = p.rows
        if isinstance(rows[0], tg.RawValue):
            raw.append(rows[0].value)
        elif isinstance(rows[0], tg.BlinkStrength):
            blinks.append(rows[0].value)
        else:
            poor, bands, att, med = rows
            assert isinstance(poor, tg.PoorSignal) and isinstance(bands, tg.AsicPower)
            assert isinstance(att, tg.Attention) and isinstance(med, tg.Meditation)
            statuses.append((poor.value, att.value, med.value, tuple(bands.values)))
    assert raw == block.raw.tolist()
    assert statuses == [(s.poor_signal, s.attention, s.meditation, s.bands) for s in block.statuses]
    assert blinks == [b.strength for b in block.blinks]


def test_readings_are_in_arrival_order() -> None:
    sim = EegSimulator(script=[("blinking", 3)], seed=9, loop=False)
    block = sim.advance(3 * SFREQ)
    readings = sim.readings(block, t0=100.0)
    chunks = [r for r in readings if isinstance(r, RawChunk)]
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), block.uv())
    assert all(a.next_index == b.first_index for a, b in itertools.pairwise(chunks))
    nxt = 0
    for r in readings:
        if isinstance(r, RawChunk):
            nxt = r.next_index
        elif isinstance(r, SignalQuality):
            assert nxt % SFREQ == 0  # right after the last sample of a second
    kinds = [type(r).__name__ for r in readings if not isinstance(r, RawChunk | Blink)]
    assert kinds == ["SignalQuality", "BandPowers", "ESense"] * 3
    assert sum(isinstance(r, Blink) for r in readings) == len(block.blinks)
    assert readings[-1].time == pytest.approx(100.0 + (3 * SFREQ - 1) / SFREQ)


def test_parse_script() -> None:
    assert parse_script("relaxed:20, focused:2.5") == [("relaxed", 20.0), ("focused", 2.5)]
    for bad in ("sleepy:10", "relaxed", "relaxed:-1", "relaxed:x", ""):
        with pytest.raises(DeviceError, match="script"):
            parse_script(bad)
    with pytest.raises(DeviceError):
        EegSimulator(script=[("dreaming", 3)])


async def test_simulated_device_unpaced_runs_the_script_then_ends() -> None:
    dev = SimulatedDevice([("relaxed", 2), ("blinking", 2)], seed=1, loop=False, speed=0)
    readings = []
    async with dev:
        async for r in dev.readings():
            readings.append(r)
    assert isinstance(readings[0], DeviceEvent) and readings[0].kind == DeviceEventKind.CONNECTED
    assert isinstance(readings[-1], DeviceEvent)
    assert readings[-1].kind == DeviceEventKind.END_OF_STREAM
    raw = np.concatenate([r.samples for r in readings if isinstance(r, RawChunk)])
    sim = EegSimulator([("relaxed", 2), ("blinking", 2)], seed=1, loop=False)
    np.testing.assert_array_equal(raw, sim.advance(4 * SFREQ).uv())
    assert sum(isinstance(r, ESense) for r in readings) == 4
    assert sum(isinstance(r, BandPowers) for r in readings) == 4
    assert dev.counters.get("samples") == 4 * SFREQ


async def test_simulated_device_paced_never_runs_ahead_of_real_time_and_closes() -> None:
    dev = SimulatedDevice(seed=0, speed=1.0)
    samples = 0
    async with dev:
        t0 = time.monotonic()
        async for r in dev.readings():
            if isinstance(r, RawChunk):
                samples += len(r.samples)
                assert samples <= (time.monotonic() - t0) * SFREQ + dev.chunk + 1
            if time.monotonic() - t0 > 0.5:
                await dev.close()
    assert samples > 0
    with pytest.raises(DeviceError, match="not open"):
        await anext(dev.readings())


def test_speed_must_be_non_negative() -> None:
    with pytest.raises(DeviceError):
        SimulatedDevice(speed=-1)
    with pytest.raises(DeviceError):
        SimulatedDevice(speed=math.nan)
    assert not SimulatedDevice(speed=math.inf).paced

