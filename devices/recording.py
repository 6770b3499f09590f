"""Crash-safe recording: an append-only journal while recording, a FIF file at the end.

Journal format (one file, ``*.dsj``)::

    b"DSJOURNAL1\\n"                                   file magic
    then records:  b"\\xd5\\x1a" | type u8 | length u32 LE | payload | crc32 u32 LE
        type 1 HEADER  JSON  {"version", "sfreq", "wall_start", "device", ...}
        type 2 RAW     int64 first_index | float64 time | float32 µV samples
        type 3 EVENT   JSON  {"k": quality|esense|bands|blink|heart|marker|device,
                              "after": last raw index received before it, "t": time, ...}
        type 4 END     JSON  written by a clean close

The CRC covers type, length and payload. ``read_journal`` stops quietly at a torn last
record (the process died mid-write) and skips, counts and reports a corrupt record in the middle
by scanning for the next record magic. The ``Recorder`` writes what it has to the OS every
``flush_s`` (0.25 s) and ``fsync``s every ``fsync_s`` (1 s), in a worker thread, so after
``kill -9`` at most the last quarter second is lost, and after a power cut at most a second.

FIF (MNE) layout written by ``journal_to_raw`` / ``save_fif``:

* ``Fp1`` (eeg, V): the NeuroSky sensor sits at Fp1. µV × 1e-6.
* misc ``attention``, ``meditation``, ``poor_signal``, ``delta`` .. ``mid_gamma``: the latest
  reported value, sample-and-hold at 512 Hz, -1 before the first report.
* stim ``STI``: a bitmask at the raw sample right after which a report arrived (1 quality,
  2 eSense, 4 band powers), so a replay reproduces every report, repeated values included.
* annotations: ``marker:<label>`` (duration kept), ``blink:<strength>``, ``device:<kind>`` and
  ``BAD_ACQ_SKIP`` over sample gaps (MNE's own acquisition-skip marker: the gap samples are not
  stored and read back as zeros; a replay skips them so its sample indices jump like the
  original's did).
* ``info["description"]``: JSON with the device sample index of the first sample and the
  device description. Heart rate stays in the journal only.

File names: MNE expects raw FIF names to end in ``raw.fif`` (or ``_eeg.fif`` ...).
``fif_path`` turns ``session.fif`` into ``session_raw.fif`` (logged), so MNE never warns.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import struct
import time
import weakref
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.aio import wait_for
from dreamstate.engine.core.errors import RecordingError
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import (
    BAND_NAMES,
    SFREQ,
    BandPowers,
    Blink,
    DeviceEvent,
    ESense,
    HeartRate,
    Marker,
    RawChunk,
    Reading,
    SignalQuality,
)

if TYPE_CHECKING:
    import mne

log = logging.getLogger("dreamstate.devices.recording")

FILE_MAGIC: Final = b"DSJOURNAL1\n"
REC_MAGIC: Final = b"\xd5\x1a"
_HEAD: Final = struct.Struct("<2sBI")
_CRC: Final = struct.Struct("<I")
_RAW_HEAD: Final = struct.Struct("<qd")
REC_HEADER: Final = 1
REC_RAW: Final = 2
REC_EVENT: Final = 3
REC_END: Final = 4
MAX_RECORD: Final = 64 << 20
JOURNAL_SUFFIX: Final = ".dsj"

EEG_CHANNEL: Final = "Fp1"
ESENSE_CHANNELS: Final = ("attention", "meditation")
QUALITY_CHANNEL: Final = "poor_signal"
MISC_CHANNELS: Final = (*ESENSE_CHANNELS, QUALITY_CHANNEL, *BAND_NAMES)
STIM_CHANNEL: Final = "STI"
STIM_QUALITY: Final = 1
STIM_ESENSE: Final = 2
STIM_BANDS: Final = 4
GAP_ANNOTATION: Final = "BAD_ACQ_SKIP"
FIF_ENDINGS: Final = ("raw.fif", "raw_sss.fif", "raw_tsss.fif", "_meg.fif", "_eeg.fif",
                      "_ieeg.fif", "raw.fif.gz", "_eeg.fif.gz")


def fif_path(out: str | Path) -> Path:
    """The FIF file written for ``out``: exactly the path given, which must end in ``.fif`` or
    ``.fif.gz`` (MNE's ``_raw.fif`` convention is recommended, not required: its naming
    warning is silenced for names the user chose). Anything else is refused with the fix."""
    p = Path(out)
    name = p.name
    if name.endswith((".fif", ".fif.gz")):
        return p
    if "." in name and name.rsplit(".", 1)[1].lower() in {"edf", "bdf", "vhdr", "set", "gdf"}:
        raise RecordingError(f"cannot record to {out}: dreamstate records FIF",
                             hint="use --out NAME_raw.fif; export to EDF afterwards with MNE")
    raise RecordingError(f"cannot record to {out}: the file name must end in .fif",
                         hint=f"use --out {name}_raw.fif (MNE's convention) or {name}.fif")


def journal_path_for(fif: Path) -> Path:
    """The journal that sits next to a FIF output: ``x_raw.fif`` -> ``x_raw.dsj``."""
    name = fif.name
    for end in (".fif.gz", ".fif"):
        if name.endswith(end):
            return fif.with_name(name[: -len(end)] + JOURNAL_SUFFIX)
    return fif.with_name(name + JOURNAL_SUFFIX)


LEGACY_JOURNAL_SUFFIXES: Final = (".journal",)  # what shows wrote before 2026-11-30


def fif_for_journal(journal: Path) -> Path:
    """Default recovery output for a journal: ``x_raw.dsj`` -> ``x_raw.fif`` (also for the
    ``.journal`` files shows used to write: ``x_raw.journal`` -> ``x_raw.fif``)."""
    name = journal.name
    for suffix in (JOURNAL_SUFFIX, *LEGACY_JOURNAL_SUFFIXES):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return journal.with_name(name + ".fif")


def unrecovered_journals(folder: Path, *, exclude: Path | None = None) -> list[Path]:
    """Journals in ``folder`` left by recordings whose process died before finalising."""
    if not folder.is_dir():
        return []
    found = [p for suffix in (JOURNAL_SUFFIX, *LEGACY_JOURNAL_SUFFIXES) for p in folder.glob(f"*{suffix}")]
    return sorted(p for p in found if p.is_file() and p != exclude)


def _record(rtype: int, payload: bytes) -> bytes:
    head = _HEAD.pack(REC_MAGIC, rtype, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head[2:]))
    return head + payload + _CRC.pack(crc)


def encode_raw_record(first_index: int, t: float, samples: npt.ArrayLike) -> bytes:
    data = np.ascontiguousarray(samples, dtype="<f4")
    return _record(REC_RAW, _RAW_HEAD.pack(first_index, t) + data.tobytes())


def encode_event_record(doc: dict[str, Any]) -> bytes:
    return _record(REC_EVENT, json.dumps(doc, separators=(",", ":")).encode())


def event_doc(reading: Reading, after: int) -> dict[str, Any] | None:
    """The journal event for a non-raw reading (``after``: last raw index received, or -1)."""
    base: dict[str, Any] = {"after": after, "t": reading.time}
    if isinstance(reading, SignalQuality):
        return {"k": "quality", **base, "v": reading.poor_signal}
    if isinstance(reading, ESense):
        return {"k": "esense", **base, "a": reading.attention, "m": reading.meditation}
    if isinstance(reading, BandPowers):
        return {"k": "bands", **base, "v": list(reading.values)}
    if isinstance(reading, Blink):
        return {"k": "blink", **base, "v": reading.strength}
    if isinstance(reading, HeartRate):
        return {"k": "heart", **base, "bpm": reading.bpm, "rr": reading.rr_ms}
    if isinstance(reading, Marker):
        return {"k": "marker", **base, "label": reading.label, "dur": reading.duration}
    if isinstance(reading, DeviceEvent):
        return {"k": "device", **base, "kind": str(reading.kind), "detail": reading.detail,
                "id": reading.headset_id}
    return None


# --------------------------------------------------------------------------- reading back


@dataclass
class JournalContents:
    """What ``read_journal`` recovered. ``segments``: (first_index, µV float32) in file order."""

    path: Path
    header: dict[str, Any]
    segments: list[tuple[int, npt.NDArray[np.float32]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    clean_end: bool = False
    records: int = 0
    corrupt_records: int = 0
    torn_tail_bytes: int = 0
    skipped_bytes: int = 0

    @property
    def n_samples(self) -> int:
        return sum(len(s) for _, s in self.segments)


def read_journal(path: str | Path) -> JournalContents:
    """Parse a journal, tolerating a torn tail and skipping corrupt records (counted)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RecordingError(f"cannot read journal {p}: {exc}",
                             hint="give the .dsj file written next to the recording") from exc
    if not data.startswith(FILE_MAGIC):
        raise RecordingError(f"{p} is not a dreamstate journal (bad magic)",
                             hint="recover takes the .dsj file written while recording")
    out = JournalContents(p, {})
    pos = len(FILE_MAGIC)
    n = len(data)
    while pos < n:
        if n - pos < _HEAD.size + _CRC.size:
            out.torn_tail_bytes = n - pos
            break
        magic, rtype, length = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length + _CRC.size
        ok = magic == REC_MAGIC and length <= MAX_RECORD
        if ok and end > n:
            # Torn last record, unless another valid record follows (then it is corruption).
            nxt = data.find(REC_MAGIC, pos + 2)
            if nxt < 0 or not _valid_at(data, nxt):
                out.torn_tail_bytes = n - pos
                break
            ok = False
        if ok:
            payload = data[pos + _HEAD.size: end - _CRC.size]
            (crc,) = _CRC.unpack_from(data, end - _CRC.size)
            ok = crc == zlib.crc32(payload, zlib.crc32(data[pos + 2: pos + _HEAD.size]))
        if not ok:
            nxt = data.find(REC_MAGIC, pos + 2)
            while nxt >= 0 and not _valid_at(data, nxt):
                nxt = data.find(REC_MAGIC, nxt + 2)
            if nxt < 0:
                out.torn_tail_bytes = n - pos
                break
            out.corrupt_records += 1
            out.skipped_bytes += nxt - pos
            log.warning("journal: corrupt record skipped",
                        extra={"file": str(p), "offset": pos, "skipped": nxt - pos})
            pos = nxt
            continue
        out.records += 1
        _apply(out, rtype, payload)
        pos = end
    if out.torn_tail_bytes:
        log.info("journal: torn last record ignored (the writer stopped mid-record)",
                 extra={"file": str(p), "bytes": out.torn_tail_bytes})
    return out


