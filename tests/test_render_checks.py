"""Show checks for the renderer: images, masks and layer names, caught at load time."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.core.errors import ShowError
from dreamstate.engine.core.images import save_image
from dreamstate.engine.core.show import LoadedShow, Show
from dreamstate.engine.render.checks import check_render
from dreamstate.engine.runtime.showfile import load_show

SHOW = """
[show]
name = "checks"
model = "SqueezeNet_fp16.onnx"
images = ["a.png"{extra_image}]
default_scene = "calm"

[states]
mode = "rules"
rules = [{{ state = "calm", when = "alpha_rel > 0.30" }}]

[scenes.calm]
layers = {{ "fire5/concat" = 1.0{extra_layer} }}
mask = "{mask}"
guide = "{guide}"

[scenes.attract]
layers = {{ "fire3/concat" = 0.5 }}
mask = "circle"
"""


@pytest.fixture
def show_dir(tmp_path: Path, shared_models: Path) -> Path:
    # a copy outside the repository (shows keep their files inside their folder)
    shutil.copy(shared_models / "SqueezeNet_fp16.onnx", tmp_path / "SqueezeNet_fp16.onnx")
    save_image(tmp_path / "a.png", np.full((32, 48, 3), 0.5, np.float32))
    save_image(tmp_path / "m.png", np.full((20, 20, 3), 1.0, np.float32))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return tmp_path


def _write(folder: Path, **kw: str) -> Path:
    fields = {"extra_image": "", "extra_layer": "", "mask": "m.png", "guide": "a.png"}
    fields.update(kw)
    p = folder / "show.toml"
    p.write_text(SHOW.format(**fields))
    return p


def test_the_loader_calls_the_stage_checks_explicitly() -> None:
    """No registry filled by import side effects: the runtime's loader names its checks."""
    from dreamstate.engine.output.ndi import check_ndi
    from dreamstate.engine.runtime.showfile import STAGE_CHECKS
    from dreamstate.engine.signal.check import check_signal

    assert (check_signal, check_render, check_ndi) == STAGE_CHECKS


def test_a_good_show_passes(show_dir: Path) -> None:
    loaded = load_show(_write(show_dir))
    assert check_render(loaded) == []


def test_bad_images_masks_and_layers_are_listed_with_key_paths(show_dir: Path) -> None:
    path = _write(show_dir, extra_image=', "broken.png"', extra_layer=', "fire99/concat" = 1.0',
                  mask="broken.png", guide="broken.png")
    with pytest.raises(ShowError) as info:
        load_show(path)
    problems = dict(info.value.problems)
    assert set(problems) == {"show.images[1]", "scenes.calm.layers.fire99/concat",
                             "scenes.calm.guide", "scenes.calm.mask"}
    assert "not a readable image" in problems["show.images[1]"]
    assert "fire99/concat" in problems["scenes.calm.layers.fire99/concat"]
    assert "fire5/concat" in problems["scenes.calm.layers.fire99/concat"]  # lists real layers


def test_unknown_model_is_reported(show_dir: Path) -> None:
    text = _write(show_dir).read_text().replace('model = "SqueezeNet_fp16.onnx"',
                                                'model = "no-such-model"')
    (show_dir / "show.toml").write_text(text)
    with pytest.raises(ShowError) as info:
        load_show(show_dir / "show.toml")
    assert [k for k, _ in info.value.problems] == ["show.model"]


def test_prefixed_image_masks_are_checked(show_dir: Path) -> None:
    # engine.show's own path check does not know the prefixes yet, so build the show directly
    def loaded(mask: str) -> LoadedShow:
        text = _write(show_dir, mask=mask).read_text()
        return LoadedShow(Show.model_validate(tomllib.loads(text)), show_dir, "<test>")

    assert check_render(loaded("edges:m.png")) == []
    assert [k for k, _ in check_render(loaded("luminance:broken.png"))] == ["scenes.calm.mask"]
