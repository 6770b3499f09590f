"""ThinkGear parser and encoder: datasheet vectors, recovery rules, extended levels, quirks."""

from __future__ import annotations

import numpy as np
import pytest

from dreamstate.devices.thinkgear import (
    LOST_RAW,
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
    RawRun,
    RawValue,
    Row,
    RrInterval,
    ThinkGearParser,
    UnknownRow,
    checksum,
    dongle_command,
    encode_asic_power,
    encode_dongle_status,
    encode_packet,
    encode_payload,
    encode_raw,
    encode_raw_block,
    encode_status_packet,
    encode_unknown,
    expand,
)

DATASHEET = bytes.fromhex(
    "AAAA20 0200 8318 000094 000042 00000B 000064 00004D 00003D 000007 000005 040D 053D 34"
    .replace(" ", ""))


def parse(data: bytes, parser: ThinkGearParser | None = None) -> list[Packet | LostRaw]:
    return expand((parser or ThinkGearParser()).feed(data))


def rows(items: list[Packet | LostRaw]) -> list[object]:
    out: list[object] = []
    for item in items:
        if isinstance(item, Packet):
            out.extend(item.rows)
    return out


# ----------------------------------------------------------------- datasheet and peer vectors


def test_datasheet_packet() -> None:
    p = ThinkGearParser()
    assert parse(DATASHEET, p) == [Packet((PoorSignal(0), AsicPower((148, 66, 11, 100, 77, 61, 7, 5)),
                                           Attention(13), Meditation(61)))]
    assert p.counters.get("frames") == 1
    assert p.counters.get("checksum_errors") == 0
    assert p.counters.get("bytes") == 36


@pytest.mark.parametrize(("hexstr", "value"), [
    ("AAAA048002002855", 40),           # checksum byte equals EXCODE
    ("AAAA0480028000FD", -32768),
    ("AAAA048002AAAA29", -21846),       # data bytes equal SYNC
])
def test_raw_vectors(hexstr: str, value: int) -> None:
    data = bytes.fromhex(hexstr)
    assert parse(data) == [Packet((RawValue(value),))]
    assert encode_raw(value) == data
    # inside a run (vectorised fast path) they decode the same
    items = ThinkGearParser().feed(data * 5)
    assert len(items) == 1 and isinstance(items[0], RawRun)
    assert items[0].values.tolist() == [value] * 5


def test_dongle_vectors() -> None:
    assert parse(bytes.fromhex("AAAA03D401002A")) == [Packet((DongleStatus(0xD4, None, False),))]
    assert parse(bytes.fromhex("AAAA04D202A16C1E")) == [Packet((DongleStatus(0xD2, 0xA16C, None),))]
    assert encode_packet([DongleStatus(0xD4, None, False)]) == bytes.fromhex("AAAA03D401002A")
    assert encode_packet([DongleStatus(0xD2, 0xA16C)]) == bytes.fromhex("AAAA04D202A16C1E")


@pytest.mark.parametrize("status", [
    DongleStatus(0xD0, 0x1234), DongleStatus(0xD1, 0x1234), DongleStatus(0xD1),
    DongleStatus(0xD2, 7), DongleStatus(0xD3), DongleStatus(0xD3, 1),
    DongleStatus(0xD4, None, True), DongleStatus(0xD4, None, False),
])
def test_every_dongle_status_round_trips(status: DongleStatus) -> None:
    assert parse(encode_packet([status])) == [Packet((status,))]


def test_encode_status_packet_is_the_datasheet_packet() -> None:
    pkt = encode_status_packet(0, 13, 61, [148, 66, 11, 100, 77, 61, 7, 5])
    assert pkt == DATASHEET
    assert len(pkt) == 36


def test_every_level0_code_decodes() -> None:
    all_rows: list[Row] = [PoorSignal(200), HeartRateValue(200), Attention(100), Meditation(0), Raw8Bit(17),
                RawMarker(0), BlinkStrength(255), RawValue(-1), RrInterval(812),
                EegPower((1.0, 2.5, -3.0, 0.0, 1e6, 7.25, 0.5, 8.0)),
                AsicPower((0, 1, 2, 3, 4, 5, 6, 0xFFFFFF))]
    assert parse(encode_packet(all_rows)) == [Packet(tuple(all_rows))]
    # HEART_RATE 200 is unsigned (thinkgear-py3 gave -56)
    assert parse(encode_packet([HeartRateValue(200)])) == [Packet((HeartRateValue(200),))]


# ----------------------------------------------------------------- recovery


def test_extra_sync_bytes_before_plength() -> None:
    raw = encode_raw(123)
    p = ThinkGearParser()
    assert parse(b"\xaa" + raw + b"\xaa\xaa" + raw + b"\xaa" * 7 + raw, p) == \
        [Packet((RawValue(123),))] * 3
    assert p.counters.get("resyncs") == 0
    assert p.counters.get("frames") == 3


