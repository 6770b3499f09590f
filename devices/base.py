"""The one interface every headset backend implements (serial ThinkGear, simulator, replay).

Lifecycle::

    dev = SomeDevice(...)
    async with dev:                 # open(): after it, the source is ready to stream
        async for reading in dev.readings():
            ...                     # RawChunk, ESense, BandPowers, SignalQuality, Blink,
                                    # HeartRate, Marker, DeviceEvent, in arrival order
    # close(): after it, no task, thread, file or port of the device is left open

``readings()`` keeps going across reconnects (a serial backend emits DeviceEvent
DISCONNECTED/RECONNECTING/CONNECTED and carries on); it ends only when the source is finite
(a replay reaching its end emits DeviceEvent END_OF_STREAM first) or after ``close()``.
Raw sample indices are monotonic across reconnects; a gap in them means samples were lost.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from types import TracebackType

from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import Reading


class Device(abc.ABC):
    """Abstract headset backend. Subclasses implement ``open``, ``close`` and ``readings``."""

    name: str = "device"

    def __init__(self) -> None:
        self.counters = Counters()

    @abc.abstractmethod
    async def open(self) -> None:
        """Acquire the source. After it returns, ``readings()`` may be iterated."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything. Idempotent. After it returns, ``readings()`` ends."""

    @abc.abstractmethod
    def readings(self) -> AsyncIterator[Reading]:
        """Yield readings in arrival order until the source ends or ``close()`` is called."""

    def describe(self) -> str:
        """One line for logs and the monitor: what this device is and where it reads from."""
        return self.name

    async def __aenter__(self) -> Device:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
