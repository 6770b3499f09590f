"""Zoom, rotation and translation about a chosen centre, as 2x3 affine matrices.

Motion is given per *tick*: ``zoom`` > 1 zooms in (content grows about the centre),
``rotate_deg`` turns counter-clockwise on screen, ``translate`` = (dx, dy) moves content by a
fraction of the frame width/height. ``amount`` scales one tick to a fraction or a multiple of a
tick (zoom**amount, rotate*amount, translate*amount), so the display can move continuously
between dream frames. The centre defaults to the frame centre and stays fixed under pure zoom
and rotation.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.cvlib import cv

Affine = npt.NDArray[np.float64]


def motion_matrix(width: int, height: int, *, zoom: float = 1.0, rotate_deg: float = 0.0,
                  translate: tuple[float, float] = (0.0, 0.0),
                  center: tuple[float, float] | None = None, amount: float = 1.0) -> Affine:
    """Forward 2x3 matrix mapping source pixel (x, y) to destination pixel coordinates.

    ``center`` is in pixel coordinates where pixel centres sit at integers, so for a
    ``width`` x ``height`` frame the middle is ((width - 1) / 2, (height - 1) / 2).
    """
    if zoom <= 0:
        raise ValueError(f"zoom must be > 0, got {zoom}")
    cx, cy = center if center is not None else ((width - 1) / 2.0, (height - 1) / 2.0)
    s = zoom ** amount
    a = math.radians(rotate_deg * amount)
    cos, sin = s * math.cos(a), s * math.sin(a)
    tx = translate[0] * amount * width
    ty = translate[1] * amount * height
    # p' = R*S*(p - c) + c + t ; screen y points down, so a positive angle turns counter-clockwise
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]], dtype=np.float64)
    m[0, 2] = cx - (cos * cx + sin * cy) + tx
    m[1, 2] = cy - (-sin * cx + cos * cy) + ty
    return m


def is_identity(m: Affine, tol: float = 1e-9) -> bool:
    return bool(np.allclose(m, [[1, 0, 0], [0, 1, 0]], atol=tol))


def warp(img: npt.NDArray[np.generic], m: Affine, *,
         border: str = "reflect") -> npt.NDArray[np.generic]:
    """Apply the forward matrix ``m`` to ``img`` (same size out); reflect at the borders."""
    cv2 = cv()

    if is_identity(m):
        return img
    mode = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT,
            "replicate": cv2.BORDER_REPLICATE}[border]
    h, w = img.shape[:2]
    out: npt.NDArray[np.generic] = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                                                  borderMode=mode)
    return out
