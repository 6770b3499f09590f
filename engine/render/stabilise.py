"""Stabilisers for the zoom-feedback loop: what keeps a dream alive for a whole day.

Zoom-feedback decays in known ways: every warp resamples and blurs the frame, one octave per
frame cannot put detail back fast enough, and the colour statistics random-walk to saturation
or to black, because nothing pulls the picture back. Two corrections, each a scene knob, were
kept because the measures of :mod:`engine.render.health` showed them to help over thousands
of frames (``dreamstate bench longrun``) and the contact sheets agreed:

* **detail** (``warp_px``, default 16): the feedback canvas is resampled only once the motion
  accumulated since its last resample moves some pixel by ``warp_px`` pixels
  (``FeedbackDreamer.move(min_px=...)``), not at every dream step; the display moves the
  picture continuously in between, so the motion on screen is unchanged. Every bilinear
  resample is a small blur, and at the demo's zoom speeds a dream step every 0.1 s cannot
  put back what a resample every 0.1 s takes: measured on EfficientNet-Lite0 at 320x180,
  mean gradient detail 0.025 resampling every step, 0.038 every 4 px, 0.056 every 12 px.

* **colour** (``color_nudge``, default 0.02): statistics matching towards the source image's
  palette, Reinhard-style (Reinhard et al. 2001, "Color transfer between images"), but in
  YCbCr (ITU-R BT.601), a decorrelated space that costs one 3x3 matrix instead of Lab's
  non-linearity. Each step moves the frame's per-channel mean and standard deviation a
  fraction ``color_nudge`` of the way to the target: the source's mean and standard deviation,
  with the luminance standard deviation at ``contrast`` (default 0.85) times the source's.
  When more pixels sit at 0 or 255 than in the source, the luminance target drops in
  proportion (1 - 4 x the excess share, at most by 40 %), and a soft knee ``x - 4 k (x - 1/2)^3`` (``k`` up to
  ``color_nudge``, growing with the excess) moves the rails inwards by ``k / 2`` per step
  while leaving mid-tones almost alone: together they keep dreams that love black and white
  blobs (the starter model) off the rails. Statistics come from every 4th pixel, and the whole
  correction is folded into one affine colour transform (``cv2.transform``): about 0.5 ms at
  640x360 (Lab costs about 17 ms).
What was tried and dropped (measured, see docs/BENCHMARKS.md): a mild unsharp mask (0.03,
sigma 1 px; it raised the detail measure but tore the picture along lines through the zoom
centre, and alone or above about 0.05 it gives radial streaks, then a rainbow explosion),
re-injecting the source at a small weight (the photo shows through with a radial smear), the
source warped by the accumulated motion (after a few hundred frames the zoom is ~66x: a flat
colour is injected), cubic or Lanczos resampling in the warp (ringing into zebra moiré), a
per-frame change limit (no effect), and matching the full source contrast (1.0x; clipping
excursions remain). The colour nudge
copies the source's palette, so a dark or garish source image is copied too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.cvlib import cv

RGB = npt.NDArray[np.float32]

# RGB -> YCbCr (BT.601, analogue form, Cb and Cr centred on 0)
YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=np.float64,
)
YCC_INV = np.linalg.inv(YCC)


@dataclass(frozen=True, slots=True)
class ColourTarget:
    """The statistics the colour nudge pulls towards: YCbCr mean and std (each (3,)), and the
    share of the source's pixels at 0 or 255 in some channel."""

    mean: npt.NDArray[np.float64]
    std: npt.NDArray[np.float64]
    clipped: float = 0.0

    @classmethod
    def of(cls, rgb: npt.NDArray[np.floating], contrast: float = 0.85) -> ColourTarget:
        """The target for source image ``rgb``: its statistics, luminance std x ``contrast``."""
        s = _sample(rgb)
        ycc = s @ YCC.T
        std = ycc.std(axis=0)
        std[0] *= contrast
        return cls(ycc.mean(axis=0), std, _clipped(s))


def _clipped(s: npt.NDArray[np.float64]) -> float:
    return float(((s <= 0.5 / 255.0) | (s >= 254.5 / 255.0)).any(axis=1).mean())


