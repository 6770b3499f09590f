"""Seeded, torch-free generator of the starter model's training and validation crops.

The starter model is a small classifier whose only job is to learn features worth dreaming
with. Its task: given a 64 x 64 RGB crop, name where it came from — one of 16 photographs that
ship inside scikit-image and scikit-learn, a montage of the face photos in scikit-image's LFW
subset, or one of 8 procedural pattern families (stripes, waves, checkers, spirals, dots,
eyes, Gabor textures, Voronoi cells). Nothing is downloaded: every source lives inside an
installed wheel, so the data, and with it the model, can be rebuilt on an offline machine.

Held-out validation: every photograph is split into a left 75 % (training crops only) and a
right 25 % strip (validation crops only); the face montage uses faces 0-79 for training and
80-99 for validation; procedural patterns draw fresh random parameters for every crop, so
validation crops are new instances. A crop never straddles the split.

Lifecycle: :func:`load_sources` reads and prepares the source images once (about a second);
after it returns, :func:`make_batch` and :func:`validation_set` are pure functions of the
sources, the seed and the arguments — the same seed gives the same crops on any machine with
the same library versions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Split = Literal["train", "val"]

PHOTO_CLASSES: tuple[str, ...] = (
    "astronaut",
    "cat",
    "coffee",
    "rocket",
    "camera",
    "coins",
    "hubble",
    "ihc",
    "motorcycle",
    "retina",
    "china",
    "flower",
    "brick",
    "grass",
    "gravel",
    "page",
    "faces",
)
PATTERN_CLASSES: tuple[str, ...] = (
    "stripes",
    "waves",
    "checkers",
    "spiral",
    "dots",
    "eyes",
    "gabor",
    "voronoi",
)
CLASSES: tuple[str, ...] = PHOTO_CLASSES + PATTERN_CLASSES
CROP = 64
"""Side of a training / validation crop in pixels."""
VAL_FRACTION = 0.25
"""Right-hand share of each photograph reserved for validation crops."""
MAX_SIDE = 512
"""Photographs are resized so that their longer side is at most this many pixels."""
SCALE_RANGE = (0.5, 2.0)
"""A crop covers CROP * s source pixels, s log-uniform in this range."""
VAL_NOISE = 0.03
"""Validation crops carry Gaussian noise of standard deviation up to this (training: more)."""
MAX_ANGLE = math.radians(45.0)
"""Crops are rotated by a uniform angle in [-MAX_ANGLE, MAX_ANGLE]."""


@dataclass(frozen=True)
class _Pyramid:
    """A source image at full and half resolution (float32 RGB in [0, 1], HxWx3)."""

    full: F32
    half: F32


@dataclass(frozen=True)
class Sources:
    """Prepared source images: for each photo class, its training and validation part."""

    train: dict[str, _Pyramid]
    val: dict[str, _Pyramid]


def _to_rgb_f32(img: npt.NDArray[np.generic]) -> F32:
    arr = np.asarray(img)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    else:
        arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3], dtype=np.float32)


def _limit_side(img: F32, max_side: int = MAX_SIDE) -> F32:
    h, w = img.shape[:2]
    k = max_side / max(h, w)
    if k >= 1.0:
        return img
    size = (round(w * k), round(h * k))
    return np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), dtype=np.float32)


def _pyramid(img: F32) -> _Pyramid:
    h, w = img.shape[:2]
    half = cv2.resize(img, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    return _Pyramid(full=img, half=np.asarray(half, dtype=np.float32))


def _photo(name: str) -> F32:
    """Load one bundled photograph by class name (no network: all ship in the wheels)."""
    from skimage import data as sk_data
    from sklearn.datasets import load_sample_image

    sk: Any = sk_data  # skimage's loaders are untyped
    loaders = {
        "astronaut": sk.astronaut,
        "cat": sk.chelsea,
        "coffee": sk.coffee,
        "rocket": sk.rocket,
        "camera": sk.camera,
        "coins": sk.coins,
        "hubble": sk.hubble_deep_field,
        "ihc": sk.immunohistochemistry,
        "motorcycle": lambda: sk.stereo_motorcycle()[0],
        "retina": sk.retina,
        "brick": sk.brick,
        "grass": sk.grass,
        "gravel": sk.gravel,
        "page": sk.page,
    }
    if name in ("china", "flower"):
        return _limit_side(_to_rgb_f32(load_sample_image(f"{name}.jpg")))
    return _limit_side(_to_rgb_f32(loaders[name]()))


def _face_montage(first: int, last: int, cols: int) -> F32:
    """Tile LFW faces ``first..last-1`` (25 x 25 grey) into a grid, upscaled 2x."""
    from skimage import data as sk_data

    sk: Any = sk_data  # skimage's loaders are untyped
    faces = np.asarray(sk.lfw_subset()[first:last], dtype=np.float32)  # first 100 are faces
    rows = math.ceil(len(faces) / cols)
    side = faces.shape[1]
    grid = np.zeros((rows * side, cols * side), dtype=np.float32)
    for i, face in enumerate(faces):
        r, c = divmod(i, cols)
        grid[r * side : (r + 1) * side, c * side : (c + 1) * side] = face
    up = cv2.resize(grid, (grid.shape[1] * 2, grid.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    return _to_rgb_f32(np.clip(up, 0.0, 1.0))


def load_sources() -> Sources:
    """Read every bundled source image and split it into training and validation parts."""
    train: dict[str, _Pyramid] = {}
    val: dict[str, _Pyramid] = {}
    for name in PHOTO_CLASSES:
        if name == "faces":
            train[name] = _pyramid(_face_montage(0, 80, 10))
            val[name] = _pyramid(_face_montage(80, 100, 5))
            continue
        img = _photo(name)
        cut = round(img.shape[1] * (1.0 - VAL_FRACTION))
        train[name] = _pyramid(np.ascontiguousarray(img[:, :cut]))
        val[name] = _pyramid(np.ascontiguousarray(img[:, cut:]))
    return Sources(train=train, val=val)


# ---------------------------------------------------------------------------- photo crops


def _crop(pyr: _Pyramid, rng: np.random.Generator, size: int) -> F32:
    """A randomly scaled, rotated, flipped crop lying wholly inside ``pyr``."""
    theta = rng.uniform(-MAX_ANGLE, MAX_ANGLE)
    side = size * math.exp(rng.uniform(math.log(SCALE_RANGE[0]), math.log(SCALE_RANGE[1])))
    img = pyr.full
    if side / size > 1.4:  # sample the half-resolution copy to limit aliasing
        img = pyr.half
        side /= 2.0
    h, w = img.shape[:2]
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    side = min(side, (min(h, w) - 2) / (c + s))
    ext = side * (c + s) / 2.0  # half the axis-aligned footprint
    cx = rng.uniform(ext, w - ext)
    cy = rng.uniform(ext, h - ext)
    k = side / size
    flip = -1.0 if rng.random() < 0.5 else 1.0
    cos_t, sin_t = math.cos(theta) * k, math.sin(theta) * k
    # dst (u, v) -> src (x, y) = centre + R(theta) * k * ((u, v) - centre_dst)
    m = np.array(
        [[cos_t * flip, -sin_t, 0.0], [sin_t * flip, cos_t, 0.0]],
        dtype=np.float64,
    )
    off = (size - 1) / 2.0
    m[0, 2] = cx - (m[0, 0] * off + m[0, 1] * off)
    m[1, 2] = cy - (m[1, 0] * off + m[1, 1] * off)
    out = cv2.warpAffine(
        img,
        m,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return np.asarray(out, dtype=np.float32)


# ---------------------------------------------------------------------- procedural patterns


def _grid(size: int, rng: np.random.Generator) -> tuple[F32, F32]:
    """Pixel coordinates centred on the crop, rotated by a random angle."""
    t = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    y, x = np.meshgrid(t, t, indexing="ij")
    a = rng.uniform(0.0, math.pi)
    ca, sa = np.float32(math.cos(a)), np.float32(math.sin(a))
    return x * ca - y * sa, x * sa + y * ca


def _smooth_step(z: F32, sharp: float) -> F32:
    """Map a signed field to [0, 1]: a soft (sharp ~ 1) or hard (sharp >> 1) threshold."""
    return np.asarray(0.5 + 0.5 * np.tanh(z * sharp), dtype=np.float32)


def _two_colours(rng: np.random.Generator) -> tuple[F32, F32]:
    while True:
        c0 = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        c1 = rng.uniform(0.0, 1.0, 3).astype(np.float32)
        if float(np.abs(c0 - c1).sum()) > 0.6:
            return c0, c1


def _paint(p: F32, rng: np.random.Generator) -> F32:
    c0, c1 = _two_colours(rng)
    return np.asarray(c0 + p[:, :, None] * (c1 - c0), dtype=np.float32)


def _stripes(size: int, rng: np.random.Generator) -> F32:
    x, _ = _grid(size, rng)
    period = rng.uniform(5.0, 20.0)
    z = np.sin(2 * math.pi * x / period + rng.uniform(0, 2 * math.pi)).astype(np.float32)
    return _paint(_smooth_step(z, rng.choice([1.0, 6.0])), rng)


def _waves(size: int, rng: np.random.Generator) -> F32:
    x, y = _grid(size, rng)
    period = rng.uniform(6.0, 16.0)
    amp = rng.uniform(2.0, 8.0)
    wl = rng.uniform(12.0, 40.0)
    z = np.sin(2 * math.pi * (x + amp * np.sin(2 * math.pi * y / wl)) / period).astype(np.float32)
    return _paint(_smooth_step(z, rng.choice([1.0, 6.0])), rng)


def _checkers(size: int, rng: np.random.Generator) -> F32:
    x, y = _grid(size, rng)
    period = rng.uniform(8.0, 28.0)
    z = (np.sin(2 * math.pi * x / period) * np.sin(2 * math.pi * y / period)).astype(np.float32)
    return _paint(_smooth_step(z, 8.0), rng)


def _spiral(size: int, rng: np.random.Generator) -> F32:
    x, y = _grid(size, rng)
    x = x - np.float32(rng.uniform(-size / 4, size / 4))
    y = y - np.float32(rng.uniform(-size / 4, size / 4))
    r = np.sqrt(x * x + y * y)
    ang = np.arctan2(y, x)
    arms = int(rng.integers(1, 6))
    period = rng.uniform(6.0, 16.0)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    z = np.sin(arms * ang * sign + 2 * math.pi * r / period).astype(np.float32)
    return _paint(_smooth_step(z, rng.choice([1.0, 6.0])), rng)


def _dots(size: int, rng: np.random.Generator) -> F32:
    x, y = _grid(size, rng)
    d = rng.uniform(8.0, 22.0)
    rad = d * rng.uniform(0.15, 0.4)
    if rng.random() < 0.5:  # hexagonal lattice: offset every other row
        row = np.round(y / d)
        x = (x + (row % 2) * (d / 2)).astype(np.float32)
    gx = x - d * np.round(x / d)
    gy = y - d * np.round(y / d)
    dist = np.sqrt(gx * gx + gy * gy)
    return _paint(_smooth_step((rad - dist).astype(np.float32), 1.5), rng)


def _eyes(size: int, rng: np.random.Generator) -> F32:
    """A few eye-like targets: light sclera, coloured iris with a dark rim, black pupil."""
    t = np.arange(size, dtype=np.float32)
    y, x = np.meshgrid(t, t, indexing="ij")
    bg = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    img = np.broadcast_to(bg, (size, size, 3)).copy()
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(6.0, 22.0)
        ecc = rng.uniform(1.0, 1.8)  # almond-shaped sclera
        ang = rng.uniform(0, math.pi)
        dx, dy = x - cx, y - cy
        u = dx * math.cos(ang) + dy * math.sin(ang)
        v = -dx * math.sin(ang) + dy * math.cos(ang)
        sclera = _smooth_step((1.0 - np.sqrt((u / (r * ecc)) ** 2 + (v / r) ** 2)) * 8, 1.0)
        dist = np.sqrt(dx * dx + dy * dy)
        ri = r * rng.uniform(0.5, 0.8)
        iris = _smooth_step((ri - dist).astype(np.float32), 1.5)
        rim = _smooth_step((1.5 - np.abs(dist - ri)).astype(np.float32), 1.5)
        pupil = _smooth_step((ri * rng.uniform(0.3, 0.55) - dist).astype(np.float32), 1.5)
        white = rng.uniform(0.8, 1.0, 3).astype(np.float32)
        iris_c = rng.uniform(0.1, 0.9, 3).astype(np.float32)
        img = img + sclera[:, :, None] * (white - img)
        img = img + (iris * sclera)[:, :, None] * (iris_c - img)
        img = img + (rim * sclera)[:, :, None] * (0.3 * iris_c - img)
        img = img + (pupil * sclera)[:, :, None] * (np.float32(0.03) - img)
    return np.asarray(img, dtype=np.float32)


def _gabor(size: int, rng: np.random.Generator) -> F32:
    """Oriented band-pass noise: white noise filtered around one spatial frequency."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    fy = np.fft.fftfreq(size).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(size).astype(np.float32)[None, :]
    f0 = 1.0 / rng.uniform(5.0, 16.0)
    a = rng.uniform(0.0, math.pi)
    cx, cy = f0 * math.cos(a), f0 * math.sin(a)
    bw = f0 * rng.uniform(0.15, 0.4)
    g = np.exp(-((fx - cx) ** 2 + (fy - cy) ** 2) / (2 * bw * bw)) + np.exp(
        -((fx + cx) ** 2 + (fy + cy) ** 2) / (2 * bw * bw)
    )
    z = np.real(np.fft.ifft2(np.fft.fft2(noise) * g)).astype(np.float32)
    z /= np.float32(z.std() + 1e-6)
    return _paint(_smooth_step(z, rng.choice([0.7, 3.0])), rng)