def _valid_at(data: bytes, pos: int) -> bool:
    if len(data) - pos < _HEAD.size + _CRC.size:
        return False
    magic, _rtype, length = _HEAD.unpack_from(data, pos)
    end = pos + _HEAD.size + length + _CRC.size
    if magic != REC_MAGIC or length > MAX_RECORD or end > len(data):
        return False
    (crc,) = _CRC.unpack_from(data, end - _CRC.size)
    return bool(crc == zlib.crc32(data[pos + _HEAD.size: end - _CRC.size],
                             zlib.crc32(data[pos + 2: pos + _HEAD.size])))


def _apply(out: JournalContents, rtype: int, payload: bytes) -> None:
    if rtype == REC_RAW:
        first, _t = _RAW_HEAD.unpack_from(payload)
        samples = np.frombuffer(payload, dtype="<f4", offset=_RAW_HEAD.size).astype(np.float32)
        out.segments.append((int(first), samples))
    elif rtype in (REC_EVENT, REC_HEADER, REC_END):
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            out.corrupt_records += 1
            return
        if rtype == REC_EVENT:
            out.events.append(doc)
        elif rtype == REC_HEADER:
            out.header = doc
        else:
            out.clean_end = True
    else:
        out.corrupt_records += 1


# --------------------------------------------------------------------------- FIF


