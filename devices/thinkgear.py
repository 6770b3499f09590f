"""ThinkGear serial protocol: an incremental, rescanning parser and an encoder. Pure; no I/O.

Frame: ``AA AA PLENGTH PAYLOAD CHKSUM`` with ``PLENGTH`` 0..169 and
``CHKSUM = ~sum(PAYLOAD) & 0xFF``. A PLENGTH byte that reads ``0xAA`` is one more SYNC byte.
Rows inside a payload are ``[0x55]* CODE [VLEN] VALUE``; the count of leading ``0x55`` bytes is
the extended-code level, codes >= 0x80 carry a VLEN byte.

What ``ThinkGearParser.feed`` returns
-------------------------------------
A list of items, in exact stream order:

* ``Packet(rows)``: one accepted frame and its decoded rows, in payload order.
* ``RawRun(values)``: N consecutive accepted frames, each holding exactly one level-0 raw
  row (``AA AA 04 80 02 hi lo chk``), as an int16 array. This is the vectorised fast path
  for the 512 Hz raw stream; ``RawRun.packets()`` expands it to N ``Packet((RawValue(v),))``.
* ``LostRaw()``: a rejected frame that was evidently one raw packet (PLENGTH 4, ``80 02``
  header, bad checksum). A device front end advances its sample counter by one, so the gap is
  visible downstream.

``expand(items)`` turns any item list into one ``Packet`` per frame (``LostRaw`` kept), which
is independent of how the byte stream was chunked: any split of the same bytes fed in order
gives the same expanded list.

Recovery rules
--------------
A frame is rejected when its checksum is wrong, its PLENGTH is over 169, a row runs past the
end of the payload, or a known level-0 code has the wrong VLEN (e.g. raw with VLEN 3). After a
rejection the search restarts at the byte after the rejected frame's first SYNC, so an intact
packet hidden inside garbage is still found. (Restarts that would read the very same
PLENGTH byte again, i.e. inside a run of ``AA`` bytes, are skipped: they must fail the same
way.) After an accepted frame whose checksum byte is ``0xAA``, the search for the next frame
starts at that byte: a packet truncated one byte short borrows the next packet's first SYNC as
its checksum, and the next packet is still found (a whole stream parses the same either way,
since ``AA AA AA`` is a SYNC pair plus one more SYNC). The one exception to the rejection rules
is the MindWave Mobile 2 quirk: level-0 ``BA``/``BC`` rows whose VLEN runs past a
checksum-valid payload; the rows before them are kept, ``row_overruns`` counts it, and parsing
goes on after the frame. Nothing in here raises on any input bytes. ``flush()`` ends a finite
stream: a frame still waiting for bytes that will never come is rejected like the others.

Speed: every checksum-valid raw packet in a fed buffer is found at once with numpy (masks over
the whole buffer for the ``AA AA 04 80`` header read as an unaligned u32, the VLEN byte and
the uint8-wrapped checksum, after a ``bytes`` pre-check); the Python loop only visits run
boundaries, other frames and rejections, and tests a checksum with ``zlib.adler32``. The
byte-by-byte rules above are the reference (``tests/test_thinkgear_properties.py`` checks the
two agree on damaged streams).
"""

from __future__ import annotations

import bisect
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.metrics import Counters

SYNC: Final = 0xAA
EXCODE: Final = 0x55
MAX_PLENGTH: Final = 169
RAW_PACKET_LEN: Final = 8

