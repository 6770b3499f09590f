"""ThinkGear over a serial port: USB dongle, Bluetooth SPP (RFCOMM), or a TGAM board.

A reader thread per open port does the blocking pyserial reads (each with a short timeout) and
hands chunks to the event loop with ``call_soon_threadsafe``; nothing on the loop blocks. The
loop side parses (``devices.thinkgear``), turns rows into ``engine.core.records`` readings and
watches the link: no bytes for ``stall_timeout`` s is a stall, a pyserial/OS error is a lost
port; either way the port is closed and a reconnect loop with capped, jittered backoff reopens
it (``port = "auto"`` rediscovers, so a dongle that comes back under a new name is found).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from dreamstate.devices import thinkgear as tg
from dreamstate.devices.base import Device
from dreamstate.devices.ports import PortInfo, list_ports, probe_order
from dreamstate.engine.core.aio import wait_for
from dreamstate.engine.core.backoff import Backoff
from dreamstate.engine.core.channels import BoundedQueue
from dreamstate.engine.core.errors import DeviceError
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import (
    SFREQ,
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    ESense,
    HeartRate,
    RawChunk,
    Reading,
    SignalQuality,
    raw_to_uv,
)

log = logging.getLogger("dreamstate.devices.serial")

PROBE_BAUDS: Final = (57600, 115200, 9600)
"""Bluetooth / TGAM raw mode, the USB dongle, TGAM 1 Hz mode."""
DONGLE_BAUD: Final = 115200

_DONGLE_KINDS: Final = {
    tg.CODE_DONGLE_CONNECTED: DeviceEventKind.DONGLE_CONNECTED,
    tg.CODE_DONGLE_NOT_FOUND: DeviceEventKind.DONGLE_NOT_FOUND,
    tg.CODE_DONGLE_DISCONNECTED: DeviceEventKind.DONGLE_DISCONNECTED,
    tg.CODE_DONGLE_DENIED: DeviceEventKind.DONGLE_DENIED,
}
_DONGLE_IDLE: Final = frozenset({DeviceEventKind.DONGLE_NOT_FOUND,
                                 DeviceEventKind.DONGLE_DISCONNECTED,
                                 DeviceEventKind.DONGLE_STANDBY})
"""Dongle states in which it waits for a connect command."""


class ReadingAssembler:
    """Turns parser items into ``engine.core.records`` readings. Pure: the caller passes the time.

    After ``convert(items, now)``: every raw sample is in a ``RawChunk`` (at most ``max_batch``
    samples each) whose ``first_index`` continues ``next_index``; a ``LostRaw`` item advances
    the index by one (counted ``raw_lost``), so downstream sees the gap. Non-raw rows become
    ``SignalQuality``, ``ESense`` (when a frame carries attention or meditation; the other
    value is the last one seen), ``BandPowers``, ``Blink``, ``HeartRate`` and dongle
    ``DeviceEvent`` readings, in stream order. ``link_break()`` marks a reconnect: the next raw
    sample's index skips the samples estimated lost while the link was down (counted
    ``raw_gap_samples``).
    """

    def __init__(self, counters: Counters | None = None, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.counters = counters if counters is not None else Counters()
        self.max_batch = max_batch
        self.next_index = 0
        self._attention = 0
        self._meditation = 0
        self._last_raw_time: float | None = None
        self._break = False

    def link_break(self) -> None:
        self._break = True

    def convert(self, items: Iterable[tg.ParseItem], now: float) -> list[Reading]:
        out: list[Reading] = []
        raws: list[npt.NDArray[np.int16]] = []
        single: list[int] = []

        def flush() -> None:
            if single:
                raws.append(np.asarray(single, dtype=np.int16))
                single.clear()
            if raws:
                self._emit_raw(np.concatenate(raws) if len(raws) > 1 else raws[0], now, out)
                raws.clear()

        for item in items:
            if isinstance(item, tg.RawRun):
                if single:
                    raws.append(np.asarray(single, dtype=np.int16))
                    single.clear()
                raws.append(item.values)
            elif isinstance(item, tg.LostRaw):
                flush()
                self.next_index += 1
                self.counters.inc("raw_lost")
            else:
                for row in item.rows:
                    if isinstance(row, tg.RawValue):
                        single.append(row.value)
                    else:
                        flush()
                        self._row(row, item, now, out)
        flush()
        return out

    def _emit_raw(self, values: npt.NDArray[np.int16], now: float, out: list[Reading]) -> None:
        n = int(values.shape[0])
        if self._break and self._last_raw_time is not None:
            gap = max(1, round((now - self._last_raw_time) * SFREQ) - n)
            self.next_index += gap
            self.counters.inc("raw_gap_samples", gap)
        self._break = False
        uv = raw_to_uv(values)
        for start in range(0, n, self.max_batch):
            part = uv[start:start + self.max_batch]
            out.append(RawChunk(self.next_index, part, now))
            self.next_index += int(part.shape[0])
        self._last_raw_time = now
        self.counters.inc("raw_samples", n)

    def _row(self, row: tg.Row, packet: tg.Packet, now: float, out: list[Reading]) -> None:
        if isinstance(row, tg.PoorSignal):
            out.append(SignalQuality(row.value, now))
        elif isinstance(row, tg.Attention | tg.Meditation):
            if isinstance(row, tg.Attention):
                self._attention = row.value
                if any(isinstance(r, tg.Meditation) for r in packet.rows):
                    return  # the ESense goes out with the meditation row
            else:
                self._meditation = row.value
            out.append(ESense(self._attention, self._meditation, now))
        elif isinstance(row, tg.AsicPower):
            out.append(BandPowers(row.values, now))
        elif isinstance(row, tg.BlinkStrength):
            out.append(Blink(row.value, now))
        elif isinstance(row, tg.HeartRateValue):
            out.append(HeartRate(row.value, now))
        elif isinstance(row, tg.RrInterval):
            out.append(HeartRate(None, now, rr_ms=row.ms))
        elif isinstance(row, tg.DongleStatus):
            if row.code == tg.CODE_DONGLE_STANDBY:
                kind = (DeviceEventKind.DONGLE_SCANNING if row.scanning
                        else DeviceEventKind.DONGLE_STANDBY)
            else:
                kind = _DONGLE_KINDS[row.code]
            detail = "" if row.headset_id is None else f"headset 0x{row.headset_id:04X}"
            out.append(DeviceEvent(kind, now, detail, row.headset_id))
        else:  # EegPower, Raw8Bit, RawMarker, UnknownRow: no reading; counted
            self.counters.inc("rows_without_reading")


class _LinkLost(Exception):
    """The port reported an error or vanished (unplugged, Bluetooth dropped)."""


_Chunk = bytes | BaseException


class _Link:
    """One open serial port and its reader thread.

    After ``start()`` the thread reads (``ser.read`` with ``read_timeout``) and queues chunks;
    an error ends the thread and queues the exception. After ``await close()`` the thread has
    ended (or was given up after ``join_timeout``) and the port is closed.
    """

    def __init__(self, ser: Any, port: str, baud: int, loop: asyncio.AbstractEventLoop) -> None:
        self.ser = ser
        self.port = port
        self.baud = baud
        self._loop = loop
        self._queue: asyncio.Queue[_Chunk] = asyncio.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"thinkgear-reader {port}")
        self._closed = False
        self.probe_bytes = b""
        """Bytes read while probing the rate; the device parses them first."""

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: _Chunk) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def _read_loop(self) -> None:
        import serial

        try:
            while not self._stop.is_set():
                data = self.ser.read(1)  # waits at most the read timeout
                if not data:
                    continue
                waiting = self.ser.in_waiting
                if waiting:
                    data += self.ser.read(waiting)
                if not self._put(bytes(data)):
                    return
        except (serial.SerialException, OSError, ValueError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial raises these when the fd vanishes mid-read.
            if not self._stop.is_set():
                self._put(exc)

    async def next_chunk(self, timeout: float) -> bytes:
        """The next chunk of bytes; TimeoutError after ``timeout`` s without one."""
        item = await wait_for(self._queue.get(), timeout)
        if isinstance(item, BaseException):
            raise _LinkLost(f"{type(item).__name__}: {item}") from item
        return item

    async def write(self, data: bytes, timeout: float) -> None:
        await wait_for(asyncio.to_thread(self._write, data), timeout)

    def _write(self, data: bytes) -> None:
        self.ser.write(data)
        self.ser.flush()

    async def close(self, join_timeout: float = 1.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, join_timeout)
        if self._thread.is_alive():
            log.warning("serial reader thread did not stop in time; closing the port anyway",
                        extra={"port": self.port})
        with contextlib.suppress(Exception):
            # Closing a port whose device vanished may raise anything pyserial has; the port
            # is gone either way.
            self.ser.close()


class ThinkGearSerialDevice(Device):
    """A NeuroSky headset on a serial port.

    Lifecycle: after ``__init__`` nothing is open. After ``await open()`` a port is open: the
    given one, or with ``port="auto"`` the first discovered port whose stream passes the
    ThinkGear checksums (``baud=None`` probes 57600, 115200, 9600 on each); if none works,
    ``open()`` raises ``DeviceError`` listing every port and rate tried. ``readings()`` then
    yields readings (a ``CONNECTED`` event first) and keeps going across stalls and lost ports
    (``STALLED`` / ``DISCONNECTED``, ``RECONNECTING`` per attempt, ``CONNECTED``) until
    ``close()``, after which no thread, task or port is left and ``readings()`` ends. Bytes
    that arrive for ``no_frames_timeout`` seconds without one valid frame (the wrong baud rate,
    or a port that speaks another protocol) are reported: a warning naming the port, the rate
    and the fix, and a ``NO_FRAMES`` event every 10 s (``monitor`` shows it).

    With a dongle (``dongle=True``, a ``headset_id``, or auto when dongle status rows arrive)
    it writes ``C2`` (auto-connect) or ``C0 idH idL`` after connecting and again, at most every
    ``dongle_retry_s``, while the dongle reports it is idle. ``counters`` holds the parser's
    counters and ``reconnects``, ``stalls``, ``disconnects``, ``raw_lost``,
    ``raw_gap_samples``, ``dropped_readings``, ``dongle_commands``, ``internal_errors``,
    ``no_frames_warnings``.
    """

    name = "thinkgear"

    def __init__(self, port: str = "auto", baud: int | None = None, *,
                 headset_id: int | None = None, dongle: bool | None = None,
                 stall_timeout: float = 2.0, backoff_min: float = 0.2, backoff_max: float = 5.0,
                 no_frames_timeout: float = 3.0,
                 probe_timeout: float = 1.5, open_timeout: float = 5.0,
                 read_timeout: float = 0.05, max_batch: int = 64, queue_size: int = 65536,
                 dongle_retry_s: float = 5.0,
                 discover: Callable[[], list[PortInfo]] | None = None,
                 seed: int | None = None) -> None:
        super().__init__()
        if headset_id is not None and not 0 <= headset_id <= 0xFFFF:
            raise DeviceError(f"headset_id {headset_id} is not a 16-bit id",
                              hint="use the id printed on the headset, 0..65535, or omit it")
        if stall_timeout <= 0 or backoff_min <= 0 or backoff_max < backoff_min:
            raise DeviceError("stall_timeout and backoff must be positive, backoff_max >= min")
        self.port_setting = port
        self.baud_setting = baud
        self.headset_id = headset_id
        self.dongle = True if headset_id is not None else dongle
        self.stall_timeout = stall_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.probe_timeout = probe_timeout
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.dongle_retry_s = dongle_retry_s
        self._discover = discover or list_ports
        self._rng = random.Random(seed)
        self._backoff = Backoff(base=backoff_min, cap=backoff_max, jitter=0.3, rng=self._rng)
        self.parser = tg.ThinkGearParser(self.counters)
        self.assembler = ReadingAssembler(self.counters, max_batch)
        self._queue: BoundedQueue[Reading | None] = BoundedQueue(queue_size, drop="oldest",
                                                                 name="thinkgear.readings")
        self._task: asyncio.Task[None] | None = None
        self._link: _Link | None = None
        self._closing = False
        self._dongle_active = False
        self._last_command = -1e9
        self.quality_log_s = 10.0
        self._quality_logged = time.monotonic()
        self._quality_seen = (0, 0)
        self.no_frames_after_s = no_frames_timeout
        """Bytes for this long without one valid frame: the wrong baud rate, or not ThinkGear."""
        self._frames_at = 0.0
        self._frames_seen = 0
        self._bytes_since_frame = 0
        self._no_frames_said = 0.0  # last NO_FRAMES event (0: none since the last valid frame)
        self._no_frames_logged = 0.0
        self.port: str | None = None
        """The port in use (resolved from ``auto``), or the last one used."""
        self.baud: int | None = baud
        """The rate in use (probed when ``baud`` was None)."""
        self.tried: list[str] = []
        """What the last connect attempt tried, one line per port and rate."""

    def describe(self) -> str:
        where = self.port or self.port_setting
        rate = f"{self.baud} baud" if self.baud else "baud auto"
        return f"ThinkGear on {where} ({rate}{', dongle' if self.dongle else ''})"

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._task is not None:
            return
        self._closing = False
        self._queue = BoundedQueue(self._queue.maxsize, drop="oldest", name=self._queue.name)
        link = await self._connect()
        self._task = asyncio.create_task(self._run(link), name=f"thinkgear {link.port}")

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await wait_for(task, 3.0)
        if self._link is not None:
            await self._link.close()
            self._link = None
        self._queue.put_nowait(None)

    async def readings(self) -> AsyncIterator[Reading]:
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # a later readings() call ends too
                return
            yield item

    # ------------------------------------------------------------------ internals

    def _log_extra(self, **more: object) -> dict[str, object]:
        return {"port": self.port or self.port_setting, **more}

    def _publish(self, reading: Reading) -> None:
        if not self._queue.put_nowait(reading):
            self.counters.inc("dropped_readings")

    def _event(self, kind: DeviceEventKind, detail: str = "") -> None:
        self._publish(DeviceEvent(kind, time.monotonic(), detail))

    async def _run(self, link: _Link) -> None:
        """Pump the link; on a stall or loss, reconnect; until ``close()``."""
        try:
            await self._run_loop(link)
        finally:
            if self._link is not None:
                await asyncio.shield(self._link.close())
                self._link = None

    async def _run_loop(self, link: _Link) -> None:
        current: _Link | None = link
        while not self._closing:
            try:
                if current is None:
                    current = await self._reconnect()
                self._link = current
                reason = await self._pump(current)
                await current.close()
                current = None
                self._link = None
                self.assembler.link_break()
                self.parser.reset()
                if reason is None:
                    continue
                kind, detail = reason
                self._event(kind, detail)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the show goes on: logged, counted, retried
                self.counters.inc("internal_errors")
                log.exception("serial device loop failed; reconnecting",
                              extra=self._log_extra(error=repr(exc)))
                if current is not None:
                    await current.close()
                    current = None
                    self._link = None
                await asyncio.sleep(self.backoff_min)

    async def _pump(self, link: _Link) -> tuple[DeviceEventKind, str] | None:
        """Read, parse and publish until the link stalls or fails. Returns the event to report."""
        self._link = link
        self.port, self.baud = link.port, link.baud
        self._dongle_active = bool(self.dongle)
        self._event(DeviceEventKind.CONNECTED, f"{link.port} at {link.baud} baud")
        log.info("connected", extra=self._log_extra(baud=link.baud))
        if self._dongle_active:
            await self._send_dongle_command(link, force=True)
        self._frames_at, self._frames_seen, self._bytes_since_frame = time.monotonic(), self.counters.get("frames"), 0
        pending = link.probe_bytes
        while not self._closing:
            if pending:
                chunk, pending = pending, b""
            else:
                try:
                    chunk = await link.next_chunk(self.stall_timeout)
                except TimeoutError:
                    self.counters.inc("stalls")
                    log.warning("no bytes; reopening the port",
                                extra=self._log_extra(stall_timeout=self.stall_timeout))
                    return DeviceEventKind.STALLED, f"no bytes for {self.stall_timeout:g} s"
                except _LinkLost as exc:
                    self.counters.inc("disconnects")
                    log.warning("port lost; reconnecting", extra=self._log_extra(error=str(exc)))
                    return DeviceEventKind.DISCONNECTED, str(exc)
            now = time.monotonic()
            readings = self.assembler.convert(self.parser.feed(chunk), now)
            self._watch_frames(len(chunk), now)
            if now - self._quality_logged >= self.quality_log_s:
                self._log_link_quality(now)
            idle_dongle = False
            for r in readings:
                self._publish(r)
                if isinstance(r, DeviceEvent):
                    if self.dongle is None and not self._dongle_active:
                        self._dongle_active = True
                        log.info("dongle status seen; treating the port as a USB dongle",
                                 extra=self._log_extra())
                    if r.kind in _DONGLE_IDLE:
                        idle_dongle = True
            if idle_dongle and self._dongle_active:
                await self._send_dongle_command(link, force=False)
        return None

    def _watch_frames(self, nbytes: int, now: float) -> None:
        """Bytes arrive but never a valid frame: say so (a warning, then every 60 s) with the
        port, the rate and the fix, and tell the readers (a NO_FRAMES event every 10 s)."""
        frames = self.counters.get("frames")
        if frames > self._frames_seen:
            if self._no_frames_said:
                log.info("valid ThinkGear frames again", extra=self._log_extra())
            self._frames_seen, self._frames_at, self._bytes_since_frame = frames, now, 0
            self._no_frames_said = self._no_frames_logged = 0.0
            return
        self._bytes_since_frame += nbytes
        quiet = now - self._frames_at
        if quiet < self.no_frames_after_s or now - self._no_frames_said < 10.0:
            return
        rate = self._bytes_since_frame / max(quiet, 1e-3)
        probed = self.baud_setting is None
        fix = ("this port may not carry a ThinkGear headset: check the port" if probed else
               f"leave --baud out (or [device] baud) so the rates are probed, or try the other rates "
               f"({', '.join(str(b) for b in PROBE_BAUDS if b != self.baud)})")
        detail = f"bytes are arriving ({rate:.0f}/s) but no valid ThinkGear frames on {self.port} at {self.baud} baud"
        if not self._no_frames_logged or now - self._no_frames_logged >= 60.0:
            log.warning("%s; fix: %s", detail, fix, extra=self._log_extra(bytes_per_s=round(rate)))
            self._no_frames_logged = now
        self._no_frames_said = now
        self.counters.inc("no_frames_warnings")
        self._event(DeviceEventKind.NO_FRAMES, f"{detail}; fix: {fix}")

    def _log_link_quality(self, now: float) -> None:
        """At most every ``quality_log_s``: one warning when frames were rejected since."""
        self._quality_logged = now
        bad = self.counters.get("resyncs")
        frames = self.counters.get("frames")
        new_bad = bad - self._quality_seen[0]
        new_frames = frames - self._quality_seen[1]
        self._quality_seen = (bad, frames)
        if new_bad:
            log.warning(
                "corrupt ThinkGear frames skipped (fix: bring the headset closer to the "
                "receiver, charge it, or check the baud rate)",
                extra=self._log_extra(rejected=new_bad, accepted=new_frames,
                                      raw_lost=self.counters.get("raw_lost"),
                                      interval_s=self.quality_log_s))

    async def _send_dongle_command(self, link: _Link, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_command < self.dongle_retry_s:
            return
        self._last_command = now
        cmd = tg.dongle_command(self.headset_id)
        try:
            await link.write(cmd, timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - timeout, OSError, pyserial errors: counted
            self.counters.inc("dongle_command_errors")
            log.warning("could not send the dongle command", extra=self._log_extra(
                command=cmd.hex(), error=repr(exc)))
            return
        self.counters.inc("dongle_commands")
        log.info("dongle command sent", extra=self._log_extra(command=cmd.hex()))

    async def _reconnect(self) -> _Link:
        """Retry with capped, jittered exponential backoff until a port opens (or cancelled)."""
        retries = self._backoff.retries()
        while True:
            delay = retries.failed()
            attempt = retries.attempt
            self._event(DeviceEventKind.RECONNECTING, f"attempt {attempt} in {delay:.2f} s")
            await asyncio.sleep(delay)
            try:
                link = await self._connect()
            except DeviceError as exc:
                log.info("reconnect attempt failed", extra=self._log_extra(
                    attempt=attempt, error=str(exc)))
                continue
            self.counters.inc("reconnects")
            return link

    # ------------------------------------------------------------------ connecting

    def _bauds(self, last: int | None) -> list[int]:
        if self.baud_setting is not None:
            return [self.baud_setting]
        order = [DONGLE_BAUD, 57600, 9600] if self.dongle else list(PROBE_BAUDS)
        if last in order:
            order.remove(last)
            order.insert(0, last)
        return order

    def _candidates(self) -> list[str]:
        if self.port_setting != "auto":
            return [self.port_setting]
        ports = [p.device for p in probe_order(self._discover())]
        if self.port in ports:  # the port that worked last time goes first
            ports.remove(self.port)
            ports.insert(0, self.port)
        return ports

    async def _connect(self) -> _Link:
        """Open the first port and rate that work, or raise DeviceError naming all tried."""
        self.tried = []
        candidates = self._candidates()
        if not candidates:
            raise DeviceError("no serial ports found for port = 'auto'",
                              hint="plug in the dongle or pair the MindWave Mobile, then check "
                                   "`dreamstate devices`; or set [device] port")
        for port in candidates:
            link = await self._open_port(port)
            if link is not None:
                return link
        where = "; ".join(self.tried)
        raise DeviceError(f"no ThinkGear stream found; tried {where}",
                          hint="check the headset is on and paired/connected and that no "
                               "other program holds the port, try another [device] port or "
                               "baud, see `dreamstate devices --probe`")

    async def _open_port(self, port: str) -> _Link | None:
        bauds = self._bauds(self.baud if port == self.port else None)
        verify = self.baud_setting is None
        for baud in bauds:
            try:
                link = await self._open_link(port, baud)
            except DeviceError as exc:
                self.tried.append(f"{port} at {baud} baud: {exc}")
                return None  # the port itself cannot be opened: other rates will not help
            if not verify:
                return link
            try:
                ok, summary, seen = await self._probe(link)
            except BaseException:
                await asyncio.shield(link.close())
                raise
            if ok:
                link.probe_bytes = seen
                log.info("ThinkGear stream found", extra={"port": port, "baud": baud,
                                                          "probe": summary})
                return link
            await link.close()
            self.tried.append(f"{port} at {baud} baud: {summary}")
            log.info("no ThinkGear stream at this rate", extra={"port": port, "baud": baud,
                                                                "probe": summary})
        return None

    async def _probe(self, link: _Link) -> tuple[bool, str, bytes]:
        """Listen up to ``probe_timeout`` s: enough checksum-valid frames, and more valid than
        rejected ones, mean this is a ThinkGear stream at this rate."""
        parser = tg.ThinkGearParser()
        seen = bytearray()
        dongle_rows = 0
        deadline = time.monotonic() + self.probe_timeout
        frames = rejected = 0
        error = ""
        while (left := deadline - time.monotonic()) > 0:
            try:
                chunk = await link.next_chunk(left)
            except TimeoutError:
                break
            except _LinkLost as exc:
                error = f", then the port failed ({exc})"
                break
            seen += chunk
            for item in parser.feed(chunk):
                if isinstance(item, tg.Packet):
                    dongle_rows += sum(isinstance(r, tg.DongleStatus) for r in item.rows)
            frames = parser.counters.get("frames")
            rejected = parser.counters.get("resyncs")
            if frames >= 8 and frames > 2 * rejected:
                break
        ok = (frames >= 3 or (frames >= 1 and dongle_rows > 0)) and frames > rejected and not error
        summary = (f"{len(seen)} bytes, {frames} valid frames, {rejected} rejected"
                   + (f", {dongle_rows} dongle status rows" if dongle_rows else "") + error)
        if not seen and not error:
            summary = f"no bytes in {self.probe_timeout:g} s"
        return ok, summary, bytes(seen)

    async def _open_link(self, port: str, baud: int) -> _Link:
        import serial

        loop = asyncio.get_running_loop()
        lock = threading.Lock()
        abandoned = False
        opened: list[Any] = []

        def opener() -> Any:
            ser = serial.Serial(port=port, baudrate=baud, timeout=self.read_timeout,
                                write_timeout=1.0, bytesize=serial.EIGHTBITS,
                                parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                                rtscts=False, dsrdtr=False,
                                # POSIX: a second reader would steal bytes; fail clearly instead
                                exclusive=True if os.name == "posix" else None)
            with lock:
                if abandoned:
                    ser.close()
                    raise DeviceError(f"{port}: opened after the timeout; closed again")
                opened.append(ser)
            return ser

        def abandon() -> None:
            nonlocal abandoned
            with lock:
                abandoned = True  # an open that finishes later closes its port itself
                for s in opened:
                    s.close()

        try:
            ser = await wait_for(asyncio.to_thread(opener), self.open_timeout)
        except TimeoutError:
            abandon()
            raise DeviceError(f"opening took longer than {self.open_timeout:g} s") from None
        except asyncio.CancelledError:
            abandon()
            raise
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceError(f"cannot open ({exc})") from exc
        link = _Link(ser, port, baud, loop)
        link.start()
        return link



async def probe_port(port: str, *, timeout: float = 1.5,
                     bauds: Iterable[int] = PROBE_BAUDS) -> tuple[int | None, list[str]]:
    """Listen on ``port`` at each rate for up to ``timeout`` s. Returns the first rate whose
    stream passes the ThinkGear checksums (None if none) and one line per rate tried. The port
    is closed again before it returns."""
    dev = ThinkGearSerialDevice(port, None, probe_timeout=timeout)
    for baud in bauds:
        try:
            link = await dev._open_link(port, baud)
        except DeviceError as exc:
            dev.tried.append(f"{port} at {baud} baud: {exc}")
            return None, dev.tried
        ok, summary, _ = await dev._probe(link)
        await link.close()
        dev.tried.append(f"{port} at {baud} baud: {summary}")
        if ok:
            return baud, dev.tried
    return None, dev.tried
