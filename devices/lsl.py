"""Lab Streaming Layer in: any LSL EEG stream (Muse via muse-lsl or BlueMuse, OpenBCI, an
amplifier, MNE-LSL's PlayerLSL) as a headset.

liblsl comes from ``mne-lsl``, whose wheels bundle it on every platform (pylsl does not on
Linux). ``LslDevice`` resolves one stream by name, type and/or source_id within a timeout (or
raises ``DeviceError`` naming the query and listing the streams that are visible), checks it
(a regular rate of at least ``MIN_RATE_HZ``, numbers not strings, the channels asked for), then
a reader thread pulls it: the chosen channel, or the mean of several, in µV, resampled to
512 Hz (``devices.resample``), as ``RawChunk`` readings whose sample indices count 512 Hz
samples. Non-finite samples are dropped as a gap (counted ``nonfinite_samples``). When the
stream goes away (the outlet closed or the connection broke, ``DISCONNECTED``) or stalls (no
sample for ``stall_s``, ``STALLED``), the inlet is closed and the stream is resolved again
(``RECONNECTING``) with the shared ``Backoff`` until it is back (``CONNECTED``); the sample
index skips an estimate of what was missed, as the serial backend does.

``list_streams(timeout)`` lists the streams visible on the network (``dreamstate devices``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from dreamstate.devices.base import Device
from dreamstate.devices.resample import StreamResampler
from dreamstate.engine.core.background import report_background_error
from dreamstate.engine.core.backoff import Backoff
from dreamstate.engine.core.channels import BoundedQueue
from dreamstate.engine.core.errors import DeviceError
from dreamstate.engine.core.logs import LogLimiter
from dreamstate.engine.core.records import SFREQ, DeviceEvent, DeviceEventKind, RawChunk, Reading

log = logging.getLogger("dreamstate.devices.lsl")

MIN_RATE_HZ: Final = 100.0
"""The lowest source rate accepted: the pipeline's band-pass reaches 45 Hz."""
MAX_RATE_HZ: Final = 100_000.0
Unit = Literal["auto", "uV", "mV", "V"]
UNIT_SCALE: Final[dict[str, float]] = {"uV": 1.0, "mV": 1e3, "V": 1e6}
"""Multiply by this to get µV."""
_UNIT_WORDS: Final[dict[str, float]] = {
    "microvolts": 1.0, "microvolt": 1.0, "uv": 1.0, "µv": 1.0, "μv": 1.0,
    "millivolts": 1e3, "millivolt": 1e3, "mv": 1e3,
    "volts": 1e6, "volt": 1e6, "v": 1e6,
    "nanovolts": 1e-3, "nanovolt": 1e-3, "nv": 1e-3,
}

_configured = False
_config_lock = threading.Lock()


def _user_config_exists() -> bool:
    """True when liblsl would read a configuration file of the user's (network settings, log
    level): ``LSLAPICFG``, ``./lsl_api.cfg``, ``~/lsl_api/lsl_api.cfg``, ``/etc/lsl_api/lsl_api.cfg``."""
    if os.environ.get("LSLAPICFG"):
        return True
    return any(p.is_file() for p in (Path("lsl_api.cfg"), Path.home() / "lsl_api" / "lsl_api.cfg",
                                     Path("/etc/lsl_api/lsl_api.cfg")))


def liblsl() -> Any:
    """The ``mne_lsl.lsl`` module (liblsl). The first call keeps liblsl's own log to errors
    (it prints every INFO line to stderr otherwise), unless the user has an ``lsl_api.cfg``,
    which is then left in charge. Raises ``DeviceError`` when mne-lsl is not installed."""
    global _configured
    try:
        from mne_lsl import lsl
    except ImportError as exc:  # pragma: no cover - mne-lsl is a dependency
        raise DeviceError(f"LSL needs the mne-lsl package ({exc})", hint="pip install 'mne-lsl>=1.14'") from exc
    with _config_lock:
        if not _configured:
            _configured = True
            if not _user_config_exists():
                lsl.set_config_content("[log]\nlevel = -2\n")
    return lsl


@dataclasses.dataclass(frozen=True, slots=True)
class StreamSummary:
    """One LSL stream as resolved: name, type, channel count, nominal rate in Hz (0 =
    irregular), channel format, source_id and host."""

    name: str
    stype: str
    n_channels: int
    sfreq: float
    dtype: str
    source_id: str
    hostname: str

    def describe(self) -> str:
        rate = f"{self.sfreq:g} Hz" if self.sfreq > 0 else "irregular"
        return (f"{self.name!r} (type {self.stype or '-'!r}, {self.n_channels} ch, {rate}, {self.dtype}, "
                f"source_id {self.source_id or '-'!r}, host {self.hostname})")


