"""``dreamstate bench render`` runs end to end (tiny sizes) and prints every figure."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dreamstate.engine.tools.cli import main as cli_main


def test_bench_render_prints_its_figures(shared_models: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = cli_main(["bench", "render", "--model", str(shared_models / "SqueezeNet_fp16.onnx"),
                         "--seconds", "2.5", "--warmup", "0.5", "--dream-size", "96x64",
                         "--output-size", "192x128", "--threads", "1"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 0
    out = capsys.readouterr().out
    for figure in ("dream steps/s", "display fps", "frame time p50", "frame time p99",
                   "recipe change", "RSS drift", "classic 4 octaves x 10 steps",
                   "display sink = none"):
        assert figure in out, figure
