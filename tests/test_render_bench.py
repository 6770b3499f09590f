"""``dreamstate bench render`` runs end to end (tiny sizes) and prints every figure."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from dreamstate.engine.tools.cli import main as cli_main


def test_bench_render_prints_its_figures(shared_models: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Two output sizes, one busy process beside it, and the flicker runs; the busy process
    is gone afterwards."""
    import psutil

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = cli_main(["bench", "render", "--model", str(shared_models / "SqueezeNet_fp16.onnx"),
                         "--seconds", "2.5", "--warmup", "0.5", "--dream-size", "96x64",
                         "--output-size", "192x128", "160x96", "--threads", "1", "--load", "1",
                         "--flicker-seconds", "2"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 0
    out = capsys.readouterr().out
    for figure in ("dream steps/s", "display fps", "frame time p50", "frame time p99",
                   "recipe change", "RSS drift", "classic 4 octaves x 10 steps",
                   "display sink = none", "at 192x128", "at 160x96", "--load 1: busy processes",
                   "naive re-dreaming", "live, default blend 0.5", "Farneback", "of naive",
                   "live flicker with the default blend is"):
        assert figure in out, figure
    pids = [int(p) for p in re.search(r"busy processes \[([\d, ]+)\]", out).group(1).split(",")]  # type: ignore[union-attr]
    assert len(pids) == 1 and not psutil.pid_exists(pids[0])


def test_busy_load_is_bounded_and_ends_with_its_block() -> None:
    import psutil

    from dreamstate.engine.tools.loadgen import busy_load

    with pytest.raises(ValueError, match=r"0\.\.16"), busy_load(17):
        pass
    with busy_load(2, max_s=60) as pids:
        assert len(pids) == 2
        procs = [psutil.Process(p) for p in pids]
        assert all(p.is_running() for p in procs)
        assert max(p.cpu_percent(0.5) for p in procs) > 20  # busy, not sleeping
    psutil.wait_procs(procs, timeout=3)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    with busy_load(1, max_s=0.5) as pids:  # ends by itself at its deadline
        gone, _ = psutil.wait_procs([psutil.Process(pids[0])], timeout=5)
        assert gone
