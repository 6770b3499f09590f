"""ThinkGearSerialDevice on a real pseudo-terminal.

pyserial opens the pty's slave path (or a symlink to it) through the device class; the test
writes ThinkGear bytes to the master side and reads what the device wrote (dongle commands).
Every intact packet sent is accounted for, and nothing decoded was never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import select
import termios
import threading
import time
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from dreamstate.devices.base import Device
from dreamstate.devices.ports import make_port_info
from dreamstate.devices.serial_port import ThinkGearSerialDevice
from dreamstate.devices.thinkgear import (
    Attention,
    DongleStatus,
    PoorSignal,
    Row,
    UnknownRow,
    encode_packet,
    encode_raw,
    encode_raw_block,
    encode_status_packet,
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
    Reading,
    SignalQuality,
)
from dreamstate.engine.tools.bench_parser import build_streams


class PtyHeadset:
    """One pty pair. ``path`` is what the device opens (``link`` when given)."""

    def __init__(self, link: Path | None = None) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(self.slave)
        self.link = link
        if link is not None:
            if link.is_symlink():
                link.unlink()
            link.symlink_to(self.slave_path)
        self.path = str(link) if link is not None else self.slave_path
        self.closed = False

    async def send(self, data: bytes, piece: int = 512) -> None:
        """Write all of ``data`` in pieces (different chunkings), waiting when the pty is full."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view[:piece])
            except BlockingIOError:
                await asyncio.sleep(0.002)
                continue
            view = view[n:]
            await asyncio.sleep(0)

    def read_written(self, timeout: float = 1.0, want: int = 1) -> bytes:
        """Bytes the device wrote to the port (dongle commands)."""
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < want and (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    out += os.read(self.master, 1024)
                except BlockingIOError:
                    continue
        return out

    def speed(self) -> int:
        """The termios output speed the slave side is configured for (B57600 etc.)."""
        return int(termios.tcgetattr(self.master)[5])

    def close(self, *, remove_link: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if remove_link and self.link is not None and self.link.is_symlink():
            self.link.unlink()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class BaudHeadset:
    """A headset on a pty that only makes sense at one rate: a thread writes valid raw packets
    while the port is set to ``good_speed`` and line noise (the same bytes misread at another
    rate look like random bytes) otherwise."""

    def __init__(self, pty: PtyHeadset, good_speed: int | None, seed: int = 0) -> None:
        self.pty = pty
        self.good_speed = good_speed
        self.rng = np.random.default_rng(seed)
        self.stop = threading.Event()
        self.good_bytes = 0
        self.speeds_seen: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="baud-headset")

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                speed = self.pty.speed()
            except termios.error:
                return
            if not self.speeds_seen or self.speeds_seen[-1] != speed:
                self.speeds_seen.append(speed)
            if speed == self.good_speed:
                data = b"".join(encode_raw(int(v)) for v in self.rng.integers(-500, 500, 8))
                self.good_bytes += len(data)
            else:
                noise = self.rng.integers(0, 256, 64, dtype=np.uint8)
                noise[self.rng.random(64) < 0.3] = 0xAA
                data = noise.tobytes()
            try:
                os.write(self.pty.master, data)
            except BlockingIOError:
                pass
            except OSError:
                return
            time.sleep(0.004)

    def __enter__(self) -> BaudHeadset:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(2.0)


class Collector:
    """Consumes ``device.readings()`` in a task and keeps everything."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.items: list[Reading] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for r in self.device.readings():
            self.items.append(r)
            self._changed.set()

    async def wait_for(self, pred: Callable[[list[Reading]], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.items):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"condition not met in {timeout} s; got {self.summary()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def raw_chunks(self) -> list[RawChunk]:
        return [r for r in self.items if isinstance(r, RawChunk)]

    def raw_counts(self) -> np.ndarray:
        """Raw samples back in counts (the device sends µV)."""
        chunks = self.raw_chunks()
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        uv = np.concatenate([c.samples for c in chunks]).astype(np.float64)
        return np.rint(uv / (1.8 / 4096 / 2000 * 1e6)).astype(np.int64)

    def n_raw(self) -> int:
        return sum(len(c.samples) for c in self.raw_chunks())

    def events(self) -> list[DeviceEventKind]:
        return [r.kind for r in self.items if isinstance(r, DeviceEvent)]

    def summary(self) -> str:
        return f"{self.n_raw()} raw samples, events {[e.value for e in self.events()]}"

    async def stop(self) -> None:
        await asyncio.wait_for(self.task, 5.0)


def assert_indices_monotonic(chunks: list[RawChunk]) -> int:
    """Chunks never overlap or go back. Returns the total gap (samples skipped)."""
    gap = 0
    for a, b in itertools.pairwise(chunks):
        assert b.first_index >= a.next_index, (a.first_index, a.next_index, b.first_index)
        gap += b.first_index - a.next_index
    return gap


def status(att: int, med: int, poor: int = 0) -> bytes:
    return encode_status_packet(poor, att, med, [100, 200, 300, 400, 500, 600, 700, 800])


def dongle(code: int, headset_id: int | None = None, scanning: bool | None = None) -> bytes:
    return encode_packet([DongleStatus(code, headset_id, scanning)])


def frame(rows: list[Row]) -> bytes:
    return encode_packet(rows)




# =============================================================================== tests


FAST = {"stall_timeout": 0.4, "backoff_min": 0.05, "backoff_max": 0.2, "probe_timeout": 0.4,
        "seed": 1}


@pytest.fixture
def pty() -> Iterator[PtyHeadset]:
    h = PtyHeadset()
    yield h
    h.close()


@contextlib.asynccontextmanager
async def running(dev: ThinkGearSerialDevice) -> AsyncIterator[Collector]:
    await asyncio.wait_for(dev.open(), 10.0)
    col = Collector(dev)
    try:
        yield col
    finally:
        await asyncio.wait_for(dev.close(), 10.0)
        await col.stop()
        leftover = [t.name for t in threading.enumerate() if t.name.startswith("thinkgear-reader")]
        assert leftover == [], leftover


async def test_clean_stream_every_sample_in_order(pty: PtyHeadset) -> None:
    rng = np.random.default_rng(5)
    raw = rng.integers(-2000, 2000, 2048)
    stream = b"".join(encode_raw_block(raw[k:k + 512]) + status(40 + k // 512, 60, 0)
                      for k in range(0, 2048, 512))
    dev = ThinkGearSerialDevice(pty.path, 57600, **FAST)  # type: ignore[arg-type]
    async with running(dev) as col:
        await col.wait_for(lambda _: col.events()[:1] == [DeviceEventKind.CONNECTED])
        await pty.send(stream, piece=301)
        await col.wait_for(lambda _: col.n_raw() >= 2048 and
                           sum(isinstance(r, ESense) for r in col.items) >= 4)
    assert col.raw_counts().tolist() == raw.tolist()
    chunks = col.raw_chunks()
    assert chunks[0].first_index == 0
    assert assert_indices_monotonic(chunks) == 0
    assert max(len(c.samples) for c in chunks) <= 64
    assert chunks[0].samples.dtype == np.float32
    assert np.allclose(chunks[0].samples[:3], raw[:3] * UV_PER_COUNT, rtol=1e-6)
    es = [r for r in col.items if isinstance(r, ESense)]
    assert [(e.attention, e.meditation) for e in es] == [(40, 60), (41, 60), (42, 60), (43, 60)]
    assert [r.values for r in col.items if isinstance(r, BandPowers)] == \
        [(100, 200, 300, 400, 500, 600, 700, 800)] * 4
    assert [r.poor_signal for r in col.items if isinstance(r, SignalQuality)] == [0] * 4
    assert col.events() == [DeviceEventKind.CONNECTED]
    assert dev.counters.get("checksum_errors") == 0


async def test_dirty_stream_every_intact_packet_accounted_for(
        pty: PtyHeadset, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage bursts full of 0xAA, bad checksums, truncations and AA AA AA prefixes (the
    benchmark's fault mix, heavier): every intact raw value arrives in order, nothing else."""
    _, _, dirty, truth = build_streams(6.0, seed=11)
    dev = ThinkGearSerialDevice(pty.path, 57600, **FAST)  # type: ignore[arg-type]
    dev.quality_log_s = 0.0  # log the link quality on every read
    intact = truth.raw[truth.raw_intact]
    async with running(dev) as col:
        await col.wait_for(lambda _: bool(col.events()))
        await pty.send(dirty, piece=777)
        await col.wait_for(lambda _: col.n_raw() >= len(intact) - 2, timeout=20)
        await pty.send(encode_raw_block([7] * 16))  # flush anything held back
        await col.wait_for(lambda _: col.n_raw() >= len(intact) + 16 - 2)
    got = col.raw_counts()
    # the only raw values that are not intact ones come from damaged packets that still
    # decoded (a packet cut one byte short whose last byte reads as a checksum); none here
    assert got[:len(intact)].tolist() == intact.tolist()
    assert got[len(intact):].tolist() == [7] * (len(got) - len(intact))
    assert sum(truth.faults.values()) > 60
    assert dev.counters.get("checksum_errors") >= truth.faults["bad_checksum"]
    # a raw packet with a bad checksum leaves a one-sample gap in the indices
    gap = assert_indices_monotonic(col.raw_chunks())
    assert gap == dev.counters.get("raw_lost") > 0
    es = [(r.attention, r.meditation) for r in col.items if isinstance(r, ESense)]
    sent = [(s[1], s[2]) for s, ok in zip(truth.status, truth.status_intact, strict=True) if ok]
    assert es == sent
    blinks = [r.strength for r in col.items if isinstance(r, Blink)]
    assert blinks == [b for b, ok in zip(truth.blinks, truth.blinks_intact, strict=True) if ok]
    warned = [r for r in caplog.records if "corrupt ThinkGear frames" in r.getMessage()]
    assert warned and all(getattr(r, "port", None) == pty.path for r in warned)
    assert sum(getattr(r, "rejected", 0) for r in warned) == dev.counters.get("resyncs")


async def test_unknown_codes_at_every_level_are_not_values(pty: PtyHeadset) -> None:
    sent_unknown = 0
    stream = b""
    for level in range(5):
        rows: list[Row] = [UnknownRow(level, 0x02, b"\x00"), UnknownRow(level, 0x04, b"\x63"),
                           UnknownRow(level, 0x80, b"\x12\x34"),
                           UnknownRow(level, 0x9A, b"\x01\x02\x03")]
        if level == 0:
            rows = [UnknownRow(0, 0x01, b"\x55"), UnknownRow(0, 0x9A, b"\x01\x02\x03")]
        sent_unknown += len(rows)
        stream += frame([*rows, PoorSignal(level)]) + encode_raw(level)
    stream += frame([Attention(9)])
    dev = ThinkGearSerialDevice(pty.path, 57600, **FAST)  # type: ignore[arg-type]
    async with running(dev) as col:
        await col.wait_for(lambda _: bool(col.events()))
        await pty.send(stream, piece=5)
        await col.wait_for(lambda _: any(isinstance(r, ESense) for r in col.items))
    assert dev.counters.get("unknown_codes") == sent_unknown
    assert [r.poor_signal for r in col.items if isinstance(r, SignalQuality)] == [0, 1, 2, 3, 4]
    assert col.raw_counts().tolist() == [0, 1, 2, 3, 4]
    assert [(r.attention, r.meditation) for r in col.items if isinstance(r, ESense)] == [(9, 0)]


async def test_dongle_events_and_auto_connect_command(pty: PtyHeadset) -> None:
    dev = ThinkGearSerialDevice(pty.path, 115200, dongle=True, **FAST)  # type: ignore[arg-type]
    async with running(dev) as col:
        assert await asyncio.to_thread(pty.read_written, 2.0, 1) == b"\xc2"
        await pty.send(dongle(0xD4, scanning=True) + dongle(0xD0, 0xA16C) + encode_raw(5)
                       + dongle(0xD2, 0xA16C) + dongle(0xD1) + dongle(0xD3)
                       + bytes.fromhex("AAAA03D401002A"))
        await col.wait_for(lambda _: DeviceEventKind.DONGLE_STANDBY in col.events())
    evs = [r for r in col.items if isinstance(r, DeviceEvent)]
    assert [e.kind for e in evs] == [
        DeviceEventKind.CONNECTED, DeviceEventKind.DONGLE_SCANNING,
        DeviceEventKind.DONGLE_CONNECTED, DeviceEventKind.DONGLE_DISCONNECTED,
        DeviceEventKind.DONGLE_NOT_FOUND, DeviceEventKind.DONGLE_DENIED,
        DeviceEventKind.DONGLE_STANDBY]
    assert evs[2].headset_id == 0xA16C and evs[3].headset_id == 0xA16C
    assert evs[4].headset_id is None
    assert col.raw_counts().tolist() == [5]
    assert dev.counters.get("dongle_commands") >= 1


async def test_dongle_connects_to_a_given_headset(pty: PtyHeadset) -> None:
    dev = ThinkGearSerialDevice(pty.path, 115200, headset_id=0x1234, **FAST)  # type: ignore[arg-type]
    async with running(dev):
        assert await asyncio.to_thread(pty.read_written, 2.0, 3) == b"\xc0\x12\x34"


async def test_dongle_auto_detected_from_status_rows(pty: PtyHeadset) -> None:
    dev = ThinkGearSerialDevice(pty.path, 115200, **FAST)  # type: ignore[arg-type]
    async with running(dev) as col:
        await col.wait_for(lambda _: bool(col.events()))
        assert await asyncio.to_thread(pty.read_written, 0.3, 1) == b""  # nothing unasked
        await pty.send(bytes.fromhex("AAAA03D401002A"))
        assert await asyncio.to_thread(pty.read_written, 2.0, 1) == b"\xc2"


async def test_stall_reopens_the_port(pty: PtyHeadset) -> None:
    dev = ThinkGearSerialDevice(pty.path, 57600, **FAST)  # type: ignore[arg-type]
    async with running(dev) as col:
        await col.wait_for(lambda _: bool(col.events()))
        await pty.send(encode_raw_block(range(100)))
        await col.wait_for(lambda _: col.n_raw() == 100)
        # silence: stall, reopen
        await col.wait_for(lambda _: col.events().count(DeviceEventKind.CONNECTED) == 2)
        await pty.send(encode_raw_block(range(100, 150)))
        await col.wait_for(lambda _: col.n_raw() == 150)
    ev = col.events()
    assert ev[:4] == [DeviceEventKind.CONNECTED, DeviceEventKind.STALLED,
                      DeviceEventKind.RECONNECTING, DeviceEventKind.CONNECTED]
    assert col.raw_counts().tolist() == list(range(150))
    assert assert_indices_monotonic(col.raw_chunks()) > 0  # the silence shows as a gap
    assert dev.counters.get("stalls") >= 1
    assert dev.counters.get("reconnects") >= 1


async def test_unplug_and_replug(tmp_path: Path) -> None:
    link = tmp_path / "mindwave"
    first = PtyHeadset(link)
    dev = ThinkGearSerialDevice(str(link), 57600, **FAST)  # type: ignore[arg-type]
    second: PtyHeadset | None = None
    try:
        async with running(dev) as col:
            await col.wait_for(lambda _: bool(col.events()))
            await first.send(encode_raw_block(range(-50, 50)) + DATASHEET_LIKE)
            await col.wait_for(lambda _: col.n_raw() == 100)
            first.close()  # unplugged: the pty goes away and so does the path
            await col.wait_for(lambda _: col.events().count(DeviceEventKind.RECONNECTING) >= 3)
            assert not link.exists()
            second = PtyHeadset(link)  # plugged back in, as a new device behind the same path
            await col.wait_for(lambda _: col.events().count(DeviceEventKind.CONNECTED) == 2)
            await second.send(encode_raw_block(range(1000, 1200)) + status(77, 33))
            await col.wait_for(lambda _: col.n_raw() == 300 and
                               any(isinstance(r, ESense) and r.attention == 77 for r in col.items))
    finally:
        first.close()
        if second is not None:
            second.close()
    ev = col.events()
    assert ev[0] == DeviceEventKind.CONNECTED
    assert ev[1] == DeviceEventKind.DISCONNECTED
    assert set(ev[2:-1]) == {DeviceEventKind.RECONNECTING}
    assert ev[-1] == DeviceEventKind.CONNECTED
    assert col.raw_counts().tolist() == list(range(-50, 50)) + list(range(1000, 1200))
    assert assert_indices_monotonic(col.raw_chunks()) > 0
    assert dev.counters.get("disconnects") == 1
    assert dev.counters.get("reconnects") == 1


DATASHEET_LIKE = status(13, 61)


async def test_baud_probe_finds_the_rate_with_valid_checksums(pty: PtyHeadset) -> None:
    dev = ThinkGearSerialDevice(pty.path, None, **FAST)  # type: ignore[arg-type]
    with BaudHeadset(pty, termios.B115200) as headset:
        async with running(dev) as col:
            await col.wait_for(lambda _: col.n_raw() >= 200)
    assert dev.baud == 115200
    assert len(dev.tried) == 1 and "57600" in dev.tried[0] and "valid frames" in dev.tried[0]
    assert termios.B57600 in headset.speeds_seen and termios.B115200 in headset.speeds_seen
    assert col.events()[0] == DeviceEventKind.CONNECTED
    ev = next(r for r in col.items if isinstance(r, DeviceEvent))
    assert "115200" in ev.detail


async def test_garbage_only_port_is_rejected_listing_rates(pty: PtyHeadset) -> None:
    dev = ThinkGearSerialDevice(pty.path, None, **FAST)  # type: ignore[arg-type]
    with BaudHeadset(pty, None), pytest.raises(DeviceError) as err:
        await asyncio.wait_for(dev.open(), 10.0)
    msg = str(err.value)
    for rate in ("57600", "115200", "9600"):
        assert f"{pty.path} at {rate} baud" in msg
    assert "no ThinkGear stream found" in msg and "fix:" in msg
    await dev.close()


async def test_auto_port_probes_discovered_ports(pty: PtyHeadset, tmp_path: Path) -> None:
    silent = PtyHeadset()
    ports = [make_port_info(silent.path, description="CP2102 USB to UART", vid=0x10C4,
                            pid=0xEA60),
             make_port_info(pty.path, description="MindWave Mobile")]
    dev = ThinkGearSerialDevice("auto", None, discover=lambda: ports, **FAST)  # type: ignore[arg-type]
    try:
        with BaudHeadset(pty, termios.B57600):
            async with running(dev) as col:
                await col.wait_for(lambda _: col.n_raw() >= 50)
    finally:
        silent.close()
    assert dev.port == pty.path and dev.baud == 57600
    # the MindWave-named port scores higher, so it was probed first and nothing else was tried
    assert dev.tried == []


async def test_auto_port_with_no_ports_and_missing_port() -> None:
    dev = ThinkGearSerialDevice("auto", discover=list, **FAST)  # type: ignore[arg-type]
    with pytest.raises(DeviceError, match="no serial ports found"):
        await dev.open()
    dev2 = ThinkGearSerialDevice("/dev/does-not-exist-tg", 57600, **FAST)  # type: ignore[arg-type]
    with pytest.raises(DeviceError, match="does-not-exist-tg at 57600 baud: cannot open"):
        await dev2.open()
    assert "does-not-exist-tg" in dev2.describe()


async def test_a_second_reader_is_refused_clearly(pty: PtyHeadset) -> None:
    first = ThinkGearSerialDevice(pty.path, 57600, **FAST)  # type: ignore[arg-type]
    async with running(first):
        second = ThinkGearSerialDevice(pty.path, 57600, **FAST)  # type: ignore[arg-type]
        with pytest.raises(DeviceError, match="exclusively lock") as err:
            await second.open()
        assert "no other program holds the port" in str(err.value)


async def test_bytes_at_the_wrong_baud_rate_are_diagnosed(pty: PtyHeadset, caplog: pytest.LogCaptureFixture) -> None:
    """A 57600-baud headset read at 9600: bytes arrive but never a frame. The device says so,
    naming the port, the rate and the fix, in the log and as an event the monitor shows."""
    from dreamstate.engine.tools.monitor import MonitorModel, quality_text

    dev = ThinkGearSerialDevice(pty.path, 9600, no_frames_timeout=1.0, **FAST)  # type: ignore[arg-type]
    model = MonitorModel()
    with caplog.at_level("WARNING", logger="dreamstate.devices"), BaudHeadset(pty, termios.B57600):
        async with running(dev) as col:
            await col.wait_for(lambda _: DeviceEventKind.NO_FRAMES in col.events(), timeout=10.0)
    for item in col.items:
        model.feed(item)
    ev = next(r for r in col.items if isinstance(r, DeviceEvent) and r.kind == DeviceEventKind.NO_FRAMES)
    assert "bytes are arriving" in ev.detail and "no valid ThinkGear frames" in ev.detail
    assert f"on {pty.path} at 9600 baud" in ev.detail and "leave --baud out" in ev.detail
    assert any("no valid ThinkGear frames" in r.getMessage() for r in caplog.records)
    assert "NO VALID FRAMES" in quality_text(model.poor_signal, 5.0, model.diagnosis).plain
    assert col.n_raw() == 0
