"""systemd notifications on a real AF_UNIX datagram socket, as systemd listens for them:
READY=1 after the first frame, WATCHDOG=1 only while frames are presented, the loop answers and
the picture can be recovered (3 failed reseeds in a row cannot)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamstate.engine.core.images import load_image, resize
from dreamstate.engine.render.health import UNRECOVERABLE_RESEEDS, HealthSettings, PictureHealth
from dreamstate.engine.runtime.app import ShowRuntime, default_source_path
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




# --- the picture: a reseed is normal, failed reseeds in a row are not ---------------------------------

def _living(source: np.ndarray, i: int) -> np.ndarray:
    return np.roll(source, 2 * i, axis=1)  # the source, moving: in bounds


class _Clocked:
    """PictureHealth driven like the dream worker drives it, on a 10 Hz frame clock."""

    def __init__(self) -> None:
        path = default_source_path()
        assert path is not None
        self.source = resize(load_image(path), (160, 107))
        self.flat = np.full_like(self.source, 0.45)  # a dead picture: no contrast, no detail
        self.health = PictureHealth(HealthSettings(watchdog_s=1.0))
        self.health.set_source(self.source)
        self.i = 0
        self.reports: list[Any] = []

    def _frame(self, frame: str) -> Any:
        self.i += 1
        img = _living(self.source, self.i) if frame == "living" else self.flat
        report = self.health.update(img, self.i / 10)
        if report is not None:
            self.reports.append(report)
            if report.reseed:
                self.health.reseeded()
                self.health.set_source(self.source)
        return report

    def living(self, seconds: float) -> None:
        """The source, moving, for ``seconds``: every check in bounds."""
        for _ in range(round(seconds * 10)):
            report = self._frame("living")
            assert report is None or (report.in_bounds and not report.reseed), report

    def dead(self, reseeds: int) -> None:
        """A flat picture until ``reseeds`` reseeds were made and the check after the last."""
        made = 0
        for _ in range(600):
            report = self._frame("flat")
            if report is not None and made == reseeds:
                return
            if report is not None and report.reseed:
                made += 1
        raise AssertionError(f"only {made} of {reseeds} reseeds in 60 s")


def test_a_reseed_that_brings_the_picture_back_is_no_failure() -> None:
    h = _Clocked()
    h.living(1.0)
    for _ in range(UNRECOVERABLE_RESEEDS + 2):  # many reseeds, each one bringing the picture back
        h.dead(reseeds=1)
        assert h.health.failed_reseeds == 1  # still dead at the first check after it
        h.living(1.0)
        assert h.health.failed_reseeds == 0 and h.health.recoverable
    assert h.health.reseeds == UNRECOVERABLE_RESEEDS + 2
    assert all(r.recoverable for r in h.reports)


def test_a_normal_reseed_is_not_counted() -> None:
    """The picture drifted out; the reseed's fresh picture is in bounds at its first check."""
    h = _Clocked()
    h.living(1.0)
    while not h.reports[-1].reseed:
        h._frame("flat")
    h.living(0.6)  # the fresh picture lives
    assert h.health.reseeds == 1 and h.health.failed_reseeds == 0 and h.health.recoverable


def test_three_failed_reseeds_in_a_row_make_the_picture_unrecoverable() -> None:
    h = _Clocked()
    h.living(1.0)
    counts = []
    for _ in range(UNRECOVERABLE_RESEEDS):  # dead: every reseed dies at once
        h.dead(reseeds=1)
        counts.append((h.health.failed_reseeds, h.health.recoverable))
    assert counts == [(n, n < UNRECOVERABLE_RESEEDS) for n in range(1, UNRECOVERABLE_RESEEDS + 1)]
    last = h.reports[-1]
    assert last.failed_reseeds == UNRECOVERABLE_RESEEDS and not last.recoverable
    assert last.as_dict()["failed_reseeds"] == UNRECOVERABLE_RESEEDS
    assert sum(not r.recoverable for r in h.reports) == 1  # unrecoverable from the third on
    h.living(0.6)  # any check in bounds starts the count afresh
    assert h.health.failed_reseeds == 0 and h.health.recoverable


