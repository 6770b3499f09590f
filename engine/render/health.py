"""Is the picture alive? Pure measures of one frame, bounds, and a watchdog with its own clock.

``measure(rgb, earlier)`` gives a :class:`PictureMeasures` for a float32 RGB frame in [0, 1]
(H, W, 3). Statistics use every ``stride``-th pixel (about 160 samples across), so a 640x360
frame costs well under a millisecond. Every measure is in 0..1 units:

- ``luminance``: mean of Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601);
- ``contrast``: standard deviation of Y;
- ``red``, ``green``, ``blue``: channel means;
- ``colourfulness``: Hasler and Süsstrunk (2003), "Measuring colourfulness in natural
  images", SPIE 5007: ``sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)`` with
  ``rg = R - G`` and ``yb = (R + G) / 2 - B``, divided by 255 (their scale: 15/255 "slightly",
  33/255 "moderately", 59/255 "quite", 82/255 "highly colourful");
- ``detail``: mean gradient magnitude of Y (forward differences, per sampled pixel);
- ``clipped``: share of pixels with any channel at 0 or 255 (8-bit);
- ``hue_entropy``: Shannon entropy of the hue histogram (36 bins) of pixels with saturation
  and value above 0.15, divided by log(36); 0 when no pixel is coloured;
- ``motion``: mean absolute difference to the frame shown about a second earlier (None when
  there is none yet).

:class:`Bounds` holds a (low, high) pair per measure (None = unbounded). ``Bounds.around``
derives them from a source image's own measures with tolerances; ``Bounds.with_overrides``
applies explicit limits from a show's ``[health]`` table. ``Bounds.check(m)`` names every
measure out of bounds.

:class:`PictureWatchdog` turns a stream of checks into a decision: ``update(ok, now)`` returns
True once the picture has been out of bounds continuously for ``hold_s`` seconds of the
clock it is given (show time; tests drive it by frame counts), then starts counting again.

:class:`PictureHealth` puts it together for a stream of frames: bounds around the current
source image (with a show's overrides), a measure every ``period_s`` with ``motion`` against
the frame about a second older, and the watchdog's verdict in each :class:`HealthReport`.

A reseed is normal operation. It *fails* when the first check after it is still out of bounds
(the fresh picture died at once); ``failed_reseeds`` counts failed reseeds in a row, and any
check in bounds sets it back to 0. At :data:`UNRECOVERABLE_RESEEDS` the picture is no longer
``recoverable``: reseeding does not help, and the kiosk watchdog (``engine.runtime.notify``)
stops its keepalives so that systemd restarts the process.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import numpy.typing as npt

RGB = npt.NDArray[np.float32]
HUE_BINS = 36
UNRECOVERABLE_RESEEDS = 3
"""Failed reseeds in a row (see the module docstring) after which the picture counts as
unrecoverable: with the default 20 s hold that is about a minute of a dead picture that three
fresh starts could not bring back, so the process is restarted (a new dream session, a new
model load) instead of reseeding on."""
_Y = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True, slots=True)
class PictureMeasures:
    """One frame's measures (see the module docstring); all in 0..1 units."""

    luminance: float
    contrast: float
    red: float
    green: float
    blue: float
    colourfulness: float
    detail: float
    clipped: float
    hue_entropy: float
    motion: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(float(v), 4)) for k, v in asdict(self).items()}


MEASURES: tuple[str, ...] = tuple(f.name for f in fields(PictureMeasures))


def sample(rgb: npt.NDArray[np.floating], target: int = 160) -> RGB:
    """Every ``stride``-th pixel in both directions, about ``target`` samples across."""
    a = np.asarray(rgb)
    stride = max(1, a.shape[1] // target)
    out: RGB = np.ascontiguousarray(a[::stride, ::stride], dtype=np.float32)
    return out


def measure(rgb: npt.NDArray[np.floating], earlier: npt.NDArray[np.floating] | None = None) -> PictureMeasures:
    """Measures of ``rgb`` (H, W, 3) float in [0, 1]; ``earlier`` is a frame about a second older
    (same shape, or already :func:`sample`d to the same grid) for ``motion``."""
    s = sample(rgb)
    flat = s.reshape(-1, 3)
    y = s @ _Y
    means = flat.mean(axis=0)
    rg = (flat[:, 0] - flat[:, 1]) * 255.0
    yb = (0.5 * (flat[:, 0] + flat[:, 1]) - flat[:, 2]) * 255.0
    colourful = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))
    gx = np.diff(y, axis=1)[:-1, :]
    gy = np.diff(y, axis=0)[:, :-1]
    detail = float(np.sqrt(gx * gx + gy * gy).mean()) if gx.size else 0.0
    clipped = float(((flat <= 0.5 / 255.0) | (flat >= 254.5 / 255.0)).any(axis=1).mean())
    motion = None
    if earlier is not None:
        e = np.asarray(earlier, np.float32)
        e = e if e.shape == s.shape else sample(e)
        if e.shape == s.shape:
            motion = float(np.abs(s - e).mean())
    return PictureMeasures(
        luminance=float(y.mean()),
        contrast=float(y.std()),
        red=float(means[0]),
        green=float(means[1]),
        blue=float(means[2]),
        colourfulness=colourful / 255.0,
        detail=detail,
        clipped=clipped,
        hue_entropy=hue_entropy(flat),
        motion=motion,
    )