def _voronoi(size: int, rng: np.random.Generator) -> F32:
    """Cells with dark walls and shaded interiors, each cell its own tint."""
    n = int(rng.integers(6, 30))
    pts = rng.uniform(-8, size + 8, (n, 2)).astype(np.float32)
    t = np.arange(size, dtype=np.float32)
    y, x = np.meshgrid(t, t, indexing="ij")
    d = np.sqrt((x[None] - pts[:, 0, None, None]) ** 2 + (y[None] - pts[:, 1, None, None]) ** 2)
    order = np.argsort(d, axis=0)
    d_sorted = np.take_along_axis(d, order[:2], axis=0)
    wall = _smooth_step((rng.uniform(1.0, 3.0) - (d_sorted[1] - d_sorted[0])).astype(np.float32), 2)
    tints = rng.uniform(0.2, 1.0, (n, 3)).astype(np.float32)
    cells = tints[order[0]]
    shade = np.clip(1.0 - d_sorted[0] / (size / 2), 0.3, 1.0)[:, :, None]
    wall_c = rng.uniform(0.0, 0.3, 3).astype(np.float32)
    img = cells * shade
    img = img + wall[:, :, None] * (wall_c - img)
    return np.asarray(img, dtype=np.float32)


_PATTERNS = {
    "stripes": _stripes,
    "waves": _waves,
    "checkers": _checkers,
    "spiral": _spiral,
    "dots": _dots,
    "eyes": _eyes,
    "gabor": _gabor,
    "voronoi": _voronoi,
}


