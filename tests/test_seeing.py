"""The seeing overlay (engine/render/seeing.py) through the real DreamLoop (no threads) with the
real starter model: the shown frame carries the map, the loop's canvas does not; the show
schema, the scene crossfade and the telemetry."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from dreamstate.engine.core.errors import ModelError
from dreamstate.engine.core.images import resize
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import DreamRecipe
from dreamstate.engine.render.renderer import DreamLoop
from dreamstate.engine.render.seeing import Seeing
from dreamstate.engine.render.style import StyleMode
from dreamstate.models.dream import DreamModel
from dreamstate.models.explain import Explainer, Explanation
from dreamstate.models.style import StyleModel

SIZE = (96, 64)


@pytest.fixture(scope="module")
def starter() -> DreamModel:
    return DreamModel.load("starter", device="cpu", threads=1)


def _source() -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return resize(load_sample_image("china.jpg").astype(np.float32) / 255.0, SIZE)


class CountingExplainer:
    """A real starter-model explainer that counts its maps."""

    def __init__(self, method: str) -> None:
        self.inner = Explainer.load("starter", method, threads=1)
        self.method = method
        self.calls = 0

    @property
    def size(self) -> int:
        return self.inner.size

    def explain(self, rgb: np.ndarray, target: str | int | None = None) -> Explanation:
        self.calls += 1
        return self.inner.explain(rgb, target)


def _recipe(**kw: Any) -> DreamRecipe:
    base: dict[str, Any] = {"layer_weights": {}, "zoom": 1.0, "rotate_deg": 0.0, "color_nudge": 0.0,
                            "mode": "style", "style": "toon", "style_mix": 1.0, "seeing": "lrp-ab",
                            "seeing_opacity": 0.8, "seeing_every_s": 1.0}
    base.update(kw)
    return DreamRecipe(**base)


def test_the_shown_frame_carries_the_map_and_the_canvas_stays_clean(starter: DreamModel) -> None:
    made: dict[str, CountingExplainer] = {}

    def load(method: str) -> CountingExplainer:
        made[method] = CountingExplainer(method)
        return made[method]

    counters = Counters()
    seeing = Seeing(load, counters=counters)
    toon = StyleModel.load("toon", device="cpu", threads=1)
    loop = DreamLoop(starter, SIZE, source=_source(), seeing=seeing,
                     modes={"style": StyleMode(lambda s: StyleModel.load(s, device="cpu", threads=1))})
    src = loop.dreamer.canvas.copy()
    loop.apply(_recipe())
    frame, _ = loop.step(0.0, 0.0)
    clean = toon.stylize(src)
    np.testing.assert_allclose(loop.dreamer.canvas, clean, atol=1e-6)  # the loop goes on from the clean frame
    assert float(np.abs(frame.pixels - clean).max()) > 0.2  # the map is on what is shown
    st = seeing.status
    assert st is not None and st.method == "lrp-ab" and st.label in Explainer.load("starter").classifier.labels
    # within seeing_every_s the map is reused; after it, recomputed on the new frame
    loop.step(0.0, 0.5)
    assert made["lrp-ab"].calls == 1
    loop.step(0.0, 1.2)
    assert made["lrp-ab"].calls == 2
    # a named class, and opacity 0 shows the clean frame
    loop.apply(_recipe(seeing_class="spiral"))
    loop.step(0.0, 1.3)
    assert seeing.status is not None and seeing.status.label == "spiral"
    loop.apply(_recipe(seeing_opacity=0.0))
    plain, _ = loop.step(0.0, 1.4)
    np.testing.assert_array_equal(plain.pixels, loop.dreamer.canvas)
    assert counters.snapshot().get("bad_seeing", 0) == 0


def test_a_bad_method_or_class_is_counted_and_frames_pass(starter: DreamModel) -> None:
    def load(method: str) -> Explainer:
        if method == "gxi":
            raise ModelError("no such explainer here", hint="test")
        return Explainer.load("starter", method, threads=1)

    counters = Counters()
    seeing = Seeing(load, counters=counters)
    canvas = _source()
    out = seeing.present(canvas, _recipe(seeing="gxi"), 0.0)
    assert out is canvas
    out = seeing.present(canvas, _recipe(seeing="gradient", seeing_class="no such class"), 0.0)
    assert out is canvas
    assert counters.snapshot()["bad_seeing"] == 2
    assert seeing.present(canvas, _recipe(seeing="gradient"), 0.0) is not canvas  # a good one still works


def test_scene_schema_crossfade_and_telemetry() -> None:
    from dreamstate.engine.core.records import EegSnapshot
    from dreamstate.engine.core.show import SceneConfig
    from dreamstate.engine.render.seeing import SeeingStatus
    from dreamstate.engine.runtime.app import Telemetry
    from dreamstate.engine.scenes import blend_recipes, scene_recipe

    scene = SceneConfig.model_validate({"seeing": "lrp-ab", "seeing_class": 442, "seeing_opacity": 0.5})
    recipe = scene_recipe(scene, 1)
    assert (recipe.seeing, recipe.seeing_class, recipe.seeing_opacity) == ("lrp-ab", "442", 0.5)
    with pytest.raises(ValueError, match="seeing"):
        SceneConfig.model_validate({"seeing": "smoothgrad"})
    with pytest.raises(ValueError, match="seeing_opacity"):
        SceneConfig.model_validate({"seeing": "gxi", "seeing_opacity": 1.5})
    off = scene_recipe(SceneConfig.model_validate({}), 2)
    assert off.seeing == "off" and off.seeing_opacity == 0.0
    half_in = blend_recipes(off, recipe, 0.5)
    assert half_in.seeing == "lrp-ab" and half_in.seeing_opacity == pytest.approx(0.25)
    half_out = blend_recipes(recipe, off, 0.5)
    assert half_out.seeing == "lrp-ab" and half_out.seeing_opacity == pytest.approx(0.25)  # fades out
    assert blend_recipes(recipe, off, 1.0).seeing == "off"
    tele = Telemetry(eeg=EegSnapshot(), state=None, scene="s", stats=None, recording=None, counters={},
                     seeing=SeeingStatus("lrp-ab", "bell cote", 442, 23.05, 80.0))
    assert tele.doc()["seeing"] == {"method": "lrp-ab", "class": "bell cote", "index": 442, "score": 23.05}
    assert replace(recipe, seeing="off").seeing == "off"


def test_show_check_and_runtime_wiring(tmp_path: Any) -> None:
    from dreamstate.engine.control.commands import parse_command
    from dreamstate.engine.core.errors import ShowError
    from dreamstate.engine.runtime.app import ShowRuntime
    from dreamstate.engine.runtime.showfile import load_show
    from tests.test_render_style import _show  # the one-scene starter show both files use

    with pytest.raises(ShowError, match=r"scenes.a.seeing_class: model starter has no class 'spirl'"):
        load_show(_show(tmp_path, 'seeing = "lrp-eps"\nseeing_class = "spirl"'))
    assert ShowRuntime(load_show(_show(tmp_path, ""))).seeing() is None
    seeing = ShowRuntime(load_show(_show(tmp_path, 'seeing = "gxi"\nseeing_class = 20'))).seeing()
    assert seeing is not None
    canvas = _source()
    out = seeing.present(canvas, _recipe(seeing="gxi", seeing_class="20"), 0.0)
    assert out.shape == canvas.shape and float(np.abs(out - canvas).max()) > 0.1
    assert seeing.status is not None and seeing.status.label == "spiral"
    # the overlay's numbers are live parameters: /dreamstate/param/seeing_opacity 0.2
    rt = ShowRuntime(load_show(_show(tmp_path, 'seeing = "gxi"')))
    rt.apply_command(parse_command("/dreamstate/param/seeing_opacity", [0.2]))
    assert rt.edits.apply(_recipe(seeing_opacity=0.6)).seeing_opacity == pytest.approx(0.2)


def test_a_restarted_worker_goes_on_from_the_clean_canvas(starter: DreamModel) -> None:
    """After a worker dies, the new one continues from the last published frame, unless that
    frame carried the overlay: then from the dead worker's clean canvas (the map must not be
    baked into the loop). The workers here are never started: their loops are driven directly."""
    import threading

    from dreamstate.engine.core.channels import LatestSlot
    from dreamstate.engine.render.renderer import DreamWorker, restart_canvas
    from dreamstate.engine.render.stats import StatsTracker

    def worker(seeing: Seeing | None) -> DreamWorker:
        return DreamWorker(starter, SIZE, LatestSlot(), LatestSlot(), source=_source(), canvas=None,
                           stop=threading.Event(), stats=StatsTracker(60.0), counters=Counters(), motion_hz=10.0,
                           seed=0, resolve=None, seeing=seeing,
                           modes={"style": StyleMode(lambda s: StyleModel.load(s, device="cpu", threads=1))})

    seen = worker(Seeing(lambda m: Explainer.load("starter", m, threads=1)))
    seen.loop.apply(_recipe())
    frame, _ = seen.loop.step(0.0, 0.0)
    assert seen.loop.overlaid and float(np.abs(frame.pixels - seen.loop.dreamer.canvas).max()) > 0.2
    assert restart_canvas(seen, frame) is seen.loop.dreamer.canvas
    plain = worker(None)
    plain.loop.apply(_recipe(seeing="off"))
    frame, _ = plain.loop.step(0.0, 0.0)
    assert not plain.loop.overlaid
    assert restart_canvas(plain, frame) is frame.pixels
    assert restart_canvas(None, None) is None
