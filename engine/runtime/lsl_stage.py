"""The ``lsl`` stage: publishes a show's readings and states as LSL streams (``[lsl] enabled``).

Like the record stage it subscribes to the readings ``Broadcast`` (its own bounded, counted
queue, so a slow LSL push never stalls the device); like the MQTT state loop it reads the
newest state from the ``LatestSlot`` 50 times a second. ``devices.lsl_outlet.LslOutlets`` does
the publishing (streams, metadata, timestamps: see docs/lsl.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from dreamstate.devices.lsl_outlet import LslOutlets
from dreamstate.engine.core.channels import BoundedQueue, Broadcast, LatestSlot
from dreamstate.engine.core.records import EegSnapshot, EegState, Reading
from dreamstate.engine.core.show import LoadedShow
from dreamstate.engine.runtime.supervisor import Stage

log = logging.getLogger("dreamstate.lsl")


def default_source_id(loaded: LoadedShow) -> str:
    """``dreamstate:<host>:<show name>``: the same on every restart of this show on this machine."""
    return f"dreamstate:{socket.gethostname()}:{loaded.show.show.name}"


class LslStage(Stage):
    """``start()`` creates the outlets; ``run()`` publishes readings as they come and the
    newest state (with the map point and calibration-label markers) every ``period_s``;
    ``stop()`` destroys the outlets, so consumers see the streams go."""

    name = "lsl"

    def __init__(self, loaded: LoadedShow, readings: Broadcast[Reading], states: LatestSlot[EegState],
                 eeg: LatestSlot[EegSnapshot], active_label: Callable[[], str | None], *,
                 period_s: float = 0.02) -> None:
        show = loaded.show
        self.loaded = loaded
        self.queue: BoundedQueue[Reading] = readings.subscribe(16384, name="lsl")
        self.states = states
        self.eeg = eeg
        self.active_label = active_label
        self.period_s = period_s
        cfg = show.lsl
        channel = "+".join(show.device.lsl.channels) if show.device.kind == "lsl" and show.device.lsl.channels else \
            "Fp1"
        self.outlets = LslOutlets(prefix=cfg.prefix, source_id=cfg.source_id or default_source_id(loaded),
                                  labels=show.states.labels, eeg_label=channel, device=show.device.kind)

    async def start(self) -> None:
        await asyncio.to_thread(self.outlets.open)
        self.queue.drain()  # readings from before the outlets existed went to nobody

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._readings_loop(), name="lsl.readings")
            tg.create_task(self._state_loop(), name="lsl.state")

    async def _readings_loop(self) -> None:
        while True:
            first = await self.queue.get()
            self.outlets.push_readings([first, *self.queue.drain()])

    async def _state_loop(self) -> None:
        version, label = 0, self.active_label()
        while True:
            state, version = self.states.get_if_newer(version)
            if state is not None:
                snap = self.eeg.get()
                self.outlets.push_state(state, snap.point if snap is not None else None)
            now_label = self.active_label()
            if now_label != label:
                label = now_label
                self.outlets.push_marker(f"calibration:{label}" if label else "calibration:end", time.monotonic())
            await asyncio.sleep(self.period_s)

    async def stop(self) -> None:
        await asyncio.to_thread(self.outlets.close)
