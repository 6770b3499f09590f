"""Replay any recording MNE can read (FIF, EDF, BrainVision, ...) as a live headset.

``ReplayDevice`` emits the same reading stream a headset would: RawChunks (µV, with device
sample indices), and, when the file was written by ``dreamstate record`` (see
``devices.recording``), SignalQuality / BandPowers / ESense at the samples they arrived after,
Blinks and Markers from the annotations, and index gaps where the recording had gaps
(``BAD_ACQ_SKIP``). Foreign annotations become Markers (description as label). A file at another
rate is resampled to 512 Hz with MNE (logged).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dreamstate.devices.base import Device
from dreamstate.devices.recording import (
    EEG_CHANNEL,
    GAP_ANNOTATION,
    MISC_CHANNELS,
    QUALITY_CHANNEL,
    STIM_BANDS,
    STIM_CHANNEL,
    STIM_ESENSE,
    STIM_QUALITY,
)
from dreamstate.engine.core.aio import wait_for
from dreamstate.engine.core.errors import DeviceError
from dreamstate.engine.core.records import (
    BAND_NAMES,
    SFREQ,
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

log = logging.getLogger("dreamstate.devices.replay")

# What a replay emits after a raw sample: ("quality", v) | ("bands", tuple) | ("esense", (a, m))
# | ("blink", strength) | ("marker", (label, duration)).
EventSpec = tuple[str, object]


@dataclass
class ReplayPlan:
    """A recording prepared for playback at 512 Hz.

    ``uv[i]`` is file sample ``i`` in µV; ``valid[i]`` is False inside recorded gaps;
    ``events[i]`` are emitted right after sample ``i``; device index = ``first_index + i``.
    """

    path: Path
    uv: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    first_index: int
    events: dict[int, list[EventSpec]] = field(default_factory=dict)
    channel: str = ""
    source_sfreq: float = SFREQ
    has_status: bool = False

    @property
    def n(self) -> int:
        return len(self.uv)


def _read_raw(path: Path) -> object:
    import mne

    if not path.exists():
        raise DeviceError(f"replay file {path} does not exist",
                          hint="check device.file / --replay points at a recording")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                raw = mne.io.read_raw(path, preload=True, verbose="error")
            except Exception as exc:
                # EDF/BDF text (annotations, header) that is not UTF-8: MNE raises a bare
                # Exception suggesting encoding='latin1'. Latin-1 decodes any byte, so retry.
                if path.suffix.lower() not in (".edf", ".bdf") or "encoding" not in str(exc):
                    raise
                log.warning("replay: %s has text that is not UTF-8; read it as Latin-1", path.name,
                            extra={"file": str(path)})
                raw = mne.io.read_raw(path, preload=True, verbose="error", encoding="latin1")
        except Exception as exc:  # any reader failure becomes one clear error
            raise DeviceError(f"cannot read replay file {path}: {type(exc).__name__}: {str(exc)[:300]}",
                              hint="use a FIF, EDF or BrainVision recording MNE can open; "
                                   "check the file is complete") from exc
    for w in caught:  # e.g. FIF naming convention: not a problem for playback
        log.info("reading %s: %s", path.name, w.message, extra={"file": str(path)})
    return raw


def load_replay(path: str | Path) -> ReplayPlan:
    """Read ``path`` and prepare a ``ReplayPlan`` (blocking; run it in a thread)."""
    p = Path(path)
    raw = _read_raw(p)
    names: list[str] = list(raw.ch_names)  # type: ignore[attr-defined]
    types: list[str] = list(raw.get_channel_types())  # type: ignore[attr-defined]
    ours = set(MISC_CHANNELS) | {STIM_CHANNEL}
    by_lower = {n.lower(): n for n in names}
    if EEG_CHANNEL.lower() in by_lower:
        eeg_name = by_lower[EEG_CHANNEL.lower()]
    else:
        eeg = [n for n, t in zip(names, types, strict=True) if t == "eeg" and n not in ours]
        if not eeg:
            listing = ", ".join(f"{n} ({t})" for n, t in zip(names, types, strict=True))
            raise DeviceError(f"replay file {p} has no EEG channel; channels: {listing}",
                              hint="replay needs an EEG channel (e.g. Fp1); set its type to eeg "
                                   "with MNE's set_channel_types and save again")
        eeg_name = eeg[0]
        if len(eeg) > 1:
            log.info("replay: several EEG channels, using the first", extra={
                "file": str(p), "channel": eeg_name, "others": eeg[1:]})
    sfreq = float(raw.info["sfreq"])  # type: ignore[attr-defined]
    data = raw.get_data()  # type: ignore[attr-defined]
    eeg_v = data[names.index(eeg_name)]
    ratio = SFREQ / sfreq
    if sfreq != SFREQ:
        import mne

        log.info("replay: resampling %s from %g Hz to %g Hz", p.name, sfreq, SFREQ,
                 extra={"file": str(p)})
        eeg_v = mne.filter.resample(eeg_v.astype(np.float64), up=SFREQ, down=sfreq,
                                    verbose="error")
    uv = (np.asarray(eeg_v, dtype=np.float64) * 1e6).astype(np.float32)
    n = len(uv)
    valid = np.ones(n, dtype=bool)
    first_index = 0
    desc = raw.info.get("description")  # type: ignore[attr-defined]
    if desc:
        try:
            meta = json.loads(desc)
            if isinstance(meta, dict) and meta.get("dreamstate"):
                first_index = int(meta.get("first_index", 0))
        except (json.JSONDecodeError, ValueError, TypeError):
            pass  # a foreign free-text description
    plan = ReplayPlan(p, uv, valid, first_index, channel=eeg_name, source_sfreq=sfreq)

    def at(i_src: int) -> int:
        return int(min(n - 1, max(0, round(i_src * ratio))))

    # Status reports: our misc channels + the STI bitmask (or value changes without STI).
    if all(c in names for c in MISC_CHANNELS):
        plan.has_status = True
        rows = {c: data[names.index(c)] for c in MISC_CHANNELS}
        if STIM_CHANNEL in names:
            stim = np.rint(data[names.index(STIM_CHANNEL)]).astype(np.int64)
            marks = np.flatnonzero(stim > 0)
            bits = stim[marks]
        else:
            log.info("replay: no STI channel; reports are emitted where values change",
                     extra={"file": str(p)})
            marks, bits = _changes(rows)
        for i_src, b in zip(marks.tolist(), bits.tolist(), strict=True):
            i = at(i_src)
            specs = plan.events.setdefault(i, [])
            if b & STIM_QUALITY:
                specs.append(("quality", round(float(rows[QUALITY_CHANNEL][i_src]))))
            if b & STIM_BANDS:
                specs.append(("bands", tuple(round(float(rows[c][i_src])) for c in BAND_NAMES)))
            if b & STIM_ESENSE:
                specs.append(("esense", (round(float(rows["attention"][i_src])),
                                         round(float(rows["meditation"][i_src])))))
    # Annotations.
    ann = raw.annotations  # type: ignore[attr-defined]
    # MNE keeps onsets on the recording's own clock, which counts from sample 0 before any crop:
    # with or without a meas_date (orig_time None shifts them by first_time too). So every
    # onset is first_samp samples ahead of the file's first sample.
    offset = int(raw.first_samp)  # type: ignore[attr-defined]
    for onset, duration, text in zip(ann.onset, ann.duration, ann.description, strict=True):
        i_src = round(float(onset) * sfreq) - offset
        i = at(i_src)
        label = str(text)
        if label == GAP_ANNOTATION:
            stop = min(n, round((i_src + float(duration) * sfreq) * ratio))
            valid[i:stop] = False
        elif label.startswith("blink:"):
            try:
                strength = int(label.split(":", 1)[1])
            except ValueError:
                strength = 1
            plan.events.setdefault(i, []).append(("blink", strength))
        elif label.startswith("device:"):
            continue  # link events of the original session are not re-enacted
        else:
            name = label.removeprefix("marker:")
            plan.events.setdefault(i, []).append(("marker", (name, float(duration))))
    log.info("replay loaded", extra={"file": str(p), "channel": eeg_name, "seconds":
                                     round(n / SFREQ, 2), "status": plan.has_status,
                                     "gap_samples": int((~valid).sum())})
    return plan


def _changes(rows: dict[str, npt.NDArray[np.float64]]
             ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    def changed(names: tuple[str, ...]) -> npt.NDArray[np.bool_]:
        block = np.vstack([rows[c] for c in names])
        out = np.zeros(block.shape[1], dtype=bool)
        out[0] = bool(np.all(block[:, 0] >= 0))
        out[1:] = np.any(np.diff(block, axis=1) != 0, axis=0)
        result: npt.NDArray[np.bool_] = out & np.all(block >= 0, axis=0)
        return result

    bits = (changed((QUALITY_CHANNEL,)).astype(np.int64) * STIM_QUALITY
            + changed(("attention", "meditation")).astype(np.int64) * STIM_ESENSE
            + changed(BAND_NAMES).astype(np.int64) * STIM_BANDS)
    marks = np.flatnonzero(bits)
    return marks, bits[marks]


def _reading(spec: EventSpec, t: float) -> Reading:
    kind, value = spec
    if kind == "quality":
        assert isinstance(value, int)
        return SignalQuality(value, t)
    if kind == "bands":
        assert isinstance(value, tuple)
        v = tuple(int(x) for x in value)
        return BandPowers((v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]), t)
    if kind == "esense":
        assert isinstance(value, tuple)
        return ESense(int(value[0]), int(value[1]), t)
    if kind == "blink":
        assert isinstance(value, int)
        return Blink(value, t)
    assert isinstance(value, tuple)
    return Marker(str(value[0]), t, float(value[1]))


class ReplayDevice(Device):
    """A recording played back as a live device.

    Lifecycle: after ``open()`` the file is read and prepared (in a thread, bounded by
    ``load_timeout_s``; a missing/unreadable file or one without an EEG channel raises
    ``DeviceError`` naming it). ``readings()`` yields CONNECTED, then the recording in chunks of
    ``chunk`` samples paced at ``speed`` × real time (``speed`` 0 or inf: unpaced), each report
    right after the sample it followed in the original; at the end END_OF_STREAM (or, with
    ``loop``, the file starts again with sample indices continuing). After ``close()`` the
    stream ends.
    """

    name = "replay"

    def __init__(self, path: str | Path, speed: float = 1.0, loop: bool = False,
                 chunk: int = 16, load_timeout_s: float = 120.0) -> None:
        super().__init__()
        if speed < 0 or math.isnan(speed):
            raise DeviceError(f"replay speed must be >= 0 (0 = unpaced), got {speed}")
        self.path = Path(path)
        self.speed = speed
        self.loop = loop
        self.chunk = max(1, chunk)
        self.load_timeout_s = load_timeout_s
        self.plan: ReplayPlan | None = None
        self._closed = True

    @property
    def paced(self) -> bool:
        return self.speed > 0 and math.isfinite(self.speed)

    def describe(self) -> str:
        pace = f"{self.speed:g}x" if self.paced else "unpaced"
        loop = ", looping" if self.loop else ""
        return f"replay of {self.path.name} ({pace}{loop})"

    async def open(self) -> None:
        try:
            self.plan = await wait_for(asyncio.to_thread(load_replay, self.path),
                                               self.load_timeout_s)
        except TimeoutError as exc:
            raise DeviceError(f"reading replay file {self.path} took longer than "
                              f"{self.load_timeout_s:.0f} s", hint="use a smaller file") from exc
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    async def readings(self) -> AsyncIterator[Reading]:
        plan = self.plan
        if plan is None or self._closed:
            raise DeviceError("replay device is not open", hint="use `async with device:`")
        start = time.monotonic()
        yield DeviceEvent(DeviceEventKind.CONNECTED, start, detail=self.describe())
        self.counters.inc("connects")
        rate = SFREQ * self.speed if self.paced else math.inf
        n = plan.n
        # Cut points: after each event sample and at every gap edge.
        edges = np.flatnonzero(np.diff(plan.valid.astype(np.int8))) + 1
        cuts = sorted({i + 1 for i in plan.events} | set(edges.tolist()) | {n})
        base = plan.first_index
        played = 0  # samples of file time played in earlier loops
        while not self._closed:
            pos = 0
            while pos < n:
                k = bisect.bisect_right(cuts, pos)
                end = min(pos + self.chunk, cuts[k] if k < len(cuts) else n)
                if self.paced:
                    delay = start + (played + end) / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    await asyncio.sleep(0)
                if self._closed:
                    return
                now = time.monotonic()
                if plan.valid[pos]:
                    self.counters.inc("samples", end - pos)
                    yield RawChunk(base + pos, plan.uv[pos:end], now)
                for spec in plan.events.get(end - 1, ()):
                    self.counters.inc("events")
                    yield _reading(spec, now)
                pos = end
            if not self.loop:
                yield DeviceEvent(DeviceEventKind.END_OF_STREAM, time.monotonic(),
                                  detail=f"end of {plan.path.name}")
                return
            base += n
            played += n
            self.counters.inc("loops")
