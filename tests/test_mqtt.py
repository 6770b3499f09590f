"""MQTT against a real mosquitto broker on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from engine.control.commands import Command
from engine.control.mqtt import MqttLink
from engine.records import EegState
from engine.runtime import Backoff
from engine.show import MqttConfig

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, tmp: Path) -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail("mosquitto is not installed; run ./scripts/setup.sh (Debian package mosquitto)")
        self.port = _free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@contextlib.asynccontextmanager
async def running(link: MqttLink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 5)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _cfg(port: int) -> MqttConfig:
    return MqttConfig(enabled=True, port=port, installation="gallery", node="eeg1")


async def test_state_is_retained_and_control_becomes_commands(broker: Broker) -> None:
    link = MqttLink(_cfg(broker.port))
    async with running(link):
        link.publish_state(EegState("calm", {"calm": 0.9, "focused": 0.1}, 0.9, 1.0, index=0))
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.publish("dreamstate/gallery/control/zoom", b"1.02")
            await c.publish("dreamstate/gallery/control/scene", b"calm")
            await c.publish("dreamstate/gallery/control/zoom", b"\xff\xfe")       # not UTF-8
            await c.publish("dreamstate/gallery/control/warp", b"9")             # unknown command
        for _ in range(200):
            if len(link.commands) >= 2 and link.counters.get("rejected") >= 2:
                break
            await asyncio.sleep(0.02)
        assert link.commands.drain() == [Command("zoom", 1.02), Command("scene", "calm")]
        assert link.counters.get("rejected") == 2
        # a render node that subscribes later still gets the retained state and status
        async with aiomqtt.Client("127.0.0.1", broker.port) as late:
            await late.subscribe("dreamstate/gallery/eeg1/#")
            got: dict[str, bytes] = {}
            async with asyncio.timeout(5):
                async for m in late.messages:
                    got[str(m.topic)] = m.payload  # type: ignore[assignment]
                    if {"dreamstate/gallery/eeg1/state", "dreamstate/gallery/eeg1/status"} <= set(got):
                        break
        assert b'"label": "calm"' in got["dreamstate/gallery/eeg1/state"]
        assert got["dreamstate/gallery/eeg1/status"] == b"online"


async def test_broker_that_goes_away_is_reconnected(broker: Broker) -> None:
    link = MqttLink(_cfg(broker.port), backoff=Backoff(base=0.05, cap=0.2))
    async with running(link):
        broker.stop()
        for _ in range(200):
            if link.counters.get("disconnects") >= 1:
                break
            await asyncio.sleep(0.02)
        assert link.counters.get("disconnects") >= 1
        link.publish_telemetry({"fps": 30.0})
        assert link.counters.get("telemetry_dropped") == 1, "telemetry while offline is dropped and counted"
        broker.start()
        await asyncio.wait_for(link.connected.wait(), 10)
        assert link.counters.get("connects") >= 2
        link.publish_state(EegState("focused", {}, 1.0, 2.0))
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe("dreamstate/gallery/eeg1/state")
            async with asyncio.timeout(5):
                async for m in c.messages:
                    assert b"focused" in m.payload  # type: ignore[operator]
                    break


async def test_last_will_says_offline_when_the_node_dies(broker: Broker) -> None:
    import os
    import signal
    import sys

    script = (
        "import asyncio\n"
        "from engine.control.mqtt import MqttLink\n"
        "from engine.show import MqttConfig\n"
        f"cfg = MqttConfig(enabled=True, port={broker.port}, installation='gallery', node='dying')\n"
        "async def main():\n"
        "    link = MqttLink(cfg)\n"
        "    t = asyncio.create_task(link.run())\n"
        "    await link.connected.wait()\n"
        "    print('up', flush=True)\n"
        "    await t\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"up"
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
        await c.subscribe("dreamstate/gallery/dying/status")
        async with asyncio.timeout(5):
            async for m in c.messages:
                assert m.payload == b"offline"
                break
