"""Drawings the network believes: a few ellipses in two colours, searched until a classifier
scores them as a chosen class.

After the exploration this project grew from: N ellipses (default 40), each with a centre, two
semi-axes, an angle and one of two palette colours, on a solid background colour; the palette
and the background are searched too. Two colours plus a background keep the drawing abstract
while a person can still read it; free colours let the classifier be fooled by junk.

**Parameters.** A drawing is a vector ``theta`` in the unit cube ``[0, 1]^D``, ``D = 6 E + 9``
(E ellipses): per ellipse ``(cx, cy, rx, ry, angle, colour)`` then background, colour A and
colour B as RGB. :func:`decode` maps it to geometry in a square of side 1: centres in
``-0.1 .. 1.1`` (an ellipse may hang over the edge), semi-axes ``0.02 .. 0.4`` of the side,
angle ``0 .. 180`` degrees clockwise (image coordinates, y down), colour A when the colour
value is below 0.5, else B. Both optimisers search the same cube, so their scores compare.

**Rendering.** :func:`render` draws anti-aliased filled ellipses with OpenCV (``cv2.ellipse``,
``LINE_AA``, 4 fractional bits) in order, later ones on top, at any size: the square drawing
is centred, clipped to its square (what the classifier sees is what is shown), and the
background colour fills the rest (a 16:9 projector shows it letterboxed in its own background).
:func:`to_svg` writes the same drawing as SVG (``<ellipse>`` with ``rotate``, clipped to the
square), so it can be printed at any size; the tests rasterise it with CairoSVG and compare.

**Objective.** :class:`DrawingObjective`: the target class's log-probability (natural log,
``<= 0``; log-softmax of the logits) under a :class:`~dreamstate.models.classify.ClassifierModel`,
averaged over ``jitters`` fixed views of the drawing (the first the drawing itself, the others
shifted by up to 8 % of the side, scaled by 0.9..1.1 and rotated by up to 10 degrees; drawn
from the seed once, then fixed, so the objective is a deterministic function the optimisers can
compare candidates on). The views are drawn analytically (transformed ellipses), not warped.
All views of all candidates go to the classifier in batches of ``batch`` images, one
onnxruntime call each.

**Optimisers** (all keep the best drawing seen and step one batch at a time, so the live
mode can run them a generation per frame): :class:`RandomSearch`, the original's search
(perturb a few ellipses with a Gaussian step that shrinks geometrically from ``sigma0`` to
``sigma1`` over ``horizon`` evaluations; keep the best child only when the score rises),
:class:`CmaSearch`, CMA-ES from the ``cma`` package (Hansen, "The CMA Evolution Strategy: A
Tutorial", arXiv:1604.00772; separable/diagonal covariance by default, which learns faster in
these ~250 dimensions; the box is handled by ``cma``'s ``bounds``), and
:class:`~dreamstate.engine.render.drawgrad.GradientSearch` (``gradient``: Adam on a soft,
differentiable raster with the classifier's gradient, then the random search; scored on this
module's hard raster like the others). The default of the CLI and the live mode is the random
search: in ``dreamstate bench draw`` on SqueezeNet it reached a higher probability than CMA-ES at
every budget from 30 s on (docs/BENCHMARKS.md); its sparse moves (a few ellipses at a time) suit
overlapping ellipses better than CMA-ES's moves of all ~250 values at once. The gradient search
was ahead of it from 30 s on but behind in the first 10 s, and reached its 300-s score only
1.4-1.7x sooner (docs/BENCHMARKS.md), so it is not the default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.images import RGB, U8

F64 = npt.NDArray[np.float64]
PER_ELLIPSE = 6
PALETTE = 9
SHIFT = 4  # fractional bits for cv2.ellipse: 1/16 pixel
CENTRE_LO, CENTRE_HI = -0.1, 1.1
AXIS_LO, AXIS_HI = 0.02, 0.4
OptimizerName = Literal["cma", "gradient", "random"]
OPTIMIZERS: tuple[OptimizerName, ...] = ("cma", "gradient", "random")
DEFAULT_OPTIMIZER: OptimizerName = "random"  # by measurement: docs/BENCHMARKS.md, `bench draw`


def dimension(ellipses: int) -> int:
    """Length of the parameter vector for ``ellipses`` ellipses: ``6 * ellipses + 9``."""
    if ellipses < 1:
        raise RenderError(f"a drawing needs at least one ellipse, got {ellipses}", hint="use e.g. 40")
    return PER_ELLIPSE * ellipses + PALETTE


def ellipse_count(theta: npt.NDArray[np.floating]) -> int:
    d = int(np.shape(theta)[-1])
    if d < PER_ELLIPSE + PALETTE or (d - PALETTE) % PER_ELLIPSE:
        raise RenderError(f"a drawing vector has 6 * ellipses + 9 values, got {d}", hint="use random_drawing()")
    return (d - PALETTE) // PER_ELLIPSE


def random_drawing(ellipses: int, seed: int = 0) -> F64:
    """A seeded random drawing: uniform in the unit cube (random ellipses, random palette)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, dimension(ellipses))


