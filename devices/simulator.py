"""A simulated NeuroSky headset: realistic single-channel EEG, eSense, band powers, blinks.

``EegSimulator`` is pure and deterministic for a given seed (no I/O, no clock). It follows a
script of states (``relaxed``, ``focused``, ``neutral``, ``blinking``, ``off_head``: the same
literals as ``engine.core.show.SimStep``) and produces, at the real rates:

* raw samples (int16 counts, µV = raw × 0.2197) at 512 Hz: a 1/f (pink) background of about
  12 µV RMS, alpha (8-12 Hz) bursts that dominate when relaxed, beta (13-30 Hz) when focused,
  theta, a little mains hum, and blink artifacts (100-300 µV, 0.2-0.4 s, positive at Fp1);
* once a second, after the last sample of each second, a status packet: POOR_SIGNAL, the eight
  ASIC band powers computed from an FFT of that second's raw samples, and eSense attention /
  meditation derived from those band powers (zero unless POOR_SIGNAL is 0, like the headset);
* a blink strength event at the end of each blink artifact.

When the headset "comes off" (``off_head``) the electrode contact fades over about two seconds:
POOR_SIGNAL ramps up to 200 and the raw signal turns into railing drift and large hum; putting
it back on reverses that.

Output does not depend on how the stream is cut into blocks: samples are generated a second at
a time internally and ``advance(n)`` hands out any slice of them.

``SimulatedDevice`` wraps the simulator as a ``devices.base.Device`` that emits readings paced
by the event loop at the real rate (or faster).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import signal as sps

from dreamstate.devices.base import Device
from dreamstate.engine.core.errors import DeviceError
from dreamstate.engine.core.records import (
    SFREQ,
    UV_PER_COUNT,
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    ESense,
    RawChunk,
    Reading,
    SignalQuality,
)

log = logging.getLogger("dreamstate.devices.simulator")

STATES: Final = ("relaxed", "focused", "neutral", "blinking", "off_head")
"""Scripted states (the literals of ``engine.core.show.SimStep.state``)."""

DEFAULT_SCRIPT: Final[tuple[tuple[str, float], ...]] = (
    ("neutral", 15.0),
    ("relaxed", 30.0),
    ("focused", 30.0),
    ("blinking", 10.0),
    ("neutral", 10.0),
    ("off_head", 8.0),
)
"""The demo cycle used when no script is given (loops by default)."""

# ASIC band edges in Hz (NeuroSky's documentation), in BAND_NAMES order.
ASIC_BANDS: Final[tuple[tuple[float, float], ...]] = (
    (0.5, 2.75), (3.5, 6.75), (7.5, 9.25), (10.0, 11.75),
    (13.0, 16.75), (18.0, 29.75), (31.0, 39.75), (41.0, 49.75),
)

BAND_SCALE: Final = 100.0
"""Band power units per count² of mean band power: puts delta near 1e4..1e6 like the ASIC."""

U24_MAX: Final = (1 << 24) - 1
ESENSE_GAIN: Final = 8.0
ATT_BIAS: Final = 2.2
MED_BIAS: Final = 0.75


@dataclass(frozen=True, slots=True)
class _Profile:
    """Component amplitudes in µV (RMS for noise-like parts) and blink rate per second."""

    pink: float
    alpha: float
    theta: float
    beta: float
    gamma: float
    blink_rate: float
    on_head: bool


PROFILES: Final[dict[str, _Profile]] = {
    "relaxed": _Profile(pink=11.0, alpha=30.0, theta=9.0, beta=3.0, gamma=1.0, blink_rate=1 / 15,
                        on_head=True),
    "focused": _Profile(pink=11.0, alpha=5.0, theta=5.0, beta=13.0, gamma=3.5, blink_rate=1 / 10,
                        on_head=True),
    "neutral": _Profile(pink=11.0, alpha=12.0, theta=7.0, beta=7.0, gamma=2.0, blink_rate=1 / 7,
                        on_head=True),
    "blinking": _Profile(pink=11.0, alpha=12.0, theta=7.0, beta=7.0, gamma=2.0,
                         blink_rate=1 / 1.2, on_head=True),
    "off_head": _Profile(pink=11.0, alpha=0.0, theta=0.0, beta=0.0, gamma=0.0, blink_rate=0.0,
                         on_head=False),
}

Int16Array = npt.NDArray[np.int16]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SimStatus:
    """The 1 Hz status packet sent right after raw sample ``index`` (absolute sample index)."""

    index: int
    poor_signal: int
    attention: int
    meditation: int
    bands: tuple[int, int, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class SimBlink:
    """A blink strength event sent right after raw sample ``index``."""

    index: int
    strength: int


@dataclass(frozen=True, slots=True)
class SimBlock:
    """Consecutive simulated samples plus the events that fall among them.

    ``raw[i]`` is sample ``first_index + i``. Each status / blink is sent right after the raw
    sample whose absolute index it carries. ``labels`` holds ``(absolute index, state)`` for the
    block's first sample and for every scripted state change inside the block.
    """

    first_index: int
    raw: Int16Array
    statuses: tuple[SimStatus, ...]
    blinks: tuple[SimBlink, ...]
    labels: tuple[tuple[int, str], ...]

    @property
    def next_index(self) -> int:
        return self.first_index + len(self.raw)

    @property
    def state(self) -> str:
        """The scripted state at the block's first sample."""
        return self.labels[0][1] if self.labels else ""

    def uv(self) -> npt.NDArray[np.float32]:
        return (self.raw.astype(np.float64) * UV_PER_COUNT).astype(np.float32)


