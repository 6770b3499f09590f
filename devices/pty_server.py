"""Serve the simulated headset's ThinkGear byte stream on a real pseudo-terminal.

``dreamstate simulate --pty`` uses this so the real serial code path (pyserial opening a device
path) can be exercised without hardware: ``dreamstate monitor --port /dev/pts/N``.
The server writes about 4.1 KB/s (512 raw packets of 8 bytes plus one 36-byte packet per
second), like a MindWave. If nobody reads, the pty buffer fills and further bytes are dropped
and counted, as bytes sent by a real headset would be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import tty
from pathlib import Path

from dreamstate.devices.simulator import EegSimulator
from dreamstate.engine.core.errors import DeviceError
from dreamstate.engine.core.metrics import Counters

log = logging.getLogger("dreamstate.devices.pty")


class PtyServer:
    """A pseudo-terminal fed by an ``EegSimulator``.

    Lifecycle: after ``__init__`` nothing is open. After ``await start()`` the pty exists,
    ``slave_path`` names the device a reader opens (and ``link``, when given, is a symlink to
    it), and a task writes the simulator's bytes at ``speed`` × real time (``speed`` 0 or inf:
    unpaced; whatever the pty cannot take is dropped and counted). After ``await stop()`` the task is finished,
    both pty fds are closed and the link is removed. ``counters``: ``bytes_written``,
    ``bytes_dropped``, ``bytes_received`` (what a reader wrote, e.g. dongle commands),
    ``samples``, ``status_packets``, ``blinks``.
    """

    def __init__(self, sim: EegSimulator, *, speed: float = 1.0, chunk: int = 16,
                 link: str | Path | None = None) -> None:
        if chunk < 1:
            raise DeviceError(f"pty chunk must be >= 1 sample, got {chunk}")
        self.sim = sim
        self.speed = speed
        self.chunk = chunk
        self.link = Path(link) if link is not None else None
        self.counters = Counters()
        self.slave_path = ""
        self._master = -1
        self._slave = -1
        self._task: asyncio.Task[None] | None = None
        self._received = bytearray()

    @property
    def received(self) -> bytes:
        """Bytes a reader wrote to the port (e.g. dongle commands ``C2``)."""
        return bytes(self._received)

    async def start(self) -> str:
        master, slave = os.openpty()
        # Raw mode on the slave side: no echo, no CR/NL translation of binary data.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        if self.link is not None:
            if self.link.is_symlink() or self.link.exists():
                if not self.link.is_symlink():
                    self._close_fds()
                    raise DeviceError(f"--link {self.link} exists and is not a symlink",
                                      hint="pick another path or remove that file")
                self.link.unlink()
            self.link.symlink_to(self.slave_path)
        loop = asyncio.get_running_loop()
        loop.add_reader(master, self._on_readable)
        self._task = asyncio.create_task(self._serve(), name="pty-server")
        log.info("pty serving simulated headset", extra={"port": self.slave_path,
                                                          "link": str(self.link or "")})
        return self.slave_path

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO when no reader holds the slave: nothing to read
            self.counters.inc("read_errors")
            log.debug("pty read failed", extra={"error": str(exc)})
            return
        if data:
            self.counters.inc("bytes_received", len(data))
            self._received += data
            del self._received[:-256]
            log.info("reader wrote to the headset port", extra={"bytes": data.hex(" ")})

    def _write(self, data: bytes) -> None:
        try:
            n = os.write(self._master, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self.counters.inc("write_errors")
            log.warning("pty write failed", extra={"port": self.slave_path, "error": str(exc)})
            n = 0
        self.counters.inc("bytes_written", n)
        if n < len(data):
            self.counters.inc("bytes_dropped", len(data) - n)

    async def _serve(self) -> None:
        paced = self.speed > 0 and math.isfinite(self.speed)
        rate = self.sim.sfreq * self.speed
        start = time.monotonic()
        first = self.sim.position
        while True:
            block = self.sim.advance(self.chunk)
            if len(block.raw) == 0:
                log.info("simulator script ended; nothing more to serve", extra={"port": self.slave_path})
                return
            if paced:
                delay = start + (block.next_index - first) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            self._write(self.sim.encode(block))
            self.counters.inc("samples", len(block.raw))
            self.counters.inc("status_packets", len(block.statuses))
            self.counters.inc("blinks", len(block.blinks))

    async def wait(self) -> None:
        """Wait until the serving task ends (a non-looping script ran out)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._master >= 0:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._master)
        self._close_fds()
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()
        log.info("pty closed", extra={"port": self.slave_path, **self.counters.snapshot()})

    async def __aenter__(self) -> PtyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
