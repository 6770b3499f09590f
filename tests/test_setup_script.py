"""scripts/setup.sh as a technician meets it: another apt holds the lock (stubbed apt tools)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def test_setup_waits_for_an_apt_lock_held_by_another_process_and_says_so(tmp_path: Path) -> None:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "apt.log"
    _stub(stubs, "dpkg-query", "exit 1")                        # nothing installed yet
    _stub(stubs, "pgrep", '[ "$2" = "unattended-upgr" ] && exit 0; exit 1')  # unattended upgrades run
    _stub(stubs, "apt-get", f'echo "$@" >> {log}')
    _stub(stubs, "sudo", 'exec "$@"')
    res = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--system-only"], cwd=REPO, text=True,
                         capture_output=True, timeout=60, env={**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"},
                         check=False)
    assert res.returncode == 0, res.stderr
    assert "another package manager is running; waiting" in res.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and all("-o DPkg::Lock::Timeout=300" in c for c in calls), calls
    assert "install" in calls[1] and "mosquitto" in calls[1] and "openssl" in calls[1]