CODE_POOR_SIGNAL: Final = 0x02
CODE_HEART_RATE: Final = 0x03
CODE_ATTENTION: Final = 0x04
CODE_MEDITATION: Final = 0x05
CODE_RAW_8BIT: Final = 0x06
CODE_RAW_MARKER: Final = 0x07
CODE_BLINK: Final = 0x16
CODE_RAW: Final = 0x80
CODE_EEG_POWER: Final = 0x81
CODE_ASIC_POWER: Final = 0x83
CODE_RR_INTERVAL: Final = 0x86
CODE_DONGLE_CONNECTED: Final = 0xD0
CODE_DONGLE_NOT_FOUND: Final = 0xD1
CODE_DONGLE_DISCONNECTED: Final = 0xD2
CODE_DONGLE_DENIED: Final = 0xD3
CODE_DONGLE_STANDBY: Final = 0xD4
QUIRK_OVERRUN_CODES: Final = frozenset({0xBA, 0xBC})
"""MindWave Mobile 2 sends these with a VLEN that runs past the payload."""

CMD_CONNECT: Final = 0xC0
CMD_DISCONNECT: Final = 0xC1
CMD_AUTO_CONNECT: Final = 0xC2

_SHORT_CODES: Final = frozenset({CODE_POOR_SIGNAL, CODE_HEART_RATE, CODE_ATTENTION,
                                 CODE_MEDITATION, CODE_RAW_8BIT, CODE_RAW_MARKER, CODE_BLINK})
_DONGLE_CODES: Final = frozenset(range(CODE_DONGLE_CONNECTED, CODE_DONGLE_STANDBY + 1))
KNOWN_CODES: Final = _SHORT_CODES | _DONGLE_CODES | {CODE_RAW, CODE_EEG_POWER, CODE_ASIC_POWER,
                                                     CODE_RR_INTERVAL}
"""Level-0 codes with a decoded type. Everything else becomes ``UnknownRow``."""

_SYNC2: Final = b"\xaa\xaa"
_AA_RUN: Final = re.compile(rb"\xaa*")
_EEG_POWER: Final = struct.Struct(">8f")
_adler32: Final = zlib.adler32
_object_new: Final = object.__new__
_object_setattr: Final = object.__setattr__
_RAW_HEAD: Final = b"\xaa\xaa\x04\x80\x02"
_RAW_HEAD4_LE: Final = 0x80_04_AA_AA
"""``AA AA 04 80`` read as a little-endian u32."""
_RAW_SUM3: Final = (0xFF - CODE_RAW - 0x02) & 0xFF
"""``hi + lo + chk`` (mod 256) of a raw packet with a valid checksum."""
_NO_VALUES: Final = np.zeros(0, dtype=np.int16)
_NO_VALUES.flags.writeable = False


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class RawValue:
    """Code 0x80: one raw sample, signed 16-bit counts."""

    value: int


@dataclass(frozen=True, slots=True)
class PoorSignal:
    """Code 0x02: 0 is good contact, 200 means off the head."""

    value: int


@dataclass(frozen=True, slots=True)
class HeartRateValue:
    """Code 0x03: heart rate, beats per minute."""

    value: int


@dataclass(frozen=True, slots=True)
class Attention:
    """Code 0x04: eSense attention 0..100."""

    value: int


@dataclass(frozen=True, slots=True)
class Meditation:
    """Code 0x05: eSense meditation 0..100."""

    value: int


@dataclass(frozen=True, slots=True)
class Raw8Bit:
    """Code 0x06: 8-bit raw sample."""

    value: int


@dataclass(frozen=True, slots=True)
class RawMarker:
    """Code 0x07: raw marker section start (value 0)."""

    value: int


@dataclass(frozen=True, slots=True)
class BlinkStrength:
    """Code 0x16: blink strength 1..255."""

    value: int


@dataclass(frozen=True, slots=True)
class RrInterval:
    """Code 0x86: R-R interval in milliseconds (u16)."""

    ms: int


