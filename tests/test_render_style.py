"""The style scene mode through the real DreamLoop (no threads) with real style models: the
bundled toon graph, a sidecar-described model and candy.onnx; show checks and the runtime
wiring for ``mode = "style"``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamstate.engine.core.errors import ShowError
from dreamstate.engine.core.images import resize
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import DreamRecipe
from dreamstate.engine.render.renderer import DreamLoop
from dreamstate.engine.render.style import StyleMode
from dreamstate.models.dream import DreamModel
from dreamstate.models.style import StyleModel

SIZE = (96, 64)


@pytest.fixture(scope="module")
def starter() -> DreamModel:
    return DreamModel.load("starter", device="cpu", threads=1)


def _source() -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return resize(load_sample_image("china.jpg").astype(np.float32) / 255.0, SIZE)


def _recipe(**kw: Any) -> DreamRecipe:
    base: dict[str, Any] = {"layer_weights": {}, "zoom": 1.0, "rotate_deg": 0.0, "color_nudge": 0.0,
                            "mode": "style", "style": "toon", "style_mix": 1.0, "crossfade_s": 1.5}
    base.update(kw)
    return DreamRecipe(**base)


def _loop(model: DreamModel, mode: StyleMode | None, counters: Counters | None = None) -> DreamLoop:
    return DreamLoop(model, SIZE, source=_source(), counters=counters,
                     modes={"style": mode} if mode is not None else None)


def test_a_style_step_is_the_style_of_the_moved_frame(starter: DreamModel) -> None:
    toon = StyleModel.load("toon", device="cpu", threads=1)
    loop = _loop(starter, StyleMode(lambda spec: StyleModel.load(spec, device="cpu", threads=1)))
    src = loop.dreamer.canvas.copy()
    loop.apply(_recipe())
    frame, _ = loop.step(0.0, 0.0)
    np.testing.assert_allclose(frame.pixels, toon.stylize(src), atol=1e-6)
    # a second step styles the styled frame: style(zoom(previous)) with zoom 1
    again, _ = loop.step(0.0, 0.1)
    np.testing.assert_allclose(again.pixels, toon.stylize(frame.pixels), atol=1e-6)
    assert float(np.abs(frame.pixels - src).mean()) > 0.03


def test_style_mix_blends_with_the_unstyled_frame(starter: DreamModel) -> None:
    toon = StyleModel.load("toon", device="cpu", threads=1)
    loop = _loop(starter, StyleMode(lambda spec: StyleModel.load(spec, device="cpu", threads=1)))
    src = loop.dreamer.canvas.copy()
    loop.apply(_recipe(style_mix=0.25))
    frame, _ = loop.step(0.0, 0.0)
    np.testing.assert_allclose(frame.pixels, 0.25 * toon.stylize(src) + 0.75 * src, atol=1e-5)
    loop.apply(_recipe(style_mix=0.0))
    unchanged, _ = loop.step(0.0, 0.1)
    np.testing.assert_array_equal(unchanged.pixels, frame.pixels)


def test_another_style_is_a_crossfaded_cut_and_a_bad_one_passes_frames_through(
        starter: DreamModel, tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    # an image-to-image model of our own, described by its sidecar: y = 1 - x
    g = helper.make_graph([helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Add", ["n", "one"], ["y"])],
                          "neg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 720, 720])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 720, 720])],
                          [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    (tmp_path / "neg.onnx").write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)],
                                                          ir_version=8).SerializeToString())
    (tmp_path / "neg.json").write_text(json.dumps({"kind": "style", "preprocessing": {"value_range": [0, 1]}}))
    counters = Counters()
    mode = StyleMode(lambda spec: StyleModel.load(tmp_path / spec if spec.endswith(".onnx") else spec,
                                                  device="cpu", threads=1), counters=counters)
    loop = _loop(starter, mode, counters)
    loop.apply(_recipe())
    cut0 = loop.cut
    loop.apply(_recipe(style_mix=0.5))  # same style, another mix: no cut
    assert loop.cut == cut0
    loop.apply(_recipe(style="neg.onnx"))
    assert loop.cut == cut0 + 1
    before = loop.dreamer.canvas.copy()
    frame, _ = loop.step(0.0, 0.0)
    np.testing.assert_allclose(frame.pixels, 1.0 - before, atol=1e-6)
    assert frame.fade_s == 1.5
    loop.apply(_recipe(style="missing.onnx"))
    kept = loop.dreamer.canvas.copy()
    frame, _ = loop.step(0.0, 0.1)
    np.testing.assert_array_equal(frame.pixels, kept)
    assert counters.get("bad_style") == 1


def test_a_mode_the_renderer_was_not_given_dreams_instead(starter: DreamModel) -> None:
    counters = Counters()
    loop = _loop(starter, None, counters)
    loop.apply(_recipe(layer_weights={starter.layers[0]: 1.0}, step=3.0))
    src = loop.dreamer.canvas.copy()
    frame, _ = loop.step(0.0, 0.0)
    assert counters.get("mode_unsupported") >= 1
    assert float(np.abs(frame.pixels - src).mean()) > 1e-4  # dreamed


def test_the_scene_crossfade_flows_the_style_in() -> None:
    from dreamstate.engine.core.show import SceneConfig
    from dreamstate.engine.scenes import blend_recipes, scene_recipe

    dream = scene_recipe(SceneConfig(layers={"block7": 1.0}))
    style = scene_recipe(SceneConfig(mode="style", style="toon", style_mix=0.8))
    assert dream.style_mix == 0.0 and style.style_mix == 0.8
    half = blend_recipes(dream, style, 0.5)
    assert half.mode == "style" and half.style == "toon" and half.style_mix == pytest.approx(0.4)


def test_candy_in_the_loop_keeps_the_picture_alive(starter: DreamModel, shared_models: Path) -> None:
    """Twenty frames of style(zoom(previous)) with candy at half mix: the frames stay finite,
    in range and changing, and the picture neither freezes nor goes to one colour."""
    mode = StyleMode(lambda spec: StyleModel.load(shared_models / spec, device="cpu", threads=2))
    loop = DreamLoop(starter, (160, 96), source=resize(_source(), (160, 96)), modes={"style": mode})
    loop.apply(replace(_recipe(style="candy.onnx", style_mix=0.5, zoom=1.02, color_nudge=0.02), warp_px=0.0))
    frames = [loop.step(1.0, i * 0.1)[0].pixels for i in range(20)]
    last = frames[-1]
    assert np.isfinite(last).all() and last.min() >= 0 and last.max() <= 1
    assert float(np.abs(frames[-1] - frames[-2]).mean()) > 0.002
    assert float(last.std()) > 0.08


def _show(tmp_path: Path, scene: str) -> Path:
    path = tmp_path / "show.toml"
    path.write_text(f"""
[show]
model = "starter"
default_scene = "a"
[attract]
scene = "a"
[device]
kind = "simulated"
[scenes.a]
layers = {{ block2 = 1.0 }}
{scene}
""")
    return path


def test_show_check_names_a_bad_style(tmp_path: Path) -> None:
    from dreamstate.engine.runtime.showfile import load_show

    with pytest.raises(ShowError, match=r"scenes.a: mode = 'style' needs style"):
        load_show(_show(tmp_path, 'mode = "style"'))
    with pytest.raises(ShowError, match=r"scenes.a.style: model 'starter' is a classifier, not a style model"):
        load_show(_show(tmp_path, 'mode = "style"\nstyle = "starter"'))
    with pytest.raises(ShowError, match=r"scenes.a.style: .*outside|scenes.a.style: .*leave"):
        load_show(_show(tmp_path, 'mode = "style"\nstyle = "../x.onnx"'))
    loaded = load_show(_show(tmp_path, 'mode = "style"\nstyle = "toon"\nstyle_mix = 0.3'))
    from dreamstate.engine.runtime.app import ShowRuntime

    modes = ShowRuntime(loaded).scene_modes()
    assert set(modes) == {"style"}
    assert isinstance(modes["style"], StyleMode)
