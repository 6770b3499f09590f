"""The installed package: one top-level name (``dreamstate``), the bundled models and their
licences inside it, and a wheel that runs the demo show without the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    env = {**os.environ, "PIP_NO_INDEX": "1"}  # offline: setuptools and wheel come from the venv
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(REPO)], cwd=build, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("dreamstate-*.whl")
    return whl


def test_wheel_installs_one_name_with_models_and_licences(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"dreamstate", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for data in ("dreamstate/models/efficientnet_lite0/efficientnet_lite0.onnx",
                 "dreamstate/models/efficientnet_lite0/model.json",
                 "dreamstate/models/efficientnet_lite0/NOTICE",
                 "dreamstate/models/starter/starter.onnx",
                 "dreamstate/models/starter/model.json",
                 "dreamstate/engine/tools/cli.py",
                 "dreamstate/devices/thinkgear.py"):
        assert data in names, data
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)


def test_installed_wheel_checks_and_runs_the_demo_show(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                        str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    work = tmp_path / "work"  # not the repository: nothing may come from the source tree
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "DREAMSTATE_CACHE": str(tmp_path / "cache")}
    where = subprocess.run([sys.executable, "-c", "import dreamstate.engine.core.show as s; print(s.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr
    check = subprocess.run([sys.executable, "-m", "dreamstate", "check"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "ok show demo" in check.stdout, check.stdout + check.stderr
    run = subprocess.run([sys.executable, "-m", "dreamstate", "run", "--seconds", "4", "--output", "none"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "dream model ready" in run.stderr and "show ended" in run.stderr, run.stderr
