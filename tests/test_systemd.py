"""The kiosk unit and systemd's part in it, on machines without systemd as PID 1:
``systemd-analyze verify`` accepts ``deploy/dreamstate.service``, and a small parent process
plays the service manager (``Type=notify``, ``WatchdogSec=``, ``Restart=always``) for a real
``dreamstate run`` child, killing and restarting it when its keepalives stop."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_notify import SHOW  # the same tiny headless show

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "dreamstate.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or ("/usr/bin/systemd-analyze"
                                                      if Path("/usr/bin/systemd-analyze").exists() else None)



# --- the unit file ---------------------------------------------------------------------------------------

def _service_section(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _installable_copy(text: str, folder: Path) -> Path:
    """The unit as it would be installed on this machine: ExecStart names the venv's real
    ``dreamstate`` script (its arguments unchanged) and WorkingDirectory a folder that exists.
    User= is left alone: ``verify`` does not look users up."""
    exe = Path(sys.executable).parent / "dreamstate"
    assert exe.exists(), f"{exe} missing: install the package (pip install -e .)"
    lines = []
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            args = line.removeprefix("ExecStart=").split(" ", 1)
            lines.append(f"ExecStart={exe}" + (f" {args[1]}" if len(args) > 1 else ""))
        elif line.startswith("WorkingDirectory="):
            lines.append(f"WorkingDirectory={folder}")
        else:
            lines.append(line)
    copy = folder / "dreamstate.service"
    copy.write_text("\n".join(lines) + "\n")
    return copy


def _verify(unit: Path) -> tuple[int, list[str]]:
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "cat", "SYSTEMD_LOG_LEVEL": "notice"}
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60, env=env)
    return proc.returncode, [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(apt-get install systemd); the unit file cannot be verified here")


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """``verify`` exits 0 even for unknown keys and unparsable values (it only warns), so every
    line it prints about the unit counts as a failure."""
    copy = _installable_copy(UNIT.read_text(), tmp_path)
    rc, lines = _verify(copy)
    about_unit = [line for line in lines if copy.name in line or str(copy) in line]
    assert rc == 0 and about_unit == [], "\n".join(lines)


@needs_analyze
def test_the_verify_check_can_fail(tmp_path: Path) -> None:
    """The same check on a unit with a typo'd key and a bad WatchdogSec= finds both."""
    broken = UNIT.read_text().replace("WatchdogSec=15", "WatchdogSec=fifteen\nWatchDogSec=15")
    copy = _installable_copy(broken, tmp_path)
    _rc, lines = _verify(copy)
    about_unit = "\n".join(line for line in lines if copy.name in line)
    assert "fifteen" in about_unit and "WatchDogSec" in about_unit, "\n".join(lines)


def test_the_unit_asks_for_what_dreamstate_sends() -> None:
    service = _service_section(UNIT.read_text())
    assert service["Type"] == ["notify"]  # READY=1 after the first frame
    assert service["NotifyAccess"] == ["main"]  # the keepalive thread lives in the main process
    watchdog_s = float(service["WatchdogSec"][0])
    assert watchdog_s > 2.0 * 2  # the loop counts as hung after 2 s: keep well above it
    assert service["Restart"] == ["always"]
    assert float(service["TimeoutStartSec"][0]) > watchdog_s  # a model compile at boot is no hang
    assert service["ExecStart"][0].split()[0].endswith("/dreamstate")


# --- a parent that plays systemd -------------------------------------------------------------------------

