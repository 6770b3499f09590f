"""The "seeing" overlay: what the network sees, drawn over the frame the scene shows.

A scene with ``seeing = "lrp-ab"`` (or ``gradient``, ``gxi``, ``lrp-eps``) overlays, on every
frame it shows (a dream, a style frame, a drawing), the attribution map
(:mod:`models.explain`) of the class the show's model sees in that frame: its top class, or
``seeing_class`` when the scene or a state names one. The map is recomputed at most every
``seeing_every_s`` seconds (about 90 ms for LRP on EfficientNet-Lite0 at 224x224 on two CPU
threads), on the frame resized to the model's input size, and drawn with
:func:`models.explain.overlay` at ``seeing_opacity`` (0..1; the scene director crossfades it in
and out like every number), ``seeing_colormap`` and ``seeing_smooth`` (Gaussian sigma in frame
pixels). Only the shown frame carries the overlay: the zoom-feedback canvas, the stabilisers and
the picture watchdog see the clean picture, so the heat map never feeds back into the loop.

Explainers are loaded on first use in the dream worker (one per method, kept). A method that
cannot be compiled for the model, or a class the model does not have, is logged once, counted
(``bad_seeing``) and the frames pass without an overlay; the show goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.images import RGB, resize
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import DreamRecipe

log = logging.getLogger("dreamstate.render")

SEEING_METHODS: tuple[str, ...] = ("gradient", "gxi", "lrp-eps", "lrp-ab")
"""The methods a scene can show live: one backward pass each (SmoothGrad and IG take tens of
passes, ``dreamstate explain`` has them)."""


@dataclass(frozen=True, slots=True)
class SeeingStatus:
    """The map on screen: ``method``, the class ``label`` and ``index`` it explains, ``score``
    (that class's logit for the frame) and ``ms`` (the map's onnxruntime time)."""

    method: str
    label: str
    index: int
    score: float
    ms: float


class Explains(Protocol):
    """What the overlay needs of an explainer (``models.explain.Explainer`` is one)."""

    method: str

    @property
    def size(self) -> int: ...

    def explain(self, rgb: np.ndarray, target: str | int | None = None) -> Any: ...


class Seeing:
    """The overlay; ``load(method)`` returns an :class:`Explains` for the show's model.
    Called from the dream worker thread only; ``status`` may be read from any thread."""

    def __init__(self, load: Callable[[str], Explains], *, counters: Counters | None = None) -> None:
        self._load = load
        self.counters = counters or Counters()
        self._explainers: dict[str, Explains] = {}
        self._bad: set[str] = set()
        self._heat: np.ndarray | None = None
        self._key: tuple[str, str | None] | None = None
        self._at = -np.inf
        self.status: SeeingStatus | None = None

    def _get(self, method: str) -> Explains | None:
        if method in self._explainers:
            return self._explainers[method]
        if method in self._bad:
            return None
        try:
            ex = self._load(method)
        except DreamstateError as exc:
            self._bad.add(method)
            self.counters.inc("bad_seeing")
            log.error("seeing %r cannot be shown: %s; frames pass without it", method, exc,
                      extra={"seeing": method})
            return None
        self._explainers[method] = ex
        return ex

    def present(self, canvas: RGB, recipe: DreamRecipe, now: float) -> RGB:
        """The frame to show for ``canvas`` (H, W, 3 float32 RGB in [0, 1]): ``canvas`` itself
        when the recipe shows no map (never written), else a new array with the overlay."""
        from dreamstate.models.explain import SIGNED_METHODS, overlay

        method = recipe.seeing
        opacity = float(np.clip(recipe.seeing_opacity, 0.0, 1.0))
        if not method or method == "off" or opacity <= 0.0:
            return canvas
        ex = self._get(method)
        if ex is None:
            return canvas
        key = (method, recipe.seeing_class)
        if self._heat is None or key != self._key or now - self._at >= recipe.seeing_every_s:
            bad = f"{method}:{recipe.seeing_class}"
            if bad in self._bad:
                return canvas
            try:
                res = ex.explain(resize(canvas, (ex.size, ex.size)), recipe.seeing_class or None)
            except DreamstateError as exc:
                self._bad.add(bad)
                self.counters.inc("bad_seeing")
                log.error("seeing class %r cannot be shown: %s", recipe.seeing_class, exc,
                          extra={"seeing": method})
                return canvas
            self._heat, self._key, self._at = res.heat, key, now
            self.status = SeeingStatus(method, res.label, res.index, float(res.score), float(res.ms))
        assert self._heat is not None
        out: RGB = overlay(canvas, self._heat, signed=method in SIGNED_METHODS, opacity=opacity,
                           colormap=recipe.seeing_colormap, smooth_px=recipe.seeing_smooth)
        return out