def hue_entropy(flat: npt.NDArray[np.float32]) -> float:
    """Normalised entropy of the hue of coloured pixels (N, 3) in [0, 1]."""
    mx = flat.max(axis=1)
    mn = flat.min(axis=1)
    chroma = mx - mn
    sat = np.where(mx > 0, chroma / np.maximum(mx, 1e-6), 0.0)
    keep = (sat > 0.15) & (mx > 0.15) & (chroma > 1e-6)
    if not keep.any():
        return 0.0
    r, g, b = (flat[keep, i] for i in range(3))
    c, m = chroma[keep], mx[keep]
    hue = np.where(m == r, ((g - b) / c) % 6.0, np.where(m == g, (b - r) / c + 2.0, (r - g) / c + 4.0)) / 6.0
    hist = np.bincount(np.minimum((hue * HUE_BINS).astype(np.int64), HUE_BINS - 1), minlength=HUE_BINS)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log(p)).sum() / math.log(HUE_BINS))


Limit = tuple[float | None, float | None]


@dataclass(frozen=True, slots=True)
class Bounds:
    """(low, high) per measure; None on either side means unbounded there."""

    luminance: Limit = (None, None)
    contrast: Limit = (None, None)
    red: Limit = (None, None)
    green: Limit = (None, None)
    blue: Limit = (None, None)
    colourfulness: Limit = (None, None)
    detail: Limit = (None, None)
    clipped: Limit = (None, None)
    hue_entropy: Limit = (None, None)
    motion: Limit = (None, None)

    @classmethod
    def around(cls, src: PictureMeasures) -> Bounds:
        """Bounds for a living dream of a source whose measures are ``src``.

        Tolerances (chosen from long runs of the demo show with three models, see
        ``dreamstate bench longrun``): the dream may brighten or darken by 0.2 and move each
        channel mean by 0.2 (a picture sliding to black, white or one colour leaves), keep at
        least 40 % of the source's luminance contrast and 35 % of its detail (a flat or
        washed-out field leaves), be up to 2.5x as colourful plus 0.15 (a saturated vortex
        leaves), clip at most 10 % more pixels than the source, keep half its hue entropy
        (a single-hue field leaves) and move by at least 1/255 a second (a frozen picture
        leaves).
        """
        return cls(
            luminance=(max(0.04, src.luminance - 0.2), min(0.96, src.luminance + 0.2)),
            contrast=(0.4 * src.contrast, None),
            red=(src.red - 0.2, src.red + 0.2),
            green=(src.green - 0.2, src.green + 0.2),
            blue=(src.blue - 0.2, src.blue + 0.2),
            colourfulness=(None, 2.5 * src.colourfulness + 0.15),
            detail=(0.35 * src.detail, None),
            clipped=(None, min(1.0, src.clipped + 0.15)),
            hue_entropy=(0.5 * src.hue_entropy, None),
            motion=(1.0 / 255.0, None),
        )

    def with_overrides(self, limits: Mapping[str, Limit]) -> Bounds:
        """These bounds with some measures' limits replaced (a show's ``[health]`` table)."""
        unknown = sorted(set(limits) - set(MEASURES))
        if unknown:
            raise ValueError(f"unknown picture measure(s) {unknown}; known: {list(MEASURES)}")
        return replace(self, **{k: (v[0], v[1]) for k, v in limits.items()})

    def check(self, m: PictureMeasures) -> list[str]:
        """Every measure outside its bounds, as ``name=value (low..high)``."""
        out = []
        for name in MEASURES:
            value = getattr(m, name)
            lo, hi = getattr(self, name)
            if value is None:
                continue
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                shown = f"{'' if lo is None else f'{lo:.3f}'}..{'' if hi is None else f'{hi:.3f}'}"
                out.append(f"{name}={value:.3f} ({shown})")
        return out