class ServiceManager:
    """systemd's part for one ``Type=notify`` unit with ``WatchdogSec=`` and ``Restart=always``,
    as much of it as this test needs (not product code).

    It starts the main process with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` set, reads the
    datagrams on a real ``AF_UNIX`` socket and, like ``NotifyAccess=main``, takes only those
    whose sender (``SCM_CREDENTIALS``) is the current main PID. The watchdog is armed at
    ``READY=1`` (systemd arms it when the service leaves the start state) and re-armed by
    every ``WATCHDOG=1``; when ``watchdog_s`` pass without one, the process is killed
    (``SIGKILL``; systemd sends ``WatchdogSignal=``, SIGABRT by default, then SIGKILL) and
    started again ``restart_s`` later. ``events`` records (time, pid, what) for the asserts.
    """

    def __init__(self, argv: list[str], *, cwd: Path, socket_path: Path, watchdog_s: float,
                 restart_s: float = 0.2, log: Path) -> None:
        self.argv = argv
        self.cwd = cwd
        self.watchdog_s = watchdog_s
        self.restart_s = restart_s
        self.log = log
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(socket_path))
        self.socket_path = socket_path
        self.events: list[tuple[float, int, str]] = []
        self.children: list[subprocess.Popen[bytes]] = []
        self.main: subprocess.Popen[bytes] | None = None
        self.deadline: float | None = None  # the watchdog, once armed
        self.restart_at: float | None = None

    def start(self) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.socket_path),
               "WATCHDOG_USEC": str(round(self.watchdog_s * 1e6))}
        with self.log.open("ab") as out:
            child = subprocess.Popen(self.argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append(child)
        self.main = child
        self.deadline = None
        self.restart_at = None
        self.events.append((time.monotonic(), child.pid, "started"))

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(max(0.001, timeout))
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return
        now = time.monotonic()
        pid = 0
        for level, kind, cred in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iii", cred[:12])[0]
        if self.main is None or pid != self.main.pid:
            self.events.append((now, pid, "ignored: not the main process"))
            return
        for line in data.decode(errors="replace").splitlines():
            if line in ("READY=1", "WATCHDOG=1"):
                self.events.append((now, pid, line))
                self.deadline = now + self.watchdog_s
            elif line == "STOPPING=1":
                self.events.append((now, pid, line))

    def step(self, seconds: float) -> None:
        """Serve for ``seconds``: notifications, the watchdog, exits and restarts."""
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            main = self.main
            if main is not None and main.poll() is not None:
                self.events.append((now, main.pid, f"exited {main.returncode}"))
                self.main = None
                self.restart_at = now + self.restart_s
            if main is not None and self.deadline is not None and now >= self.deadline:
                self.events.append((now, main.pid, "watchdog timeout"))
                main.kill()
                main.wait(10)
                self.events.append((time.monotonic(), main.pid, f"killed {main.returncode}"))
                self.main = None
                self.deadline = None
                self.restart_at = time.monotonic() + self.restart_s
            if self.main is None and self.restart_at is not None and time.monotonic() >= self.restart_at:
                self.start()
            waits = [end, *(t for t in (self.deadline, self.restart_at) if t is not None)]
            self._receive(min(0.05, min(waits) - time.monotonic()))

    def serve_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                raise AssertionError(f"no {what} within {timeout:.0f} s; events {self.summary()}\n"
                                     f"child log:\n{self.log.read_text(errors='replace')[-3000:]}")
            self.step(0.1)

    def of(self, pid: int, what: str) -> list[float]:
        return [t for t, p, w in self.events if p == pid and w == what]

    def summary(self) -> list[tuple[float, int, str]]:
        """The events with times from the first start (for messages: keepalives in a long
        healthy stretch are left out)."""
        t0 = self.events[0][0] if self.events else 0.0
        out = [(round(t - t0, 2), p, w) for t, p, w in self.events]
        return out if len(out) <= 40 else [*out[:10], (0.0, 0, f"... {len(out) - 30} more ..."), *out[-20:]]

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()  # SIGKILL also ends a stopped process
            child.wait(10)
        self.sock.close()


# The child: ``dreamstate run show.toml`` as the unit would start it, plus one test hook. When a
# file named hang-<its pid> appears, a task on its event loop blocks the loop (time.sleep), the
# way a stuck callback would; the display, dream and keepalive threads go on.
CHILD = """
import asyncio, os, pathlib, sys, time
from dreamstate.engine.runtime import app
from dreamstate.engine.tools.cli import main

show_run = app.ShowRuntime.run

async def run(self, **kw):
    async def hang_when_asked():
        while not pathlib.Path(f"hang-{os.getpid()}").exists():
            await asyncio.sleep(0.05)
        time.sleep(120)
    task = asyncio.ensure_future(hang_when_asked())
    try:
        return await show_run(self, **kw)
    finally:
        task.cancel()

app.ShowRuntime.run = run
sys.exit(main(["run", "show.toml"]))
"""


def _manager(tmp_path: Path, watchdog_s: float) -> ServiceManager:
    (tmp_path / "show.toml").write_text(SHOW)
    return ServiceManager([sys.executable, "-c", CHILD], cwd=tmp_path, socket_path=tmp_path / "notify",
                          watchdog_s=watchdog_s, log=tmp_path / "child.log")


def _restart_of(mgr: ServiceManager, pid: int) -> Callable[[], bool]:
    def done() -> bool:
        return mgr.main is not None and mgr.main.pid != pid and len(mgr.of(mgr.main.pid, "WATCHDOG=1")) >= 2
    return done


def _check_one_restart(mgr: ServiceManager, first: int, second: int) -> float:
    """One watchdog timeout, for ``first``, which was killed; ``second`` started after it,
    became READY and pinged; nothing exited by itself. Returns when the watchdog fired."""
    events = mgr.summary()
    timeouts = [(t, p) for t, p, w in mgr.events if w == "watchdog timeout"]
    assert [p for _, p in timeouts] == [first], f"one watchdog timeout, for the stuck child: {events}"
    fired = timeouts[0][0]
    assert mgr.of(first, f"killed {-signal.SIGKILL}"), events
    assert mgr.of(first, "READY=1") and mgr.of(second, "READY=1"), events
    assert min(mgr.of(second, "READY=1")) > fired, events
    assert min(mgr.of(second, "WATCHDOG=1")) > min(mgr.of(second, "READY=1")), events
    assert not [w for _, _, w in mgr.events if w.startswith(("exited", "ignored"))], events
    return fired


@pytest.mark.slow
def test_a_parent_playing_systemd_restarts_a_frozen_show(tmp_path: Path) -> None:
    """A real ``dreamstate run`` child becomes READY and pings; frozen with SIGSTOP (what a
    hung process looks like from outside) it pings no more, the parent's watchdog runs out
    within its period, kills it and starts a new one, which becomes READY and pings again."""
    watchdog_s = 1.0
    mgr = _manager(tmp_path, watchdog_s)
    try:
        mgr.start()
        assert mgr.main is not None
        first = mgr.main.pid
        mgr.serve_until(lambda: len(mgr.of(first, "WATCHDOG=1")) >= 3, 45, "READY=1 and 3 keepalives")
        os.kill(first, signal.SIGSTOP)
        frozen_at = time.monotonic()
        last_ping = max(mgr.of(first, "WATCHDOG=1"))
        mgr.serve_until(_restart_of(mgr, first), 45, "restart that becomes READY and pings")
        assert mgr.main is not None
        second = mgr.main.pid
    finally:
        mgr.close()
    fired = _check_one_restart(mgr, first, second)
    # systemd's rule: WatchdogSec after the last keepalive, and so within one period of the freeze
    assert last_ping + watchdog_s <= fired < frozen_at + watchdog_s + 1.0, mgr.summary()  # 1 s: a busy CPU


@pytest.mark.slow
def test_a_parent_playing_systemd_restarts_a_show_whose_event_loop_hangs(tmp_path: Path) -> None:
    """Only the child's event loop hangs; the process runs and its display presents frames. The
    child itself must withhold its keepalives (the loop counts as hung after 2 s unanswered),
    so the parent's watchdog runs out, kills it and starts a new one that becomes READY."""
    watchdog_s = 1.0
    mgr = _manager(tmp_path, watchdog_s)
    try:
        mgr.start()
        assert mgr.main is not None
        first = mgr.main.pid
        mgr.serve_until(lambda: len(mgr.of(first, "WATCHDOG=1")) >= 3, 45, "READY=1 and 3 keepalives")
        (tmp_path / f"hang-{first}").touch()
        hung_at = time.monotonic()
        mgr.serve_until(_restart_of(mgr, first), 45, "restart that becomes READY and pings")
        assert mgr.main is not None
        second = mgr.main.pid
    finally:
        mgr.close()
    fired = _check_one_restart(mgr, first, second)
    # pings go on until the loop has been silent for 2 s, then stop: the watchdog runs out one
    # period after the last (polling 0.05 s, the loop-lag monitor's 0.1 s tick, a 0.5 s check)
    assert hung_at + 2.0 <= fired < hung_at + 2.0 + 0.1 + 0.5 + watchdog_s + 1.0, mgr.summary()
    log = (tmp_path / "child.log").read_text(errors="replace")
    assert "systemd keepalive withheld: the event loop does not answer" in log