def test_failed_reseeds_count_only_in_a_row() -> None:
    h = _Clocked()
    h.living(1.0)
    h.dead(reseeds=UNRECOVERABLE_RESEEDS - 1)
    assert h.health.failed_reseeds == UNRECOVERABLE_RESEEDS - 1 and h.health.recoverable
    h.living(0.6)  # one check in bounds between them
    assert h.health.failed_reseeds == 0
    h.dead(reseeds=1)
    assert h.health.failed_reseeds == 1 and h.health.recoverable


def test_an_unrecoverable_picture_stops_the_keepalives(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Frames are presented and the loop answers, but the picture is beyond reseeding: no
    WATCHDOG=1 (systemd restarts the process), one warning naming the reason, and the
    keepalives come back when the picture does."""
    listener = Listener(tmp_path / "notify")
    frames = [0]
    picture = [True]
    dog = ShowWatchdog(Notifier(str(tmp_path / "notify")), lambda: frames[0], lambda: True, period_s=0.2,
                       picture_ok=lambda: picture[0])

    def present(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            frames[0] += 5
            time.sleep(0.05)

    dog.start()
    try:
        with caplog.at_level(logging.INFO, logger="dreamstate.runtime"):
            present(0.6)
            picture[0] = False
            dead_at = time.monotonic()
            present(0.8)
            alive_at = time.monotonic()
            picture[0] = True
            present(0.6)
    finally:
        dog.stop()
        listener.close()
    pings = listener.lines("WATCHDOG=1")
    assert listener.lines("READY=1") and [t for t in pings if t < dead_at]
    assert [t for t in pings if dead_at + 0.15 < t < alive_at] == []
    assert len([t for t in pings if t > alive_at]) >= 2
    withheld = [r.getMessage() for r in caplog.records if "keepalive withheld" in r.getMessage()]
    assert withheld == ["systemd keepalive withheld: the picture cannot be recovered (reseeds in a row failed)"]
    assert any(line.startswith("STATUS=keepalive withheld: the picture cannot") for _, line in listener.got)
    assert any("keepalives resumed" in r.getMessage() for r in caplog.records)


class _Flattening:
    """The real starter model with a clip that flattens every result: a picture that dies again
    at once after every reseed (as a broken model or driver would)."""

    def __init__(self, model: Any) -> None:
        self._m = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)

    def step(self, x: np.ndarray, layer_weights: Mapping[str, float] | None = None, **kw: Any) -> Any:
        return self._m.step(x, layer_weights, **kw)

    def clip(self, x: np.ndarray) -> np.ndarray:
        return np.full_like(x, float(np.mean(x)))


@pytest.mark.slow
async def test_a_running_show_whose_picture_cannot_be_recovered_stops_its_keepalives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole show (app.py's wiring): frames are presented and the loop answers, but every
    reseed dies at once. The first reseeds keep the keepalives going; after the third failed one
    in a row they stop, so systemd restarts the process."""
    from dreamstate.models.dream import DreamModel

    listener = Listener(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "600000")  # a check every 0.3 s
    (tmp_path / "show.toml").write_text(SHOW + "[health]\nwatchdog_s = 1\n")
    model = _Flattening(DreamModel.load("starter", ["block2"]))
    rt = ShowRuntime(load_show(tmp_path / "show.toml"), seconds=30.0, load_model=lambda _l, _y, _g: model)
    reseeds: list[tuple[float, int]] = []  # (time, failed reseeds in a row) at each new reseed
    dead_at: list[float] = []

    async def watch() -> None:
        try:
            while not dead_at:
                await asyncio.sleep(0.05)
                r = rt.renderer
                h = r.stats.health if r is not None else None
                if h is not None and (not reseeds or reseeds[-1][1] != h.failed_reseeds):
                    reseeds.append((time.monotonic(), h.failed_reseeds))
                if h is not None and not h.recoverable:
                    dead_at.append(time.monotonic())
            await asyncio.sleep(2.0)  # six watchdog checks with the picture unrecoverable
        finally:
            rt.supervisor.request_stop("test done")

    try:
        await asyncio.wait_for(asyncio.gather(rt.run(handle_signals=False), watch()), 40)
    finally:
        listener.close()
    assert dead_at, reseeds
    pings = listener.lines("WATCHDOG=1")
    first_failed = next(t for t, n in reseeds if n == 1)
    assert [t for t in pings if t > first_failed], "a failed reseed alone must not stop the keepalives"
    assert [t for t in pings if t > dead_at[0] + 0.6] == []  # one 0.3 s check, and a busy CPU's slack
    assert any(line == "STATUS=keepalive withheld: the picture cannot be recovered (reseeds in a row failed)"
               for _, line in listener.got)


# --- the real event loop, frozen on purpose -------------------------------------------------------------

@pytest.mark.slow
async def test_a_hung_event_loop_stops_the_keepalives_of_a_running_show(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The show's own event loop blocks for 4.5 s (a task on it calls time.sleep) while the
    display thread keeps presenting: WATCHDOG=1 stops once the loop-lag monitor calls the loop
    unresponsive (its ping unanswered for 2 s) and comes back when the loop answers again."""
    from dreamstate.models.dream import DreamModel

    listener = Listener(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a check every 0.2 s
    (tmp_path / "show.toml").write_text(SHOW)
    model = DreamModel.load("starter", ["block2"])
    rt = ShowRuntime(load_show(tmp_path / "show.toml"), seconds=30.0, load_model=lambda _l, _y, _g: model)
    hang: list[float] = []
    frames: list[int] = []

    async def freeze() -> None:
        try:
            while len(listener.lines("WATCHDOG=1")) < 3:
                await asyncio.sleep(0.05)
            r = rt.renderer
            assert r is not None
            hang.append(time.monotonic())
            frames.append(r.stats.displayed_frames)
            time.sleep(4.5)  # blocking on purpose: the event loop answers nothing meanwhile
            hang.append(time.monotonic())
            frames.append(r.stats.displayed_frames)
            await asyncio.sleep(1.5)
        finally:
            rt.supervisor.request_stop("test done")

    try:
        await asyncio.wait_for(asyncio.gather(rt.run(handle_signals=False), freeze()), 40)
    finally:
        listener.close()
    hung_at, resumed_at = hang
    pings = listener.lines("WATCHDOG=1")
    # unresponsive from 2 s after the hang began (+ one 0.1 s monitor tick + one 0.2 s check)
    assert [t for t in pings if hung_at + 2.8 < t < resumed_at] == [], [round(t - hung_at, 2) for t in pings]
    assert [t for t in pings if hung_at < t < hung_at + 1.5], "a loop counts as hung only after 2 s unanswered"
    assert len([t for t in pings if t > resumed_at]) >= 3, "the keepalives did not come back"
    assert frames[1] - frames[0] > 30, "the display must go on presenting during the hang"
    assert any(line == "STATUS=keepalive withheld: the event loop does not answer" for _, line in listener.got)


def test_a_display_that_froze_just_after_a_keepalive_gets_no_more(tmp_path: Path) -> None:
    """Frames move for 0.6 s, then freeze. The next keepalive (2 s interval) must be withheld:
    the count moved within that interval, but not within the last second."""
    listener = Listener(tmp_path / "notify")
    frames = [0]
    dog = ShowWatchdog(Notifier(str(tmp_path / "notify")), lambda: frames[0], lambda: True, period_s=4.0)
    dog.start()
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.6:
            frames[0] += 1
            time.sleep(0.02)
        time.sleep(2.2)  # past the first keepalive time (~2.1 s after ready)
    finally:
        dog.stop()
        listener.close()
    assert listener.lines("READY=1")
    assert listener.lines("WATCHDOG=1") == [] and dog.withheld >= 1, dog.reason
    assert dog.reason == "the display loop is not presenting frames"