def _dtype_name(dtype: Any) -> str:
    return "string" if isinstance(dtype, str) else np.dtype(dtype).name


def summarise(sinfo: Any) -> StreamSummary:
    return StreamSummary(name=str(sinfo.name), stype=str(sinfo.stype), n_channels=int(sinfo.n_channels),
                         sfreq=float(sinfo.sfreq), dtype=_dtype_name(sinfo.dtype), source_id=str(sinfo.source_id),
                         hostname=str(sinfo.hostname))


def list_streams(timeout: float = 1.0) -> list[StreamSummary]:
    """Every LSL stream visible within ``timeout`` seconds (blocking), sorted by name."""
    lsl = liblsl()
    return sorted((summarise(s) for s in lsl.resolve_streams(timeout=timeout)), key=lambda s: (s.name, s.source_id))


@dataclasses.dataclass(frozen=True, slots=True)
class LslQuery:
    """What to look for: a stream ``name``, ``stype`` and/or ``source_id`` (all given must match)."""

    name: str | None = None
    stype: str | None = None
    source_id: str | None = None

    def describe(self) -> str:
        parts = [f"{k}={v!r}" for k, v in (("name", self.name), ("type", self.stype),
                                            ("source_id", self.source_id)) if v]
        return ", ".join(parts) or "any stream"


def resolve(query: LslQuery, timeout: float) -> list[Any]:
    """The streams matching ``query`` (blocking up to ``timeout`` s; returns early on the first
    match). Raises ``DeviceError`` naming the query and listing what is visible when none is."""
    lsl = liblsl()
    found = lsl.resolve_streams(timeout=timeout, name=query.name, stype=query.stype,
                                source_id=query.source_id, minimum=1)
    if found:
        return list(found)
    visible = list_streams(timeout=min(1.0, timeout))
    listing = "; ".join(s.describe() for s in visible) or "none"
    raise DeviceError(f"no LSL stream with {query.describe()} found within {timeout:g} s; visible streams: {listing}",
                      hint="start the stream (muse-lsl, BlueMuse, the OpenBCI GUI, a PlayerLSL) or fix "
                           "[device.lsl] name/type/source_id; `dreamstate devices` lists what is visible")


def _channel_descs(sinfo: Any) -> list[dict[str, str]]:
    """The ``desc/channels/channel`` entries (label, type, unit, kind, ...) of an opened stream's info."""
    out: list[dict[str, str]] = []
    node = sinfo.desc.child("channels").first_child()
    while not node.empty():
        entry: dict[str, str] = {}
        child = node.first_child()
        while not child.empty():
            entry[child.name()] = child.child_value()
            child = child.next_sibling()
        out.append(entry)
        node = node.next_sibling()
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelPlan:
    """Which columns of an LSL stream become the pipeline's one channel, and how: ``indices``
    (averaged when several), ``labels``, ``scale`` (to µV), the source rate in Hz and why the
    unit was chosen."""

    indices: tuple[int, ...]
    labels: tuple[str, ...]
    scale: float
    sfreq: float
    unit_reason: str
    summary: StreamSummary

    def describe(self) -> str:
        pick = self.labels[0] if len(self.labels) == 1 else "mean of " + "+".join(self.labels)
        return f"{pick} from {self.summary.describe()}, x{self.scale:g} to µV ({self.unit_reason})"


