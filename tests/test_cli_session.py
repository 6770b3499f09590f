"""The pty-served simulator through the real serial path, the session CLI, and the factory."""

from __future__ import annotations

import asyncio
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import serial

from dreamstate.devices import thinkgear as tg
from dreamstate.devices.factory import open_device
from dreamstate.devices.pty_server import PtyServer
from dreamstate.devices.replay import ReplayDevice
from dreamstate.devices.serial_port import ThinkGearSerialDevice
from dreamstate.devices.simulator import EegSimulator, SimulatedDevice
from dreamstate.engine.core.errors import DeviceError, PathEscapeError
from dreamstate.engine.core.records import RawChunk, SignalQuality
from dreamstate.engine.core.show import DeviceConfig, LoadedShow, Show, SimStep

SFREQ = 512


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dreamstate", *args]


def parse_raw(data: bytes) -> list[int]:
    out: list[int] = []
    for p in tg.expand(tg.ThinkGearParser().feed(data)):
        assert isinstance(p, tg.Packet)
        out.extend(r.value for r in p.rows if isinstance(r, tg.RawValue))
    return out


async def test_pty_server_bytes_read_through_pyserial(tmp_path: Path) -> None:
    sim = EegSimulator([("blinking", 10)], seed=5, loop=False)
    link = tmp_path / "headset"
    server = PtyServer(sim, speed=4.0, link=link)
    await server.start()
    try:
        assert link.is_symlink() and Path(server.slave_path).exists()
        port = serial.Serial(str(link), 57600, timeout=0)
        data = bytearray()
        try:
            port.write(b"\xc2")  # a dongle auto-connect command reaches the "headset"
            deadline = time.monotonic() + 20
            while len(data) < 4096 * 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                data += port.read(65536)
        finally:
            port.close()
        await asyncio.sleep(0.1)
        assert server.received == b"\xc2"
    finally:
        await server.stop()
    assert not link.exists()
    raw = parse_raw(bytes(data))
    expected = EegSimulator([("blinking", 10)], seed=5, loop=False).advance(len(raw)).raw
    assert len(raw) > SFREQ
    assert raw == expected.tolist()  # every byte arrived, in order, untranslated


async def test_serial_device_reads_the_pty_simulator(tmp_path: Path) -> None:
    sim = EegSimulator([("neutral", 30)], seed=6, loop=False)
    async with PtyServer(sim, speed=2.0, link=tmp_path / "hs"):
        dev = ThinkGearSerialDevice(port=str(tmp_path / "hs"), baud=57600)
        samples: list[np.ndarray] = []
        qualities = []
        async with dev:
            async for r in dev.readings():
                if isinstance(r, RawChunk):
                    samples.append(r.samples)
                elif isinstance(r, SignalQuality):
                    qualities.append(r.poor_signal)
                if sum(len(s) for s in samples) >= 2 * SFREQ and qualities:
                    break
    got = np.concatenate(samples)
    ref = EegSimulator([("neutral", 30)], seed=6, loop=False).advance(4 * SFREQ).uv()
    # The reader may start mid-stream: find where it joined, then all samples match.
    start = int(np.flatnonzero(np.isclose(ref, got[0]) & np.isclose(np.roll(ref, -1), got[1]))[0])
    np.testing.assert_allclose(got[:SFREQ], ref[start:start + SFREQ], atol=1e-3)
    assert qualities[0] == 0


@pytest.mark.slow
def test_cli_simulate_pty_then_monitor_through_the_serial_port(tmp_path: Path) -> None:
    link = tmp_path / "headset"
    sim = subprocess.Popen(cli("simulate", "--pty", "--link", str(link), "--seed", "2",
                               "--script", "relaxed:60", "--seconds", "60"),
                           cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        assert sim.stdout is not None
        ready, _, _ = select.select([sim.stdout], [], [], 60)
        assert ready, "simulate printed nothing"
        first = sim.stdout.readline()
        assert re.match(r"simulated ThinkGear headset on /dev/\S+ \(link .*headset\)", first)
        assert link.is_symlink()
        mon = subprocess.run(cli("monitor", "--port", str(link), "--baud", "57600",
                                 "--seconds", "4"), cwd=tmp_path, capture_output=True,
                             text=True, timeout=90, check=False)
    finally:
        sim.terminate()
        out, err = sim.communicate(timeout=30)
    assert mon.returncode == 0, mon.stderr
    assert sim.returncode == 0, err
    assert "stopped:" in out and not link.exists()
    lines = [ln for ln in mon.stdout.splitlines() if ln.startswith("signal=")]
    assert lines and "GOOD contact (0)" in lines[-1]
    m = re.search(r"samples=(\d+)", lines[-1])
    assert m and int(m.group(1)) >= SFREQ
    assert "ThinkGear on" in mon.stdout and "EEG state and map" in mon.stdout


def test_cli_simulate_out_writes_a_parseable_stream(tmp_path: Path) -> None:
    out = tmp_path / "stream.bin"
    res = subprocess.run(cli("simulate", "--out", str(out), "--seconds", "3", "--seed", "4"),
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    raw = parse_raw(out.read_bytes())
    assert raw == EegSimulator(seed=4).advance(3 * SFREQ).raw.tolist()


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    res = subprocess.run(cli("simulate"), capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 1 and "--pty" in res.stderr
    bad = tmp_path / "bad_raw.dsj"
    bad.write_bytes(b"garbage")
    res = subprocess.run(cli("recover", str(bad)), capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 1 and "not a dreamstate journal" in res.stderr
    res = subprocess.run(cli("monitor", "--simulate", "--script", "sleepy:3", "--seconds", "1"),
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1 and "sleepy:3" in res.stderr


def test_factory_maps_each_kind(tmp_path: Path) -> None:
    dev = open_device(DeviceConfig(kind="thinkgear", port="/dev/ttyUSB7", baud=115200))
    assert isinstance(dev, ThinkGearSerialDevice) and "/dev/ttyUSB7" in dev.describe()
    sim = open_device(DeviceConfig(kind="simulated", seed=3, speed=2.0,
                                   script=[SimStep(state="focused", seconds=5)]))
    assert isinstance(sim, SimulatedDevice)
    assert sim.script == [("focused", 5.0)] and sim.seed == 3 and sim.speed == 2.0
    assert open_device(DeviceConfig(kind="simulated")).script is None  # type: ignore[attr-defined]
    rec = tmp_path / "rec_raw.fif"
    rec.write_bytes(b"")
    loaded = LoadedShow(Show(), tmp_path, "test")
    rep = open_device(DeviceConfig(kind="replay", file="rec_raw.fif", speed=3.0), loaded)
    assert isinstance(rep, ReplayDevice) and rep.path == rec and rep.speed == 3.0
    with pytest.raises(DeviceError, match="does not exist"):
        open_device(DeviceConfig(kind="replay", file="nope_raw.fif"), loaded)
    with pytest.raises(PathEscapeError, match="outside the show folder"):
        open_device(DeviceConfig(kind="replay", file="../../etc/passwd"), loaded)