@dataclass(frozen=True, slots=True)
class Geometry:
    """A decoded drawing in unit-square coordinates: ``centres`` (E, 2), ``axes`` (E, 2) semi-axes,
    ``angles`` (E,) degrees, ``which`` (E,) 0 for colour A, 1 for B, ``colours`` (3, 3) RGB in
    [0, 1]: background, A, B."""

    centres: F64
    axes: F64
    angles: F64
    which: npt.NDArray[np.int64]
    colours: F64


def decode(theta: npt.NDArray[np.floating]) -> Geometry:
    """Parameters in [0, 1] (clipped) -> :class:`Geometry` (see the module docstring)."""
    t = np.clip(np.asarray(theta, np.float64), 0.0, 1.0)
    e = ellipse_count(t)
    p = t[: PER_ELLIPSE * e].reshape(e, PER_ELLIPSE)
    return Geometry(
        centres=CENTRE_LO + (CENTRE_HI - CENTRE_LO) * p[:, 0:2],
        axes=AXIS_LO + (AXIS_HI - AXIS_LO) * p[:, 2:4],
        angles=180.0 * p[:, 4],
        which=(p[:, 5] >= 0.5).astype(np.int64),
        colours=t[PER_ELLIPSE * e:].reshape(3, 3),
    )


def _colour_u8(c: F64) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.clip(np.round(c * 255.0), 0, 255))
    return r, g, b


def _draw(g: Geometry, width: int, height: int, *, view: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 0.0),
          out: U8 | None = None) -> U8:
    """Draw ``g`` into an (height, width, 3) uint8 RGB image. ``view`` = (dx, dy, scale, degrees):
    the square is scaled and rotated about its centre, then shifted by (dx, dy) of the side."""
    c2 = cv()
    full = out if out is not None else np.empty((height, width, 3), np.uint8)
    full[:] = _colour_u8(g.colours[0])
    s = min(width, height)
    x0, y0 = (width - s) // 2, (height - s) // 2
    img = full[y0:y0 + s, x0:x0 + s]  # the square the classifier sees; a letterbox stays background
    side = float(s)
    ox = oy = 0.0
    dx, dy, scale, deg = view
    rad = math.radians(deg)
    cos, sin = math.cos(rad), math.sin(rad)
    rel = g.centres - 0.5
    # rotate clockwise on screen by deg (y down), scale, shift: the same map as the angle below
    x = (rel[:, 0] * cos - rel[:, 1] * sin) * scale + 0.5 + dx
    y = (rel[:, 0] * sin + rel[:, 1] * cos) * scale + 0.5 + dy
    mul = float(1 << SHIFT)
    cols = [_colour_u8(g.colours[1]), _colour_u8(g.colours[2])]
    for i in range(len(x)):
        # cv2.ellipse centres pixel i at coordinate i; the SVG (and a continuous picture) puts it at
        # i + 0.5, hence the half-pixel offset
        cx = round((ox + x[i] * side - 0.5) * mul)
        cy = round((oy + y[i] * side - 0.5) * mul)
        ax = max(1, round(g.axes[i, 0] * scale * side * mul))
        ay = max(1, round(g.axes[i, 1] * scale * side * mul))
        c2.ellipse(img, (cx, cy), (ax, ay), float(g.angles[i] + deg), 0.0, 360.0, cols[int(g.which[i])],
                   thickness=-1, lineType=c2.LINE_AA, shift=SHIFT)
    return full


def render(theta: npt.NDArray[np.floating], size: tuple[int, int]) -> RGB:
    """The drawing ``theta`` at ``size`` = (width, height) pixels: (height, width, 3) float32 RGB
    in [0, 1], anti-aliased; the square drawing is centred on its background colour."""
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise RenderError(f"cannot draw at {w}x{h} pixels", hint="give a positive width and height")
    img = _draw(decode(theta), w, h)
    res: RGB = img.astype(np.float32) * np.float32(1.0 / 255.0)
    return res


