"""Scenes: the EEG state picks the dream recipe, with timed crossfades and an attract mode.

``SceneDirector`` is pure logic with an injectable clock, so it is tested without a renderer:

* ``on_state(state)``: the state's label names the target scene (a scene with that name, else
  the show's default scene). ``absent`` (nobody wears the headset) switches to the attract
  scene once it has lasted ``attract.after_s`` seconds.
* ``override(label)`` / ``set_scene(name)``: manual control (OSC/MQTT); an override wins over
  the EEG state until cleared with ``override(None)``.
* ``recipe(now)``: the recipe to render now. Numbers (layer weights, zoom, rotation, step,
  blend, stabilisers) move linearly from where they were to the target scene over the target's
  ``crossfade_s``; discrete fields (octaves, steps, mask, guide, image) switch at once in the
  recipe, and the renderer crossfades the displayed picture over ``crossfade_s`` when they
  change what is shown (image, mask).
  ``generation`` grows whenever the target scene changes, so the renderer can tell.
* ``changes``: the last scene changes (:class:`SceneChange`: generation, scene, when the
  crossfade started and, when a state caused it, that state's sample time), for measuring
  how fast a state reaches the picture and how closely several projectors agree (``bench e2e``).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.records import ABSENT, DreamRecipe, EegState
from dreamstate.engine.core.show import SceneConfig, Show

log = logging.getLogger("dreamstate.scenes")


def scene_recipe(scene: SceneConfig, generation: int = 0) -> DreamRecipe:
    """The recipe a scene asks for, before any crossfade."""
    return DreamRecipe(
        layer_weights=dict(scene.layers),
        channels={k: tuple(v) for k, v in scene.channels.items()},
        step=scene.step,
        octaves=scene.octaves,
        octave_scale=scene.octave_scale,
        steps_per_octave=scene.steps,
        zoom=scene.zoom,
        rotate_deg=scene.rotate,
        translate=scene.translate,
        mask=scene.mask,
        guide=scene.guide,
        source_image=scene.image,
        blend=scene.blend,
        generation=generation,
        color_nudge=scene.color_nudge,
        contrast=scene.contrast,
        warp_px=scene.warp_px,
        crossfade_s=scene.crossfade_s,
        mode=scene.mode,
        style=scene.style,
        style_mix=scene.style_mix if scene.mode == "style" else 0.0,
        draw=tuple(str(v) for v in scene.draw),
        draw_each_s=scene.draw_each_s,
        ellipses=scene.ellipses,
        optimizer=scene.optimizer,
        seeing=scene.seeing,
        seeing_class=None if scene.seeing_class is None else str(scene.seeing_class),
        seeing_opacity=scene.seeing_opacity if scene.seeing != "off" else 0.0,
        seeing_colormap=scene.seeing_colormap,
        seeing_smooth=scene.seeing_smooth,
        seeing_every_s=scene.seeing_every_s,
    )


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def blend_recipes(a: DreamRecipe, b: DreamRecipe, t: float) -> DreamRecipe:
    """``a`` at t=0, ``b`` at t=1; numbers interpolate, discrete fields come from ``b``."""
    t = min(1.0, max(0.0, t))
    names = list(dict.fromkeys([*a.layer_weights, *b.layer_weights]))
    weights = {n: _lerp(a.layer_weights.get(n, 0.0), b.layer_weights.get(n, 0.0), t) for n in names}
    weights = {n: w for n, w in weights.items() if abs(w) > 1e-6 or n in b.layer_weights}
    return replace(
        b,
        layer_weights=weights,
        step=_lerp(a.step, b.step, t),
        zoom=_lerp(a.zoom, b.zoom, t),
        rotate_deg=_lerp(a.rotate_deg, b.rotate_deg, t),
        translate=(_lerp(a.translate[0], b.translate[0], t), _lerp(a.translate[1], b.translate[1], t)),
        blend=_lerp(a.blend, b.blend, t),
        color_nudge=_lerp(a.color_nudge, b.color_nudge, t),
        contrast=_lerp(a.contrast, b.contrast, t),
        warp_px=_lerp(a.warp_px, b.warp_px, t),
        style_mix=_lerp(a.style_mix, b.style_mix, t),
        seeing=b.seeing if b.seeing != "off" or t >= 1.0 else a.seeing,  # the old map fades out
        seeing_opacity=_lerp(a.seeing_opacity, b.seeing_opacity, t),
    )


@dataclass(frozen=True, slots=True)
class SceneChange:
    """One scene change: the new ``generation`` and ``scene``, ``at`` (the director's clock,
    monotonic by default) when its crossfade started, and ``state_time``, the sample time of the
    EEG state that caused it (None for a manual change or the attract timer)."""

    generation: int
    scene: str
    at: float
    state_time: float | None = None


@dataclass
class _Fade:
    start: DreamRecipe
    target: DreamRecipe
    t0: float
    duration: float


class SceneDirector:
    """Chooses the scene from EEG state and overrides, and crossfades between scenes."""

    def __init__(self, show: Show, clock: Callable[[], float] = time.monotonic) -> None:
        if not show.scenes:
            raise DreamstateError("the show defines no [scenes.*]",
                                  hint="add at least one [scenes.<state>] table with layers = {...}")
        self.show = show
        self.clock = clock
        self.generation = 0
        self.scene_name = show.show.default_scene if show.show.default_scene in show.scenes \
            else next(iter(show.scenes))
        self._override: str | None = None
        self._manual_scene: str | None = None
        self._absent_since: float | None = None
        self._state_label: str | None = None
        self._cause: float | None = None  # the sample time of the state being applied, during on_state
        self.changes: collections.deque[SceneChange] = collections.deque(maxlen=256)
        now = clock()
        first = scene_recipe(show.scenes[self.scene_name], self.generation)
        self._fade = _Fade(first, first, now, 0.0)

    # --- inputs -------------------------------------------------------------------------
    def on_state(self, state: EegState) -> None:
        now = self.clock()
        self._state_label = state.label
        if state.label == ABSENT:
            if self._absent_since is None:
                self._absent_since = now
        else:
            self._absent_since = None
        self._cause = state.time
        try:
            self._retarget(now)
        finally:
            self._cause = None

    def override(self, label: str | None) -> None:
        """Force a state label ("" or None clears it)."""
        self._override = label or None
        self._retarget(self.clock())

    def set_scene(self, name: str | None) -> None:
        """Pick a scene by name regardless of state (None returns control to the state)."""
        if name is not None and name not in self.show.scenes:
            raise DreamstateError(f"unknown scene {name!r}",
                                  hint=f"use one of {sorted(self.show.scenes)}")
        self._manual_scene = name
        self._retarget(self.clock())

    def tick(self) -> None:
        """Re-evaluate time-based choices (attract mode after ``attract.after_s``). A change
        that fell due between ticks starts its crossfade at the moment it fell due, not at the
        tick, so projectors that saw ``absent`` at the same stamped moment agree."""
        now = self.clock()
        due = self.next_change_at()
        self._retarget(due if due is not None and due <= now else now)

    def next_change_at(self) -> float | None:
        """The clock time of the next time-based scene change (the attract scene after
        ``attract.after_s`` of ``absent``), or None when none is pending."""
        if self._absent_since is None or self._manual_scene or self._override:
            return None
        due = self._absent_since + self.show.attract.after_s
        return due if self.target_scene(due) != self.scene_name else None

    # --- outputs ------------------------------------------------------------------------
    @property
    def chooser(self) -> str:
        """Who chose the scene in force: ``manual`` (``set_scene``), ``override`` (a forced state
        label), ``attract`` (nobody wears the headset) or ``state`` (the EEG state)."""
        if self._manual_scene:
            return "manual"
        if self._override:
            return "override"
        if self.scene_name == self.show.attract.scene and self._absent_since is not None:
            return "attract"
        return "state"

    def target_scene(self, now: float) -> str:
        if self._manual_scene:
            return self._manual_scene
        label = self._override or self._state_label
        if label == ABSENT or (label is None and self._absent_since is not None):
            absent_for = 0.0 if self._absent_since is None else now - self._absent_since
            if self._override == ABSENT or absent_for >= self.show.attract.after_s:
                return self.show.attract.scene if self.show.attract.scene in self.show.scenes \
                    else self.scene_name
            return self.scene_name
        if label and label in self.show.scenes:
            return label
        return self.show.show.default_scene if self.show.show.default_scene in self.show.scenes \
            else self.scene_name

    def recipe(self, now: float | None = None) -> DreamRecipe:
        now = self.clock() if now is None else now
        f = self._fade
        if f.duration <= 0:
            return f.target
        return blend_recipes(f.start, f.target, (now - f.t0) / f.duration)

    def _retarget(self, now: float) -> None:
        name = self.target_scene(now)
        if name == self.scene_name:
            return
        current = self.recipe(now)
        self.generation += 1
        scene = self.show.scenes[name]
        target = scene_recipe(scene, self.generation)
        self._fade = _Fade(replace(current, generation=self.generation), target, now, scene.crossfade_s)
        self.changes.append(SceneChange(self.generation, name, now, self._cause))
        log.info("scene change", extra={"from": self.scene_name, "to": name,
                                        "crossfade_s": scene.crossfade_s})
        self.scene_name = name
