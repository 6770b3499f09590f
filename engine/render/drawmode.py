"""The live drawing mode: what the dream worker does while a scene says ``mode = "drawing"``.

:class:`LiveDrawing` is the small interface the renderer's :class:`~dreamstate.engine.render.renderer.DreamLoop`
talks to (``apply`` a recipe, ``step``, ``picture``, ``status``); everything about ellipses,
objectives and optimisers stays in :mod:`dreamstate.engine.render.drawing`.

Lifecycle:

* ``LiveDrawing(classifier)``: nothing searched yet; the first drawing is a seeded random one.
* ``apply(recipe, now)``: the recipe's ``draw`` classes (names or indices) take turns every
  ``draw_each_s``; a new class, a new optimiser or another ellipse count restarts the search
  *from the current drawing* (another count drops the last ellipses or adds random ones), so
  the picture morphs instead of starting over. An unknown class is logged once, counted
  (``bad_draw_class``) and skipped; the drawing keeps its current class.
* ``step(now)``: one optimiser step (one batch of candidates, one classifier call per
  ``batch`` images); True when the drawing improved.
* ``picture(size)``: the best drawing so far at ``size`` (the projector size), uint8 RGB,
  redrawn only after an improvement.
* ``status``: a :class:`DrawingStatus` snapshot (class, score, probability), replaced whole
  after each step, so another thread may read it at any time (telemetry).

One thread drives it (the dream worker); ``status`` is the only thing read from elsewhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.images import U8
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import DreamRecipe
from dreamstate.engine.render.drawing import (
    DEFAULT_OPTIMIZER,
    PALETTE,
    PER_ELLIPSE,
    DrawingObjective,
    Search,
    ellipse_count,
    make_search,
    random_drawing,
    render_u8,
)

log = logging.getLogger("dreamstate.render")


@dataclass(frozen=True, slots=True)
class DrawingStatus:
    """What the drawing is now: ``label`` and ``index`` of the target class, ``score`` (its
    log-probability averaged over the jittered views, nats, <= 0), ``probability`` (exp of
    the score: the geometric mean of the views' probabilities, 0..1), ``evaluations`` (drawings
    scored since the start) and ``improvements`` (accepted improvements since the start)."""

    label: str
    index: int
    score: float
    probability: float
    evaluations: int
    improvements: int


class Classifier(Protocol):
    """The part of ``models.classify.ClassifierModel`` the live mode uses."""

    size: int
    num_classes: int

    def resolve(self, target: str | int) -> int: ...

    def label(self, index: int) -> str: ...

    def log_probs(self, images: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]: ...


def resize_drawing(theta: npt.NDArray[np.floating], ellipses: int, seed: int) -> npt.NDArray[np.float64]:
    """``theta`` with ``ellipses`` ellipses: the first ones kept (then random new ones), the
    palette kept."""
    t = np.asarray(theta, np.float64)
    have = ellipse_count(t)
    if have == ellipses:
        return t.copy()
    shapes = t[: PER_ELLIPSE * have]
    if ellipses < have:
        shapes = shapes[: PER_ELLIPSE * ellipses]
    else:
        extra = random_drawing(ellipses - have, seed)[: PER_ELLIPSE * (ellipses - have)]
        shapes = np.concatenate([shapes, extra])
    return np.concatenate([shapes, t[-PALETTE:]])


class LiveDrawing:
    """The drawing mode driven by the dream worker (see the module docstring)."""

    def __init__(self, classifier: Classifier, *, seed: int = 0, jitters: int = 4, batch: int = 16,
                 counters: Counters | None = None) -> None:
        self.classifier = classifier
        self.seed = seed
        self.jitters = jitters
        self.batch = batch
        self.counters = counters or Counters()
        self.theta: npt.NDArray[np.float64] | None = None
        self.search: Search | None = None
        self.objective: DrawingObjective | None = None
        self._classes: tuple[str, ...] = ()
        self._class_t0 = 0.0
        self._each_s = 90.0
        self._target: int | None = None
        self._optimizer = ""
        self._ellipses = 0
        self._bad: set[str] = set()
        self._improvements = 0
        self._version = 0  # grows whenever the best drawing changes
        self._evaluations_before = 0
        self._picture: tuple[tuple[int, int], int, U8] | None = None
        self.status: DrawingStatus | None = None

    # --- recipe ------------------------------------------------------------------------------
    def apply(self, recipe: DreamRecipe, now: float) -> None:
        """Take the recipe's classes, optimiser and ellipse count (see the module docstring);
        ``now``: any clock (seconds), the same as ``step``'s."""
        if recipe.draw != self._classes:
            self._classes = recipe.draw
            self._class_t0 = now
        self._each_s = max(1e-3, recipe.draw_each_s)
        restart = False
        if recipe.ellipses != self._ellipses or self.theta is None:
            self._ellipses = recipe.ellipses
            self.theta = random_drawing(recipe.ellipses, self.seed) if self.theta is None \
                else resize_drawing(self.theta if self.search is None else self.search.best, recipe.ellipses,
                                    self.seed + 1)
            self._version += 1
            if self.search is not None:
                self._evaluations_before += self.search.evaluations
            self.search = None  # restarted from the resized drawing below
            restart = True
        if recipe.optimizer != self._optimizer:
            self._optimizer = recipe.optimizer
            restart = True
        self._retarget(now, restart=restart)

    def _wanted(self, now: float) -> int | None:
        """The class index the schedule asks for now (None: no usable class)."""
        if not self._classes:
            return None
        turn = int(max(0.0, now - self._class_t0) // self._each_s) % len(self._classes)
        for k in range(len(self._classes)):  # the scheduled class, else the next usable one
            name = self._classes[(turn + k) % len(self._classes)]
            try:
                return self.classifier.resolve(name)
            except DreamstateError as exc:
                self.counters.inc("bad_draw_class")
                if name not in self._bad:
                    self._bad.add(name)
                    log.error("%s; drawing another class", exc, extra={"class": name})
        return None

    def _retarget(self, now: float, *, restart: bool = False) -> None:
        target = self._wanted(now)
        if target is None:
            target = self._target
        if target is None:
            return
        if target == self._target and not restart and self.search is not None:
            return
        start = self.search.best if self.search is not None else self.theta
        if start is None:
            return
        self._target = target
        if self.search is not None:
            self._evaluations_before += self.search.evaluations
        self.objective = DrawingObjective(self.classifier, target, jitters=self.jitters, seed=self.seed,
                                          batch=self.batch)
        self.search = make_search(self._optimizer or DEFAULT_OPTIMIZER, self.objective, start, seed=self.seed)
        self.theta = self.search.best
        self._version += 1
        log.info("drawing %s", self.classifier.label(target),
                 extra={"class": self.classifier.label(target), "optimizer": self._optimizer})
        self._publish()

    # --- running -----------------------------------------------------------------------------
    def step(self, now: float) -> bool:
        """One optimiser step toward the class in force (classes take turns here too)."""
        self._retarget(now)
        if self.search is None:
            return False
        improved = self.search.step()
        if improved:
            self._improvements += 1
            self._version += 1
            self.theta = self.search.best
        self._publish()
        return improved

    def _publish(self) -> None:
        s, t = self.search, self._target
        if s is None or t is None:
            return
        self.status = DrawingStatus(label=self.classifier.label(t), index=t, score=float(s.best_score),
                                    probability=float(np.exp(s.best_score)),
                                    evaluations=self._evaluations_before + s.evaluations,
                                    improvements=self._improvements)

    def picture(self, size: tuple[int, int]) -> U8 | None:
        """The best drawing at ``size`` (width, height) as uint8 RGB, or None before any recipe."""
        if self.theta is None:
            return None
        key = (int(size[0]), int(size[1]))
        if self._picture is not None and self._picture[0] == key and self._picture[1] == self._version:
            return self._picture[2]
        img = render_u8(self.theta, key)
        self._picture = (key, self._version, img)
        return img
