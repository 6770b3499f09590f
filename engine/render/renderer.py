"""The live renderer: a dream worker thread and a display loop, decoupled by latest-value slots.

::

    set_recipe() --LatestSlot--> DreamWorker thread --LatestSlot--> display thread --> Output
                                 (onnxruntime, dream size)          (output rate, zoom + fade)

* The **dream worker** (``DreamWorker``) runs as fast as onnxruntime allows at the dream size.
  Before every dream step it takes the newest recipe (latest wins; it never works on a stale
  one), moves its canvas by the motion that elapsed since its last step (zoom, rotation and
  translation per tick, ``motion_hz`` ticks a second), makes one step at the current octave
  (octaves cycle coarse -> fine, ``steps_per_octave`` steps each; a new scene generation
  restarts the cycle at the coarsest, fastest octave) and publishes the frame,
  stamped with the time its geometry belongs to and the recipe version it used.
* The **display loop** runs in its own thread, because SDL's present/vsync wait blocks: the
  asyncio loop is never blocked. Each refresh it warps the newest dreamed frame (uint8, at
  dream size) by the motion elapsed since that frame's stamp, then upscales it to the output (or
  hands it to an output that scales on the GPU, ``Output.scales``), so zoom and rotation run
  continuously at the output rate, and crossfades from the previous dreamed frame (both warped
  to the same instant, so they line up). A slow dream slows how often the picture gains detail,
  never the motion. Each frame is composed for its deadline and presented on time, so the time
  composing takes does not shift the presents.
* **Priority**: the worker thread lowers its own scheduling priority (``worker_nice``, default
  +5; Linux applies it to that thread alone), so on a busy CPU the display thread wins. The
  display thread asks for round-robin real-time scheduling (``SCHED_RR`` at
  ``display_rt_priority``, default 5; 0 = normal scheduling): it sleeps most of each frame, and
  with it the frame-time p99 at 1920x1080 beside one busy process went from 21 to 17.5 ms
  (docs/BENCHMARKS.md). Linux grants it to root, to a process with ``CAP_SYS_NICE``, or under a
  ``RLIMIT_RTPRIO`` of at least that priority (the systemd unit's ``LimitRTPRIO=10``); refused,
  the display runs at normal priority and says so once in the log.
* **Failure**: if the worker dies, ``run`` restarts it with the shared capped, jittered backoff
  (``engine.core.backoff``: 0.5 s doubling to ``max_backoff_s``, afresh after 30 s healthy)
  from the last published frame; the display keeps showing and moving the last frame meanwhile.
  Bad recipe inputs (unknown layer, unreadable mask/guide/image) are logged, counted in
  ``counters`` and skipped; they never stop the worker.

A guide needs a dream step compiled for it: pass ``guide_model`` (the same model loaded with
``guide=True``); the worker switches to it while the recipe names a guide.
The recipe's ``mask``, ``guide`` and ``source_image`` are show-relative paths; ``resolve``
(e.g. ``LoadedShow.path``) turns them into files.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamstate.engine.core.background import report_background_error
from dreamstate.engine.core.backoff import Backoff
from dreamstate.engine.core.channels import LatestSlot
from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import DreamstateError, RenderError
from dreamstate.engine.core.images import RGB, from_uint8, load_image, resize, save_image, to_uint8
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import DreamRecipe
from dreamstate.engine.output.base import U8, Output
from dreamstate.engine.render.drawmode import Classifier, DrawingStatus, LiveDrawing
from dreamstate.engine.render.dream import DreamParams, StepModel, guide_features
from dreamstate.engine.render.feedback import FeedbackDreamer, FlowMethod, Motion
from dreamstate.engine.render.health import HealthReport, HealthSettings, PictureHealth
from dreamstate.engine.render.masks import Mask, make_mask
from dreamstate.engine.render.modes import FrameMode
from dreamstate.engine.render.seeing import Seeing, SeeingStatus
from dreamstate.engine.render.stabilise import StabiliserParams
from dreamstate.engine.render.stats import FrameStats, StatsTracker

log = logging.getLogger("dreamstate.render")


@dataclass(frozen=True, slots=True)
class DreamedFrame:
    """One published dream result. ``time``: the instant its geometry belongs to.

    ``cut`` grows whenever what is shown changes at once (a new source image, a reseed, a new
    mask); the display then crossfades from the old picture over ``fade_s`` seconds. ``mask``
    (float32 (H, W) in [0, 1]) and ``backdrop`` (RGBA uint8, the undreamed source) confine the
    dream on screen: the display shows ``mask * dream + (1 - mask) * backdrop``. Arrays in a
    published frame are never written again.
    """

    pixels: RGB
    time: float
    recipe_version: int
    generation: int
    step: int
    cut: int = 0
    fade_s: float = 0.0
    mask: Mask | None = None
    backdrop: U8 | None = None


def noise_source(size: tuple[int, int], seed: int = 0) -> RGB:
    """Soft coloured noise (what DeepDream starts from when there is no source image)."""
    cv2 = cv()

    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.uniform(0.3, 0.7, size=(max(2, h // 16), max(2, w // 16), 3)).astype(np.float32)
    out: RGB = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    out += rng.normal(0.0, 0.03, size=out.shape).astype(np.float32)
    res: RGB = np.clip(out, 0.0, 1.0).astype(np.float32)
    return res


def recipe_motion(recipe: DreamRecipe) -> Motion:
    """The recipe's motion per tick; a drawing holds still (it is redrawn, not moved)."""
    if recipe.mode == "drawing":
        return Motion()
    return Motion(zoom=recipe.zoom, rotate_deg=recipe.rotate_deg,
                  translate=(float(recipe.translate[0]), float(recipe.translate[1])))


