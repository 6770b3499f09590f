"""ReadingAssembler: parser items to engine records (pure, no port)."""

from __future__ import annotations

import numpy as np

from dreamstate.devices import thinkgear as tg
from dreamstate.devices.serial_port import ReadingAssembler
from dreamstate.engine.core.records import (
    UV_PER_COUNT,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    ESense,
    HeartRate,
    RawChunk,
    SignalQuality,
)


def feed(asm: ReadingAssembler, data: bytes, now: float) -> list[object]:
    return list(asm.convert(tg.ThinkGearParser().feed(data), now))


def test_raw_batches_order_and_lost_raw_gap() -> None:
    asm = ReadingAssembler(max_batch=64)
    bad = bytearray(tg.encode_raw(9))
    bad[-1] ^= 1
    data = (tg.encode_raw_block(range(100)) + bytes(bad) + tg.encode_blink(77)
            + tg.encode_raw_block(range(100, 110)))
    out = feed(asm, data, 1.0)
    chunks = [r for r in out if isinstance(r, RawChunk)]
    assert [(c.first_index, len(c.samples)) for c in chunks] == [(0, 64), (64, 36), (101, 10)]
    assert isinstance(out[2], Blink) and out[2].strength == 77  # between the raw chunks
    assert np.allclose(chunks[2].samples, np.arange(100, 110) * UV_PER_COUNT)
    assert asm.counters.get("raw_lost") == 1
    assert asm.next_index == 111


def test_esense_quality_heart_and_dongle_rows() -> None:
    asm = ReadingAssembler()
    data = (tg.encode_packet([tg.PoorSignal(26), tg.Attention(40)])
            + tg.encode_packet([tg.Meditation(70)])
            + tg.encode_packet([tg.Attention(41), tg.Meditation(71)])
            + tg.encode_packet([tg.HeartRateValue(200), tg.RrInterval(850)])
            + tg.encode_packet([tg.DongleStatus(0xD0, 0x0102), tg.DongleStatus(0xD4, None, True)])
            + tg.encode_packet([tg.EegPower((1.0,) * 8), tg.UnknownRow(1, 0x02, b"\x00")]))
    out = feed(asm, data, 2.0)
    assert out[0] == SignalQuality(26, 2.0)
    assert [(e.attention, e.meditation) for e in out if isinstance(e, ESense)] == \
        [(40, 0), (40, 70), (41, 71)]
    assert [(h.bpm, h.rr_ms) for h in out if isinstance(h, HeartRate)] == [(200, None), (None, 850)]
    ev = [e for e in out if isinstance(e, DeviceEvent)]
    assert [(e.kind, e.headset_id) for e in ev] == [
        (DeviceEventKind.DONGLE_CONNECTED, 0x0102), (DeviceEventKind.DONGLE_SCANNING, None)]
    assert asm.counters.get("rows_without_reading") == 2


def test_link_break_skips_the_samples_lost_while_down() -> None:
    asm = ReadingAssembler()
    feed(asm, tg.encode_raw_block(range(10)), 10.0)
    asm.link_break()
    out = feed(asm, tg.encode_raw_block(range(10, 20)), 11.0)  # one second later
    first = next(r for r in out if isinstance(r, RawChunk))
    # about 512 samples were lost; the 10 new ones arrived in the last read
    assert first.first_index == 10 + 512 - 10
    assert asm.counters.get("raw_gap_samples") == 502
