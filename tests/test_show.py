"""Show files: whole-file validation with key paths, unknown keys, paths kept inside the folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamstate.engine.core.errors import PathEscapeError, ShowError
from dreamstate.engine.core.paths import resolve_inside
from dreamstate.engine.runtime.showfile import load_show


def write(tmp_path: Path, text: str, name: str = "show.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_demo_show_is_valid() -> None:
    loaded = load_show(None, deep=False)
    assert loaded.show.device.kind == "simulated"
    assert loaded.show.show.default_scene in loaded.show.scenes


def test_every_error_is_listed_with_key_path_value_and_hint(tmp_path: Path) -> None:
    p = write(tmp_path, """
[device]
kind = "bluetooth"
speed = -1
[signal]
features = ["log_band_power", "vibes"]
[output]
fps = 0
colour = "red"
""")
    with pytest.raises(ShowError) as info:
        load_show(p)
    problems = dict(info.value.problems)
    assert set(problems) == {"device.kind", "device.speed", "signal.features", "output.fps",
                             "output.colour", "scenes"}  # all at once, the missing scenes too
    assert "'bluetooth'" in problems["device.kind"] and "simulated" in problems["device.kind"]
    assert "vibes" in problems["signal.features"] and "mfcc" in problems["signal.features"]
    assert "remove the key" in problems["output.colour"]
    assert "larger" in problems["output.fps"]
    assert str(p) in str(info.value)


def test_paths_must_stay_inside_the_show_folder(tmp_path: Path) -> None:
    (tmp_path / "show").mkdir()
    (tmp_path / "secret.fif").write_bytes(b"x")
    p = write(tmp_path / "show", """
[device]
kind = "replay"
file = "../secret.fif"
[record]
path = "/etc/passwd"
""")
    with pytest.raises(ShowError) as info:
        load_show(p)
    problems = dict(info.value.problems)
    assert "outside the show folder" in problems["device.file"]
    assert "outside the show folder" in problems["record.path"]


def test_missing_files_and_scenes_are_reported(tmp_path: Path) -> None:
    p = write(tmp_path, """
[show]
images = ["subway.jpg"]
default_scene = "storm"
[scenes.calm]
layers = { block3 = 1.0 }
""")
    with pytest.raises(ShowError) as info:
        load_show(p, deep=False)
    problems = dict(info.value.problems)
    assert "not found" in problems["show.images[0]"]
    assert "storm" in problems["show.default_scene"]
    assert "attract" in problems["attract.scene"]


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "show"
    base.mkdir()
    os.symlink("/etc", base / "etc")
    with pytest.raises(PathEscapeError):
        resolve_inside(base, "etc/hostname")
    assert resolve_inside(base, "img/a.png") == (base / "img" / "a.png").resolve()


def test_bad_toml_and_missing_file_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ShowError, match="not valid TOML"):
        load_show(write(tmp_path, "[show\nname="))
    with pytest.raises(ShowError, match="cannot read show file"):
        load_show(tmp_path / "nope.toml")


def test_check_command_reports_and_exits_nonzero(tmp_path: Path) -> None:
    p = write(tmp_path, '[device]\nkind = "nope"\n')
    r = subprocess.run([sys.executable, "-m", "dreamstate", "check", str(p)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert "device.kind" in r.stderr
    ok = write(tmp_path, '[show]\nname = "fine"\n[scenes.calm]\nlayers = { block10 = 1.0 }\n'
                         '[scenes.attract]\nlayers = { block9 = 1.0 }\n', "ok.toml")
    r = subprocess.run([sys.executable, "-m", "dreamstate", "check", str(ok)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "fine" in r.stdout


def test_image_masks_with_a_reading_mode_are_path_checked(tmp_path: Path) -> None:
    p = write(tmp_path, """
[scenes.calm]
mask = "edges:missing.png"
[scenes.attract]
mask = "luminance:../outside.png"
""")
    with pytest.raises(ShowError) as info:
        load_show(p, deep=False)
    problems = dict(info.value.problems)
    assert "not found" in problems["scenes.calm.mask"]
    assert "outside the show folder" in problems["scenes.attract.mask"]