@dataclass(frozen=True, slots=True)
class EegPower:
    """Code 0x81: eight big-endian float32 band powers."""

    values: tuple[float, float, float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class AsicPower:
    """Code 0x83: eight u24 band powers: delta, theta, low/high alpha, low/high beta,
    low/mid gamma."""

    values: tuple[int, int, int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class DongleStatus:
    """Codes 0xD0..0xD4 from the USB dongle.

    ``headset_id`` is set for D0..D3 when the dongle sent one (VLEN 2); ``scanning`` is set for
    D4 only (False = standby, True = scanning).
    """

    code: int
    headset_id: int | None = None
    scanning: bool | None = None


@dataclass(frozen=True, slots=True)
class UnknownRow:
    """A row this parser has no type for: any code at an extended level > 0, or an unknown
    level-0 code. Kept verbatim so nothing is lost."""

    level: int
    code: int
    data: bytes


Row = (RawValue | PoorSignal | HeartRateValue | Attention | Meditation | Raw8Bit | RawMarker
       | BlinkStrength | RrInterval | EegPower | AsicPower | DongleStatus | UnknownRow)


@dataclass(frozen=True, slots=True)
class Packet:
    """One accepted frame: its rows in payload order (may be empty)."""

    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True, eq=False)
class RawRun:
    """Consecutive accepted frames that each hold exactly one level-0 raw row.

    ``values`` is a read-only int16 array, one sample per frame, in stream order.
    """

    values: npt.NDArray[np.int16]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def packets(self) -> list[Packet]:
        return [Packet((RawValue(v),)) for v in self.values.tolist()]


@dataclass(frozen=True, slots=True)
class LostRaw:
    """A rejected frame that was evidently one raw packet (one sample is missing here)."""


ParseItem = Packet | RawRun | LostRaw
LOST_RAW: Final = LostRaw()


def _new_run(values: npt.NDArray[np.int16]) -> RawRun:
    """``RawRun(values)`` without the frozen dataclass ``__init__`` (the parser's hot path)."""
    run = _object_new(RawRun)
    _object_setattr(run, "values", values)
    return run


def expand(items: Iterable[ParseItem]) -> list[Packet | LostRaw]:
    """One ``Packet`` per frame (``RawRun`` expanded), ``LostRaw`` kept, stream order."""
    out: list[Packet | LostRaw] = []
    for item in items:
        if isinstance(item, RawRun):
            out.extend(item.packets())
        else:
            out.append(item)
    return out


# --------------------------------------------------------------------------- parser


_COUNTER_NAMES: Final = ("frames", "bytes", "checksum_errors", "resyncs", "length_errors",
                         "unknown_codes", "row_overruns", "malformed_frames", "skipped_bytes",
                         "lost_raw_frames", "truncated_frames")


class ThinkGearParser:
    """Incremental ThinkGear stream parser.

    After ``feed(data)``: every frame that is complete within the bytes fed so far has been
    returned exactly once (in stream order), and at most one incomplete frame's bytes are kept
    for the next call. ``counters`` holds ``frames`` (accepted), ``bytes`` (fed),
    ``checksum_errors``, ``length_errors`` (PLENGTH > 169), ``malformed_frames`` (a row overran
    the payload or a known code had a wrong VLEN), ``resyncs`` (rejected frames: the search
    restarted), ``skipped_bytes`` (bytes consumed outside accepted frames), ``unknown_codes``,
    ``row_overruns`` (rows running past the payload, incl. MindWave Mobile 2 BA/BC) and
    ``lost_raw_frames`` (``LostRaw`` items emitted), ``truncated_frames`` (cut off by the end
    of a stream, see ``flush()``). ``reset()`` drops the buffered bytes (use after a
    reconnect); counters keep counting.
    """

    __slots__ = ("_buf", "counters")

    def __init__(self, counters: Counters | None = None) -> None:
        self._buf = b""
        self.counters = counters if counters is not None else Counters()

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        self._buf = b""

    def flush(self) -> list[ParseItem]:
        """End of stream (a file or replay): no more bytes will come. A frame still waiting for
        its bytes is rejected (counted ``truncated_frames``) and the held-back bytes are searched
        for complete frames. After it, nothing is held back."""
        return self.feed(b"", final=True)

    def feed(self, data: bytes | bytearray | memoryview, *,
             final: bool = False) -> list[ParseItem]:
        buf = self._buf + bytes(data) if self._buf else bytes(data)
        n = len(buf)
        out: list[ParseItem] = []
        emit = out.append
        find = buf.find
        new_run = _new_run
        new_obj = _object_new
        set_attr = _object_setattr
        stats = {"row_overruns": 0, "unknown_codes": 0}
        frames = checksum_errors = length_errors = malformed = lost = truncated = 0
        vals, run_starts, run_ends, run_first = _raw_runs(buf)
        nruns = len(run_starts)
        ri = 0  # the first run that may still lie ahead
        next_run = run_starts[0] if nruns else n + 1
        pos = 0
        keep = -1
        accepted = 0
        while True:
            q = find(b"\xaa\xaa", pos)
            if q < 0:
                keep = n - 1 if n and buf[n - 1] == SYNC and pos < n and not final else n
                break
            if q == next_run:  # the common case: a run of raw packets starts here
                first = run_first[ri]
                ri += 1
                if ri < nruns:
                    last = run_first[ri]
                    pos = run_ends[ri - 1]
                    next_run = run_starts[ri]
                else:
                    last = len(vals)
                    pos = run_ends[ri - 1]
                    next_run = n + 1
                run = new_obj(RawRun)  # RawRun(values) without the dataclass __init__
                set_attr(run, "values", vals[first:last])
                emit(run)
                frames += last - first
                if buf[pos - 1] == 0xAA:  # the checksum byte may be the next frame's SYNC
                    pos -= 1
                accepted += pos - q
                continue
            if q > next_run:
                # q may start a run of raw packets, or land inside one on its 8-byte grid
                if q >= run_ends[ri]:
                    ri = bisect.bisect_right(run_ends, q, ri)
                    next_run = run_starts[ri] if ri < nruns else n + 1
                if q >= next_run and (q - next_run) % RAW_PACKET_LEN == 0:
                    first = run_first[ri] + (q - next_run) // RAW_PACKET_LEN
                    last = run_first[ri] + (run_ends[ri] - next_run) // RAW_PACKET_LEN
                    emit(new_run(vals[first:last]))
                    frames += last - first
                    pos = run_ends[ri]
                    if buf[pos - 1] == SYNC:  # the checksum byte may be the next frame's SYNC
                        pos -= 1
                    accepted += pos - q
                    ri += 1
                    next_run = run_starts[ri] if ri < nruns else n + 1
                    continue
            j = q + 2
            if j < n and buf[j] == SYNC:
                j += 1
                if j < n and buf[j] == SYNC:
                    j = _AA_RUN.match(buf, j).end()  # type: ignore[union-attr]
                r0 = j - 2  # the frame read here is the one read from r0, no extra SYNC
                if r0 == next_run:  # a run of raw packets starts at r0
                    first = run_first[ri]
                    ri += 1
                    if ri < nruns:
                        last = run_first[ri]
                        pos = run_ends[ri - 1]
                        next_run = run_starts[ri]
                    else:
                        last = len(vals)
                        pos = run_ends[ri - 1]
                        next_run = n + 1
                    emit(new_run(vals[first:last]))
                    frames += last - first
                    if buf[pos - 1] == 0xAA:
                        pos -= 1
                    accepted += pos - q
                    continue
                if nruns and r0 >= next_run and j < n and buf[j] == 4:
                    rr = bisect.bisect_right(run_ends, r0, ri)
                    if rr < nruns and (r0 - run_starts[rr]) % RAW_PACKET_LEN == 0 \
                            and run_starts[rr] <= r0:
                        first = run_first[rr] + (r0 - run_starts[rr]) // RAW_PACKET_LEN
                        last = run_first[rr + 1] if rr + 1 < nruns else len(vals)
                        emit(new_run(vals[first:last]))
                        frames += last - first
                        pos = run_ends[rr]
                        if buf[pos - 1] == SYNC:
                            pos -= 1
                        accepted += pos - q
                        ri = rr + 1
                        next_run = run_starts[ri] if ri < nruns else n + 1
                        continue
            if j >= n:
                keep = n if final else q
                break
            plen = buf[j]
            if plen > MAX_PLENGTH:
                length_errors += 1
                pos = j
                continue
            end = j + 1 + plen
            if end >= n:
                if final:
                    truncated += 1
                    pos = j
                    continue
                keep = q
                break
            # A frame is valid when sum(payload) + chksum ends in 0xFF. Adler-32's low half is
            # 1 + the byte sum (no modulo reduction for <= 170 bytes), so this is that test.
            if _adler32(buf[j + 1:end + 1]) & 0xFF:
                checksum_errors += 1
                if plen == 4 and buf[j + 1] == CODE_RAW and buf[j + 2] == 0x02:
                    emit(LOST_RAW)
                    lost += 1
                pos = j
                continue
            rows = _decode_payload(buf[j + 1:end], stats)
            if rows is None:
                malformed += 1
                pos = j
                continue
            emit(Packet(rows))
            frames += 1
            pos = end if buf[end] == SYNC else end + 1
            accepted += pos - q
        self._buf = buf[keep:]
        inc = self.counters.inc
        if data:
            inc("bytes", len(data))
        if frames:
            inc("frames", frames)
        if keep != accepted:
            inc("skipped_bytes", keep - accepted)
        resyncs = checksum_errors + length_errors + malformed + truncated
        if resyncs:
            inc("resyncs", resyncs)
            for name, value in (("checksum_errors", checksum_errors),
                                ("length_errors", length_errors),
                                ("malformed_frames", malformed), ("truncated_frames", truncated),
                                ("lost_raw_frames", lost)):
                if value:
                    inc(name, value)
        for name, value in stats.items():
            if value:
                inc(name, value)
        return out


def _raw_runs(buf: bytes) -> tuple[npt.NDArray[np.int16], list[int], list[int], list[int]]:
    """Every complete, checksum-valid ``AA AA 04 80 02 hi lo chk`` in ``buf``, grouped in runs
    (consecutive ones 8 bytes apart). Returns their int16 values (read-only) and, per run, its
    start position, end position (exclusive) and the index of its first value."""
    n = len(buf)
    if n < RAW_PACKET_LEN or _RAW_HEAD not in buf:
        return _NO_VALUES, [], [], []
    m = n - RAW_PACKET_LEN + 1  # the positions where a whole packet fits
    a = np.frombuffer(buf, dtype=np.uint8)
    # every 4-byte window as one little-endian u32 (overlapping, unaligned, no copy)
    w4: npt.NDArray[np.uint32] = np.ndarray((m,), dtype="<u4", buffer=buf, strides=(1,))
    ok = w4 == _RAW_HEAD4_LE  # AA AA 04 80
    ok &= a[4:n - 3] == 2  # VLEN 2
    s = a[5:n - 2] + a[6:n - 1]  # hi + lo + chk, wrapping like the checksum (uint8)
    s += a[7:]
    ok &= s == _RAW_SUM3
    c = ok.nonzero()[0]
    if c.shape[0] == 0:
        return _NO_VALUES, [], [], []
    # hi lo of each packet read in place as a big-endian int16, gathered and made native
    be: npt.NDArray[np.int16] = np.ndarray((m,), dtype=">i2", buffer=buf, offset=5,
                                           strides=(1,))
    vals = be[c].astype(np.int16)
    vals.flags.writeable = False
    brk = ((c[1:] - c[:-1]) != RAW_PACKET_LEN).nonzero()[0]  # the last packet of each run but
    first = int(c[0])                                          # the last run
    end = int(c[-1]) + RAW_PACKET_LEN
    if brk.shape[0] == 0:
        return vals, [first], [end], [0]
    nxt = brk + 1
    firsts: list[int] = nxt.tolist()
    firsts.insert(0, 0)
    starts: list[int] = c[nxt].tolist()
    starts.insert(0, first)
    ends: list[int] = (c[brk] + RAW_PACKET_LEN).tolist()
    ends.append(end)
    return vals, starts, ends, firsts


def _decode_payload(p: bytes, stats: dict[str, int]) -> tuple[Row, ...] | None:
    """Rows of a checksum-valid payload, or None when the frame must be rejected."""
    if (len(p) == 32 and p[0] == CODE_POOR_SIGNAL and p[2] == CODE_ASIC_POWER and p[3] == 24
            and p[28] == CODE_ATTENTION and p[30] == CODE_MEDITATION):
        # the 1 Hz packet in its datasheet layout: the same rows the loop below decodes
        v = int.from_bytes(p[4:28], "big")
        return (PoorSignal(p[1]),
                AsicPower((v >> 168, (v >> 144) & 0xFFFFFF, (v >> 120) & 0xFFFFFF,
                           (v >> 96) & 0xFFFFFF, (v >> 72) & 0xFFFFFF, (v >> 48) & 0xFFFFFF,
                           (v >> 24) & 0xFFFFFF, v & 0xFFFFFF)),
                Attention(p[29]), Meditation(p[31]))
    rows: list[Row] = []
    n = len(p)
    i = 0
    while i < n:
        level = 0
        while i < n and p[i] == EXCODE:
            level += 1
            i += 1
        if i >= n:
            stats["row_overruns"] += 1
            return None
        code = p[i]
        i += 1
        if code >= 0x80:
            if i >= n:
                stats["row_overruns"] += 1
                return None
            vlen = p[i]
            i += 1
        else:
            vlen = 1
        if i + vlen > n:
            stats["row_overruns"] += 1
            if level == 0 and code in QUIRK_OVERRUN_CODES:
                return tuple(rows)
            return None
        data = p[i:i + vlen]
        i += vlen
        if level == 0 and code in KNOWN_CODES:
            row = _decode_known(code, data)
            if row is None:
                return None
            rows.append(row)
        else:
            stats["unknown_codes"] += 1
            rows.append(UnknownRow(level, code, data))
    return tuple(rows)


def _decode_known(code: int, data: bytes) -> Row | None:
    """Decode a level-0 known code; None when its VLEN is not the documented one."""
    vlen = len(data)
    if code < 0x80:
        v = data[0]
        if code == CODE_POOR_SIGNAL:
            return PoorSignal(v)
        if code == CODE_ATTENTION:
            return Attention(v)
        if code == CODE_MEDITATION:
            return Meditation(v)
        if code == CODE_BLINK:
            return BlinkStrength(v)
        if code == CODE_HEART_RATE:
            return HeartRateValue(v)
        if code == CODE_RAW_8BIT:
            return Raw8Bit(v)
        return RawMarker(v)
    if code == CODE_RAW:
        return RawValue(int.from_bytes(data, "big", signed=True)) if vlen == 2 else None
    if code == CODE_ASIC_POWER:
        if vlen != 24:
            return None
        return AsicPower((
            int.from_bytes(data[0:3], "big"), int.from_bytes(data[3:6], "big"),
            int.from_bytes(data[6:9], "big"), int.from_bytes(data[9:12], "big"),
            int.from_bytes(data[12:15], "big"), int.from_bytes(data[15:18], "big"),
            int.from_bytes(data[18:21], "big"), int.from_bytes(data[21:24], "big")))
    if code == CODE_EEG_POWER:
        return EegPower(_EEG_POWER.unpack(data)) if vlen == 32 else None
    if code == CODE_RR_INTERVAL:
        return RrInterval(int.from_bytes(data, "big")) if vlen == 2 else None
    if code == CODE_DONGLE_STANDBY:
        return DongleStatus(code, None, data[0] != 0) if vlen == 1 else None
    # D0..D3: a headset id (VLEN 2) or nothing (VLEN 0, e.g. not found after auto-connect)
    if vlen == 2:
        return DongleStatus(code, int.from_bytes(data, "big"), None)
    return DongleStatus(code, None, None) if vlen == 0 else None


# --------------------------------------------------------------------------- encoder


def checksum(payload: bytes) -> int:
    """``~sum(payload) & 0xFF``."""
    return (~sum(payload)) & 0xFF


def _short(code: int, value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"code 0x{code:02X}: value {value} does not fit one byte (0..255)")
    return bytes((code, value))


def encode_row(row: Row) -> bytes:
    """The payload bytes of one row (``[0x55]* CODE [VLEN] VALUE``)."""
    if isinstance(row, RawValue):
        if not -32768 <= row.value <= 32767:
            raise ValueError(f"raw value {row.value} does not fit int16")
        return bytes((CODE_RAW, 2)) + row.value.to_bytes(2, "big", signed=True)
    if isinstance(row, PoorSignal):
        return _short(CODE_POOR_SIGNAL, row.value)
    if isinstance(row, Attention):
        return _short(CODE_ATTENTION, row.value)
    if isinstance(row, Meditation):
        return _short(CODE_MEDITATION, row.value)
    if isinstance(row, BlinkStrength):
        return _short(CODE_BLINK, row.value)
    if isinstance(row, HeartRateValue):
        return _short(CODE_HEART_RATE, row.value)
    if isinstance(row, Raw8Bit):
        return _short(CODE_RAW_8BIT, row.value)
    if isinstance(row, RawMarker):
        return _short(CODE_RAW_MARKER, row.value)
    if isinstance(row, RrInterval):
        if not 0 <= row.ms <= 0xFFFF:
            raise ValueError(f"R-R interval {row.ms} ms does not fit u16")
        return bytes((CODE_RR_INTERVAL, 2)) + row.ms.to_bytes(2, "big")
    if isinstance(row, AsicPower):
        return encode_asic_power(row.values)
    if isinstance(row, EegPower):
        if len(row.values) != 8:
            raise ValueError(f"EEG power needs 8 values, got {len(row.values)}")
        return bytes((CODE_EEG_POWER, 32)) + _EEG_POWER.pack(*row.values)
    if isinstance(row, DongleStatus):
        return encode_dongle_status(row.code, row.headset_id, row.scanning)
    return encode_unknown(row.level, row.code, row.data)


def encode_asic_power(values: Sequence[int]) -> bytes:
    """Row 0x83: eight u24 band powers (delta .. mid gamma)."""
    if len(values) != 8:
        raise ValueError(f"ASIC power needs 8 band values, got {len(values)}")
    out = bytearray((CODE_ASIC_POWER, 24))
    for v in values:
        iv = int(v)
        if not 0 <= iv <= 0xFFFFFF:
            raise ValueError(f"ASIC band power {iv} does not fit u24 (0..16777215)")
        out += iv.to_bytes(3, "big")
    return bytes(out)


def encode_dongle_status(code: int, headset_id: int | None = None,
                         scanning: bool | None = None) -> bytes:
    """Row 0xD0..0xD4. D0..D3 carry an optional headset id; D4 carries standby/scanning."""
    if code == CODE_DONGLE_STANDBY:
        if scanning is None or headset_id is not None:
            raise ValueError("dongle 0xD4 carries scanning=True/False and no headset id")
        return bytes((code, 1, 1 if scanning else 0))
    if code not in _DONGLE_CODES:
        raise ValueError(f"0x{code:02X} is not a dongle status code (0xD0..0xD4)")
    if scanning is not None:
        raise ValueError(f"dongle 0x{code:02X} carries no scanning flag")
    if headset_id is None:
        return bytes((code, 0))
    if not 0 <= headset_id <= 0xFFFF:
        raise ValueError(f"headset id {headset_id} does not fit u16")
    return bytes((code, 2)) + headset_id.to_bytes(2, "big")


def encode_unknown(level: int, code: int, data: bytes) -> bytes:
    """A verbatim row at any extended level (level 0 only for codes without a decoded type)."""
    if level < 0:
        raise ValueError(f"extended level must be >= 0, got {level}")
    if code == EXCODE or not 0 <= code <= 0xFF:
        raise ValueError(f"row code 0x{code:02X} is not a valid code")
    if level == 0 and code in KNOWN_CODES:
        raise ValueError(f"level-0 code 0x{code:02X} has a decoded type; encode that instead")
    if code < 0x80:
        if len(data) != 1:
            raise ValueError(f"code 0x{code:02X} (< 0x80) carries exactly 1 byte, got {len(data)}")
        return bytes([EXCODE] * level + [code]) + data
    if len(data) > MAX_PLENGTH:
        raise ValueError(f"row data of {len(data)} bytes cannot fit a payload")
    return bytes([EXCODE] * level + [code, len(data)]) + data


def encode_payload(payload: bytes) -> bytes:
    """Frame an already-encoded payload: ``AA AA len payload checksum``."""
    if len(payload) > MAX_PLENGTH:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PLENGTH}")
    return bytes((SYNC, SYNC, len(payload))) + payload + bytes((checksum(payload),))


