"""Opt-in check against a real headset: ``DREAMSTATE_HARDWARE_PORT=/dev/rfcomm0 pytest -m hardware``
(``auto`` probes the discovered ports). Optional: ``DREAMSTATE_HARDWARE_BAUD``."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from dreamstate.devices.serial_port import ThinkGearSerialDevice
from dreamstate.engine.core.records import DeviceEvent, DeviceEventKind, RawChunk

PORT = os.environ.get("DREAMSTATE_HARDWARE_PORT", "")


@pytest.mark.hardware
@pytest.mark.skipif(not PORT, reason="set DREAMSTATE_HARDWARE_PORT to a headset's port (or auto)")
async def test_real_headset_streams_raw_samples() -> None:
    baud = os.environ.get("DREAMSTATE_HARDWARE_BAUD")
    dev = ThinkGearSerialDevice(PORT, int(baud) if baud else None)
    await asyncio.wait_for(dev.open(), 30.0)
    samples = 0
    first: DeviceEvent | None = None
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                async for r in dev.readings():
                    if first is None and isinstance(r, DeviceEvent):
                        first = r
                    if isinstance(r, RawChunk):
                        samples += len(r.samples)
                    if samples >= 1024:
                        break
    finally:
        await dev.close()
    assert first is not None and first.kind == DeviceEventKind.CONNECTED
    assert samples >= 1024, f"only {samples} raw samples in 10 s from {dev.describe()}"
    assert dev.counters.get("checksum_errors") < dev.counters.get("frames") * 0.05