def _sample(rgb: npt.NDArray[np.floating], stride: int = 4) -> npt.NDArray[np.float64]:
    a = np.asarray(rgb)
    s: npt.NDArray[np.float64] = np.asarray(a[::stride, ::stride], dtype=np.float64).reshape(-1, 3)
    return s


def colour_transform(rgb: npt.NDArray[np.floating], target: ColourTarget, rate: float) -> npt.NDArray[np.float32]:
    """The 3x4 affine RGB transform that moves ``rgb``'s YCbCr mean and std a fraction ``rate``
    of the way to ``target``: per channel ``y' = g (y - m) + m + rate (m_t - m)`` with
    ``g = 1 + rate (s_t / s - 1)``, folded through the YCbCr matrix into RGB."""
    sample = _sample(rgb)
    ycc = sample @ YCC.T
    m = ycc.mean(axis=0)
    s = np.maximum(ycc.std(axis=0), 1e-4)
    # more pixels on the rails than the source has: aim lower, in proportion (the dream's
    # black and white blobs otherwise grow with every zoom)
    excess = max(0.0, _clipped(sample) - target.clipped)
    want = target.std * np.array([max(0.6, 1.0 - 4.0 * excess), 1.0, 1.0])
    g = np.clip(1.0 + rate * (want / s - 1.0), 0.5, 2.0)
    b = m * (1.0 - g) + rate * (target.mean - m)
    a = YCC_INV @ np.diag(g) @ YCC
    t = YCC_INV @ b
    out: npt.NDArray[np.float32] = np.hstack([a, t[:, None]]).astype(np.float32)
    return out


def clip_excess(rgb: npt.NDArray[np.floating], target: ColourTarget) -> float:
    """How many more pixels (share) sit at 0 or 255 in some channel than in the source."""
    return max(0.0, _clipped(_sample(rgb)) - target.clipped)


def nudge_colour(rgb: RGB, target: ColourTarget, rate: float) -> RGB:
    """One colour-nudge step (see the module docstring); returns a new clipped float32 frame."""
    if rate <= 0:
        return rgb
    excess = clip_excess(rgb, target)
    out: RGB = cv().transform(np.ascontiguousarray(rgb, dtype=np.float32), colour_transform(rgb, target, rate))
    if excess > 0.0:
        # soft rails: x -= 4 k (x - 1/2)^3 moves 0 and 1 inwards by k / 2 and leaves mid-tones
        # almost alone, so pixels the dream pushed onto a rail come back; k grows with the
        # excess (full strength, k = rate, at 1 % more clipped pixels than the source)
        k = 2.0 * rate * min(1.0, excess / 0.01)
        d = out - np.float32(0.5)
        d2 = d * d
        d2 *= d2
        d2 *= d
        d2 *= np.float32(16.0 * k)
        out -= d2
    np.clip(out, 0.0, 1.0, out=out)
    return out


@dataclass(frozen=True, slots=True)
class StabiliserParams:
    """The colour nudge's scene knobs (see the module docstring); ``color_nudge = 0`` is off.
    (``warp_px`` acts in ``FeedbackDreamer.move``.)"""

    color_nudge: float = 0.02
    contrast: float = 0.85

    @property
    def off(self) -> bool:
        return self.color_nudge <= 0


OFF = StabiliserParams(0.0, 0.85)


class Stabiliser:
    """Applies :class:`StabiliserParams` to frames against one source's palette.

    After ``__init__(source)`` or ``set_source(source)`` the colour target is that image's;
    ``apply(rgb, params)`` returns the stabilised frame (the input itself when all are off).
    """

    def __init__(self, source: npt.NDArray[np.floating]) -> None:
        self._source = source
        self._targets: dict[float, ColourTarget] = {}

    def set_source(self, source: npt.NDArray[np.floating]) -> None:
        self._source = source
        self._targets.clear()

    def target(self, contrast: float) -> ColourTarget:
        t = self._targets.get(contrast)
        if t is None:
            t = self._targets[contrast] = ColourTarget.of(self._source, contrast)
        return t

    def apply(self, rgb: RGB, params: StabiliserParams) -> RGB:
        if params.color_nudge > 0:
            return nudge_colour(rgb, self.target(params.contrast), params.color_nudge)
        return rgb