# ------------------------------------------------------------------------------ colour jitter


def _jitter(img: F32, rng: np.random.Generator, noise_max: float) -> F32:
    """Photometric augmentation so classes must be told apart by form, not by tint alone."""
    x: F32 = img * rng.uniform(0.8, 1.2, 3).astype(np.float32)  # per-channel gain
    mean = np.float32(x.mean())
    x = (x - mean) * np.float32(rng.uniform(0.7, 1.3)) + mean + np.float32(rng.uniform(-0.1, 0.1))
    grey = x.mean(axis=2, keepdims=True)
    sat = 0.0 if rng.random() < 0.1 else rng.uniform(0.6, 1.4)
    x = grey + (x - grey) * np.float32(sat)
    x = np.clip(x, 0.0, 1.0)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0] + np.float32(rng.uniform(-25.0, 25.0))) % 360.0
        x = np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), dtype=np.float32)
    sigma = rng.uniform(0.0, noise_max)
    x = x + rng.standard_normal(x.shape).astype(np.float32) * np.float32(sigma)
    return np.asarray(np.clip(x, 0.0, 1.0), dtype=np.float32)


# ------------------------------------------------------------------------------- public API


def sample(
    sources: Sources,
    label: int,
    rng: np.random.Generator,
    split: Split,
    *,
    size: int = CROP,
    noise_max: float = VAL_NOISE,
) -> F32:
    """One crop (HxWx3 float32 RGB in [0, 1]) of class ``CLASSES[label]`` from ``split``.

    Gaussian pixel noise of a standard deviation drawn from [0, noise_max] is added last.
    """
    name = CLASSES[label]
    if name in _PATTERNS:
        img = _PATTERNS[name](size, rng)
    else:
        part = sources.train if split == "train" else sources.val
        img = _crop(part[name], rng, size)
    return _jitter(img, rng, noise_max)