def journal_to_raw(contents: JournalContents) -> mne.io.RawArray:
    """Build the MNE Raw described in the module docstring from a journal's contents."""
    import mne

    if not contents.segments:
        raise RecordingError(f"journal {contents.path} holds no raw samples",
                             hint="the recording stopped before the headset sent data")
    sfreq = float(contents.header.get("sfreq", SFREQ))
    first = min(f for f, _ in contents.segments)
    last = max(f + len(s) for f, s in contents.segments)
    n = last - first
    eeg = np.zeros(n, dtype=np.float64)
    have = np.zeros(n, dtype=bool)
    for f, s in contents.segments:
        eeg[f - first: f - first + len(s)] = s
        have[f - first: f - first + len(s)] = True
    misc = np.full((len(MISC_CHANNELS), n), -1.0)
    stim = np.zeros(n)
    row = {name: i for i, name in enumerate(MISC_CHANNELS)}
    onsets: list[float] = []
    durations: list[float] = []
    descriptions: list[str] = []
    for ev in contents.events:
        kind = ev.get("k")
        i = int(np.clip(int(ev.get("after", -1)) - first, 0, n - 1))
        if kind == "quality":
            misc[row[QUALITY_CHANNEL], i:] = ev["v"]
            stim[i] = int(stim[i]) | STIM_QUALITY
        elif kind == "esense":
            misc[row["attention"], i:] = ev["a"]
            misc[row["meditation"], i:] = ev["m"]
            stim[i] = int(stim[i]) | STIM_ESENSE
        elif kind == "bands":
            for name, v in zip(BAND_NAMES, ev["v"], strict=True):
                misc[row[name], i:] = v
            stim[i] = int(stim[i]) | STIM_BANDS
        elif kind == "blink":
            onsets.append(i / sfreq)
            durations.append(0.0)
            descriptions.append(f"blink:{int(ev['v'])}")
        elif kind == "marker":
            onsets.append(i / sfreq)
            durations.append(float(ev.get("dur", 0.0)))
            descriptions.append(f"marker:{ev.get('label', '')}")
        elif kind == "device":
            onsets.append(i / sfreq)
            durations.append(0.0)
            descriptions.append(f"device:{ev.get('kind', '')}")
    # Gaps: runs of samples the device never delivered.
    missing = np.flatnonzero(~have)
    n_gaps = 0
    if len(missing):
        breaks = np.flatnonzero(np.diff(missing) > 1)
        starts = np.r_[missing[0], missing[breaks + 1]]
        stops = np.r_[missing[breaks], missing[-1]] + 1
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            onsets.append(a / sfreq)
            durations.append((b - a) / sfreq)
            descriptions.append(GAP_ANNOTATION)
            n_gaps += 1
    ch_names = [EEG_CHANNEL, *MISC_CHANNELS, STIM_CHANNEL]
    ch_types = ["eeg"] + ["misc"] * len(MISC_CHANNELS) + ["stim"]
    info = mne.create_info(ch_names, sfreq, ch_types, verbose="error")
    meta = {"dreamstate": 1, "first_index": first, "device": contents.header.get("device", ""),
            "journal": contents.path.name, "gaps": n_gaps,
            "lost_samples": len(missing), "clean_end": contents.clean_end}
    with info._unlock():
        info["description"] = json.dumps(meta)
    data = np.vstack([eeg[None, :] * 1e-6, misc, stim[None, :]])
    raw = mne.io.RawArray(data, info, verbose="error")
    wall = contents.header.get("wall_start")
    if isinstance(wall, int | float):
        raw.set_meas_date(dt.datetime.fromtimestamp(float(wall), tz=dt.UTC))
    if onsets:
        raw.set_annotations(mne.Annotations(onsets, durations, descriptions,
                                            orig_time=raw.info["meas_date"]))
    return raw


