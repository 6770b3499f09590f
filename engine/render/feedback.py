"""Zoom-feedback: each frame is moved (zoom, rotate, translate about a centre), blended with
the moved source, then dreamed; the result feeds the next frame.

``FeedbackDreamer`` keeps that state. Lifecycle:

* after ``__init__(model, size, source)``: ``canvas`` is the source resized to ``size``.
* ``move(motion, ticks, source_mix=0, min_px=0)``: the source is moved by ``ticks`` motion
  ticks (computed from the original source, so it never blurs by accumulation); the carried
  dream is moved by the same motion, or, with ``flow`` set ("dis" or "farneback"), warped along
  the optical flow between the previous and the current source frame (what
  ksk-S/DeepDreamVideoOpticalFlow does for video); then
  ``canvas = (1 - source_mix) * carried + source_mix * source``. ``source_mix = 0`` is pure
  feedback (the classic zoom video); a video source wants 0.3-0.5 so its frames show through.
  With ``min_px`` > 0 the motion is only accumulated until it moves some pixel by ``min_px``
  pixels, and the canvas is resampled then, in one warp: every resample blurs a little, and
  fewer of them keep the detail (the live display moves the picture continuously anyway).
  Returns whether the canvas was resampled (its geometry moved to now).
* ``dream_full(params, blend)``: every octave x steps (the offline loop).
* ``dream_realtime(params, steps, blend, stabilise)``: the stabilisers
  (:mod:`engine.render.stabilise`, against the source's palette), then ``steps`` steps at one
  octave; the octave cycles coarse -> fine after every ``steps_per_octave`` steps (real-time
  DeepDream).
  ``blend`` is the temporal blend (flicker control): the new canvas is
  ``blend * before + (1 - blend) * dreamed``, a low-pass on the change each frame makes.
* ``set_source_frame(rgb)``: the next source frame of a video (motion history is kept).
* ``reset(source)``: a new source; motion and flow history start again; the stabilisers
  take the new source's palette.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.images import RGB, resize
from dreamstate.engine.render.dream import (
    OCTAVE_BUCKET_PX,
    DreamParams,
    Progress,
    StepModel,
    dream_image,
    dream_octave,
    model_min_size,
    octave_sizes,
)
from dreamstate.engine.render.geometry import Affine, motion_matrix, warp
from dreamstate.engine.render.masks import Mask
from dreamstate.engine.render.stabilise import Stabiliser, StabiliserParams

FlowMethod = Literal["dis", "farneback"]


@dataclass(frozen=True, slots=True)
class Motion:
    """Per-tick motion. ``center`` is a fraction of the frame ((0.5, 0.5) is the middle)."""

    zoom: float = 1.0
    rotate_deg: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)
    center: tuple[float, float] = (0.5, 0.5)

    def matrix(self, width: int, height: int, amount: float = 1.0) -> Affine:
        c = (self.center[0] * (width - 1), self.center[1] * (height - 1))
        return motion_matrix(width, height, zoom=self.zoom, rotate_deg=self.rotate_deg,
                             translate=self.translate, center=c, amount=amount)


def _h(m: Affine) -> npt.NDArray[np.float64]:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def max_displacement(m: npt.NDArray[np.float64], width: int, height: int) -> float:
    """How far (pixels) the affine ``m`` moves the farthest of a frame's corners."""
    corners = np.array([[0.0, 0.0, 1.0], [width, 0.0, 1.0], [0.0, height, 1.0], [width, height, 1.0]])
    moved = corners @ np.asarray(m, np.float64)[:2].T
    return float(np.abs(moved - corners[:, :2]).max())