def test_extra_sync_before_a_run_keeps_the_fast_path() -> None:
    p = ThinkGearParser()
    items = p.feed(b"\x01\xaa" + encode_raw_block(range(10)) + b"\xaa\xaa" + encode_raw_block(range(3)))
    assert [type(i) for i in items] == [RawRun, RawRun]
    assert isinstance(items[0], RawRun) and items[0].values.tolist() == list(range(10))
    assert isinstance(items[1], RawRun) and items[1].values.tolist() == [0, 1, 2]
    assert p.counters.get("frames") == 13
    assert p.counters.get("skipped_bytes") == 1


def test_plength_over_169_resyncs() -> None:
    p = ThinkGearParser()
    data = b"\xaa\xaa\xaa\xaa\xc8\x01\x02" + encode_raw(5) + b"\xaa\xaa\xab" + encode_raw(6)
    assert parse(data, p) == [Packet((RawValue(5),)), Packet((RawValue(6),))]
    assert p.counters.get("length_errors") == 2


def test_bad_checksum_raw_is_reported_as_lost_raw() -> None:
    bad = bytearray(encode_raw(77))
    bad[-1] ^= 0x01
    p = ThinkGearParser()
    items = parse(encode_raw(1) + bytes(bad) + encode_raw(2), p)
    assert items == [Packet((RawValue(1),)), LOST_RAW, Packet((RawValue(2),))]
    assert p.counters.get("checksum_errors") == 1
    assert p.counters.get("lost_raw_frames") == 1


def test_packet_hidden_inside_a_rejected_frame_is_found() -> None:
    # A garbage header claims a 30-byte payload that swallows two real packets.
    garbage = b"\x13\xaa\xaa\x1e\x02"
    data = garbage + encode_raw(11) + encode_raw(12) + DATASHEET + encode_raw(13)
    p = ThinkGearParser()
    got = parse(data, p)
    assert [r for r in rows(got) if isinstance(r, RawValue)] == \
        [RawValue(11), RawValue(12), RawValue(13)]
    assert Packet((PoorSignal(0), AsicPower((148, 66, 11, 100, 77, 61, 7, 5)), Attention(13),
                   Meditation(61))) in got
    assert p.counters.get("checksum_errors") >= 1


def test_truncated_packets_then_intact_ones() -> None:
    stream = (encode_raw(1)[:5] + DATASHEET[:20] + encode_raw(2) + DATASHEET[:3]
              + encode_raw(3) + encode_raw(4)[:7] + DATASHEET)
    got = rows(parse(stream))
    assert [r for r in got if isinstance(r, RawValue)] == [RawValue(2), RawValue(3)]
    assert got.count(Attention(13)) == 1


def test_garbage_full_of_sync_bytes_is_linear_and_harmless() -> None:
    rng = np.random.default_rng(3)
    garbage = bytes(rng.choice(np.array([0xAA, 0xAA, 0xAA, 0x04, 0x80, 0x55, 0x00, 0xFF],
                                        dtype=np.uint8), 20000))
    data = garbage + encode_raw(42) + b"\xaa" * 50000 + encode_raw(43)
    got = [r for r in rows(parse(data)) if isinstance(r, RawValue)]
    assert got[-2:] == [RawValue(42), RawValue(43)]


def test_incomplete_frame_is_held_back() -> None:
    p = ThinkGearParser()
    assert p.feed(DATASHEET[:35]) == []
    assert p.pending == 35
    assert expand(p.feed(DATASHEET[35:])) == parse(DATASHEET)
    assert p.pending == 0
    p.feed(b"\x01\x02\xaa")
    assert p.pending == 1  # a lone SYNC may start the next frame
    p.reset()
    assert p.pending == 0


def test_flush_rejects_a_frame_cut_off_by_the_end_of_the_stream() -> None:
    p = ThinkGearParser()
    # a garbage header claims 48 bytes; the stream ends before them
    assert parse(b"\xaa\xaa\x30\x01" + encode_raw(5) + DATASHEET[:30] + encode_raw(6), p) == []
    assert expand(p.flush()) == [Packet((RawValue(5),)), Packet((RawValue(6),))]
    assert p.counters.get("truncated_frames") == 1  # the 48-byte claim
    assert p.counters.get("checksum_errors") == 1  # the cut 36-byte packet
    assert p.pending == 0
    assert p.flush() == []


def test_byte_by_byte_equals_whole() -> None:
    bad = bytearray(encode_raw(9))
    bad[6] ^= 0xFF
    stream = (b"\x00\xaa" + encode_raw_block(np.arange(-40, 40)) + bytes(bad) + DATASHEET
              + b"\xaa\xaa\xaa" + encode_raw(5) + encode_packet([UnknownRow(2, 0x02, b"\x07")]))
    whole = parse(stream)
    items: list[ParseItem] = []
    p = ThinkGearParser()
    for b in stream:
        items.extend(p.feed(bytes([b])))
    assert expand(items) == whole
    assert LOST_RAW in whole


# ----------------------------------------------------------------- extended levels, unknowns


