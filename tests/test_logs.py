"""Structured log lines: key=value by default, one JSON object per line with --log-json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _run(*args: str) -> str:
    code = ("import logging; from dreamstate.engine.core.logs import setup_logging; import sys; "
            f"setup_logging(json_lines={'--log-json' in args}); "
            "logging.getLogger('dreamstate.test').warning('port lost', extra={'port': '/dev/rfcomm0', 'n': 3})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stderr.strip()


def test_key_value_lines_carry_the_context() -> None:
    line = _run()
    assert "WARNING" in line and "dreamstate.test: port lost" in line
    assert "port='/dev/rfcomm0'" in line and "n=3" in line


def test_json_lines_are_machine_readable() -> None:
    doc = json.loads(_run("--log-json"))
    assert doc["level"] == "warning" and doc["msg"] == "port lost"
    assert doc["port"] == "/dev/rfcomm0" and doc["n"] == 3


def test_log_extras_are_quoted_once_and_cut_short() -> None:
    from dreamstate.engine.core.logs import truncate

    assert truncate("127.0.0.1:53385") == "127.0.0.1:53385"  # was "'127.0.0.1:53385'", quoted twice in key=value
    assert truncate("bell\x07") == "'bell\\x07'"  # control characters stay visible
    assert truncate(b"\xff\x00") == "b'\\xff\\x00'"
    long = truncate("y" * 500, 40)
    assert long.startswith("y" * 40) and long.endswith("(500 chars)")


def test_log_file_is_written_and_rotated(tmp_path: Path) -> None:
    """--log-file for runs outside systemd: the same lines as stderr, rotated by size."""
    import logging

    from dreamstate.engine.core.logs import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging(log_file=str(tmp_path / "logs" / "dreamstate.log"), max_bytes=2000, backups=2)
        log = logging.getLogger("dreamstate.test")
        for i in range(100):
            log.info("status line %d", i, extra={"scene": "calm"})
        for h in logging.getLogger().handlers:
            h.flush()
        files = sorted((tmp_path / "logs").iterdir())
        assert [f.name for f in files] == ["dreamstate.log", "dreamstate.log.1", "dreamstate.log.2"]
        assert all(f.stat().st_size <= 2200 for f in files)
        assert "status line 99" in files[0].read_text() and "scene='calm'" in files[0].read_text()
    finally:
        for h in logging.getLogger().handlers:
            h.close()
        root.handlers[:], level = saved
        root.setLevel(level)


def test_stderr_lines_follow_sys_stderr_after_it_is_swapped_and_closed() -> None:
    """CI printed "--- Logging error --- I/O operation on closed file" for every later record
    (and lost them) once a test had run the CLI, which set logging up on pytest's captured
    stderr of that test. The handler now writes to whatever sys.stderr is at emit time."""
    import io
    import logging

    from dreamstate.engine.core.logs import setup_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.stderr)
    try:
        first = io.StringIO()
        sys.stderr = first
        setup_logging()
        first.close()  # what pytest does with a finished test's capture
        second = io.StringIO()
        sys.stderr = second
        logging.getLogger("dreamstate.test").warning("a later record")
        assert "WARNING dreamstate.test: a later record" in second.getvalue()
        assert "Logging error" not in second.getvalue()
    finally:
        sys.stderr = saved[2]
        root.handlers[:], level = saved[0], saved[1]
        root.setLevel(level)