def plan_channels(sinfo: Any, wanted: Sequence[str], unit: Unit = "auto") -> ChannelPlan:
    """Check an opened stream and choose its channels (see ``LslDevice``). Raises
    ``DeviceError`` naming the stream for an irregular or out-of-range rate, a string stream,
    or channels it does not have (listing the ones it has)."""
    summary = summarise(sinfo)
    if summary.dtype == "string":
        raise DeviceError(f"LSL stream {summary.describe()} carries strings, not samples",
                          hint="point [device.lsl] at the EEG stream, not a marker stream")
    if not summary.sfreq > 0:
        raise DeviceError(f"LSL stream {summary.describe()} has an irregular rate; the pipeline needs a regularly "
                          "sampled EEG stream", hint="use the amplifier's EEG stream (nominal_srate > 0)")
    if not MIN_RATE_HZ <= summary.sfreq <= MAX_RATE_HZ:
        raise DeviceError(f"LSL stream {summary.describe()} runs at {summary.sfreq:g} Hz; dreamstate needs "
                          f"{MIN_RATE_HZ:g}..{MAX_RATE_HZ:g} Hz (its band-pass reaches 45 Hz)",
                          hint="stream the raw EEG at its native rate")
    descs = _channel_descs(sinfo)
    if len(descs) != summary.n_channels:  # no (or partial) metadata: number the channels
        descs = [{"label": f"ch{i + 1}"} for i in range(summary.n_channels)]
    labels = [d.get("label") or f"ch{i + 1}" for i, d in enumerate(descs)]
    by_lower = {lab.lower(): i for i, lab in enumerate(labels)}
    if wanted:
        missing = [w for w in wanted if w.lower() not in by_lower]
        if missing:
            raise DeviceError(f"LSL stream {summary.name!r} has no channel {', '.join(map(repr, missing))}; "
                              f"its {summary.n_channels} channels are {', '.join(labels)}",
                              hint="set [device.lsl] channels to some of these names")
        indices = tuple(by_lower[w.lower()] for w in wanted)
    else:
        eeg = [i for i, d in enumerate(descs) if d.get("type", "").lower() == "eeg"]
        indices = (eeg[0] if eeg else 0,)
        log.info("LSL: no channels named in [device.lsl]; using %s", labels[indices[0]],
                 extra={"stream": summary.name, "channels": labels})
    scale, reason = _unit_scale([descs[i] for i in indices], unit)
    return ChannelPlan(indices, tuple(labels[i] for i in indices), scale, summary.sfreq, reason, summary)


def _unit_scale(descs: list[dict[str, str]], unit: Unit) -> tuple[float, str]:
    if unit != "auto":
        return UNIT_SCALE[unit], f"unit = {unit!r} in the show"
    if descs and all("kind" in d for d in descs):  # MNE / MNE-LSL metadata: SI units
        return 1e6, "MNE-style metadata: volts"
    words = {d.get("unit", "").strip().lower() for d in descs}
    scales = {_UNIT_WORDS[w] for w in words if w in _UNIT_WORDS}
    if len(scales) == 1 and all(w in _UNIT_WORDS for w in words):
        return scales.pop(), f"stream says {sorted(words)[0]}"
    return 1.0, "no unit in the stream's metadata: microvolts, the XDF convention for EEG"


