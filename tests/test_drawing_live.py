"""The live drawing mode: in the dream loop (no threads), and in a whole running show where the
EEG state switches the class and the shown drawing moves towards it (the bundled starter model)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.core.records import DreamRecipe
from dreamstate.engine.output.base import Output
from dreamstate.engine.render.renderer import DreamLoop, noise_source, recipe_motion
from dreamstate.models.classify import ClassifierModel
from dreamstate.models.dream import DreamModel


@pytest.fixture(scope="module")
def starter() -> ClassifierModel:
    return ClassifierModel.load("starter", device="cpu", threads=2)


@pytest.fixture(scope="module")
def dream() -> DreamModel:
    return DreamModel.load("starter", ["block2"], device="cpu", threads=2)


def _prob(clf: ClassifierModel, frame: np.ndarray, target: int) -> float:
    import cv2

    side = min(frame.shape[:2])
    y0, x0 = (frame.shape[0] - side) // 2, (frame.shape[1] - side) // 2
    square = cv2.resize(frame[y0:y0 + side, x0:x0 + side], (clf.size, clf.size), interpolation=cv2.INTER_AREA)
    return float(np.exp(clf.log_probs(square[None].astype(np.float32) / 255)[0, target]))


@pytest.mark.slow
def test_dream_loop_draws_morphs_and_cuts(starter: ClassifierModel, dream: DreamModel) -> None:
    from dreamstate.engine.render.drawmode import LiveDrawing

    live = LiveDrawing(starter, seed=1, jitters=2)
    loop = DreamLoop(dream, (64, 48), source=noise_source((64, 48)), drawing=live, draw_size=lambda: (160, 90))
    dream_recipe = DreamRecipe(layer_weights={"block2": 1.0}, zoom=1.02)
    loop.apply(dream_recipe, 1)
    f0, _ = loop.step(1.0, 0.0)
    assert f0.pixels.shape == (48, 64, 3)
    spiral = replace(dream_recipe, mode="drawing", draw=("spiral",), generation=1, ellipses=16)
    assert recipe_motion(spiral).zoom == 1.0  # a drawing holds still
    loop.apply(spiral, 2)
    assert loop.cut == f0.cut + 1  # dream -> drawing crossfades
    frames = [loop.step(1.0, 0.1 * i)[0] for i in range(1, 25)]
    assert frames[-1].pixels.shape == (90, 160, 3)  # the projector size, not the dream size
    assert live.status is not None and live.status.label == "spiral" and live.status.improvements > 0
    first = live.status.score
    before = frames[-1].pixels.copy()
    loop.apply(replace(spiral, draw=("checkers",), generation=2), 3)
    frame, report = loop.step(1.0, 3.0)
    assert report is None and live.status.label == "checkers"
    # the new class starts from the current drawing: one step from it, far nearer than a fresh start
    from dreamstate.engine.render.drawing import random_drawing, render

    fresh = np.abs(render(random_drawing(16, 99), (160, 90)) - before).mean()
    assert np.abs(frame.pixels - before).mean() < 0.5 * fresh
    for i in range(25):
        loop.step(1.0, 3.1 + 0.1 * i)
    assert live.status.score > first or live.status.improvements > 3
    loop.apply(replace(dream_recipe, generation=3), 4)
    f, _ = loop.step(1.0, 10.0)
    assert f.pixels.shape == (48, 64, 3) and f.cut == frames[-1].cut + 1  # back to dreaming, crossfaded


def test_draw_classes_take_turns_and_a_bad_class_is_skipped(starter: ClassifierModel) -> None:
    from dreamstate.engine.render.drawmode import LiveDrawing

    live = LiveDrawing(starter, seed=0, jitters=1, batch=8)
    recipe = DreamRecipe(layer_weights={}, mode="drawing", draw=("dots", "nonsense", "waves"), draw_each_s=5.0,
                         ellipses=8, optimizer="random")
    live.apply(recipe, 0.0)
    live.step(0.5)
    assert live.status is not None and live.status.label == "dots"
    live.step(5.5)  # "nonsense" is not a class: the next one plays
    assert live.status.label == "waves" and live.counters.get("bad_draw_class") >= 1
    live.step(10.5)
    assert live.status.label == "waves"
    live.step(15.5)
    assert live.status.label == "dots"
    live.apply(replace(recipe, ellipses=12), 16.0)  # more ellipses: the drawing keeps its first ones
    live.step(16.5)
    assert live.theta is not None and live.theta.shape == (6 * 12 + 9,)


class Kept(Output):
    """A headless sink that keeps the frames it is shown, with the scene and the drawing's class."""

    name = "kept"

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(size)
        self.frames_kept: list[np.ndarray] = []
        self.lock = threading.Lock()

    def present(self, frame: np.ndarray) -> None:
        self.frames += 1
        if self.frames % 5 == 0:
            with self.lock:
                self.frames_kept.append(frame.copy())