def encode_packet(rows: Iterable[Row]) -> bytes:
    """A whole frame for ``rows`` (in order) with its checksum."""
    return encode_payload(b"".join(encode_row(r) for r in rows))


def encode_raw(value: int) -> bytes:
    """The 8-byte raw packet ``AA AA 04 80 02 hi lo chk``."""
    v = int(value) & 0xFFFF
    hi, lo = v >> 8, v & 0xFF
    return bytes((SYNC, SYNC, 4, CODE_RAW, 2, hi, lo, (~(CODE_RAW + 2 + hi + lo)) & 0xFF))


def encode_raw_block(values: npt.ArrayLike) -> bytes:
    """Many raw packets at once (vectorised ``encode_raw``), int16 values."""
    v = np.asarray(values, dtype=np.int64).astype(np.int16).view(np.uint16)
    out = np.empty((v.shape[0], RAW_PACKET_LEN), dtype=np.uint8)
    out[:, 0] = SYNC
    out[:, 1] = SYNC
    out[:, 2] = 4
    out[:, 3] = CODE_RAW
    out[:, 4] = 2
    hi = (v >> 8).astype(np.uint8)
    lo = (v & 0xFF).astype(np.uint8)
    out[:, 5] = hi
    out[:, 6] = lo
    out[:, 7] = (~((hi.astype(np.int64) + lo + CODE_RAW + 2) & 0xFF)) & 0xFF
    return out.tobytes()


def encode_status_packet(poor_signal: int, attention: int, meditation: int,
                         bands8: Sequence[int]) -> bytes:
    """The 36-byte 1 Hz packet, datasheet layout: poor signal, ASIC power, attention,
    meditation."""
    return encode_payload(_short(CODE_POOR_SIGNAL, poor_signal) + encode_asic_power(bands8)
                          + _short(CODE_ATTENTION, attention)
                          + _short(CODE_MEDITATION, meditation))


def encode_blink(strength: int) -> bytes:
    """A blink packet ``AA AA 02 16 ss chk``."""
    return encode_packet((BlinkStrength(strength),))


def dongle_command(headset_id: int | None) -> bytes:
    """``C2`` (auto-connect) when ``headset_id`` is None, else ``C0 idH idL``."""
    if headset_id is None:
        return bytes((CMD_AUTO_CONNECT,))
    if not 0 <= headset_id <= 0xFFFF:
        raise ValueError(f"headset id {headset_id} does not fit u16 (0..65535)")
    return bytes((CMD_CONNECT, headset_id >> 8, headset_id & 0xFF))


DISCONNECT_COMMAND: Final = bytes((CMD_DISCONNECT,))
