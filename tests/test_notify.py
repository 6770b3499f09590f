"""systemd notifications on a real AF_UNIX datagram socket, as systemd listens for them:
READY=1 after the first frame, WATCHDOG=1 only while frames are presented and the loop answers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

import pytest

from dreamstate.engine.runtime.app import ShowRuntime
from dreamstate.engine.runtime.notify import Notifier, ShowWatchdog, notify_socket_address, watchdog_period_s
from dreamstate.engine.runtime.showfile import load_show

SHOW = """
[show]
model = "starter"
[scenes.calm]
layers = { block2 = 1.0 }
[scenes.attract]
layers = { block2 = 1.0 }
[output]
kind = "none"
size = [64, 48]
dream_size = [64, 48]
fps = 30
"""


class Listener:
    """What systemd does: bind a datagram socket and read KEY=value lines."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.got.append((time.monotonic(), line))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def lines(self, key: str) -> list[float]:
        return [t for t, line in self.got if line == key]


def test_environment_parsing() -> None:
    assert notify_socket_address({}) is None
    assert notify_socket_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_socket_address({"NOTIFY_SOCKET": "@abstract"}) == "\0abstract"
    assert watchdog_period_s({"WATCHDOG_USEC": "10000000"}) == 10.0
    assert watchdog_period_s({"WATCHDOG_USEC": "x"}) is None and watchdog_period_s({}) is None


async def test_a_running_show_is_ready_after_its_first_frame_and_keeps_pinging(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamstate.models.dream import DreamModel

    listener = Listener(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "600000")  # pings every 0.3 s
    (tmp_path / "show.toml").write_text(SHOW)
    model = DreamModel.load("starter", ["block2"])
    try:
        rt = ShowRuntime(load_show(tmp_path / "show.toml"), seconds=3.0, load_model=lambda _l, _y, _g: model)
        await asyncio.wait_for(rt.run(), 30)
        await asyncio.sleep(0.3)
    finally:
        listener.close()
    ready = listener.lines("READY=1")
    pings = listener.lines("WATCHDOG=1")
    assert len(ready) == 1 and len(pings) >= 4, listener.got
    assert min(pings) > ready[0]
    assert listener.lines("STOPPING=1")
    assert any(line.startswith("STATUS=scene ") for _, line in listener.got)


def test_a_frozen_display_stops_the_keepalives(tmp_path: Path) -> None:
    """The display loop stops presenting (a driver hang): no more WATCHDOG=1, so systemd's
    watchdog restarts the process. Likewise when the event loop stops answering."""
    listener = Listener(tmp_path / "notify")
    frames = [0]
    loop_ok = [True]
    dog = ShowWatchdog(Notifier(str(tmp_path / "notify")), lambda: frames[0], lambda: loop_ok[0], period_s=0.2)
    dog.start()
    try:
        for _ in range(10):  # presenting
            frames[0] += 5
            time.sleep(0.05)
        time.sleep(0.3)
        during = len(listener.lines("WATCHDOG=1"))
        frozen_at = time.monotonic()
        time.sleep(0.6)  # frozen: the frame count stands still
        after_freeze = [t for t in listener.lines("WATCHDOG=1") if t > frozen_at + 0.15]
        for _ in range(10):  # presenting again, but the event loop hangs
            frames[0] += 5
            loop_ok[0] = False
            time.sleep(0.05)
        hung_at = time.monotonic()
        time.sleep(0.3)
        after_hang = [t for t in listener.lines("WATCHDOG=1") if t > hung_at]
    finally:
        dog.stop()
        listener.close()
    assert listener.lines("READY=1") and during >= 2
    assert after_freeze == [] and after_hang == []
    assert dog.withheld >= 3


def test_no_socket_no_thread_no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    from dreamstate.engine.runtime.notify import start_watchdog

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert start_watchdog(lambda: 1, lambda: True, lambda: "") is None
    assert not Notifier(None).send("READY=1")