@pytest.mark.parametrize("level", [1, 2, 3, 5])
def test_extended_level_is_never_read_as_level0(level: int) -> None:
    p = ThinkGearParser()
    pkt = encode_payload(encode_unknown(level, 0x02, b"\xc8") + encode_unknown(level, 0x80, b"\x01\x02")
                         + bytes((0x04, 55)))
    assert parse(pkt, p) == [Packet((UnknownRow(level, 0x02, b"\xc8"),
                                     UnknownRow(level, 0x80, b"\x01\x02"), Attention(55)))]
    assert p.counters.get("unknown_codes") == 2


def test_unknown_level0_codes_never_raise() -> None:
    p = ThinkGearParser()
    pkt = encode_payload(bytes((0x01, 0x7F, 0x90, 0x03, 1, 2, 3, 0xEE, 0x00, 0x02, 0x00)))
    assert parse(pkt, p) == [Packet((UnknownRow(0, 0x01, b"\x7f"), UnknownRow(0, 0x90, b"\x01\x02\x03"),
                                     UnknownRow(0, 0xEE, b""), PoorSignal(0)))]
    assert p.counters.get("unknown_codes") == 3


def test_mindwave_mobile2_ba_bc_rows() -> None:
    p = ThinkGearParser()
    stream = (bytes.fromhex("AAAA02BA0441") + encode_raw(1) + bytes.fromhex("AAAA02BC043F")
              + encode_payload(bytes((0x02, 0x00, 0x04, 0x21, 0xBA, 0x09, 0x01))) + encode_raw(2))
    assert parse(stream, p) == [Packet(()), Packet((RawValue(1),)), Packet(()),
                                Packet((PoorSignal(0), Attention(0x21))), Packet((RawValue(2),))]
    assert p.counters.get("row_overruns") == 3
    assert p.counters.get("frames") == 5


@pytest.mark.parametrize("payload", [
    bytes((0x02, 0x00, 0x90, 0x09, 0x01)),      # unknown code overruns: not the BA/BC quirk
    bytes((0x02, 0x00, 0x55, 0x55)),            # trailing EXCODE, no code
    bytes((0x04, 0x10, 0x80)),                  # VLEN missing
    bytes((0x80, 0x03, 0x00, 0x01, 0x02)),      # raw with VLEN 3
    bytes((0x83, 0x02, 0x00, 0x01)),            # ASIC power with VLEN 2
    bytes((0xD4, 0x02, 0x00, 0x01)),            # D4 with VLEN 2
    bytes((0x05,)),                             # 1-byte code without its value
])
def test_malformed_checksum_valid_frames_are_rejected(payload: bytes) -> None:
    p = ThinkGearParser()
    assert parse(encode_payload(payload) + encode_raw(3), p) == [Packet((RawValue(3),))]
    assert p.counters.get("malformed_frames") == 1
    assert p.counters.get("resyncs") == 1


def test_counters_account_for_bytes() -> None:
    p = ThinkGearParser()
    stream = b"\x01\x02\x03" + encode_raw(1) + b"\xaa\xaa\xc0" + DATASHEET
    p.feed(stream)
    c = p.counters.snapshot()
    assert c["bytes"] == len(stream)
    assert c["frames"] == 2
    assert c["skipped_bytes"] == 6
    assert c["length_errors"] == 1


# ----------------------------------------------------------------- encoder


def test_encode_raw_block_matches_encode_raw() -> None:
    values = [0, 1, -1, 40, -32768, 32767, -21846, 300]
    assert encode_raw_block(values) == b"".join(encode_raw(v) for v in values)


def test_commands_and_checksum() -> None:
    assert dongle_command(None) == b"\xc2"
    assert dongle_command(0xA16C) == b"\xc0\xa1\x6c"
    assert checksum(bytes.fromhex("80020028")) == 0x55
    with pytest.raises(ValueError, match="headset id"):
        dongle_command(70000)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: encode_packet([Attention(256)]), "one byte"),
    (lambda: encode_packet([RawValue(40000)]), "int16"),
    (lambda: encode_asic_power([1, 2, 3]), "8 band"),
    (lambda: encode_asic_power([1 << 24] * 8), "u24"),
    (lambda: encode_unknown(0, 0x02, b"\x00"), "decoded type"),
    (lambda: encode_unknown(1, 0x55, b"\x00"), "not a valid code"),
    (lambda: encode_unknown(1, 0x10, b"\x00\x01"), "exactly 1 byte"),
    (lambda: encode_dongle_status(0xD4), "scanning"),
    (lambda: encode_dongle_status(0xC0, 1), "not a dongle"),
    (lambda: encode_payload(bytes(170)), "exceeds 169"),
])
def test_encoder_rejects_what_cannot_be_framed(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_raw_run_is_read_only_and_expands() -> None:
    items = ThinkGearParser().feed(encode_raw_block([1, 2, 3]))
    assert len(items) == 1
    run = items[0]
    assert isinstance(run, RawRun) and len(run) == 3
    assert run.packets() == [Packet((RawValue(1),)), Packet((RawValue(2),)), Packet((RawValue(3),))]
    with pytest.raises(ValueError):
        run.values[0] = 5