def to_rgba(rgb: RGB) -> U8:
    """Float RGB in [0, 1] -> RGBA uint8 (what the display works in)."""
    out: U8 = cv().cvtColor(to_uint8(rgb), cv().COLOR_RGB2RGBA)
    return out


class DreamLoop:
    """What the dream worker does, without the thread: recipes in, one step at a time out.

    Lifecycle:

    * after ``__init__``: the canvas is the source (or ``canvas``); no recipe yet.
    * ``apply(recipe)``: takes a recipe (any time). A new source image or mask starts a *cut*:
      the display crossfades to the new picture over the recipe's ``crossfade_s``.
    * ``step(ticks, now)``: moves the canvas by ``ticks`` motion ticks (resampling only every
      ``recipe.warp_px`` pixels of motion), applies the stabilisers, makes one dream step at
      the current octave, checks the picture's health every half second of ``now`` (show
      time; any clock, so tests drive it by frames) and reseeds when the watchdog says so.
      Returns the :class:`DreamedFrame` to publish and the health report, when one was made.
    * ``hold(seconds)``: the picture was paused this long (its geometry keeps its place).

    A recipe whose ``mode`` names one of ``modes`` (:class:`~engine.render.modes.FrameMode`, e.g.
    ``style``) has that mode make the step instead of the dream; motion, stabilisers and the
    watchdog stay. A mode it was not given is dreamed instead, logged once, counted.

    A recipe with ``mode = "drawing"`` hands the steps to ``drawing`` (a
    :class:`~dreamstate.engine.render.drawmode.LiveDrawing`): each step is one optimiser step,
    and the frame is the best drawing so far at ``draw_size()`` (the projector size), with no
    motion and no health watchdog. Switching between dreaming and drawing is a cut (crossfaded
    over the scene's ``crossfade_s``); the dream canvas waits meanwhile. Without ``drawing`` a
    drawing recipe is logged once, counted (``drawing_unsupported``) and dreamed instead.
    """

    def __init__(self, model: StepModel, size: tuple[int, int], *, source: RGB, canvas: RGB | None = None,
                 counters: Counters | None = None, stats: StatsTracker | None = None, seed: int = 0,
                 resolve: Callable[[str], Path] | None = None, flow: FlowMethod | None = None,
                 guide_model: StepModel | None = None, sources: list[RGB] | None = None,
                 health: HealthSettings | None = None, start_cut: int = 0, source_spec: str | None = None,
                 now: float = 0.0, modes: Mapping[str, FrameMode] | None = None, drawing: LiveDrawing | None = None,
                 draw_size: Callable[[], tuple[int, int]] | None = None, seeing: Seeing | None = None) -> None:
        self.model = model
        self.modes: Mapping[str, FrameMode] = modes or {}
        self.drawing = drawing
        self.seeing = seeing
        self.overlaid = False
        """True when the last published frame carried the seeing overlay (not the canvas itself)"""
        self.draw_size = draw_size
        self._drawn: DreamedFrame | None = None
        self._drawn_img: object = None
        self.guide_model = guide_model
        self.size = size
        self.counters = counters or Counters()
        self.stats = stats
        self.resolve = resolve
        self.dreamer = FeedbackDreamer(model, size, source, seed=seed, flow=flow)
        if canvas is not None:
            self.dreamer.canvas = canvas
        self.recipe: DreamRecipe | None = None
        self.version = 0
        self._params = DreamParams()
        self._stabilise = StabiliserParams()
        self._mask_spec: str | None = None
        self._guide_spec: str | None = None
        self.source_spec: str | None = source_spec
        self._bad_layers: set[str] = set()
        self.sources = sources or [source]
        self._source_index = 0
        self.health = PictureHealth(health)
        self.health.set_source(self.dreamer.source)
        self.cut = start_cut
        self._fade_s = 0.0
        self._mask_shown: Mask | None = None
        self._backdrop: U8 | None = None
        self.geometry_time = now
        self.steps = 0

    # --- recipe handling ------------------------------------------------------------------
    def _path(self, value: str) -> Path:
        return self.resolve(value) if self.resolve else Path(value)

    def apply(self, recipe: DreamRecipe, version: int | None = None) -> None:
        if version is not None:
            self.version = version
        known = set(self.model.layers)
        weights = {k: v for k, v in recipe.layer_weights.items() if k in known}
        unknown = sorted(set(recipe.layer_weights) - known)
        for name in unknown:
            self.counters.inc("unknown_layer")
            if name not in self._bad_layers:
                self._bad_layers.add(name)
                log.error("layer %r is not in model %s; ignoring it (layers: %s)", name,
                          self.model.name, ", ".join(self.model.layers),
                          extra={"layer": name, "model": self.model.name})
        channels = {k: v for k, v in recipe.channels.items() if k in known}
        base = DreamParams.from_recipe(recipe, jitter=min(32, self.size[0] // 8))
        self._params = DreamParams(layer_weights=weights or None, channels=channels,
                                   step=base.step, octaves=base.octaves,
                                   octave_scale=base.octave_scale,
                                   steps_per_octave=base.steps_per_octave, jitter=base.jitter,
                                   tile=base.tile)
        self._stabilise = StabiliserParams(recipe.color_nudge, recipe.contrast)
        w, h = self.size
        if recipe.source_image != self.source_spec:
            self.source_spec = recipe.source_image
            if recipe.source_image:
                try:
                    self._restart_from(load_image(self._path(recipe.source_image), what="source image"),
                                       recipe.crossfade_s)
                except DreamstateError as exc:
                    self.counters.inc("bad_source_image")
                    log.error("%s; keeping the current picture", exc,
                              extra={"image": recipe.source_image})
        if recipe.mask != self._mask_spec:
            self._mask_spec = recipe.mask
            try:
                self.dreamer.mask = make_mask(recipe.mask, h, w, resolve=self.resolve) \
                    if recipe.mask else None
            except DreamstateError as exc:
                self.counters.inc("bad_mask")
                self.dreamer.mask = None
                log.error("%s; dreaming without a mask", exc, extra={"mask": recipe.mask})
            self._new_cut(recipe.crossfade_s)
        if recipe.guide != self._guide_spec:
            self._guide_spec = recipe.guide
            self.dreamer.guide = None
            if recipe.guide and self.guide_model is None:
                self.counters.inc("guide_unsupported")
                log.error("scene asks for guide %r but no guide-compiled model was given; "
                          "dreaming without it", recipe.guide,
                          extra={"guide": recipe.guide, "model": self.model.name})
            elif recipe.guide and self.guide_model is not None:
                try:
                    self.dreamer.guide = guide_features(
                        self.guide_model, load_image(self._path(recipe.guide), what="guide image"))
                except DreamstateError as exc:
                    self.counters.inc("bad_guide")
                    log.error("%s; dreaming without a guide", exc, extra={"guide": recipe.guide})
        self.dreamer.model = self.guide_model if (self.dreamer.guide is not None
                                                  and self.guide_model is not None) else self.model
        if self.recipe is not None and recipe.generation != self.recipe.generation:
            # a new scene: start at the coarsest (fastest) octave so it shows at once
            self.dreamer.restart_octaves()
        was_drawing = self.drawing_now
        self.recipe = recipe
        cut = False
        if recipe.mode == "drawing":
            if self.drawing is None:
                self.counters.inc("drawing_unsupported")
                if "drawing" not in self._bad_layers:
                    self._bad_layers.add("drawing")
                    log.error("scene asks for mode 'drawing' but the renderer has no classifier; dreaming instead",
                              extra={"model": self.model.name})
            else:
                self.drawing.apply(recipe, self.geometry_time)
        else:
            mode = self._frame_mode(recipe)
            cut = mode is not None and mode.apply(recipe)
        if cut or self.drawing_now != was_drawing:
            self._new_cut(recipe.crossfade_s)

    @property
    def drawing_now(self) -> bool:
        """True while the recipe in force is a drawing and there is a drawing mode to run it."""
        return self.recipe is not None and self.recipe.mode == "drawing" and self.drawing is not None

    def _frame_mode(self, recipe: DreamRecipe) -> FrameMode | None:
        """The FrameMode that makes this recipe's steps, or None to dream (``drawing`` is not a
        FrameMode: it replaces the picture instead of stepping it, see ``drawing``)."""
        if recipe.mode in ("dream", "drawing"):
            return None
        mode = self.modes.get(recipe.mode)
        if mode is None:
            self.counters.inc("mode_unsupported")
            if f"mode:{recipe.mode}" not in self._bad_layers:
                self._bad_layers.add(f"mode:{recipe.mode}")
                log.error("scene asks for mode %r but the renderer was not given it (modes: %s); dreaming instead",
                          recipe.mode, ", ".join(["dream", *self.modes]), extra={"mode": recipe.mode})
        return mode

    def _new_cut(self, fade_s: float) -> None:
        """What is shown changes at once: the display crossfades over ``fade_s``."""
        self.cut += 1
        self._fade_s = fade_s
        m = self.dreamer.mask
        self._mask_shown = None if m is None else np.ascontiguousarray(m, dtype=np.float32)
        self._backdrop = None if m is None else to_rgba(self.dreamer.source)

    def _restart_from(self, image: RGB, fade_s: float) -> None:
        """Start the dream again from ``image`` (a new source, or a reseed), crossfaded."""
        self.dreamer.reset(image)
        self.dreamer.restart_octaves()
        self.health.set_source(self.dreamer.source)
        self._new_cut(fade_s)

    def reseed(self, report: HealthReport) -> None:
        """The picture stayed out of bounds: crossfade to the next source image, dream anew."""
        recipe = self.recipe
        fade = max(2.0, recipe.crossfade_s if recipe is not None else 2.0)
        image: RGB | None = None
        if self.source_spec:
            try:
                image = load_image(self._path(self.source_spec), what="source image")
            except DreamstateError:
                image = None
        if image is None:
            self._source_index = (self._source_index + 1) % len(self.sources)
            image = self.sources[self._source_index]
        self.counters.inc("reseeds")
        self.health.reseeded()
        if self.stats is not None:
            self.stats.reseeded()
        log.warning("picture out of bounds for %.0f s (%s); reseeding: crossfading to %s",
                    self.health.settings.watchdog_s, ", ".join(report.out_of_bounds),
                    self.source_spec or f"source image {self._source_index + 1} of {len(self.sources)}",
                    extra={"reseeds": self.health.reseeds})
        self._restart_from(image, fade)

    # --- one step -------------------------------------------------------------------------
    def hold(self, seconds: float) -> None:
        self.geometry_time += seconds

    def _draw_step(self, recipe: DreamRecipe, now: float) -> DreamedFrame:
        """One drawing step; the frame is redrawn only when the drawing changed."""
        assert self.drawing is not None
        self.drawing.step(now)
        self.steps += 1
        self.geometry_time = now
        size = self.draw_size() if self.draw_size is not None else self.size
        img = self.drawing.picture(size)
        prev = self._drawn
        if img is None:
            pixels = self.dreamer.canvas
        elif prev is not None and img is self._drawn_img:
            pixels = prev.pixels  # unchanged: the same (never written) array again
        else:
            pixels = from_uint8(img)
        self._drawn_img = img
        pixels = self._see(pixels, recipe, now)
        self._drawn = DreamedFrame(pixels, now, self.version, recipe.generation, self.steps, self.cut, self._fade_s)
        return self._drawn

    def _see(self, pixels: RGB, recipe: DreamRecipe, now: float) -> RGB:
        """The shown frame: ``pixels`` with the seeing overlay when the recipe asks for one
        (:mod:`engine.render.seeing`); the canvas itself stays clean."""
        shown = pixels if self.seeing is None or recipe.seeing == "off" else self.seeing.present(pixels, recipe, now)
        self.overlaid = shown is not pixels
        return shown

    def step(self, ticks: float, now: float) -> tuple[DreamedFrame, HealthReport | None]:
        recipe = self.recipe
        if recipe is None:
            raise RenderError("DreamLoop.step before any recipe", hint="call apply(recipe) first")
        if self.drawing is not None and recipe.mode == "drawing":
            return self._draw_step(recipe, now), None
        if self.dreamer.move(recipe_motion(recipe), ticks, min_px=recipe.warp_px):
            self.geometry_time = now
        mode = self._frame_mode(recipe)
        if mode is None:
            canvas = self.dreamer.dream_realtime(self._params, 1, recipe.blend, stabilise=self._stabilise)
        else:
            canvas = self.dreamer.transform(lambda c: mode.step(c, recipe), stabilise=self._stabilise)
        self.steps += 1
        frame = DreamedFrame(self._see(canvas, recipe, now), self.geometry_time, self.version, recipe.generation,
                             self.steps, self.cut, self._fade_s, self._mask_shown, self._backdrop)
        report = self.health.update(canvas, now)
        if report is not None:
            if self.stats is not None:
                self.stats.health(report)
            if report.reseed:
                self.reseed(report)
                self.geometry_time = now
        return frame, report


def restart_canvas(old: DreamWorker | None, last: DreamedFrame | None) -> RGB | None:
    """The canvas a restarted worker continues from: the last published frame, or, when that
    frame carried the seeing overlay, the dead worker's own clean canvas, so the heat map is not
    baked into the zoom-feedback loop."""
    if old is not None and old.loop.overlaid:
        return old.loop.dreamer.canvas
    return None if last is None else last.pixels


def finish_workers(timeout_s: float = 10.0) -> bool:
    """Wait up to ``timeout_s`` for every dream worker thread to end (each ends after its
    current step once its renderer stopped). Call before the interpreter exits: a daemon
    thread still inside an onnxruntime call at exit aborts the process ("terminate called
    without an active exception", exit 134). Returns True when none is left."""
    deadline = time.monotonic() + timeout_s
    for t in threading.enumerate():
        if isinstance(t, DreamWorker):
            t.join(max(0.0, deadline - time.monotonic()))
    return not any(isinstance(t, DreamWorker) and t.is_alive() for t in threading.enumerate())


class DreamWorker(threading.Thread):
    """The dream worker thread around a :class:`DreamLoop` (see the module docstring).

    After ``start()`` it waits for a recipe, then loops step by step until ``stop`` is set.
    If it raises, ``error`` holds the exception and the thread ends (the renderer restarts it).
    """

    def __init__(self, model: StepModel, size: tuple[int, int],
                 recipes: LatestSlot[DreamRecipe], frames: LatestSlot[DreamedFrame], *,
                 source: RGB, canvas: RGB | None, stop: threading.Event, stats: StatsTracker,
                 counters: Counters, motion_hz: float, seed: int,
                 resolve: Callable[[str], Path] | None, flow: FlowMethod | None = None,
                 guide_model: StepModel | None = None, start_version: int = 0,
                 nice: int = 0, source_spec: str | None = None,
                 paused: threading.Event | None = None, sources: list[RGB] | None = None,
                 health: HealthSettings | None = None, health_slot: LatestSlot[HealthReport] | None = None,
                 start_cut: int = 0, modes: Mapping[str, FrameMode] | None = None, drawing: LiveDrawing | None = None,
                 draw_size: Callable[[], tuple[int, int]] | None = None, seeing: Seeing | None = None) -> None:
        super().__init__(name="dream-worker", daemon=True)
        self.nice = nice
        self.paused = paused or threading.Event()
        self.model = model
        self.recipes = recipes
        self.frames = frames
        self.stop_event = stop
        self.stats = stats
        self.counters = counters
        self.motion_hz = motion_hz
        self.health_slot = health_slot
        self.error: BaseException | None = None
        self.loop = DreamLoop(model, size, source=source, canvas=canvas, counters=counters, stats=stats,
                              seed=seed, resolve=resolve, flow=flow, guide_model=guide_model,
                              sources=sources, health=health, start_cut=start_cut, source_spec=source_spec,
                              now=time.monotonic(), modes=modes, drawing=drawing, draw_size=draw_size,
                              seeing=seeing)
        self.loop.version = start_version
        self.dreamer = self.loop.dreamer

    @property
    def source_spec(self) -> str | None:
        return self.loop.source_spec

    @property
    def cut(self) -> int:
        return self.loop.cut

    def run(self) -> None:
        if self.nice and hasattr(os, "setpriority"):
            try:  # on Linux a thread id names just this thread: the display thread keeps priority
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                               os.getpriority(os.PRIO_PROCESS, 0) + self.nice)
            except OSError as exc:
                log.debug("cannot lower the dream worker's priority: %s", exc)
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 -- the thread's last word: reported, then restarted
            self.error = exc
            self.stats.error()
            report_background_error("dream worker", exc, log, counters=self.counters, counter="worker_died",
                                    model=self.model.name)

    def _loop(self) -> None:
        loop = self.loop
        t_last = time.monotonic()
        loop.geometry_time = t_last
        while not self.stop_event.is_set():
            if self.paused.is_set():  # /dreamstate/pause: no steps, no motion, until play
                self.stop_event.wait(0.05)
                now = time.monotonic()
                loop.hold(now - t_last)  # the held picture keeps its place on screen
                t_last = now
                continue
            if loop.recipe is None:
                r, v = self.recipes.wait_newer(loop.version, timeout=0.1)
            else:
                r, v = self.recipes.get_if_newer(loop.version)
            if r is not None:
                loop.apply(r, v)
            if loop.recipe is None:
                t_last = loop.geometry_time = time.monotonic()
                continue
            now = time.monotonic()
            frame, report = loop.step((now - t_last) * self.motion_hz, now)
            t_last = now
            self.frames.put(frame)
            self.stats.step(time.monotonic())
            if report is not None and self.health_slot is not None:
                self.health_slot.put(report)
            if loop.recipe is not None and loop.recipe.mode != "dream":
                # a scene mode makes one frame per motion tick at most: a fast style network
                # (toon: ~55 frames/s) must not iterate its filter faster than the picture moves
                rest = 1.0 / self.motion_hz - (time.monotonic() - now)
                if rest > 0:
                    self.stop_event.wait(rest)


@dataclass(slots=True)
class _Shown:
    """A dreamed frame on screen: RGBA uint8 at dream size, its geometry time, (while fading
    in) the previous frame already moved to the same instant, its cut, mask and backdrop, and
    (during a cut's crossfade) the old picture fading out from ``cut_t0`` over ``cut_s``."""

    img: U8
    time: float
    prev: U8 | None = None
    cut: int = 0
    mask: Mask | None = None
    backdrop: U8 | None = None
    old: _Shown | None = None
    cut_t0: float = 0.0
    cut_s: float = 0.0


class Renderer:
    """Owns the dream worker thread and the display loop.

    Lifecycle:

    * after ``__init__``: nothing runs yet; ``set_recipe`` may already be called.
    * ``await run()``: opens the output on the display thread, starts the worker and supervises
      it (restart with capped backoff when it dies); returns after ``stop()``, when the viewer
      closes the window (Esc / close button), or re-raises the output's ``RenderError`` if it
      could not open. The asyncio loop is never blocked: the display loop has its own thread.
    * ``set_recipe(r)``: thread-safe, never blocks, latest wins; shows within one dream step.
    * ``stats``: a ``FrameStats`` snapshot at any time. ``snapshot(path)`` writes the frame on
      screen as PNG (blocking file I/O: call it with ``asyncio.to_thread`` from the loop).
    * after ``stop()``: ``run`` returns within about a second (a step in flight finishes in the
      background on its daemon thread).
    """

    def __init__(self, model: StepModel, output: Output, *, dream_size: tuple[int, int] = (640, 360),
                 output_size: tuple[int, int] = (1280, 720), fps: float = 60.0,
                 source: RGB | None = None, seed: int = 0, motion_hz: float = 10.0,
                 resolve: Callable[[str], Path] | None = None, flow: FlowMethod | None = None,
                 guide_model: StepModel | None = None, max_backoff_s: float = 10.0,
                 worker_nice: int = 5, sources: list[RGB] | None = None,
                 health: HealthSettings | None = None, modes: Mapping[str, FrameMode] | None = None,
                 classifier: Classifier | None = None, seeing: Seeing | None = None,
                 display_rt_priority: int = 5) -> None:
        self.model = model
        self.display_rt_priority = display_rt_priority
        self.display_realtime = False
        """True once the display thread runs under SCHED_RR (see the module docstring)"""
        self.modes: dict[str, FrameMode] = dict(modes or {})
        """scene modes other than ``dream`` by name (:mod:`engine.render.modes`); they outlive a
        worker restart"""
        self.worker_nice = worker_nice
        self.guide_model = guide_model
        self.output = output
        self.dream_size = (int(dream_size[0]), int(dream_size[1]))
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.output.size = self.output_size
        self.fps = fps
        self.seed = seed
        self.motion_hz = motion_hz
        self.resolve = resolve
        self.flow = flow
        self.max_backoff_s = max_backoff_s
        self.source = np.asarray(source, dtype=np.float32) if source is not None \
            else noise_source(self.dream_size, seed)
        # the images a reseed cycles through (the show's images); the first is the start
        self.sources = [self.source] + [np.asarray(x, np.float32) for x in (sources or [])[1:]]
        self.health_settings = health or HealthSettings()
        self.health: LatestSlot[HealthReport] = LatestSlot()
        self.recipes: LatestSlot[DreamRecipe] = LatestSlot()
        self.frames: LatestSlot[DreamedFrame] = LatestSlot()
        self.counters = Counters()
        self.drawing: LiveDrawing | None = None if classifier is None else \
            LiveDrawing(classifier, seed=seed, counters=self.counters)
        """the drawing mode (scenes with ``mode = "drawing"``), when a classifier was given; it
        outlives a worker restart, so the drawing carries on from where it was"""
        self.seeing = seeing
        """the seeing overlay (scenes with ``seeing``), when given; it outlives a worker restart"""
        if seeing is not None:
            seeing.counters = self.counters
        self.tracker = StatsTracker(fps)
        self.quit_requested = False
        self._stop = threading.Event()
        self._worker_stop = threading.Event()
        self._worker: DreamWorker | None = None
        self._display_error: BaseException | None = None
        self._motion = Motion()
        self._pending: tuple[int, float] | None = None
        self._pending_lock = threading.Lock()
        self._last_frame: U8 | None = None
        self._last_dreamed: DreamedFrame | None = None
        self.generations_shown: collections.deque[tuple[int, float]] = collections.deque(maxlen=256)
        """(recipe generation, monotonic time just after ``present``) of the first presented picture
        in which a dream step of each new generation shows with a weight above 0 (a new frame comes
        in at weight 0 and fades in from the next refresh): when a scene change reaches the screen
        (``bench e2e``)."""
        self._opened = threading.Event()
        self._paused = threading.Event()
        self._blackout = threading.Event()
        self._paused_at: float | None = None
        # brightness ramp (set_brightness): (from, to, start time, seconds); replaced whole
        self._ramp: tuple[float, float, float, float] = (1.0, 1.0, 0.0, 0.0)

    # --- control ---------------------------------------------------------------------------
    def set_recipe(self, recipe: DreamRecipe) -> None:
        """Hand the worker a new recipe (latest wins); the display's motion follows at once."""
        self._motion = recipe_motion(recipe)
        with self._pending_lock:
            self.recipes.put(recipe)
            if self._pending is None:
                self._pending = (self.recipes.version, time.monotonic())

    def stop(self) -> None:
        self._stop.set()

    def set_paused(self, paused: bool) -> None:
        """Freeze the picture (no dream steps, no motion) or carry on from where it stood."""
        if paused and not self._paused.is_set():
            self._paused_at = time.monotonic()
            self._paused.set()
        elif not paused and self._paused.is_set():
            self._paused.clear()
            self._paused_at = None

    def set_blackout(self, on: bool) -> None:
        """Present black frames (the dream keeps running underneath) until switched off."""
        if on:
            self._blackout.set()
        else:
            self._blackout.clear()

    def set_brightness(self, level: float, fade_s: float = 0.0) -> None:
        """Ramp the shown picture's brightness linearly to ``level`` (0 = black, 1 = as dreamed)
        over ``fade_s`` seconds from wherever it is now (opening hours fade with it)."""
        now = time.monotonic()
        self._ramp = (self.brightness_at(now), min(1.0, max(0.0, level)), now, max(0.0, fade_s))

    def brightness_at(self, now: float) -> float:
        """The brightness the display applies at monotonic time ``now`` (0..1)."""
        start, end, t0, seconds = self._ramp
        if seconds <= 0.0 or now >= t0 + seconds:
            return end
        return start + (end - start) * max(0.0, now - t0) / seconds

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    @property
    def drawing_status(self) -> DrawingStatus | None:
        """The drawing's class and score while a drawing scene plays (else None)."""
        w = self._worker
        if self.drawing is None or w is None or not w.loop.drawing_now:
            return None
        return self.drawing.status

    @property
    def seeing_status(self) -> SeeingStatus | None:
        """The class and logit of the map on screen while a seeing scene plays (else None)."""
        w = self._worker
        recipe = w.loop.recipe if w is not None else None
        if self.seeing is None or recipe is None or recipe.seeing == "off":
            return None
        return self.seeing.status

    @property
    def blackout(self) -> bool:
        return self._blackout.is_set()

    @property
    def stats(self) -> FrameStats:
        return self.tracker.snapshot()

    @property
    def latest_frame(self) -> U8 | None:
        """The last frame presented to the output (uint8 RGB at output size; at dream size when
        the output scales frames itself, ``Output.scales``). Never written after it is shown."""
        return self._last_frame

    def snapshot(self, path: str | Path) -> Path:
        """Write the frame on screen as PNG at output size."""
        frame = self._last_frame
        if frame is None:
            raise RenderError("no frame has been shown yet", hint="snapshot after run() started")
        if (frame.shape[1], frame.shape[0]) != self.output_size:
            frame = cv().resize(frame, self.output_size, interpolation=cv().INTER_LINEAR)
        return save_image(path, frame)

    # --- worker ----------------------------------------------------------------------------
    def _start_worker(self) -> None:
        """Start a worker; after a restart it continues from the last published frame, with
        the source image the dead worker had loaded (so the picture does not jump back)."""
        last = self.frames.get() if self.frames.version else None
        old = self._worker
        source = old.dreamer.source if old is not None else self.source
        self._worker = DreamWorker(
            self.model, self.dream_size, self.recipes, self.frames,
            source=source, canvas=restart_canvas(old, last),
            stop=self._worker_stop, stats=self.tracker, counters=self.counters,
            motion_hz=self.motion_hz, seed=self.seed + self.tracker.worker_restarts,
            resolve=self.resolve, flow=self.flow, guide_model=self.guide_model,
            nice=self.worker_nice, source_spec=old.source_spec if old is not None else None,
            paused=self._paused, sources=self.sources, health=self.health_settings,
            health_slot=self.health, start_cut=old.cut if old is not None else 0, modes=self.modes,
            drawing=self.drawing, draw_size=lambda: self.output_size, seeing=self.seeing)
        self._worker.start()

    @property
    def worker(self) -> DreamWorker | None:
        return self._worker

    # --- display ---------------------------------------------------------------------------
    # Per display frame: (crossfade at dream size) -> one warp at dream size -> upscale.
    # Frames are kept as 4-channel uint8 at dream size: OpenCV's 4-channel warp is several
    # times faster than its 3-channel one, and warping before upscaling touches 4x fewer
    # pixels; a 720p frame costs about 2.5 ms this way instead of about 9 ms.
    rgba = staticmethod(to_rgba)


    def _take(self, f: DreamedFrame, cur: _Shown) -> _Shown:
        """A new dreamed frame. Same cut: the old one is moved to the new frame's instant for
        the short fade between dream steps. New cut: the whole old picture (with its own mask)
        is kept, moving on, and crossfaded out over the frame's ``fade_s``."""
        img = self.rgba(f.pixels)
        h, w = img.shape[:2]
        if f.cut != cur.cut:
            old = _Shown(cur.img, cur.time, cur.prev, cur.cut, cur.mask, cur.backdrop)
            return _Shown(img, f.time, None, f.cut, f.mask, f.backdrop, old=old,
                          cut_t0=time.monotonic(), cut_s=f.fade_s)
        base = cur.img if cur.img.shape == img.shape else \
            cv().resize(cur.img, (w, h), interpolation=cv().INTER_LINEAR)
        m = self._motion.matrix(w, h, (f.time - cur.time) * self.motion_hz)
        prev: U8 = cv().warpAffine(base, m, (w, h), flags=cv().INTER_LINEAR,
                                   borderMode=cv().BORDER_REFLECT_101)
        return _Shown(img, f.time, prev, f.cut, f.mask, f.backdrop, old=cur.old, cut_t0=cur.cut_t0, cut_s=cur.cut_s)

    def _picture(self, now: float, cur: _Shown, alpha: float) -> U8:
        """One shown picture at dream size (RGBA): faded from the previous step, moved to
        ``now``, and confined by its mask."""
        src = cur.img
        if cur.prev is not None and alpha < 1.0:
            src = cv().addWeighted(cur.prev, 1.0 - alpha, cur.img, alpha, 0.0)
        h, w = src.shape[:2]
        m = self._motion.matrix(w, h, (now - cur.time) * self.motion_hz)
        moved: U8 = cv().warpAffine(src, m, (w, h), flags=cv().INTER_LINEAR,
                                    borderMode=cv().BORDER_REFLECT_101)
        if cur.mask is not None and cur.backdrop is not None and cur.mask.shape == (h, w) \
                and cur.backdrop.shape == moved.shape:
            inside = cur.mask
            confined: U8 = cv().blendLinear(moved, cur.backdrop, inside, 1.0 - inside)
            return confined
        return moved

    def _compose(self, now: float, cur: _Shown, alpha: float) -> U8:
        pic = self._picture(now, cur, alpha)
        if cur.old is not None:
            t = (now - cur.cut_t0) / cur.cut_s if cur.cut_s > 0 else 1.0
            if t >= 1.0:
                cur.old = None
            else:
                old = self._picture(now, cur.old, 1.0)
                if old.shape != pic.shape:
                    old = cv().resize(old, (pic.shape[1], pic.shape[0]), interpolation=cv().INTER_LINEAR)
                pic = cv().addWeighted(old, 1.0 - t, pic, t, 0.0)
        h, w = pic.shape[:2]
        rgb = cv().cvtColor(pic, cv().COLOR_RGBA2RGB)
        if (w, h) == self.output_size or self.output.scales:  # the output scales it (GPU texture)
            out: U8 = rgb
            return out
        up: U8 = cv().resize(rgb, self.output_size, interpolation=cv().INTER_LINEAR)
        return up

    def _raise_display_priority(self) -> None:
        """SCHED_RR at ``display_rt_priority`` for the calling (display) thread; logged when refused."""
        prio = self.display_rt_priority
        if prio <= 0 or not hasattr(os, "sched_setscheduler"):
            return
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_RR, os.sched_param(prio))
            self.display_realtime = True
        except (PermissionError, OSError) as exc:
            log.info("display thread at normal priority (real-time priority %d refused: %s); to grant it, "
                     "set LimitRTPRIO=%d in the systemd unit or an rtprio limit for the user "
                     "(/etc/security/limits.d), or [output] display_rt_priority = 0 to stop asking",
                     prio, exc.strerror or exc, prio, extra={"output": self.output.name})

    def _display_main(self) -> None:
        self._raise_display_priority()
        try:
            self.output_size = self.output.open()
        except BaseException as exc:  # handed to run(), which re-raises it on the loop
            self._display_error = exc
            log.exception("output %s could not open: %s", self.output.name, exc,
                          extra={"output": self.output.name})
            self._opened.set()
            self._stop.set()
            return
        self._opened.set()
        try:
            self._display_loop()
        except BaseException as exc:  # handed to run(), which re-raises it on the loop
            self._display_error = exc
            log.exception("display loop failed: %s", exc, extra={"output": self.output.name})
            self._stop.set()
        finally:
            self.output.close()

    def _display_loop(self) -> None:
        period = 1.0 / self.fps
        start = time.monotonic()
        cur = _Shown(self.rgba(resize(self.source, self.dream_size)), start)
        fade_t0 = start
        fade_s = 0.1
        last_arrival: float | None = None
        version = 0
        # recipe generations of the newest dreamed frame and of the one it fades in over (None after
        # a cut: the new picture counts at once), and the newest generation recorded as shown
        generation: int | None = None
        prev_generation: int | None = None
        shown_generation: int | None = None
        last_present: float | None = None
        black: U8 | None = None
        deadline = start
        paced = self.output.paced
        while not self._stop.is_set():
            now = time.monotonic()
            if paced and last_present is not None and now - last_present < 0.9 * period:
                # a paced output whose present does not block (no vblank, e.g. a virtual display):
                # never run faster than the show's fps
                if self._stop.wait(last_present + 0.9 * period - now):
                    break
                now = time.monotonic()
            # an unpaced output: the frame is composed for the moment it will be shown (the next
            # deadline), then presented on time, so the time spent composing (which varies with
            # the machine's load) does not shift the presents; a paced output (vsync) blocks in
            # present instead
            show_at = now if paced else max(now, deadline)
            f, version = self.frames.get_if_newer(version)
            if f is not None:
                prev_generation = generation if f.cut == cur.cut else None
                cur = self._take(f, cur)
                generation = f.generation
                if last_arrival is not None:  # fade over about one dream interval
                    fade_s = min(0.5, max(2 * period, 0.7 * fade_s + 0.3 * (now - last_arrival)))
                last_arrival = fade_t0 = now
                self.tracker.shown()
                with self._pending_lock:
                    if self._pending is not None and f.recipe_version >= self._pending[0]:
                        self.tracker.latency(now - self._pending[1])
                        self._pending = None
            alpha = min(1.0, (show_at - fade_t0) / fade_s)
            paused_at = self._paused_at
            level = self.brightness_at(show_at)
            if self._blackout.is_set() or level <= 0.0:
                if black is None:
                    bw, bh = self.dream_size if self.output.scales else self.output_size
                    black = np.zeros((bh, bw, 3), np.uint8)
                frame = black
            else:
                frame = self._compose(show_at if paused_at is None else max(paused_at, cur.time), cur, alpha)
                if level < 1.0:
                    frame = cv().convertScaleAbs(frame, alpha=level)
            if not paced:
                delay = deadline - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
            self.output.present(frame)
            self._last_frame = frame
            visible = generation if alpha > 0.0 or prev_generation is None else prev_generation
            if visible is not None and visible != shown_generation and frame is not black:
                shown_generation = visible
                self.generations_shown.append((visible, time.monotonic()))
            if not self.output.poll():
                self.quit_requested = True
                self._stop.set()
            t = time.monotonic()
            if last_present is not None:
                self.tracker.frame(t - last_present, t)
            last_present = t
            if not paced:
                deadline += period
                if t - deadline > period:  # fell more than a frame behind: start the schedule again
                    deadline = t

    # --- the task ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Run until ``stop()`` (see the class docstring)."""
        self._stop.clear()
        self._worker_stop.clear()
        self._opened.clear()
        display = threading.Thread(target=self._display_main, name="display", daemon=True)
        display.start()
        retries = Backoff(base=0.5, cap=max(0.5, self.max_backoff_s)).retries()
        restart_at: float | None = None
        try:
            # the worker starts once the output is open: an output that cannot open (no display yet)
            # then costs no dream step, and no onnxruntime call is left running when the show ends;
            # a stop or cancellation while it opens still ends the display thread (finally below)
            while not self._opened.is_set() and not self._stop.is_set() and display.is_alive():
                await asyncio.sleep(0.02)
            if self._opened.is_set() and self._display_error is None and not self._stop.is_set():
                self._start_worker()
            retries.started()
            while not self._stop.is_set() and display.is_alive():
                await asyncio.sleep(0.05)
                w = self._worker
                now = time.monotonic()
                if w is not None and not w.is_alive():
                    if restart_at is None:
                        delay = retries.failed()
                        restart_at = now + delay
                        log.warning("dream worker stopped (%s); restarting in %.1f s",
                                    w.error, delay, extra={"backoff_s": round(delay, 3), "attempt": retries.attempt})
                    elif now >= restart_at:
                        self.tracker.restarted()
                        self.counters.inc("worker_restarts")
                        self._start_worker()
                        retries.started()
                        restart_at = None
        finally:
            self._stop.set()
            self._worker_stop.set()
            await asyncio.to_thread(display.join, 5.0)
            if self._worker is not None:
                await asyncio.to_thread(self._worker.join, 1.0)
                if self._worker.is_alive():  # in a long step; finish_workers() waits at exit
                    log.info("dream worker still in a step; it ends after this step")
        if self._display_error is not None:
            err = self._display_error
            if isinstance(err, DreamstateError):
                raise err
            raise RenderError(f"output {self.output.name} failed: {err}",
                              hint="see the log for the traceback") from err

    def run_for(self, seconds: float, *, on_tick: Callable[[Renderer, float], Any] | None = None,
                tick_s: float = 0.5) -> FrameStats:
        """Run for ``seconds`` in a fresh event loop (CLI, benchmarks); returns the stats."""

        async def main() -> None:
            task = asyncio.create_task(self.run())
            t0 = time.monotonic()
            try:
                while not task.done() and time.monotonic() - t0 < seconds:
                    await asyncio.sleep(tick_s)
                    if on_tick is not None:
                        on_tick(self, time.monotonic() - t0)
            finally:
                self.stop()
                await task

        asyncio.run(main())
        return self.stats