def parse_script(text: str) -> list[tuple[str, float]]:
    """Parse ``"relaxed:20,focused:20"`` into ``[("relaxed", 20.0), ("focused", 20.0)]``."""
    steps: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, secs = part.partition(":")
        try:
            seconds = float(secs) if sep else 0.0
        except ValueError:
            seconds = 0.0
        if name not in STATES or not seconds > 0:
            raise DeviceError(f"bad simulator script step {part!r} in {text!r}",
                              hint=f"write state:seconds pairs, states are {', '.join(STATES)}; "
                                   "e.g. relaxed:20,focused:20")
        steps.append((name, seconds))
    if not steps:
        raise DeviceError(f"empty simulator script {text!r}", hint="e.g. relaxed:20,focused:20")
    return steps


class EegSimulator:
    """Deterministic EEG headset simulator (see module docstring).

    Lifecycle: after ``__init__`` nothing is generated yet and ``position`` is 0. After
    ``advance(n)`` returns a block of ``k <= n`` samples, ``position`` is larger by ``k``; ``k``
    is smaller than ``n`` only when ``loop=False`` and the script has run out (``finished``).
    The same seed and script give the same samples and events whatever the block sizes.
    ``seed=None`` seeds from the OS (not reproducible).
    """

    def __init__(self, script: Sequence[tuple[str, float]] | None = None, seed: int | None = 0,
                 loop: bool = True, sfreq: float = SFREQ, mains_hz: float = 50.0) -> None:
        steps = list(DEFAULT_SCRIPT if script is None else script)
        if not steps:
            raise DeviceError("simulator script is empty", hint="give at least one (state, seconds)")
        for state, seconds in steps:
            if state not in STATES or not seconds > 0:
                raise DeviceError(f"bad simulator script step ({state!r}, {seconds!r})",
                                  hint=f"states are {', '.join(STATES)}; seconds must be > 0")
        self.script: tuple[tuple[str, float], ...] = tuple((s, float(t)) for s, t in steps)
        self.seed = seed
        self.loop = loop
        self.sfreq = float(sfreq)
        self.mains_hz = mains_hz
        self._block = round(self.sfreq)  # generation block: one second
        ends = np.cumsum([round(t * self.sfreq) for _, t in self.script])
        self._ends: list[int] = [int(e) for e in ends]
        self.script_samples = self._ends[-1]
        self._rng = np.random.default_rng(seed)
        self.position = 0
        self._generated = 0
        self._buf: Int16Array = np.zeros(0, dtype=np.int16)
        self._buf_start = 0
        self._statuses: list[SimStatus] = []
        self._blinks: list[SimBlink] = []
        # Filter states, kept across generation blocks.
        pb = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
        pa = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
        impulse = sps.lfilter(pb, pa, np.r_[1.0, np.zeros(1 << 15)])
        self._pink_ba = (pb / float(np.sqrt(np.sum(impulse**2))), pa)
        self._pink_zi: F64 = np.zeros(3)
        nyq = self.sfreq / 2
        self._sos = {
            "delta": sps.butter(2, [0.5 / nyq, 3.0 / nyq], btype="band", output="sos"),
            "theta": sps.butter(4, [4.0 / nyq, 7.5 / nyq], btype="band", output="sos"),
            "beta": sps.butter(4, [14.0 / nyq, 28.0 / nyq], btype="band", output="sos"),
            "gamma": sps.butter(4, [31.0 / nyq, min(48.0, nyq * 0.9) / nyq], btype="band",
                                output="sos"),
        }
        self._sos_gain = {k: self._unit_gain(v) for k, v in self._sos.items()}
        self._sos_zi: dict[str, F64] = {k: np.zeros((v.shape[0], 2)) for k, v in self._sos.items()}
        self._env_p = math.exp(-1.0 / (0.35 * self.sfreq))   # burst envelope, tau 0.35 s
        self._env_gain = math.sqrt(1 - self._env_p**2) / (1 - self._env_p)
        self._env_zi: F64 = np.zeros(2)
        self._gain_p = math.exp(-1.0 / (0.6 * self.sfreq))   # state crossfade, tau 0.6 s
        self._gain_zi: F64 | None = None
        self._contact_p = math.exp(-1.0 / (0.5 * self.sfreq))  # electrode contact, tau 0.5 s
        self._contact_zi: F64 | None = None
        self._drift_p = math.exp(-1.0 / (0.8 * self.sfreq))
        self._drift_zi: F64 = np.zeros(1)
        self._alpha_phase = 0.0
        self._alpha_freq = 10.0
        self._carry: F64 = np.zeros(0)
        self._blink_hazard = 0.0
        self._blink_threshold = float(self._rng.exponential(1.0))
        self._att_ema: float | None = None
        self._med_ema: float | None = None

    def _unit_gain(self, sos: npt.NDArray[np.float64]) -> float:
        imp = sps.sosfilt(sos, np.r_[1.0, np.zeros(1 << 14)])
        return 1.0 / float(np.sqrt(np.sum(imp**2)))

    # ----------------------------------------------------------------- script
    @property
    def finished(self) -> bool:
        """True when ``loop=False`` and every scripted sample has been handed out."""
        return not self.loop and self.position >= self.script_samples

    def state_at(self, sample_index: int) -> str:
        """The scripted state at an absolute sample index (the last state past a finite end)."""
        i = sample_index % self.script_samples if self.loop else min(sample_index,
                                                                    self.script_samples - 1)
        for (state, _), end in zip(self.script, self._ends, strict=True):
            if i < end:
                return state
        return self.script[-1][0]

    def labels_for(self, first: int, n: int) -> tuple[tuple[int, str], ...]:
        """``(index, state)`` at ``first`` and at each state change in ``[first, first + n)``."""
        if n <= 0:
            return ()
        out = [(first, self.state_at(first))]
        idx = first
        while True:
            i = idx % self.script_samples if self.loop else idx
            nxt = next((e for e in self._ends if e > i), None)
            if nxt is None:
                break
            idx += nxt - i
            if idx >= first + n:
                break
            label = self.state_at(idx)
            if label != out[-1][1]:
                out.append((idx, label))
        return tuple(out)

    def state_labels(self, first: int, n: int) -> list[str]:
        """One state label per sample in ``[first, first + n)``."""
        labels = self.labels_for(first, n)
        out: list[str] = []
        for k, (start, label) in enumerate(labels):
            stop = labels[k + 1][0] if k + 1 < len(labels) else first + n
            out.extend([label] * (stop - start))
        return out

    # ----------------------------------------------------------------- output
    def advance(self, n_samples: int) -> SimBlock:
        """Hand out the next ``n_samples`` (fewer only when a non-looping script ends)."""
        if n_samples < 0:
            raise ValueError(f"n_samples must be >= 0, got {n_samples}")
        n = n_samples
        if not self.loop:
            n = max(0, min(n, self.script_samples - self.position))
        first = self.position
        while self._generated < first + n:
            self._generate_second()
        lo = first - self._buf_start
        raw = self._buf[lo:lo + n].copy()
        end = first + n
        statuses = tuple(s for s in self._statuses if first <= s.index < end)
        blinks = tuple(b for b in self._blinks if first <= b.index < end)
        self.position = end
        # Forget what has been handed out.
        drop = self.position - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = self.position
        self._statuses = [s for s in self._statuses if s.index >= end]
        self._blinks = [b for b in self._blinks if b.index >= end]
        return SimBlock(first, raw, statuses, blinks, self.labels_for(first, n))

    # ------------------------------------------------------------- generation
    def _profile_targets(self, first: int, n: int) -> tuple[F64, F64]:
        """Per-sample component amplitude targets (5 rows) and contact target."""
        labels = self.state_labels(first, n)
        names = ("pink", "alpha", "theta", "beta", "gamma")
        table = {s: [getattr(p, k) for k in names] + [p.blink_rate, 1.0 if p.on_head else 0.0]
                 for s, p in PROFILES.items()}
        arr = np.array([table[s] for s in labels], dtype=np.float64).T  # (7, n)
        return arr[:6], arr[6]

    def _generate_second(self) -> None:
        n = self._block
        first = self._generated
        rng = self._rng
        targets, contact_target = self._profile_targets(first, n)
        amp_target, blink_rate = targets[:5], targets[5]
        # Smooth the state crossfade and electrode contact (one-pole, state kept).
        gp, cp = self._gain_p, self._contact_p
        if self._gain_zi is None:
            self._gain_zi = amp_target[:, 0] * gp
            self._contact_zi = np.array([contact_target[0] * cp])
        amps = np.empty_like(amp_target)
        for k in range(amp_target.shape[0]):
            amps[k], zi = sps.lfilter([1 - gp], [1, -gp], amp_target[k], zi=[self._gain_zi[k]])
            self._gain_zi[k] = zi[0]
        contact, self._contact_zi = sps.lfilter([1 - cp], [1, -cp], contact_target,
                                                zi=self._contact_zi)
        contact = np.clip(contact, 0.0, 1.0)

        # Pink background.
        pink, self._pink_zi = sps.lfilter(*self._pink_ba, rng.standard_normal(n), zi=self._pink_zi)
        # Alpha: a wandering ~10 Hz oscillator gated by a smooth burst envelope.
        env_noise, self._env_zi = sps.lfilter([1 - self._env_p], [1, -self._env_p],
                                              rng.standard_normal((2, n)), axis=1,
                                              zi=self._env_zi[:, None])
        self._env_zi = self._env_zi[:, 0]
        bursts = 1.0 / (1.0 + np.exp(-2.5 * env_noise * self._env_gain))  # 0..1, waxing/waning
        self._alpha_freq = float(np.clip(self._alpha_freq + rng.normal(0, 0.15), 9.0, 11.5))
        phase = self._alpha_phase + 2 * np.pi * self._alpha_freq * np.arange(1, n + 1) / self.sfreq
        self._alpha_phase = float(phase[-1] % (2 * np.pi))
        alpha = np.sqrt(2) * np.sin(phase) * (0.35 + 1.3 * bursts[0])
        bands: dict[str, F64] = {}
        for name, sos in self._sos.items():
            out, self._sos_zi[name] = sps.sosfilt(sos, rng.standard_normal(n), zi=self._sos_zi[name])
            bands[name] = out * self._sos_gain[name]
        beta = bands["beta"] * (0.6 + 0.8 * bursts[1])
        t = (first + np.arange(n)) / self.sfreq
        hum = np.sin(2 * np.pi * self.mains_hz * t)
        eeg_uv = (amps[0] * (pink + 1.2 * bands["delta"]) + amps[1] * alpha
                  + amps[2] * bands["theta"] + amps[3] * beta + amps[4] * bands["gamma"]
                  + 1.5 * hum)
        # Blinks (positive frontal deflections), timed by a hazard process.
        blink_uv = np.zeros(n + round(0.5 * self.sfreq))
        blink_uv[: len(self._carry)] += self._carry
        rate = blink_rate / self.sfreq * contact  # no blinks without contact
        cum = self._blink_hazard + np.cumsum(rate)
        start = 0
        while True:
            hits = np.nonzero(cum[start:] >= self._blink_threshold)[0]
            if len(hits) == 0:
                break
            i = start + int(hits[0])
            dur = rng.uniform(0.2, 0.4)
            amp = rng.uniform(100.0, 300.0)
            m = round(dur * self.sfreq)
            shape = np.sin(np.pi * np.arange(m) / m) ** 2
            shape[m // 2:] = np.sin(np.pi * np.arange(m // 2, m) / m) ** 1.5  # slower fall
            blink_uv[i:i + m] += amp * shape
            strength = int(np.clip(round(amp / 300.0 * 255), 1, 255))
            self._blinks.append(SimBlink(first + i + m - 1, strength))
            cum -= self._blink_threshold
            self._blink_threshold = float(rng.exponential(1.0)) + 0.5 * self.sfreq * rate.max()
            start = i + 1
        self._blink_hazard = float(cum[-1])
        self._carry = blink_uv[n:]
        eeg_uv = eeg_uv + blink_uv[:n]
        # Off the head: railing drift and big hum replace the EEG as contact fades.
        drift, self._drift_zi = sps.lfilter([1 - self._drift_p], [1, -self._drift_p],
                                            rng.standard_normal(n), zi=self._drift_zi)
        unit = (1 - self._drift_p) / math.sqrt(1 - self._drift_p**2)
        rail_counts = np.clip(drift / unit * 40000.0, -32768, 32767)
        rail_uv = rail_counts * UV_PER_COUNT + 60.0 * hum
        mix_uv = contact * eeg_uv + (1 - contact) * rail_uv
        raw = np.clip(np.round(mix_uv / UV_PER_COUNT), -32768, 32767).astype(np.int16)

        self._buf = np.concatenate([self._buf, raw])
        self._generated += n
        self._statuses.append(self._status(first + n - 1, raw, float(contact[-1])))

    def _status(self, index: int, raw: Int16Array, contact: float) -> SimStatus:
        x = raw.astype(np.float64)
        x = x - x.mean()
        win = np.hanning(len(x))
        spec = np.abs(np.fft.rfft(x * win)) ** 2 / float(np.sum(win**2)) / len(x)
        freqs = np.fft.rfftfreq(len(x), 1.0 / self.sfreq)
        powers = []
        for lo, hi in ASIC_BANDS:
            sel = (freqs >= lo) & (freqs <= hi)
            powers.append(int(np.clip(round(float(spec[sel].sum()) * BAND_SCALE), 0, U24_MAX)))
        bands = (powers[0], powers[1], powers[2], powers[3], powers[4], powers[5], powers[6],
                 powers[7])
        poor = round(200 * (1 - contact))
        poor = 0 if poor < 3 else min(200, poor)
        alpha = powers[2] + powers[3]
        beta = powers[4] + powers[5]
        slow = powers[0] + powers[1] + 1
        att_raw = 50 + ESENSE_GAIN * math.log2((beta + 1) / (alpha + 0.1 * slow + 1) * ATT_BIAS)
        med_raw = 50 + ESENSE_GAIN * math.log2((alpha + 1) / (beta + 0.05 * slow + 1) * MED_BIAS)
        noise = self._rng.normal(0, 3.0, 2)
        k = 0.35
        self._att_ema = att_raw if self._att_ema is None else (1 - k) * self._att_ema + k * att_raw
        self._med_ema = med_raw if self._med_ema is None else (1 - k) * self._med_ema + k * med_raw
        if poor:
            return SimStatus(index, poor, 0, 0, bands)
        att = int(np.clip(round(self._att_ema + noise[0]), 1, 100))
        med = int(np.clip(round(self._med_ema + noise[1]), 1, 100))
        return SimStatus(index, poor, att, med, bands)

    # ------------------------------------------------------------- conversion
    def encode(self, block: SimBlock) -> bytes:
        """The ThinkGear byte stream for ``block``: raw packets with the 1 Hz status packets and
        blink packets interleaved right after the sample they follow."""
        from dreamstate.devices import thinkgear as tg

        events = _events_by_index(block)
        out = bytearray()
        cut = 0
        for idx in sorted(events):
            off = idx - block.first_index
            out += tg.encode_raw_block(block.raw[cut:off + 1])
            cut = off + 1
            for ev in events[idx]:
                if isinstance(ev, SimStatus):
                    out += tg.encode_status_packet(ev.poor_signal, ev.attention, ev.meditation,
                                                   ev.bands)
                else:
                    out += tg.encode_blink(ev.strength)
        out += tg.encode_raw_block(block.raw[cut:])
        return bytes(out)

    def readings(self, block: SimBlock, t0: float, speed: float = 1.0) -> list[Reading]:
        """Readings for ``block`` in arrival order. ``t0`` is the time of the block's first
        sample; later samples are ``1 / (sfreq × speed)`` apart (``speed`` inf: all at t0).

        Raw chunks are split where a status or blink packet arrives, so the order matches what
        a parser reading ``encode(block)`` would emit. A status yields SignalQuality,
        BandPowers, ESense (the packet's row order).
        """
        dt = 0.0 if not math.isfinite(speed) or speed <= 0 else 1.0 / (self.sfreq * speed)
        uv = block.uv()
        out: list[Reading] = []
        events = _events_by_index(block)
        cut = 0
        for idx in sorted(events):
            off = idx - block.first_index
            t = t0 + off * dt
            out.append(RawChunk(block.first_index + cut, uv[cut:off + 1], t, self.sfreq))
            cut = off + 1
            for ev in events[idx]:
                if isinstance(ev, SimStatus):
                    out.append(SignalQuality(ev.poor_signal, t))
                    out.append(BandPowers(ev.bands, t))
                    out.append(ESense(ev.attention, ev.meditation, t))
                else:
                    out.append(Blink(ev.strength, t))
        if cut < len(uv):
            out.append(RawChunk(block.first_index + cut, uv[cut:],
                                t0 + (len(uv) - 1) * dt, self.sfreq))
        return out


def _events_by_index(block: SimBlock) -> dict[int, list[SimStatus | SimBlink]]:
    events: dict[int, list[SimStatus | SimBlink]] = {}
    for s in block.statuses:
        events.setdefault(s.index, []).append(s)
    for b in block.blinks:
        events.setdefault(b.index, []).append(b)
    return events


class SimulatedDevice(Device):
    """The simulator as a live device.

    Lifecycle: after ``open()`` a fresh ``EegSimulator`` exists at sample 0. ``readings()``
    yields a CONNECTED event, then the simulated readings in chunks of ``chunk`` samples paced by
    the event loop at ``speed`` × real time (``speed=0`` or ``inf``: as fast as possible, only
    yielding to the loop between chunks; for tests and offline work). It ends after
    ``close()`` or, for a non-looping script, after the script ends with END_OF_STREAM. Pacing
    targets absolute times from the start, so a late loop catches up instead of drifting.
    """

    name = "simulated"

    def __init__(self, script: Sequence[tuple[str, float]] | None = None, seed: int | None = 0,
                 loop: bool = True, *, speed: float = 1.0, chunk: int = 16,
                 sfreq: float = SFREQ) -> None:
        super().__init__()
        if chunk < 1:
            raise DeviceError(f"simulator chunk must be >= 1 sample, got {chunk}")
        if speed < 0 or math.isnan(speed):
            raise DeviceError(f"simulator speed must be >= 0 (0 = unpaced), got {speed}")
        self.script = script
        self.seed = seed
        self.loop = loop
        self.speed = speed
        self.chunk = chunk
        self.sfreq = sfreq
        self.sim: EegSimulator | None = None
        self._closed = True

    @property
    def paced(self) -> bool:
        return self.speed > 0 and math.isfinite(self.speed)

    def describe(self) -> str:
        script = "default demo cycle" if self.script is None else ",".join(
            f"{s}:{t:g}" for s, t in self.script)
        pace = f"{self.speed:g}x" if self.paced else "unpaced"
        return f"simulated headset (seed {self.seed}, {script}, {pace})"

    async def open(self) -> None:
        self.sim = EegSimulator(self.script, seed=self.seed, loop=self.loop, sfreq=self.sfreq)
        self._closed = False
        log.info("simulator open", extra={"device": self.describe()})

    async def close(self) -> None:
        self._closed = True

    async def readings(self) -> AsyncIterator[Reading]:
        sim = self.sim
        if sim is None or self._closed:
            raise DeviceError("simulated device is not open", hint="use `async with device:`")
        start = time.monotonic()
        yield DeviceEvent(DeviceEventKind.CONNECTED, start, detail=self.describe())
        self.counters.inc("connects")
        rate = self.sfreq * self.speed if self.paced else math.inf
        while not self._closed:
            block = sim.advance(self.chunk)
            if len(block.raw) == 0:
                yield DeviceEvent(DeviceEventKind.END_OF_STREAM, time.monotonic(),
                                  detail="simulator script ended")
                return
            if self.paced:
                due = start + block.next_index / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                t0 = start + block.first_index / rate
            else:
                await asyncio.sleep(0)
                t0 = time.monotonic()
            self.counters.inc("samples", len(block.raw))
            self.counters.inc("status_packets", len(block.statuses))
            self.counters.inc("blinks", len(block.blinks))
            for reading in sim.readings(block, t0, self.speed if self.paced else math.inf):
                if self._closed:
                    return
                yield reading