class LslDevice(Device):
    """An LSL EEG stream as a headset (see the module docstring).

    ``name``/``stype``/``source_id``: the query (at least one should be given; with none, any
    stream of type ``EEG``). ``channels``: names to use (several are averaged; empty: the first
    channel of type EEG, else the first). ``unit``: the stream's unit (``auto`` reads its
    metadata). ``timeout_s``: how long ``open()`` looks for it. ``stall_s``: seconds without a
    sample before the stream counts as stalled. Lifecycle: ``open()`` resolves and checks the
    stream (``DeviceError`` naming the query, listing visible streams, or naming the problem)
    and starts the reader thread; ``readings()`` yields ``CONNECTED``, then ``RawChunk`` (float32
    µV at ``target_hz`` with sample indices) and link events until ``close()``, which stops and
    joins the thread. Counters: ``samples``, ``nonfinite_samples``, ``gap_samples``,
    ``disconnects``, ``stalls``, ``reconnects``, ``reconnect_failures``, ``bad_stream``.
    """

    name = "lsl"

    def __init__(self, *, name: str | None = None, stype: str | None = None, source_id: str | None = None,
                 channels: Sequence[str] = (), unit: Unit = "auto", timeout_s: float = 10.0,
                 stall_s: float = 2.0, backoff: Backoff | None = None, target_hz: float = SFREQ) -> None:
        super().__init__()
        if unit not in ("auto", *UNIT_SCALE):
            raise DeviceError(f"LSL unit {unit!r} is not known", hint="use auto, uV, mV or V")
        self.query = LslQuery(name or None, stype or None, source_id or None)
        if not (self.query.name or self.query.stype or self.query.source_id):
            self.query = LslQuery(stype="EEG")
        self.channels = tuple(channels)
        self.unit: Unit = unit
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self.backoff = backoff or Backoff(base=0.5, cap=10.0)
        self.target_hz = target_hz
        self.plan: ChannelPlan | None = None
        self._inlet: Any = None
        self._queue: BoundedQueue[Reading | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._limiter = LogLimiter(log)
        # index bookkeeping (reader thread only)
        self._index = 0
        self._resampler: StreamResampler | None = None
        self._last_arrival: float | None = None
        self._inlet_is_new = False

    def describe(self) -> str:
        where = self.plan.describe() if self.plan is not None else self.query.describe()
        return f"LSL stream {where}"

    # --- connecting ----------------------------------------------------------------------------
    def _connect(self, timeout: float, query: LslQuery | None = None) -> tuple[Any, ChannelPlan]:
        """Resolve, open and check the stream (blocking). Raises ``DeviceError``."""
        lsl = liblsl()
        query = query or self.query
        found = resolve(query, timeout)
        if len(found) > 1:
            log.warning("LSL: %d streams match %s; using the first: %s (others: %s)", len(found), query.describe(),
                        summarise(found[0]).describe(), "; ".join(summarise(s).describe() for s in found[1:]))
        inlet = lsl.StreamInlet(found[0], max_buffered=60, recover=False)
        try:
            inlet.open_stream(timeout=max(1.0, timeout))
            sinfo = inlet.get_sinfo(timeout=max(1.0, timeout))
            plan = plan_channels(sinfo, self.channels, self.unit)
        except DeviceError:
            inlet.close_stream()
            raise
        except Exception as exc:  # liblsl timeouts and lost connections while opening
            with contextlib.suppress(Exception):
                inlet.close_stream()
            raise DeviceError(f"cannot open LSL stream {summarise(found[0]).describe()}: {type(exc).__name__}: {exc}",
                              hint="check the stream's sender is still running") from exc
        return inlet, plan

    async def open(self) -> None:
        if self._thread is not None:
            return
        inlet, plan = await asyncio.to_thread(self._connect, self.timeout_s)
        self._inlet, self.plan = inlet, plan
        self._resampler = StreamResampler(plan.sfreq, self.target_hz)
        self._loop = asyncio.get_running_loop()
        self._queue = BoundedQueue(8192, drop="oldest", name="lsl")
        self._stop.clear()
        log.info("LSL stream open", extra={"stream": plan.describe()})
        self._thread = threading.Thread(target=self._run, name="lsl-inlet", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 5.0)
        if self._queue is not None:
            self._queue.put_nowait(None)

    async def readings(self) -> AsyncIterator[Reading]:
        q = self._queue
        if q is None:
            raise DeviceError("LSL device is not open", hint="use `async with device:`")
        while True:
            item = await q.get()
            if item is None:
                return
            yield item

    # --- the reader thread ---------------------------------------------------------------------
    def _post(self, item: Reading | None) -> None:
        loop, q = self._loop, self._queue
        if loop is None or q is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody is listening
            loop.call_soon_threadsafe(q.put_nowait, item)

    def _event(self, kind: DeviceEventKind, detail: str) -> None:
        self._post(DeviceEvent(kind, time.monotonic(), detail=detail))

    def _run(self) -> None:
        try:
            self._pump()
        except Exception as exc:  # noqa: BLE001 -- reported; the stream ends and the stage reopens the device
            report_background_error("LSL reader", exc, log, stream=self._name())
            self._event(DeviceEventKind.DISCONNECTED, f"LSL reader failed: {type(exc).__name__}: {exc}")
        finally:
            self._drop_inlet()
            self._post(None)

    def _drop_inlet(self) -> None:
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            with contextlib.suppress(Exception):
                inlet.close_stream()
            del inlet

    def _pump(self) -> None:
        plan = self.plan
        assert plan is not None
        self._event(DeviceEventKind.CONNECTED, self.describe())
        self.counters.inc("connects")
        retries = self.backoff.retries()
        retries.started()
        last_data = time.monotonic()
        while not self._stop.is_set():
            if self._inlet is None:
                if not self._reconnect(retries):
                    continue
                last_data = time.monotonic()
            try:
                block = self._pull()
            except Exception as exc:  # noqa: BLE001 -- LostError and friends: the stream went away
                self.counters.inc("disconnects")
                log.warning("LSL stream %s went away (%s); reconnecting", self._name(), exc)
                self._event(DeviceEventKind.DISCONNECTED, f"LSL stream {self._name()} lost: {exc}")
                self._drop_inlet()
                self._stop.wait(retries.failed())
                continue
            now = time.monotonic()
            if block is None:
                if now - last_data >= self.stall_s:
                    self.counters.inc("stalls")
                    log.warning("LSL stream %s sent nothing for %.1f s; reconnecting", self._name(), now - last_data)
                    self._event(DeviceEventKind.STALLED, f"no samples from {self._name()} for {now - last_data:.1f} s")
                    self._drop_inlet()
                    self._stop.wait(retries.failed())
                continue
            last_data = now
            for chunk in self._convert(block, now):
                self._post(chunk)

    def _name(self) -> str:
        return repr(self.plan.summary.name) if self.plan is not None else self.query.describe()

    def _reconnect(self, retries: Any) -> bool:
        plan = self.plan
        query = self.query
        if plan is not None and plan.summary.source_id:  # the same source, wherever it comes back
            query = LslQuery(name=plan.summary.name, source_id=plan.summary.source_id)
        self._event(DeviceEventKind.RECONNECTING, f"looking for {query.describe()} (attempt {max(1, retries.attempt)})")
        try:
            inlet, new = self._connect(min(self.timeout_s, 2.0), query)
        except DeviceError as exc:
            self.counters.inc("reconnect_failures")
            if "found within" not in str(exc):  # it is there but unusable: say why
                self.counters.inc("bad_stream")
            self._limiter.report("lsl reconnect", f"LSL: {exc}")
            self._stop.wait(retries.failed())
            return False
        if self._stop.is_set():
            self._inlet = inlet
            return False
        if self._resampler is None or new.sfreq != self._resampler.src_hz:
            self._resampler = StreamResampler(new.sfreq, self.target_hz)
        self._inlet, self.plan = inlet, new
        self._inlet_is_new = True
        self.counters.inc("reconnects")
        retries.started()
        log.info("LSL stream back", extra={"stream": new.describe()})
        self._event(DeviceEventKind.CONNECTED, self.describe())
        return True

    def _pull(self) -> npt.NDArray[np.float64] | None:
        """The samples waiting (n, channels), blocking up to 0.1 s for the first; None if none came."""
        inlet = self._inlet
        sample, stamp = inlet.pull_sample(timeout=0.1)
        if stamp is None:
            return None
        rest, _ = inlet.pull_chunk(timeout=0.0, max_samples=4096)
        first = np.asarray(sample, dtype=np.float64)[None, :]
        if len(rest) == 0:
            return first
        return np.concatenate([first, np.asarray(rest, dtype=np.float64)])

    def _convert(self, block: npt.NDArray[np.float64], now: float) -> list[RawChunk]:
        """One pulled block -> RawChunks at the target rate: the chosen channels in µV (their
        mean when several), resampled; a run of non-finite samples is a gap in the indices."""
        plan, rs = self.plan, self._resampler
        assert plan is not None and rs is not None
        x = block[:, list(plan.indices)] * plan.scale
        x = x[:, 0] if x.shape[1] == 1 else x.mean(axis=1)
        ratio = self.target_hz / plan.sfreq
        if self._last_arrival is not None and self._inlet_is_new:
            # the stream was away: skip an estimate of the samples missed meanwhile
            missed_s = max(0.0, now - self._last_arrival - len(x) / plan.sfreq)
            skip = round(missed_s * self.target_hz)
            if skip:
                self.counters.inc("gap_samples", skip)
                self._index += skip
            rs.reset()
        self._inlet_is_new = False
        self._last_arrival = now
        finite = np.isfinite(x)
        if not finite.all():
            bad = int((~finite).sum())
            self.counters.inc("nonfinite_samples", bad)
            self._limiter.report("lsl nonfinite", f"LSL stream {self._name()}: {bad} non-finite sample(s) "
                                 "(NaN or inf) dropped as a gap", stream=plan.summary.name)
        chunks: list[RawChunk] = []
        pos, n = 0, len(x)
        while pos < n:
            end = pos
            if not finite[pos]:
                while end < n and not finite[end]:
                    end += 1
                skip = max(1, round((end - pos) * ratio))
                self._index += skip
                self.counters.inc("gap_samples", skip)
                rs.reset()
                pos = end
                continue
            while end < n and finite[end]:
                end += 1
            y = rs.process(x[pos:end])
            if len(y):
                chunks.append(RawChunk(self._index, y.astype(np.float32), now, sfreq=self.target_hz))
                self._index += len(y)
                self.counters.inc("samples", len(y))
            pos = end
        return chunks