SHOW = """
[show]
name = "drawing"
model = "starter"
default_scene = "calm"
[states]
mode = "rules"
labels = ["calm", "focused", "neutral"]
dwell_s = 0.5
rules = [{ state = "calm", when = "alpha_rel > 0.30" }, { state = "focused", when = "beta_rel > 0.30" }]
[scenes.calm]
mode = "drawing"
draw = "spiral"
ellipses = 24
crossfade_s = 0.5
[scenes.focused]
mode = "drawing"
draw = "checkers"
ellipses = 24
crossfade_s = 0.5
[scenes.neutral]
layers = { block2 = 1.0 }
[scenes.attract]
layers = { block2 = 0.5 }
[output]
kind = "none"
size = [160, 90]
dream_size = [96, 64]
fps = 20
"""


@pytest.mark.slow
async def test_state_change_switches_the_class_and_the_shown_drawing_follows(
        tmp_path: Path, starter: ClassifierModel, dream: DreamModel) -> None:
    from dreamstate.devices.simulator import SimulatedDevice
    from dreamstate.engine.runtime.app import ShowRuntime
    from dreamstate.engine.runtime.showfile import load_show

    (tmp_path / "show.toml").write_text(SHOW)
    loaded = load_show(tmp_path / "show.toml")
    output = Kept((160, 90))
    rt = ShowRuntime(loaded, seconds=16.0, open_output=lambda _l: output,
                     open_device=lambda _l: SimulatedDevice([("relaxed", 40.0), ("focused", 600.0)], seed=1, speed=8.0),
                     load_model=lambda _l, _layers, _g: dream, load_classifier=lambda _l: starter)
    seen: list[tuple[str, str | None, int]] = []  # (scene, drawing class, frames kept so far)

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.25)
            r = rt.renderer
            status = r.drawing_status if r is not None else None
            with output.lock:
                n = len(output.frames_kept)
            seen.append((rt.director.scene_name, status.label if status else None, n))

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(rt.run(), 60)
    finally:
        watcher.cancel()
    labels = [c for _s, c, _n in seen if c]
    assert "spiral" in labels and "checkers" in labels, seen
    assert labels.index("checkers") > labels.index("spiral")  # relaxed first, then focused
    switch = next(n for s, c, n in seen if c == "checkers")
    checkers = starter.resolve("checkers")
    at_switch = _prob(starter, output.frames_kept[max(0, switch - 1)], checkers)
    at_end = _prob(starter, output.frames_kept[-1], checkers)
    assert at_end > at_switch + 0.05, (at_switch, at_end)  # the shown drawing moved towards the new class
    assert output.frames_kept[-1].shape == (90, 160, 3)
    doc = rt.telemetry().doc()
    assert doc["scene"] == "focused" and doc["drawing"]["class"] == "checkers"
    assert 0.0 <= doc["drawing"]["probability"] <= 1.0 and doc["drawing"]["score"] <= 0.0


def test_one_loop_goes_style_to_drawing_to_style(starter: ClassifierModel, dream: DreamModel) -> None:
    """A show with both modes: the style mode and the drawing hand over with a crossfaded cut
    each way, the drawing leaves the style's canvas alone, and the style comes back on it."""
    from dreamstate.engine.render.drawmode import LiveDrawing
    from dreamstate.engine.render.style import StyleMode
    from dreamstate.models.style import StyleModel

    toon = StyleModel.load("toon", device="cpu", threads=1)
    live = LiveDrawing(starter, seed=2, jitters=1, batch=4)
    loop = DreamLoop(dream, (64, 48), source=noise_source((64, 48)), drawing=live, draw_size=lambda: (96, 54),
                     modes={"style": StyleMode(lambda spec: toon)})
    styled = DreamRecipe(layer_weights={}, zoom=1.0, rotate_deg=0.0, color_nudge=0.0, mode="style",
                         style="toon", style_mix=1.0)
    loop.apply(styled, 1)
    s0, _ = loop.step(0.0, 0.0)
    canvas = loop.dreamer.canvas.copy()
    loop.apply(replace(styled, mode="drawing", draw=("spiral",), ellipses=8, generation=1), 2)
    assert loop.cut == s0.cut + 1
    d, _ = loop.step(0.0, 0.1)
    assert d.pixels.shape == (54, 96, 3) and live.status is not None
    np.testing.assert_array_equal(loop.dreamer.canvas, canvas)  # the drawing did not touch the canvas
    loop.apply(replace(styled, generation=2), 3)
    s1, _ = loop.step(0.0, 0.2)
    assert s1.cut == d.cut + 1 and s1.pixels.shape == (48, 64, 3)
    np.testing.assert_allclose(s1.pixels, toon.stylize(canvas), atol=1e-6)
    assert loop.counters.get("mode_unsupported") == 0 and loop.counters.get("drawing_unsupported") == 0
