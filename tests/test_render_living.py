"""The live picture, end to end through the real renderer: crossfades that really fade, masks
that really confine, and a watchdog that reseeds a dead picture (real SqueezeNet, real threads,
a headless output that keeps every presented frame)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamstate.engine.core.images import load_image, resize
from dreamstate.engine.core.records import DreamRecipe
from dreamstate.engine.output.base import U8, Output
from dreamstate.engine.render.health import HealthSettings
from dreamstate.engine.render.renderer import Renderer
from dreamstate.engine.runtime.app import default_source_path
from dreamstate.models.dream import DreamModel

SIZE = (160, 90)


@pytest.fixture(scope="module")
def squeezenet(shared_models: Path) -> DreamModel:
    return DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire3/concat"], device="cpu", threads=1)


class Keep(Output):
    """A headless output that keeps every presented frame (float32, 0..255)."""

    name = "keep"

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(size)
        self.shown: list[tuple[float, np.ndarray]] = []

    def open(self) -> tuple[int, int]:
        return self.size

    def present(self, frame: U8) -> None:
        self.shown.append((time.monotonic(), frame.astype(np.float32)))
        self.frames += 1

    def close(self) -> None:
        pass


def _china() -> np.ndarray:
    path = default_source_path()
    assert path is not None
    return resize(load_image(path), SIZE)


def _recipe(**kw: Any) -> DreamRecipe:
    base: dict[str, Any] = {"layer_weights": {"fire3/concat": 1.0}, "zoom": 1.0, "rotate_deg": 0.0,
                            "steps_per_octave": 2, "octaves": 2, "blend": 0.0, "step": 1.5}
    base.update(kw)
    return DreamRecipe(**base)


async def _run(r: Renderer, phases: list[tuple[float, DreamRecipe | None]]) -> None:
    task = asyncio.create_task(r.run())
    for seconds, recipe in phases:
        if recipe is not None:
            r.set_recipe(recipe)
        await asyncio.sleep(seconds)
    r.stop()
    await asyncio.wait_for(task, 10)


async def test_a_change_of_source_image_crossfades_on_screen(squeezenet: DreamModel) -> None:
    """No displayed frame jumps: the 1 s crossfade spreads the switch over many frames."""
    images = Path(str(default_source_path())).parent
    out = Keep(SIZE)
    r = Renderer(squeezenet, out, dream_size=SIZE, output_size=SIZE, source=_china(),
                 resolve=lambda p: images / p)
    switch_at: list[float] = []

    async def mark() -> None:
        await asyncio.sleep(1.2)
        switch_at.append(time.monotonic())

    marker = asyncio.create_task(mark())
    await _run(r, [(1.2, _recipe(crossfade_s=1.0)), (2.5, _recipe(crossfade_s=1.0, source_image="flower.jpg"))])
    await marker
    frames = [f for _, f in out.shown]
    steps = [float(np.abs(b - a).mean()) for a, b in itertools.pairwise(frames)]
    before = next(f for t, f in out.shown if t >= switch_at[0])
    total = float(np.abs(frames[-1] - before).mean())
    assert total > 25, f"the source did not change on screen ({total:.1f}/255)"
    # relative to the whole change, not a fixed 8/255: the crossfade follows the clock, so a
    # display thread stalled for a quarter of it on a loaded machine shows a quarter in one
    # frame; a hard cut shows all of it in one
    assert max(steps) < 0.4 * total, (
        f"one displayed frame changed by {max(steps):.1f}/255 of {total:.1f} (a hard cut)")


async def test_a_circle_mask_confines_the_live_dream(squeezenet: DreamModel) -> None:
    """Outside the circle the picture stays the undreamed source, although the dream zooms
    outwards; inside it dreams."""
    src = _china()
    out = Keep(SIZE)
    r = Renderer(squeezenet, out, dream_size=SIZE, output_size=SIZE, source=src)
    await _run(r, [(3.0, _recipe(zoom=1.03, mask="circle", crossfade_s=0.2))])
    last = out.shown[-1][1]
    shown_src = np.round(src * 255.0)
    corners = [(slice(0, 12), slice(0, 20)), (slice(0, 12), slice(-20, None)),
               (slice(-12, None), slice(0, 20)), (slice(-12, None), slice(-20, None))]
    outside = max(float(np.abs(last[c] - shown_src[c]).mean()) for c in corners)
    inside = float(np.abs(last[35:55, 65:95] - shown_src[35:55, 65:95]).mean())
    assert outside < 2.0, f"outside the mask the picture moved away from the source by {outside:.1f}/255"
    assert inside > 8.0, f"inside the mask nothing was dreamed ({inside:.1f}/255)"


class Flattening:
    """A real model whose clip flattens every result: the picture dies on purpose."""

    def __init__(self, model: DreamModel) -> None:
        self._m = model
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)

    def step(self, x: np.ndarray, layer_weights: Mapping[str, float] | None = None, **kw: Any) -> Any:
        self.calls += 1
        return self._m.step(x, layer_weights, **kw)

    def clip(self, x: np.ndarray) -> np.ndarray:
        return np.full_like(x, float(np.mean(x)))


async def test_the_watchdog_reseeds_a_dead_picture_and_the_display_goes_on(
        squeezenet: DreamModel, caplog: pytest.LogCaptureFixture) -> None:
    out = Keep(SIZE)
    r = Renderer(Flattening(squeezenet), out, dream_size=SIZE, output_size=SIZE, source=_china(),
                 health=HealthSettings(watchdog_s=1.0))
    with caplog.at_level(logging.WARNING, logger="dreamstate.render"):
        await _run(r, [(3.5, _recipe(zoom=1.01))])
    stats = r.stats
    assert stats.reseeds >= 1 and r.counters.get("reseeds") == stats.reseeds
    assert stats.health is not None and not stats.health.in_bounds
    assert any("reseeding" in rec.getMessage() and "contrast" in rec.getMessage() for rec in caplog.records)
    assert stats.displayed_frames > 60  # the display never stopped
