"""Property tests for the ThinkGear parser: chunking, round trips, fuzz."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from dreamstate.devices.thinkgear import (
    KNOWN_CODES,
    AsicPower,
    Attention,
    BlinkStrength,
    DongleStatus,
    EegPower,
    HeartRateValue,
    LostRaw,
    Meditation,
    Packet,
    ParseItem,
    PoorSignal,
    Raw8Bit,
    RawMarker,
    RawValue,
    Row,
    RrInterval,
    ThinkGearParser,
    UnknownRow,
    _decode_payload,
    _raw_runs,
    encode_packet,
    encode_raw,
    encode_row,
    expand,
)

SETTINGS = settings(max_examples=150, deadline=None)

u8 = st.integers(0, 255)
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _unknown() -> st.SearchStrategy[UnknownRow]:
    def build(level: int, code: int, data: bytes) -> UnknownRow:
        return UnknownRow(level, code, data[:1] if code < 0x80 else data)

    codes = st.integers(0, 255).filter(lambda c: c != 0x55)
    return st.builds(build, st.integers(0, 4), codes, st.binary(min_size=1, max_size=12)).filter(
        lambda r: not (r.level == 0 and r.code in KNOWN_CODES))


def _dongle() -> st.SearchStrategy[DongleStatus]:
    return st.one_of(
        st.builds(DongleStatus, st.integers(0xD0, 0xD3), st.none() | st.integers(0, 0xFFFF),
                  st.none()),
        st.builds(DongleStatus, st.just(0xD4), st.none(), st.booleans()),
    )


rows_st: st.SearchStrategy[Row] = st.one_of(
    st.builds(RawValue, st.integers(-32768, 32767)),
    st.builds(PoorSignal, u8), st.builds(Attention, u8), st.builds(Meditation, u8),
    st.builds(BlinkStrength, u8), st.builds(HeartRateValue, u8), st.builds(Raw8Bit, u8),
    st.builds(RawMarker, u8), st.builds(RrInterval, st.integers(0, 0xFFFF)),
    st.builds(AsicPower, st.tuples(*[st.integers(0, 0xFFFFFF)] * 8)),
    st.builds(EegPower, st.tuples(*[f32] * 8)),
    _dongle(), _unknown(),
)


def _fits(rows: list[Row]) -> bool:
    return sum(len(encode_row(r)) for r in rows) <= 169


packets_st = st.lists(rows_st, max_size=6).filter(_fits)
# A realistic mix: mostly raw packets, some multi-row frames.
frames_st = st.lists(st.one_of(st.integers(-32768, 32767), packets_st), min_size=1, max_size=60)


def _encode(frames: list[int | list[Row]]) -> tuple[bytes, list[Packet]]:
    data = b"".join(encode_raw(f) if isinstance(f, int) else encode_packet(f) for f in frames)
    expected = [Packet((RawValue(f),)) if isinstance(f, int) else Packet(tuple(f)) for f in frames]
    return data, expected


def _feed_split(data: bytes, cuts: list[int]) -> list[ParseItem]:
    p = ThinkGearParser()
    out: list[ParseItem] = []
    prev = 0
    for c in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        out.extend(p.feed(data[prev:c]))
        prev = c
    return out


@SETTINGS
@given(frames_st)
def test_encode_then_parse_returns_the_input(frames: list[int | list[Row]]) -> None:
    data, expected = _encode(frames)
    p = ThinkGearParser()
    assert expand(p.feed(data)) == expected
    assert p.counters.get("frames") == len(expected)
    assert p.counters.get("resyncs") == 0
    assert p.pending <= 1  # a final checksum byte 0xAA may start the next frame


@SETTINGS
@given(frames_st, st.binary(max_size=40), st.lists(st.integers(0, 4000), max_size=12))
def test_any_split_gives_the_same_packets(frames: list[int | list[Row]], junk: bytes,
                                          cuts: list[int]) -> None:
    data, _ = _encode(frames)
    mid = len(data) // 2
    data = junk + data[:mid] + junk + b"\xaa" + data[mid:]
    whole = expand(ThinkGearParser().feed(data))
    assert expand(_feed_split(data, cuts)) == whole


@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    items = _feed_split(data, cuts)
    assert expand(items) == expand(ThinkGearParser().feed(data))


@SETTINGS
@given(st.lists(st.sampled_from([0xAA, 0x55, 0x04, 0x80, 0x02, 0x00, 0xFF, 0xD4, 0x83]),
                max_size=400),
       st.integers(-32768, 32767))
def test_sync_heavy_garbage_then_a_packet(garbage: list[int], value: int) -> None:
    """Whatever garbage came before, packets that follow are decoded once no frame starting in
    the garbage can reach them (a frame is at most 173 bytes)."""
    data = bytes(garbage) + encode_raw(value) * 30
    p = ThinkGearParser()
    items = expand(p.feed(data))
    raws = [r for it in items if isinstance(it, Packet) for r in it.rows if isinstance(r, RawValue)]
    assert raws[-5:] == [RawValue(value)] * 5
    assert p.pending <= 1  # a final checksum byte 0xAA may start the next frame


def reference_parse(buf: bytes) -> list[Packet | LostRaw]:
    """The documented rules, byte by byte, with the plain restart at the byte after the first
    SYNC of every rejected frame (the parser skips restarts that must fail the same way)."""
    out: list[Packet | LostRaw] = []
    n = len(buf)
    pos = 0
    last_rejected_j = -1
    while True:
        q = buf.find(b"\xaa\xaa", pos)
        if q < 0:
            return out
        j = q + 2
        while j < n and buf[j] == 0xAA:
            j += 1
        if j >= n:
            return out
        plen = buf[j]
        end = j + 1 + plen
        if plen <= 169 and end >= n:
            return out
        if plen > 169 or (~sum(buf[j + 1:end])) & 0xFF != buf[end]:
            if plen == 4 and buf[j + 1:j + 3] == b"\x80\x02" and j != last_rejected_j:
                out.append(LostRaw())
            last_rejected_j = j
            pos = q + 1
            continue
        rows = _decode_payload(buf[j + 1:end], dict.fromkeys(("row_overruns", "unknown_codes"), 0))
        if rows is None:
            last_rejected_j = j
            pos = q + 1
            continue
        out.append(Packet(rows))
        pos = end if buf[end] == 0xAA else end + 1


def _damage(data: bytes, how: int, at: int) -> bytes:
    if how == 0:
        return data
    if how == 1:  # flip one byte
        k = at % len(data)
        return data[:k] + bytes([data[k] ^ 0x5A]) + data[k + 1:]
    if how == 2:  # truncate
        return data[:1 + at % (len(data) - 1)] if len(data) > 1 else data
    return b"\xaa" + data  # extra SYNC


piece_st = st.one_of(
    st.tuples(st.integers(-32768, 32767), st.integers(0, 3), st.integers(0, 200)).map(
        lambda t: _damage(encode_raw(t[0]), t[1], t[2])),
    st.tuples(packets_st, st.integers(0, 3), st.integers(0, 200)).map(
        lambda t: _damage(encode_packet(t[0]), t[1], t[2])),
    st.lists(st.sampled_from([0xAA, 0xAA, 0x04, 0x80, 0x02, 0x00, 0x55, 0x20, 0xFF]),
             max_size=24).map(bytes),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(piece_st, max_size=40), st.lists(st.integers(0, 3000), max_size=6))
def test_matches_the_byte_by_byte_reference(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    assert expand(_feed_split(data, cuts)) == reference_parse(data)


def _raw_runs_brute(buf: bytes) -> tuple[list[int], list[int], list[int], list[int]]:
    """Values, run starts, run ends, first indexes: one position at a time."""
    vals: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    firsts: list[int] = []
    for i in range(len(buf) - 7):
        if buf[i:i + 5] == b"\xaa\xaa\x04\x80\x02" and (0x82 + sum(buf[i + 5:i + 8])) & 0xFF == 0xFF:
            if ends and ends[-1] == i:
                ends[-1] = i + 8
            else:
                starts.append(i)
                ends.append(i + 8)
                firsts.append(len(vals))
            vals.append(int.from_bytes(buf[i + 5:i + 7], "big", signed=True))
    return vals, starts, ends, firsts


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(-32768, 32767).map(encode_raw), piece_st), max_size=30),
       st.integers(0, 7), st.integers(0, 7))
def test_raw_finder_matches_a_brute_force_scan(pieces: list[bytes], head: int, tail: int) -> None:
    data = b"".join(pieces)
    data = data[head:len(data) - tail]  # packets cut at either end of the buffer
    vals, starts, ends, firsts = _raw_runs(data)
    assert (vals.tolist(), starts, ends, firsts) == _raw_runs_brute(data)
    assert not vals.flags.writeable


@SETTINGS
@given(st.tuples(u8, u8, u8), st.tuples(*[st.integers(0, 0xFFFFFF)] * 8), st.integers(0, 31), u8)
def test_the_1hz_packet_decodes_like_the_row_loop(values: tuple[int, int, int],
                                                  bands: tuple[int, int, int, int, int, int, int,
                                                               int],
                                                  at: int, byte: int) -> None:
    """The 1 Hz packet has a fast path; a leading RawMarker row forces the general row loop on
    the same bytes, and both must agree (also with one byte changed anywhere)."""
    poor, att, med = values
    rows = (PoorSignal(poor), AsicPower(bands), Attention(att), Meditation(med))
    payload = b"".join(encode_row(r) for r in rows)
    assert _decode_payload(payload, dict.fromkeys(("row_overruns", "unknown_codes"), 0)) == rows
    changed = payload[:at] + bytes([byte]) + payload[at + 1:]
    fast_stats = dict.fromkeys(("row_overruns", "unknown_codes"), 0)
    loop_stats = dict.fromkeys(("row_overruns", "unknown_codes"), 0)
    fast = _decode_payload(changed, fast_stats)
    loop = _decode_payload(encode_row(RawMarker(0)) + changed, loop_stats)
    assert loop == (None if fast is None else (RawMarker(0), *fast))
    assert fast_stats == loop_stats


def test_eeg_power_floats_are_big_endian() -> None:
    row = EegPower((1.5, 0.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0))
    assert encode_row(row)[2:6] == struct.pack(">f", 1.5)