class PictureWatchdog:
    """Out of bounds for ``hold_s`` seconds in a row -> True once (see the module docstring)."""

    def __init__(self, hold_s: float = 20.0) -> None:
        self.hold_s = hold_s
        self.bad_since: float | None = None
        self.fired = 0

    def update(self, in_bounds: bool, now: float) -> bool:
        if in_bounds:
            self.bad_since = None
            return False
        if self.bad_since is None:
            self.bad_since = now
        if now - self.bad_since >= self.hold_s:
            self.bad_since = None
            self.fired += 1
            return True
        return False

    def reset(self) -> None:
        self.bad_since = None


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """A show's ``[health]`` table: on/off, seconds out of bounds before a reseed, and explicit
    (low, high) limits that replace the ones derived from the source image."""

    enabled: bool = True
    watchdog_s: float = 20.0
    limits: Mapping[str, Limit] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealthReport:
    """One check of the picture: its measures, whether all are in bounds (and which are not),
    whether the watchdog wants a reseed now, the reseeds so far, the clock time, and the failed
    reseeds in a row up to this check."""

    measures: PictureMeasures
    in_bounds: bool
    out_of_bounds: tuple[str, ...]
    reseed: bool
    reseeds: int
    time: float
    failed_reseeds: int = 0

    @property
    def recoverable(self) -> bool:
        """False once :data:`UNRECOVERABLE_RESEEDS` reseeds in a row failed."""
        return self.failed_reseeds < UNRECOVERABLE_RESEEDS

    def as_dict(self) -> dict[str, object]:
        return {"in_bounds": self.in_bounds, "out_of_bounds": list(self.out_of_bounds),
                "reseeds": self.reseeds, "failed_reseeds": self.failed_reseeds, **self.measures.as_dict()}


class PictureHealth:
    """Checks frames against their source's bounds and runs the watchdog.

    After ``set_source(rgb)`` the bounds are that image's (``Bounds.around`` plus the
    settings' limits) and the history is empty. ``update(frame, now)`` returns None until
    ``period_s`` has passed since the last check, else a :class:`HealthReport`; when its
    ``reseed`` is True the caller should reseed and then call ``reseeded()``. ``clock`` (show
    time by default) is injectable, so tests drive it by frames. ``failed_reseeds`` and
    ``recoverable`` follow the rule in the module docstring.
    """

    def __init__(self, settings: HealthSettings | None = None, *, period_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or HealthSettings()
        self.period_s = period_s
        self.clock = clock
        self.watchdog = PictureWatchdog(self.settings.watchdog_s)
        self.bounds = Bounds()
        self.reseeds = 0
        self.failed_reseeds = 0
        self._reseed_unchecked = False  # a reseed happened; the next check says whether it failed
        self.last: HealthReport | None = None
        self._history: deque[tuple[float, RGB]] = deque(maxlen=16)
        self._last_check: float | None = None

    def set_source(self, rgb: npt.NDArray[np.floating]) -> Bounds:
        self.bounds = Bounds.around(measure(rgb)).with_overrides(self.settings.limits)
        self._history.clear()
        self.watchdog.reset()
        return self.bounds

    def update(self, frame: npt.NDArray[np.floating], now: float | None = None) -> HealthReport | None:
        now = self.clock() if now is None else now
        if not self.settings.enabled or (self._last_check is not None and now - self._last_check < self.period_s):
            return None
        self._last_check = now
        s = sample(frame)
        earlier = None
        for t, old in self._history:  # the sample closest to one second ago
            if now - t >= 0.75 * 1.0 and (earlier is None or abs(now - t - 1.0) < abs(now - earlier[0] - 1.0)):
                earlier = (t, old)
        self._history.append((now, s))
        m = measure(s, None if earlier is None else earlier[1])
        bad = tuple(self.bounds.check(m))
        if not bad:
            self.failed_reseeds = 0
        elif self._reseed_unchecked:
            self.failed_reseeds += 1
        self._reseed_unchecked = False
        reseed = self.watchdog.update(not bad, now)
        self.last = HealthReport(m, not bad, bad, reseed, self.reseeds, now, self.failed_reseeds)
        return self.last

    def reseeded(self) -> None:
        self.reseeds += 1
        self._reseed_unchecked = True

    @property
    def recoverable(self) -> bool:
        """False once :data:`UNRECOVERABLE_RESEEDS` reseeds in a row failed."""
        return self.failed_reseeds < UNRECOVERABLE_RESEEDS
