"""Build the headset backend a show's ``[device]`` section asks for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dreamstate.devices.base import Device
from dreamstate.engine.core.errors import DeviceError

if TYPE_CHECKING:
    from dreamstate.engine.core.show import DeviceConfig, LoadedShow


def open_device(cfg: DeviceConfig, loaded: LoadedShow | None = None) -> Device:
    """A new, not yet opened ``Device`` for ``cfg`` (``async with`` it to open).

    * ``thinkgear``: ``devices.serial_port.ThinkGearSerialDevice(port, baud, headset_id)``.
    * ``simulated``: ``SimulatedDevice`` with the show's script (or the demo cycle), seed, loop
      and speed.
    * ``replay``: ``ReplayDevice`` of ``file`` (resolved inside the show folder when a show is
      given; it must exist), with speed and loop.
    * ``lsl``: ``devices.lsl.LslDevice`` for the stream ``[device.lsl]`` names (an LSL EEG stream
      from muse-lsl, BlueMuse, OpenBCI, an amplifier or a PlayerLSL).
    """
    if cfg.kind == "thinkgear":
        from dreamstate.devices.serial_port import ThinkGearSerialDevice

        return ThinkGearSerialDevice(port=cfg.port, baud=cfg.baud, headset_id=cfg.headset_id)
    if cfg.kind == "simulated":
        from dreamstate.devices.simulator import SimulatedDevice

        script = [(step.state, step.seconds) for step in cfg.script] or None
        return SimulatedDevice(script, seed=cfg.seed, loop=cfg.loop, speed=cfg.speed)
    if cfg.kind == "replay":
        from dreamstate.devices.replay import ReplayDevice

        if not cfg.file:
            raise DeviceError("device.kind = 'replay' needs device.file",
                              hint="set file = 'recordings/session_raw.fif' in [device]")
        path = loaded.path(cfg.file, what="device.file") if loaded is not None else Path(cfg.file)
        if not path.is_file():
            raise DeviceError(f"device.file {path} does not exist",
                              hint="record one with `dreamstate record --out FILE` or fix the path")
        return ReplayDevice(path, speed=cfg.speed, loop=cfg.loop)
    if cfg.kind == "lsl":
        from dreamstate.devices.lsl import LslDevice

        q = cfg.lsl
        return LslDevice(name=q.name, stype=q.type, source_id=q.source_id, channels=q.channels, unit=q.unit,
                         timeout_s=q.timeout_s, stall_s=q.stall_s)
    raise DeviceError(f"unknown device.kind {cfg.kind!r}",
                      hint="use thinkgear, simulated, replay or lsl")
