"""Per-pixel gradient weights ("masks") in [0, 1], shape (H, W) float32.

Spec strings (the same in show files, recipes and the CLI):

* ``"circle"``: 1 inside a centred circle (radius 0.45 of the shorter side), a soft edge of
  0.05, and exactly 0 outside; pixels outside the circle are never changed by a dream.
* ``"radial"``: 1 at the centre falling smoothly to 0 at the corners.
* ``"<image path>"`` or ``"luminance:<path>"``: the luminance of another image.
* ``"edges:<path>"``: the edges (Sobel magnitude, normalised and softened) of another image.

``resolve`` turns a show-relative path into a real path (e.g. ``LoadedShow.path``). An image mask
whose size differs from the frame is resized, with a warning that says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.images import load_image

log = logging.getLogger("dreamstate.render")

Mask = npt.NDArray[np.float32]
BUILTIN = ("circle", "radial")
MODES = ("luminance", "edges")


def circle_mask(height: int, width: int, *, radius: float = 0.45, feather: float = 0.05) -> Mask:
    """1 inside the circle of ``radius`` x min(H, W), ramping to 0 over ``feather`` x min(H, W)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    r = np.hypot(yy - cy, xx - cx) / min(height, width)
    inner = radius - feather
    m = np.clip((radius - r) / max(feather, 1e-6), 0.0, 1.0)
    m[r <= inner] = 1.0
    out: Mask = m.astype(np.float32)
    return out


def radial_mask(height: int, width: int) -> Mask:
    """Smooth falloff from 1 at the centre to 0 at the corners (cosine profile)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    r = np.hypot((yy - cy) / max(cy, 1.0), (xx - cx) / max(cx, 1.0)) / np.sqrt(2.0)
    out: Mask = (0.5 + 0.5 * np.cos(np.pi * np.clip(r, 0.0, 1.0))).astype(np.float32)
    return out


def image_mask(rgb: npt.NDArray[np.float32], mode: str = "luminance") -> Mask:
    """A mask from another image: its luminance, or its edges."""
    cv2 = cv()

    lum = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)
    if mode == "luminance":
        lum_out: Mask = lum
        return lum_out
    if mode == "edges":
        gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
        mag = np.hypot(gx, gy)
        mag = cv2.GaussianBlur(mag, (0, 0), sigmaX=max(1.0, min(lum.shape) / 200.0))
        top = float(np.percentile(mag, 99.0)) or 1.0
        out: Mask = np.clip(mag / top, 0.0, 1.0).astype(np.float32)
        return out
    raise RenderError(f"unknown mask mode {mode!r}", hint=f"use one of {list(MODES)}")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"circle"`` -> ("circle", None); ``"edges:a.png"`` -> ("edges", "a.png");
    ``"a.png"`` -> ("luminance", "a.png")."""
    if spec in BUILTIN:
        return spec, None
    for mode in MODES:
        if spec.startswith(mode + ":"):
            return mode, spec[len(mode) + 1:]
    return "luminance", spec


def fit_mask(mask: Mask, height: int, width: int, *, name: str = "mask", warn: bool = True) -> Mask:
    """Resize ``mask`` to (height, width); says so in the log when ``warn``."""
    cv2 = cv()

    if mask.shape == (height, width):
        return mask
    if warn:
        log.warning("mask %s is %dx%d but the frame is %dx%d; resizing the mask to fit",
                    name, mask.shape[1], mask.shape[0], width, height,
                    extra={"mask": name})
    out: Mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def make_mask(spec: str, height: int, width: int, *,
              resolve: Callable[[str], Path] | None = None) -> Mask:
    """Build the mask ``spec`` names, at (height, width). Raises ``RenderError`` on bad input."""
    kind, path = parse_spec(spec)
    if kind == "circle":
        return circle_mask(height, width)
    if kind == "radial":
        return radial_mask(height, width)
    assert path is not None
    real = resolve(path) if resolve else Path(path)
    rgb = load_image(real, what=f"mask image ({spec})")
    return fit_mask(image_mask(rgb, kind), height, width, name=str(real))
