"""Image I/O for the renderer: float32 RGB in [0, 1] inside, uint8 only at the edges.

``load_image(path)`` returns an (H, W, 3) float32 RGB array or raises ``RenderError`` naming the
file and the fix. ``save_image(path, rgb)`` writes PNG/JPEG. ``to_uint8``/``from_uint8`` convert.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from engine.errors import RenderError
from engine.render.cvlib import cv

RGB = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


def to_uint8(rgb: npt.NDArray[np.floating]) -> U8:
    """Float RGB in [0, 1] to uint8 (rounded, clipped)."""
    out: U8 = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def from_uint8(img: U8) -> RGB:
    out: RGB = img.astype(np.float32) * np.float32(1.0 / 255.0)
    return out


def load_image(path: str | Path, *, what: str = "image",
               size: tuple[int, int] | None = None) -> RGB:
    """Read an image file as float32 RGB [0, 1]; ``size`` = (width, height) resizes it.

    Raises ``RenderError`` when the file is missing or cannot be decoded.
    """
    cv2 = cv()

    p = Path(path)
    if not p.is_file():
        raise RenderError(f"{what} {str(p)!r} not found",
                          hint="check the path; images are PNG/JPEG files")
    data = np.fromfile(p, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise RenderError(f"{what} {str(p)!r} is not a readable image",
                          hint="use a PNG or JPEG file; the file may be corrupt or truncated")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
        interp = cv2.INTER_AREA if rgb.shape[1] > size[0] else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (int(size[0]), int(size[1])), interpolation=interp)
    return from_uint8(rgb)


def save_image(path: str | Path, rgb: npt.NDArray[np.floating] | U8) -> Path:
    """Write float RGB [0, 1] (or uint8 RGB) to ``path`` (PNG or JPEG by suffix)."""
    cv2 = cv()

    p = Path(path)
    img = rgb if rgb.dtype == np.uint8 else to_uint8(rgb.astype(np.float32))
    ext = p.suffix.lower() or ".png"
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RenderError(f"cannot encode image for {str(p)!r}", hint="use a .png or .jpg name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(buf.tobytes())
    except OSError as exc:
        raise RenderError(f"cannot write {str(p)!r}: {exc.strerror}",
                          hint="check the folder exists and is writable") from None
    return p


def resize(rgb: RGB, size: tuple[int, int]) -> RGB:
    """Resize float RGB to ``size`` = (width, height) (area when shrinking, linear otherwise)."""
    cv2 = cv()

    w, h = int(size[0]), int(size[1])
    if rgb.shape[1] == w and rgb.shape[0] == h:
        return rgb
    interp = cv2.INTER_AREA if rgb.shape[1] > w else cv2.INTER_LINEAR
    out: RGB = cv2.resize(rgb, (w, h), interpolation=interp)
    return out