def save_fif(raw: mne.io.BaseRaw, out: str | Path) -> Path:
    """Save ``raw`` as FIF at ``fif_path(out)``, atomically: MNE writes a temporary file in the
    same folder, which is fsynced and then renamed over the target (and the folder fsynced), so
    a crash or a full disk never leaves a truncated or empty FIF under the final name; the
    temporary file is removed on failure. Returns the path."""
    import warnings

    path = fif_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial_raw.fif")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*naming conventions.*")  # the user chose the name
            raw.save(tmp, overwrite=True, fmt="single", verbose="error")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise RecordingError(f"cannot write FIF {path}: {exc}",
                             hint="check the folder exists, is writable and has space; the journal "
                                  "is kept, so `dreamstate recover` can try again") from exc
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RecoverResult:
    fif: Path
    samples: int
    lost_samples: int
    gaps: int
    events: int
    torn_tail_bytes: int
    corrupt_records: int
    clean_end: bool
    seconds: float


def recover(journal: str | Path, out: str | Path | None = None) -> RecoverResult:
    """Rebuild a FIF from a journal (blocking; call from a thread inside the event loop)."""
    contents = read_journal(journal)
    raw = journal_to_raw(contents)
    path = save_fif(raw, out if out is not None else fif_for_journal(Path(journal)))
    meta = json.loads(raw.info["description"])
    return RecoverResult(path, contents.n_samples, int(meta["lost_samples"]), int(meta["gaps"]),
                         len(contents.events), contents.torn_tail_bytes,
                         contents.corrupt_records, contents.clean_end,
                         float(raw.n_times / raw.info["sfreq"]))


