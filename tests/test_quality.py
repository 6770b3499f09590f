"""The code base stays lint-clean (ruff) and strictly typed (mypy --strict, from pyproject)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(600)
def test_mypy_strict_is_clean() -> None:
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=580)
    assert r.returncode == 0, r.stdout + r.stderr


def _lint_imports(config: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe), "--no-cache"] + (["--config", str(config)] if config else [])
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=170)


@pytest.mark.timeout(180)
def test_layers_only_point_down() -> None:
    """The import-linter layer contract in pyproject.toml (core <- devices, models <- stages <-
    runtime <- tools) is kept."""
    r = _lint_imports()
    assert r.returncode == 0 and "KEPT" in r.stdout, r.stdout + r.stderr


@pytest.mark.timeout(180)
def test_layer_check_sees_the_imports(tmp_path: Path) -> None:
    """The same checker, with the layers turned upside down, reports broken contracts: it follows
    the imports through the dreamstate/ links rather than finding an empty package."""
    config = tmp_path / "upside_down.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "dreamstate"\n\n'
        '[[tool.importlinter.contracts]]\nname = "upside down"\ntype = "layers"\n'
        'layers = ["dreamstate.engine.core", "dreamstate.engine.tools"]\n', encoding="utf-8")
    r = _lint_imports(config)
    assert r.returncode != 0 and "BROKEN" in r.stdout, r.stdout + r.stderr