class OpticalFlow:
    """Backward flow between two frames with OpenCV DIS or Farneback."""

    def __init__(self, method: FlowMethod) -> None:
        cv2 = cv()

        if method not in ("dis", "farneback"):
            raise RenderError(f"unknown optical flow method {method!r}",
                              hint="use 'dis' or 'farneback'")
        self.method = method
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) \
            if method == "dis" else None

    def warp_previous(self, prev_img: RGB, prev_src: RGB, cur_src: RGB) -> RGB:
        """Warp ``prev_img`` (aligned with ``prev_src``) so it lines up with ``cur_src``."""
        cv2 = cv()

        def gray(a: RGB) -> npt.NDArray[np.uint8]:
            g: npt.NDArray[np.uint8] = cv2.cvtColor(
                np.clip(a * 255.0, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
            return g

        cur_g, prev_g = gray(cur_src), gray(prev_src)
        if self._dis is not None:
            flow = self._dis.calc(cur_g, prev_g, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(cur_g, prev_g, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        h, w = cur_g.shape
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        out: RGB = cv2.remap(prev_img, gx + flow[..., 0], gy + flow[..., 1],
                             interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return out


class FeedbackDreamer:
    """The zoom-feedback loop's state (see the module docstring for the lifecycle)."""

    def __init__(self, model: StepModel, size: tuple[int, int], source: RGB, *, seed: int = 0,
                 flow: FlowMethod | None = None) -> None:
        self.model = model
        self.size = (int(size[0]), int(size[1]))
        self.rng = np.random.default_rng(seed)
        self.flow = OpticalFlow(flow) if flow else None
        self.mask: Mask | None = None
        self.guide: Mapping[str, Any] | None = None
        self.steps_done = 0
        self.last_loss = 0.0
        self.stabiliser = Stabiliser(np.zeros((1, 1, 3), np.float32))
        self.reset(source)

    def reset(self, source: RGB, *, canvas: RGB | None = None) -> None:
        self._source = resize(np.asarray(source, dtype=np.float32), self.size)
        self._acc = np.eye(3)
        self._pending = np.eye(3)
        self.source_now: RGB = self._source
        self.canvas: RGB = self._source.copy() if canvas is None else resize(canvas, self.size)
        self._octave_counter = 0
        self.stabiliser.set_source(self._source)

    @property
    def source(self) -> RGB:
        """The unmoved source (image, or the latest video frame) at this dreamer's size."""
        return self._source

    def set_source_frame(self, rgb: RGB) -> None:
        """A new frame of a moving source (video); used by the next ``move``."""
        self._source = resize(np.asarray(rgb, dtype=np.float32), self.size)

    def move(self, motion: Motion, ticks: float, source_mix: float = 0.0, *, min_px: float = 0.0) -> bool:
        """Advance the motion by ``ticks`` ticks; True when the canvas was resampled (see the
        module docstring for ``min_px``)."""
        w, h = self.size
        m = _h(motion.matrix(w, h, amount=ticks))
        self._acc = m @ self._acc
        self._pending = m @ self._pending
        mix = float(np.clip(source_mix, 0.0, 1.0))
        if min_px > 0 and mix <= 0.0 and self.flow is None and max_displacement(self._pending, w, h) < min_px:
            return False
        pending, self._pending = self._pending, np.eye(3)
        prev_src = self.source_now
        if self.flow is not None or mix > 0.0:
            self.source_now = np.asarray(warp(self._source, self._acc[:2]), dtype=np.float32)
        if self.flow is not None:
            carried = self.flow.warp_previous(self.canvas, prev_src, self.source_now)
        else:
            carried = np.asarray(warp(self.canvas, pending[:2]), dtype=np.float32)
        self.canvas = carried if mix <= 0.0 else \
            ((1.0 - mix) * carried + mix * self.source_now).astype(np.float32)
        return True

    def _blend(self, before: RGB, dreamed: RGB, blend: float) -> RGB:
        b = float(np.clip(blend, 0.0, 1.0))
        if b <= 0.0:
            return dreamed
        out: RGB = (b * before + (1.0 - b) * dreamed).astype(np.float32)
        return out

    def stabilise(self, params: StabiliserParams | None) -> RGB:
        """Apply the stabilisers to the canvas against the source's palette (None = off)."""
        if params is not None and not params.off:
            self.canvas = self.stabiliser.apply(self.canvas, params)
        return self.canvas

    def dream_full(self, params: DreamParams, blend: float = 0.0,
                   progress: Progress | None = None, stabilise: StabiliserParams | None = None) -> RGB:
        self.stabilise(stabilise)
        seed = int(self.rng.integers(0, 2**31 - 1))
        dreamed = dream_image(self.model, self.canvas, params, mask=self.mask,
                              guide=self.guide, seed=seed, progress=progress)
        self.canvas = self._blend(self.canvas, dreamed, blend)
        self.steps_done += params.octaves * params.steps_per_octave
        return self.canvas

    def transform(self, step: Callable[[RGB], RGB], stabilise: StabiliserParams | None = None) -> RGB:
        """A scene mode's step instead of a dream step: the stabilisers, then
        ``canvas = step(canvas)`` (e.g. a style network, :mod:`engine.render.style`)."""
        self.stabilise(stabilise)
        out = np.asarray(step(self.canvas), np.float32)
        if out.shape != self.canvas.shape:
            raise RenderError(f"a scene mode returned a frame of shape {out.shape} for a canvas of {self.canvas.shape}",
                              hint="the mode must keep the frame size")
        self.canvas = out
        self.steps_done += 1
        return self.canvas

    def restart_octaves(self) -> None:
        """The next real-time step starts the octave cycle again at the coarsest octave."""
        self._octave_counter = 0

    def current_octave(self, params: DreamParams) -> int:
        """The octave (0 = full size) the next real-time step works on: coarse to fine."""
        n = len(octave_sizes(self.size[0], self.size[1], params.octaves, params.octave_scale,
                             model_min_size(self.model), bucket=OCTAVE_BUCKET_PX))
        cycle = (self._octave_counter // max(1, params.steps_per_octave)) % n
        return n - 1 - cycle

    def dream_realtime(self, params: DreamParams, steps: int = 1, blend: float = 0.0,
                       stabilise: StabiliserParams | None = None) -> RGB:
        self.stabilise(stabilise)
        octave = self.current_octave(params)
        dreamed, self.last_loss = dream_octave(self.model, self.canvas, params, octave,
                                               steps=steps, mask=self.mask, guide=self.guide,
                                               rng=self.rng)
        self.canvas = self._blend(self.canvas, dreamed, blend)
        self._octave_counter += steps
        self.steps_done += steps
        return self.canvas


def render_feedback_video(model: StepModel, source: RGB | str | Path, out_path: str | Path, *,
                          seconds: float, fps: float, size: tuple[int, int],
                          params: DreamParams, motion: Motion, blend: float = 0.0,
                          source_mix: float = 0.0, realtime: bool = False,
                          steps_per_frame: int = 2, flow: FlowMethod | None = None,
                          mask: Mask | None = None, guide: Mapping[str, Any] | None = None,
                          seed: int = 0, progress: Progress | None = None) -> int:
    """Render a zoom-feedback video offline; one motion tick per video frame.

    ``source`` is an image (array or file) or a video file (its frames become the moving
    source; pair it with ``source_mix`` and ``flow``). ``realtime=False``: every frame gets the
    full octave loop (octaves x steps); ``realtime=True``: ``steps_per_frame`` steps at one
    octave, cycling. Returns the number of frames written.
    """
    cv2 = cv()

    from dreamstate.engine.core.images import load_image

    cap: Any = None
    if isinstance(source, str | Path):
        p = Path(source)
        if p.suffix.lower() in VIDEO_SUFFIXES:
            cap = cv2.VideoCapture(str(p))
            ok, bgr = cap.read() if cap.isOpened() else (False, None)
            if not ok:
                raise RenderError(f"video {str(p)!r} cannot be read",
                                  hint="check the file exists and is a video OpenCV can decode")
            first = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
        else:
            first = load_image(p)
    else:
        first = source
    n = max(1, round(seconds * fps))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RenderError(f"cannot open video file {str(out_path)!r} for writing",
                          hint="use a .mp4 or .avi name in a writable folder")
    dreamer = FeedbackDreamer(model, size, first, seed=seed, flow=flow)
    dreamer.mask, dreamer.guide = mask, guide
    per = steps_per_frame if realtime else max(1, params.octaves * params.steps_per_octave)
    try:
        for i in range(n):
            if i > 0:
                if cap is not None:
                    ok, bgr = cap.read()
                    if ok:
                        dreamer.set_source_frame(
                            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0)
                dreamer.move(motion, 1.0, source_mix)
            if realtime:
                dreamer.dream_realtime(params, steps_per_frame, blend)
            else:
                dreamer.dream_full(params, blend)
            frame = np.clip(dreamer.canvas * 255.0 + 0.5, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            if progress is not None:
                progress((i + 1) * per, n * per)
    finally:
        writer.release()
        if cap is not None:
            cap.release()
    return n


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