def render_u8(theta: npt.NDArray[np.floating], size: tuple[int, int]) -> U8:
    """As :func:`render`, as uint8 RGB (what the display and PNG files take)."""
    return _draw(decode(theta), int(size[0]), int(size[1]))


def to_svg(theta: npt.NDArray[np.floating], size: tuple[int, int] = (1024, 1024)) -> str:
    """The drawing as an SVG document of ``size`` = (width, height) user units, the same layout
    as :func:`render` (colours rounded to 8 bits, as in the raster)."""
    g = decode(theta)
    w, h = int(size[0]), int(size[1])
    side = float(min(w, h))
    ox, oy = float((w - int(side)) // 2), float((h - int(side)) // 2)

    def hexc(c: F64) -> str:
        r, gg, b = _colour_u8(c)
        return f"#{r:02x}{gg:02x}{b:02x}"

    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
             f'<rect x="0" y="0" width="{w}" height="{h}" fill="{hexc(g.colours[0])}"/>',
             f'<clipPath id="square"><rect x="{ox:g}" y="{oy:g}" width="{side:g}" height="{side:g}"/></clipPath>',
             '<g clip-path="url(#square)">']
    for i in range(len(g.angles)):
        cx, cy = ox + g.centres[i, 0] * side, oy + g.centres[i, 1] * side
        lines.append(f'<ellipse cx="{cx:.3f}" cy="{cy:.3f}" rx="{g.axes[i, 0] * side:.3f}" '
                     f'ry="{g.axes[i, 1] * side:.3f}" transform="rotate({g.angles[i]:.3f} {cx:.3f} {cy:.3f})" '
                     f'fill="{hexc(g.colours[1 + int(g.which[i])])}"/>')
    lines += ["</g>", "</svg>"]
    return "\n".join(lines) + "\n"


class Scorer(Protocol):
    """What the objective needs from a classifier (``models.classify.ClassifierModel``)."""

    size: int
    num_classes: int

    def log_probs(self, images: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]: ...