def make_batch(
    sources: Sources,
    rng: np.random.Generator,
    n: int,
    split: Split = "train",
    *,
    size: int = CROP,
    noise_max: float = VAL_NOISE,
) -> tuple[F32, npt.NDArray[np.int64]]:
    """``n`` crops with uniformly drawn labels: (N,3,size,size) float32 in [0, 1], (N,) int64."""
    labels = rng.integers(0, len(CLASSES), n).astype(np.int64)
    x = np.stack([sample(sources, int(lab), rng, split, size=size, noise_max=noise_max) for lab in labels])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), labels


def validation_set(
    sources: Sources, per_class: int, seed: int, size: int = CROP
) -> tuple[F32, npt.NDArray[np.int64]]:
    """A balanced held-out set: ``per_class`` validation crops of every class, seeded."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES), dtype=np.int64), per_class)
    x = np.stack([sample(sources, int(lab), rng, "val", size=size) for lab in labels])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), labels


def montage(x: F32, cols: int) -> npt.NDArray[np.uint8]:
    """Tile an (N,3,H,W) batch into one uint8 RGB image (for looking at the data)."""
    n, _, h, w = x.shape
    rows = math.ceil(n / cols)
    out = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = (x[i].transpose(1, 2, 0) * 255 + 0.5).astype(
            np.uint8
        )
    return out
