"""The event loop watched from outside: lag is measured, and a stuck shutdown cannot hang.

Real processes and real signals: a child runs a supervisor whose stage blocks the event loop on
purpose while a recording is open; the parent sends SIGTERM, then a second one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from dreamstate.engine.runtime.watch import LoopLagMonitor

REPO = Path(__file__).resolve().parents[1]


async def test_loop_lag_monitor_counts_a_blocked_loop() -> None:
    mon = LoopLagMonitor(asyncio.get_running_loop(), interval_s=0.02, stall_s=0.25)
    mon.start()
    try:
        await asyncio.sleep(0.2)
        assert mon.responsive(0.5)
        time.sleep(0.4)  # blocks the loop on purpose
        assert not mon.responsive(0.2)
        await asyncio.sleep(0.2)
        assert mon.counters.get("stalls") == 1
        snap = mon.snapshot()
        assert snap["max_s"] >= 0.35 and snap["p50_s"] < 0.05
    finally:
        mon.stop()


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    import numpy as np
    from dreamstate.devices.recording import Recorder
    from dreamstate.engine.core.records import RawChunk
    from dreamstate.engine.runtime import FunctionStage, Supervisor

    async def main():
        rec = Recorder(sys.argv[1], flush_s=60.0)   # nothing is flushed on its own for a minute
        await rec.start()
        for i in range(8):
            rec.add(RawChunk(i * 512, np.full(512, float(i), np.float32), 0.0))
        async def stuck():
            print("ready", flush=True)
            if float(sys.argv[2]) > 0:
                time.sleep(float(sys.argv[2]))     # the event loop hangs here
            else:
                await asyncio.Event().wait()       # a healthy stage: runs until stopped
        sup = Supervisor([FunctionStage("stuck", stuck)], hard_exit_s=float(sys.argv[3]))
        await sup.run()
        print("clean exit", flush=True)

    asyncio.run(main())
""")


def _child(tmp_path: Path, hang_s: float, hard_exit_s: float) -> tuple[subprocess.Popen[str], Path]:
    journal = tmp_path / "j_raw.dsj"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(journal), str(hang_s), str(hard_exit_s)],
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    time.sleep(0.2)
    return proc, journal


def _samples(journal: Path) -> int:
    from dreamstate.devices.recording import read_journal

    return read_journal(journal).n_samples


def test_a_second_sigterm_exits_at_once_after_flushing_the_journal(tmp_path: Path) -> None:
    proc, journal = _child(tmp_path, hang_s=60.0, hard_exit_s=60.0)
    try:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # the loop is stuck: the first SIGTERM cannot finish the shutdown
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        took = time.monotonic() - t0
    finally:
        proc.kill()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert took < 2.0
    assert "second signal" in err
    assert _samples(journal) == 8 * 512  # flushed on the way out (the recorder would have waited 60 s)


def test_a_stuck_shutdown_exits_by_itself_after_the_deadline(tmp_path: Path) -> None:
    proc, journal = _child(tmp_path, hang_s=60.0, hard_exit_s=1.5)
    try:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        took = time.monotonic() - t0
    finally:
        proc.kill()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert 1.4 < took < 5.0
    assert "did not finish in 2 s" in err or "did not finish in 1 s" in err or "did not finish" in err
    assert _samples(journal) == 8 * 512


def test_a_healthy_shutdown_is_still_clean(tmp_path: Path) -> None:
    proc, _journal = _child(tmp_path, hang_s=0.0, hard_exit_s=60.0)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "clean exit" in out


def test_poison_osc_bundle_against_the_running_show_then_sigterm(tmp_path: Path) -> None:
    """The 20-byte datagram that froze the show: the show goes on, counts it, and stops on
    SIGTERM within seconds, with the count in its exit summary."""
    import socket
    import struct

    port = _free_udp_port()
    show = tmp_path / "show.toml"
    show.write_text(
        f'[show]\nmodel = "starter"\n[scenes.calm]\nlayers = {{ block3 = 1.0 }}\n'
        f'[scenes.attract]\nlayers = {{ block3 = 1.0 }}\n'
        f'[output]\nkind = "none"\ndream_size = [96, 64]\nsize = [96, 64]\n'
        f'[osc]\nenabled = true\nlisten_port = {port}\n'
    )
    proc = subprocess.Popen([sys.executable, "-m", "dreamstate", "run", str(show)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        listening = False
        assert proc.stderr is not None
        while time.monotonic() < deadline and not listening:
            line = proc.stderr.readline()
            listening = "OSC control listening" in line
        assert listening, "the show never started its OSC listener"
        poison = b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", -4)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(5):
            sock.sendto(poison, ("127.0.0.1", port))
        sock.close()
        time.sleep(1.0)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        took = time.monotonic() - t0
    finally:
        proc.kill()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-2000:]
    assert took < 10
    assert "osc_malformed=5" in err
    assert "Could not identify" not in err


def _free_udp_port() -> int:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_sigterm_while_the_show_still_loads_exits_cleanly_with_a_line(tmp_path: Path) -> None:
    """systemctl stop during the first seconds (the show's check, the model's compile): exit 0
    and one log line. The default action killed it with 143 and nothing logged before."""
    show = tmp_path / "show.toml"
    show.write_text('[show]\nmodel = "starter"\n[scenes.calm]\nlayers = { block3 = 1.0 }\n'
                    '[scenes.attract]\nlayers = { block3 = 1.0 }\n[output]\nkind = "none"\n')
    proc = subprocess.Popen([sys.executable, "-m", "dreamstate", "run", str(show), "--seconds", "60"], cwd=tmp_path,
                            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stderr is not None
    try:
        first = proc.stderr.readline()  # the show's check has begun (compiling or reading the step)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    finally:
        proc.kill()
    err = first + rest
    assert "show starting" not in first, "the signal was meant to land while the show still loads"
    assert proc.returncode == 0, err
    assert "SIGTERM outside the running show" in err or "SIGTERM received" in err, err