# --------------------------------------------------------------------------- recorder

ACTIVE: weakref.WeakSet[Recorder] = weakref.WeakSet()
"""Recorders with an open journal (see ``flush_all``)."""


def flush_all() -> None:
    """Write every open journal's buffer now, from any thread (used before a hard exit)."""
    for rec in list(ACTIVE):
        rec.flush_now()



class Recorder:
    """Consumes readings into a crash-safe journal; ``finalise`` turns it into FIF.

    Lifecycle:

    * ``__init__``: nothing on disk.
    * ``await start()``: the journal exists with its header, fsynced; a flush task writes
      buffered records to the OS every ``flush_s`` and fsyncs every ``fsync_s`` (in a thread).
    * ``add(reading)``: never blocks; buffers the reading (contiguous raw chunks are merged).
    * ``await run(readings)``: ``add``s every reading until the iterator ends.
    * ``await close()``: everything buffered is written, an END record is added, the file is
      fsynced and closed; the flush task is gone. Idempotent.
    * ``await finalise(out)``: ``close()``, then the FIF is written (in a thread) and, unless
      ``keep_journal``, the journal is deleted. Returns the ``RecoverResult``.

    ``counters``: ``samples``, ``events``, ``gaps``, ``lost_samples``, ``overlaps``,
    ``bytes_written``, ``flushes``, ``fsyncs``, ``slow_writes``, ``write_errors``,
    ``dropped_bytes``. ``status()`` says whether the disk takes the records (see ``flush``).
    Every live recorder is in ``ACTIVE``, so a hard exit can still ``flush_now`` them.
    """

    def __init__(self, journal: str | Path, *, device: str = "", sfreq: float = SFREQ,
                 flush_s: float = 0.25, fsync_s: float = 1.0, io_timeout_s: float = 10.0,
                 overwrite: bool = False, max_backlog_bytes: int = 256 << 20) -> None:
        self.journal = Path(journal)
        self.device = device
        self.sfreq = sfreq
        self.flush_s = flush_s
        self.fsync_s = fsync_s
        self.io_timeout_s = io_timeout_s
        self.overwrite = overwrite
        self.counters = Counters()
        self._fd = -1
        self._buf = bytearray()
        self._raw_first = -1
        self._raw_time = 0.0
        self._raw_parts: list[npt.NDArray[np.float32]] = []
        self._next_index = -1
        self._flush_task: asyncio.Task[None] | None = None
        self._io_lock = asyncio.Lock()
        self._last_fsync = 0.0
        self._closed = False
        self.flushed_samples = 0
        """Samples handed to the OS so far (survive ``kill -9``)."""
        self._pending_samples = 0
        self._backlog_samples = 0
        self.max_backlog_bytes = max_backlog_bytes
        self.disk_state = "ok"
        self.os_write = os.write  # the one write call: a test may put a failing disk here
        self._inflight: asyncio.Future[tuple[int, OSError | None]] | None = None
        self._writing: tuple[bytes, int, bool] = (b"", 0, False)

    async def start(self) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if self.overwrite else os.O_EXCL)
        if self.overwrite:
            flags |= os.O_TRUNC
        try:
            self._fd = os.open(self.journal, flags, 0o644)
        except FileExistsError as exc:
            raise RecordingError(
                f"journal {self.journal} already exists (an earlier recording did not finish)",
                hint=f"run `dreamstate recover {self.journal}` first, or delete it") from exc
        except OSError as exc:
            raise RecordingError(f"cannot create journal {self.journal}: {exc}",
                                 hint="check the folder is writable and has space") from exc
        header = {"version": 1, "sfreq": self.sfreq, "wall_start": time.time(),
                  "mono_start": time.monotonic(), "device": self.device, "pid": os.getpid()}
        self._buf += FILE_MAGIC + _record(REC_HEADER, json.dumps(header).encode())
        await self.flush(fsync=True)
        self._flush_task = asyncio.create_task(self._flusher(), name="journal-flush")
        ACTIVE.add(self)
        log.info("journal open", extra={"file": str(self.journal)})

    def add(self, reading: Reading) -> None:
        if self._closed:
            return
        if isinstance(reading, RawChunk):
            n = len(reading.samples)
            if n == 0:
                return
            if self._next_index >= 0 and reading.first_index != self._next_index:
                if reading.first_index > self._next_index:
                    self.counters.inc("gaps")
                    self.counters.inc("lost_samples", reading.first_index - self._next_index)
                else:
                    self.counters.inc("overlaps")
                self._end_raw()
            if not self._raw_parts:
                self._raw_first = reading.first_index
                self._raw_time = reading.time
            self._raw_parts.append(np.asarray(reading.samples, dtype=np.float32))
            self._next_index = reading.first_index + n
            self._pending_samples += n
            self.counters.inc("samples", n)
            return
        doc = event_doc(reading, self._next_index - 1 if self._next_index >= 0 else -1)
        if doc is not None:
            self._end_raw()  # keep file order = arrival order
            self._buf += encode_event_record(doc)
            self.counters.inc("events")

    def _end_raw(self) -> None:
        if self._raw_parts:
            samples = np.concatenate(self._raw_parts)
            self._buf += encode_raw_record(self._raw_first, self._raw_time, samples)
            self._raw_parts = []

    async def run(self, readings: AsyncIterator[Reading]) -> None:
        async for reading in readings:
            self.add(reading)

    def _write(self, data: bytes, fsync: bool) -> tuple[int, OSError | None]:
        """Write ``data`` (and fsync); returns the bytes written and the error that stopped it."""
        written = 0
        view = memoryview(data)
        try:
            while written < len(data):
                written += self.os_write(self._fd, view[written:])
            if fsync:
                os.fsync(self._fd)
        except OSError as exc:
            return written, exc
        return written, None

    async def flush(self, fsync: bool = False) -> None:
        """Hand buffered records to the OS (and fsync when asked), in a worker thread.

        Nothing is dropped when the disk fails: bytes not written stay at the front of the
        buffer and the next flush retries them, in order (a full disk, ``EIO``, a slow USB
        stick). The buffer is bounded by ``max_backlog_bytes`` (hours of EEG); only beyond it
        is the oldest backlog given up, counted in ``dropped_bytes``. ``status()`` tells.
        """
        async with self._io_lock:
            self._end_raw()
            if self._fd < 0:
                return
            if self._inflight is not None:  # a write that timed out earlier: wait for it first
                try:
                    result = await wait_for(asyncio.shield(self._inflight), self.io_timeout_s)
                except TimeoutError:
                    self.counters.inc("slow_writes")
                    return
                self._inflight = None
                self._settle(result)
            data = bytes(self._buf)
            if not data and not fsync:
                return
            self._buf.clear()
            samples = self._pending_samples
            self._pending_samples = 0
            future = asyncio.ensure_future(asyncio.to_thread(self._write, data, fsync))
            self._writing = (data, samples, fsync)
            try:
                result = await wait_for(asyncio.shield(future), self.io_timeout_s)
            except TimeoutError:
                self._inflight = future
                self.counters.inc("slow_writes")
                log.error("journal write took longer than %.0f s; records stay buffered and in order",
                          self.io_timeout_s, extra={"file": str(self.journal)})
                return
            self._settle(result)

    def _settle(self, result: tuple[int, OSError | None]) -> None:
        data, samples, fsync = self._writing
        written, error = result
        self.counters.inc("bytes_written", written)
        if error is None:
            self.flushed_samples += samples + self._backlog_samples
            self._backlog_samples = 0
            self.counters.inc("flushes")
            if fsync:
                self.counters.inc("fsyncs")
                self._last_fsync = time.monotonic()
            if self.disk_state != "ok":
                log.warning("journal writable again; the records held in memory are on disk now",
                            extra={"file": str(self.journal), "after": self.disk_state})
                self.disk_state = "ok"
            return
        self.counters.inc("write_errors")
        self._buf[0:0] = data[written:]  # unwritten bytes go back to the front, in order
        self._backlog_samples += samples
        state = "disk_full" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "write_error"
        if state != self.disk_state:
            hint = "free some space on that disk" if state == "disk_full" else "check the disk"
            log.error("journal write failed (%s): keeping the recording in memory and retrying every "
                      "%.2f s; %s", error.strerror or error, self.flush_s, hint,
                      extra={"file": str(self.journal), "errno": error.errno})
            self.disk_state = state
        over = len(self._buf) - self.max_backlog_bytes
        if over > 0:
            del self._buf[:over]
            self.counters.inc("dropped_bytes", over)
            log.error("journal backlog over %d MB: the oldest %d bytes are given up",
                      self.max_backlog_bytes >> 20, over, extra={"file": str(self.journal)})

    def status(self) -> dict[str, Any]:
        """``state``: ok | disk_full | write_error; ``buffered_s``: seconds of EEG held in
        memory because the disk refused them; ``file``: the journal."""
        held = self._backlog_samples + self._pending_samples
        return {"state": self.disk_state, "buffered_s": round(held / self.sfreq, 1), "file": str(self.journal)}

    def flush_now(self) -> None:
        """Write what is buffered at once, from any thread, without the event loop (a hard
        exit after a second SIGTERM calls this). Best effort: errors are swallowed."""
        if self._fd < 0:
            return
        self._end_raw()
        data = bytes(self._buf)
        with contextlib.suppress(OSError):
            written, _error = self._write(data, True)
            del self._buf[:written]

    async def _flusher(self) -> None:
        self._last_fsync = time.monotonic()
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush(fsync=time.monotonic() - self._last_fsync >= self.fsync_s)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
            self._flush_task = None
        if self._fd >= 0:
            self._end_raw()
            self._buf += _record(REC_END, json.dumps({"wall_end": time.time(),
                                                      **self.counters.snapshot()}).encode())
            await self.flush(fsync=True)
            deadline = time.monotonic() + self.io_timeout_s
            while (self._buf or self._inflight is not None) and time.monotonic() < deadline:
                await asyncio.sleep(self.flush_s)  # the disk is full or slow: give it a moment
                await self.flush(fsync=True)
            if self._buf or self._inflight is not None:
                log.error("journal closed with records the disk did not take; they are lost",
                          extra={"file": str(self.journal), "bytes": len(self._buf)})
            os.close(self._fd)
            self._fd = -1
        ACTIVE.discard(self)
        log.info("journal closed", extra={"file": str(self.journal), **self.counters.snapshot()})

    async def finalise(self, out: str | Path, *, keep_journal: bool = False,
                       timeout_s: float = 300.0) -> RecoverResult:
        await self.close()
        try:
            result = await wait_for(asyncio.to_thread(recover, self.journal, out),
                                            timeout_s)
        except TimeoutError as exc:
            raise RecordingError(f"writing FIF {out} took longer than {timeout_s:.0f} s",
                                 hint=f"the journal {self.journal} is intact; run "
                                      f"`dreamstate recover {self.journal}` later") from exc
        if not keep_journal:
            self.journal.unlink(missing_ok=True)
        log.info("recording saved", extra={"file": str(result.fif), "samples": result.samples,
                                           "gaps": result.gaps})
        return result