class DrawingObjective:
    """Mean log-probability of class ``target`` over fixed jittered views (module docstring).

    ``score(thetas)``: (N, D) -> (N,) in nats (<= 0); higher is better. ``evaluations`` counts
    drawings scored (each costs ``jitters`` classifier images). ``batch`` images go to the
    classifier per call (N > 1 in one onnxruntime run).
    """

    def __init__(self, classifier: Scorer, target: int, *, jitters: int = 4, seed: int = 0, batch: int = 16,
                 size: int | None = None) -> None:
        if not 0 <= target < classifier.num_classes:
            raise RenderError(f"class index {target} is outside 0..{classifier.num_classes - 1}",
                              hint="resolve the class with ClassifierModel.resolve")
        if jitters < 1 or batch < 1:
            raise RenderError(f"jitters ({jitters}) and batch ({batch}) must be at least 1", hint="e.g. 4 and 16")
        self.classifier = classifier
        self.target = target
        self.size = int(size or classifier.size)
        self.batch = batch
        rng = np.random.default_rng(seed + 7919)
        views = [(0.0, 0.0, 1.0, 0.0)]
        for _ in range(jitters - 1):
            views.append((float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08)),
                          float(rng.uniform(0.9, 1.1)), float(rng.uniform(-10.0, 10.0))))
        self.views = views
        self.evaluations = 0

    @property
    def jitters(self) -> int:
        return len(self.views)

    def images(self, thetas: npt.NDArray[np.floating]) -> U8:
        """(N, D) drawings -> (N * jitters, size, size, 3) uint8: every view of every drawing."""
        t = np.atleast_2d(np.asarray(thetas, np.float64))
        s = self.size
        out = np.empty((len(t) * len(self.views), s, s, 3), np.uint8)
        k = 0
        for theta in t:
            g = decode(theta)
            for view in self.views:
                _draw(g, s, s, view=view, out=out[k])
                k += 1
        return out

    def log_probs(self, thetas: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """(N, D) -> (N, jitters, classes) log-probabilities, in batches of ``batch`` images."""
        imgs = self.images(thetas)
        parts = [self.classifier.log_probs(imgs[i:i + self.batch].astype(np.float32) * np.float32(1 / 255))
                 for i in range(0, len(imgs), self.batch)]
        lp = np.concatenate(parts, axis=0)
        res: npt.NDArray[np.float32] = lp.reshape(-1, len(self.views), lp.shape[-1])
        return res

    def score(self, thetas: npt.NDArray[np.floating]) -> F64:
        """(N, D) -> (N,) the target's log-probability averaged over the views (nats, <= 0)."""
        lp = self.log_probs(thetas)
        self.evaluations += lp.shape[0]
        res: F64 = lp[:, :, self.target].astype(np.float64).mean(axis=1)
        return res

    def probability(self, theta: npt.NDArray[np.floating]) -> float:
        """The target's softmax probability for the drawing itself (first view), 0..1 (not
        counted as an evaluation)."""
        img = self.images(np.asarray(theta)[None])[:1].astype(np.float32) * np.float32(1 / 255)
        return float(np.exp(self.classifier.log_probs(img)[0, self.target]))

    def retarget(self, target: int) -> None:
        """Score another class from now on (the views stay)."""
        if not 0 <= target < self.classifier.num_classes:
            raise RenderError(f"class index {target} is outside 0..{self.classifier.num_classes - 1}",
                              hint="resolve the class with ClassifierModel.resolve")
        self.target = target


class Search(Protocol):
    """A stepwise optimiser over drawings (the live mode runs one ``step`` per frame)."""

    best: F64
    best_score: float
    evaluations: int

    def step(self) -> bool:
        """Score one batch of candidates; True when the best drawing improved."""
        ...

    def restart(self, theta: npt.NDArray[np.floating]) -> None:
        """Carry on from ``theta`` (re-scored: the objective may have changed)."""
        ...


class RandomSearch:
    """The original's random search (module docstring): ``batch`` children a step, each the
    best drawing with ``k`` random ellipses (1..3) perturbed by N(0, sigma) and, one time in
    five, the palette by N(0, sigma / 2); the best child replaces the parent only when it
    scores higher. ``sigma = sigma0 * (sigma1 / sigma0) ** min(1, evaluations / horizon)``."""

    def __init__(self, objective: DrawingObjective, theta0: npt.NDArray[np.floating], *, seed: int = 0,
                 batch: int = 8, sigma0: float = 0.15, sigma1: float = 0.01, horizon: int = 3000) -> None:
        self.objective = objective
        self.rng = np.random.default_rng(seed)
        self.batch = batch
        self.sigma0, self.sigma1, self.horizon = sigma0, sigma1, max(1, horizon)
        self.evaluations = 0
        self.best = np.clip(np.asarray(theta0, np.float64), 0.0, 1.0).copy()
        self.best_score = float(objective.score(self.best[None])[0])
        self.evaluations += 1
        self._since = 0

    @property
    def sigma(self) -> float:
        return float(self.sigma0 * (self.sigma1 / self.sigma0) ** min(1.0, self._since / self.horizon))

    def restart(self, theta: npt.NDArray[np.floating]) -> None:
        self.best = np.clip(np.asarray(theta, np.float64), 0.0, 1.0).copy()
        self.best_score = float(self.objective.score(self.best[None])[0])
        self.evaluations += 1
        self._since = 0

    def propose(self) -> F64:
        e = ellipse_count(self.best)
        kids = np.repeat(self.best[None], self.batch, axis=0)
        s = self.sigma
        for kid in kids:
            for i in self.rng.choice(e, size=int(self.rng.integers(1, 4)), replace=False):
                sl = slice(PER_ELLIPSE * int(i), PER_ELLIPSE * (int(i) + 1))
                kid[sl] += self.rng.normal(0.0, s, PER_ELLIPSE)
            if self.rng.random() < 0.2:
                kid[-PALETTE:] += self.rng.normal(0.0, s / 2, PALETTE)
        res: F64 = np.clip(kids, 0.0, 1.0)
        return res

    def step(self) -> bool:
        kids = self.propose()
        scores = self.objective.score(kids)
        self.evaluations += len(kids)
        self._since += len(kids)
        j = int(np.argmax(scores))
        if scores[j] > self.best_score:
            self.best, self.best_score = kids[j].copy(), float(scores[j])
            return True
        return False


class CmaSearch:
    """CMA-ES from ``cma`` (module docstring): ``popsize`` candidates a step (8; None: cma's
    ``4 + 3 ln D``, 20 for 40 ellipses), initial step ``sigma0`` (0.05 of the unit cube), bounds
    [0, 1], diagonal covariance when ``diagonal``. The defaults were picked by measurement on
    SqueezeNet (docs/BENCHMARKS.md): sigma0 0.12 with cma's population was behind the random
    search; 0.05 with 8 was far ahead. Its random numbers come from a generator seeded with
    ``seed`` (numpy's global state is left alone)."""

    def __init__(self, objective: DrawingObjective, theta0: npt.NDArray[np.floating], *, seed: int = 0,
                 sigma0: float = 0.05, popsize: int | None = 8, diagonal: bool = True) -> None:
        self.objective = objective
        self.seed = seed
        self.sigma0 = sigma0
        self.popsize = popsize
        self.diagonal = diagonal
        self.evaluations = 0
        self._restarts = 0
        self.best = np.clip(np.asarray(theta0, np.float64), 0.0, 1.0).copy()
        self.best_score = float(objective.score(self.best[None])[0])
        self.evaluations += 1
        self._es = self._new(self.best)

    def _new(self, x0: F64) -> object:
        import cma

        rng = np.random.default_rng(self.seed * 1000 + self._restarts)
        opts: dict[str, object] = {
            "bounds": [0.0, 1.0], "seed": np.nan, "verbose": -9, "tolfun": 0.0, "tolx": 0.0, "tolfunhist": 0.0,
            "tolstagnation": 10**9, "randn": lambda *shape: rng.standard_normal(shape),
            "CMA_diagonal": bool(self.diagonal),
        }
        if self.popsize:
            opts["popsize"] = int(self.popsize)
        return cma.CMAEvolutionStrategy(x0.tolist(), self.sigma0, opts)

    def restart(self, theta: npt.NDArray[np.floating]) -> None:
        self.best = np.clip(np.asarray(theta, np.float64), 0.0, 1.0).copy()
        self.best_score = float(self.objective.score(self.best[None])[0])
        self.evaluations += 1
        self._restarts += 1
        self._es = self._new(self.best)

    def step(self) -> bool:
        es = self._es
        xs = es.ask()  # type: ignore[attr-defined]
        cand = np.clip(np.asarray(xs, np.float64), 0.0, 1.0)
        scores = self.objective.score(cand)
        self.evaluations += len(cand)
        es.tell(xs, (-scores).tolist())  # type: ignore[attr-defined]
        j = int(np.argmax(scores))
        if scores[j] > self.best_score:
            self.best, self.best_score = cand[j].copy(), float(scores[j])
            return True
        return False


def make_search(name: str, objective: DrawingObjective, theta0: npt.NDArray[np.floating], *, seed: int = 0,
                horizon: int = 3000) -> Search:
    """The optimiser called ``name`` (``cma``, ``gradient`` or ``random``), started at ``theta0``.
    ``horizon``: evaluations over which the random search's step shrinks (for ``gradient``, that
    of its random-search phase). Raises ``RenderError`` for another name."""
    if name == "cma":
        return CmaSearch(objective, theta0, seed=seed)
    if name == "gradient":
        from dreamstate.engine.render.drawgrad import GradientSearch

        return GradientSearch(objective, theta0, seed=seed, polish_horizon=horizon)
    if name == "random":
        return RandomSearch(objective, theta0, seed=seed, horizon=horizon)
    raise RenderError(f"unknown optimizer {name!r}", hint=f"use one of {', '.join(OPTIMIZERS)}")


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A finished search: ``best`` drawing, its ``score`` (nats), ``evaluations`` (drawings
    scored), ``seconds`` of wall-clock time, and ``trace``: (seconds, evaluations, best score)
    after every step."""

    best: F64
    score: float
    evaluations: int
    seconds: float
    trace: list[tuple[float, int, float]]


def run_search(search: Search, *, seconds: float | None = None, evaluations: int | None = None,
               on_step: Callable[[float, Search], None] | None = None,
               clock: Callable[[], float] | None = None) -> SearchResult:
    """Step ``search`` until ``seconds`` of wall-clock time or ``evaluations`` drawings (whichever
    comes first; at least one must be given). A budget in evaluations makes a seeded run
    reproducible; a budget in seconds depends on the machine. ``on_step(elapsed, search)`` is
    called after every step (progress bars)."""
    import time

    if seconds is None and evaluations is None:
        raise RenderError("a search needs a budget", hint="give seconds or evaluations")
    now = clock or time.perf_counter
    t0 = now()
    trace: list[tuple[float, int, float]] = [(0.0, search.evaluations, search.best_score)]
    while True:
        elapsed = now() - t0
        if (seconds is not None and elapsed >= seconds) or (evaluations is not None
                                                           and search.evaluations >= evaluations):
            break
        search.step()
        elapsed = now() - t0
        trace.append((elapsed, search.evaluations, search.best_score))
        if on_step is not None:
            on_step(elapsed, search)
    return SearchResult(search.best.copy(), float(search.best_score), search.evaluations, now() - t0, trace)
