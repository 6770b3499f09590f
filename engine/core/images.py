"""Image I/O for the renderer: float32 RGB in [0, 1] inside, uint8 only at the edges.

``load_image(path)`` returns an (H, W, 3) float32 RGB array (any colour mode and bit depth,
EXIF orientation applied) or raises ``RenderError`` naming the file and the fix.
``save_image(path, rgb)`` writes PNG/JPEG. ``to_uint8``/``from_uint8`` convert.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import RenderError

RGB = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


def to_uint8(rgb: npt.NDArray[np.floating]) -> U8:
    """Float RGB in [0, 1] to uint8 (rounded, clipped)."""
    out: U8 = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def from_uint8(img: U8) -> RGB:
    out: RGB = img.astype(np.float32) * np.float32(1.0 / 255.0)
    return out


_NOT_DECODABLE = {
    b"ftypheic": "HEIC (an iPhone photo)", b"ftypheix": "HEIC", b"ftypmif1": "HEIF", b"ftypmsf1": "HEIF",
    b"ftyphevc": "HEIF", b"ftypavif": "AVIF", b"ftypavis": "AVIF",
}


def _container(head: bytes) -> str | None:
    """The name of a container neither Pillow nor OpenCV decodes here (HEIC/HEIF/AVIF), or None."""
    return _NOT_DECODABLE.get(head[4:12]) if len(head) >= 12 else None


def load_image(path: str | Path, *, what: str = "image",
               size: tuple[int, int] | None = None) -> RGB:
    """Read an image file as float32 RGB [0, 1] (H, W, 3); ``size`` = (width, height) resizes it.

    Decoded with Pillow, so every colour mode it knows arrives with the right colours: 1-bit,
    greyscale (8, 16 and 32-bit integer, float), palette, RGB, RGBA/LA (transparency is laid
    over black, the projector's background, and said), CMYK and YCbCr JPEG/TIFF. The EXIF
    orientation a camera or phone writes is applied. Of an animated or multi-page file the
    first frame is used (and said). JPEG, PNG, TIFF, WebP, BMP, GIF, PPM and ICO are read;
    HEIC/HEIF/AVIF and anything else undecodable are refused with the fix. Raises
    ``RenderError`` naming the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    log = logging.getLogger("dreamstate.render")
    p = Path(path)
    if p.is_dir():
        raise RenderError(f"{what} {str(p)!r} is a folder, not an image", hint="name an image file inside it")
    if not p.is_file():
        raise RenderError(f"{what} {str(p)!r} not found",
                          hint="check the path; images are PNG/JPEG files")
    try:
        with p.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise RenderError(f"{what} {str(p)!r} cannot be read: {exc.strerror}", hint="check permissions") from None
    kind = _container(head)
    if kind:
        raise RenderError(f"{what} {str(p)!r} is {kind}, which dreamstate cannot decode",
                          hint="convert it to JPEG or PNG (most photo apps export either)")
    try:
        with Image.open(p) as im:
            frames = int(getattr(im, "n_frames", 1) or 1)
            if frames > 1:
                log.info("%s %s has %d frames; using the first", what, p.name, frames, extra={"image": str(p)})
            im.seek(0)
            oriented = ImageOps.exif_transpose(im)
            rgb = _to_rgb(oriented if oriented is not None else im, what, p, log)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise RenderError(f"{what} {str(p)!r} is not a readable image ({type(exc).__name__})",
                          hint="use a PNG or JPEG file; the file may be corrupt or truncated") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise RenderError(f"{what} {str(p)!r} is empty (0 pixels)", hint="use a real image")
    if size is not None and (rgb.shape[1], rgb.shape[0]) != tuple(size):
        rgb = resize(rgb, (int(size[0]), int(size[1])))
    return rgb


def _to_rgb(im: object, what: str, path: Path, log: logging.Logger) -> RGB:
    """A Pillow image in any mode -> float32 RGB [0, 1], colours and depth kept."""
    from PIL import Image

    assert isinstance(im, Image.Image)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) <= 65535 else float(2**32 - 1)
        grey = np.clip(a / top, 0.0, 1.0)
        return np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        finite = a[np.isfinite(a)]
        top = float(finite.max()) if finite.size and finite.max() > 1.0 else 1.0
        if top > 1.0:
            log.info("%s %s holds floats up to %g; scaled to 0..1", what, path.name, top)
        grey = np.clip(np.nan_to_num(a / top), 0.0, 1.0)
        return np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[:, :, 3:4]
        if float(alpha.min()) < 1.0:
            log.info("%s %s is partly transparent; transparent areas are laid over black",
                                 what, path.name)
        out: RGB = np.ascontiguousarray(rgba[:, :, :3] * alpha, dtype=np.float32)
        return out
    rgb8 = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return from_uint8(np.ascontiguousarray(rgb8))


IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File name endings :func:`save_image` writes (OpenCV's encoders for them are always built in)."""


def save_image(path: str | Path, rgb: npt.NDArray[np.floating] | U8) -> Path:
    """Write float RGB [0, 1] (or uint8 RGB) to ``path`` (PNG or JPEG by suffix)."""
    cv2 = cv()

    p = Path(path)
    img = rgb if rgb.dtype == np.uint8 else to_uint8(rgb.astype(np.float32))
    ext = p.suffix.lower() or ".png"
    if ext not in IMAGE_SUFFIXES:
        raise RenderError(f"cannot write {str(p)!r}: {ext!r} is not an image type dreamstate writes",
                          hint=f"use a name ending in {', '.join(IMAGE_SUFFIXES)}")
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
