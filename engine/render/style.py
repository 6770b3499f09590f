"""The style scene mode: each frame is ``mix * style(zoom(previous)) + (1 - mix) * zoom(previous)``.

A feed-forward style network (:class:`models.style.StyleModel`: Johnson et al. 2016 and
similar image-to-image ONNX models) replaces the dream step in the zoom-feedback loop.
``style_mix`` (0..1) is the share of the styled frame; the scene director crossfades it like
every number, so a style flows in over the scene's ``crossfade_s`` and a lower mix lets styles
flow rather than snap. Another style model is a cut (the display crossfades to it).

Models are loaded on first use in the dream worker (about 0.4 s for candy.onnx) and kept (at
most ``keep`` of them, least recently used dropped). A model that cannot be loaded is logged
once, counted (``bad_style``) and the frame passes through unstyled; the show goes on.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import numpy as np

from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.images import RGB
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import DreamRecipe

log = logging.getLogger("dreamstate.render")


class Stylizer(Protocol):
    """What the style mode needs of a style model (``models.style.StyleModel`` is one)."""

    name: str

    def stylize(self, rgb: np.ndarray) -> np.ndarray: ...


class StyleMode:
    """The ``style`` :class:`~engine.render.modes.FrameMode`. ``load`` turns a scene's ``style``
    value (registry name or show-relative path) into a :class:`Stylizer`."""

    name = "style"

    def __init__(self, load: Callable[[str], Stylizer], *, counters: Counters | None = None, keep: int = 4) -> None:
        self._load = load
        self.counters = counters or Counters()
        self._keep = max(1, keep)
        self._models: OrderedDict[str, Stylizer] = OrderedDict()
        self._bad: set[str] = set()
        self.current: Stylizer | None = None
        self._spec: str | None = None

    def _get(self, spec: str) -> Stylizer | None:
        if spec in self._models:
            self._models.move_to_end(spec)
            return self._models[spec]
        if spec in self._bad:
            return None
        try:
            model = self._load(spec)
        except DreamstateError as exc:
            self._bad.add(spec)
            self.counters.inc("bad_style")
            log.error("style model %r cannot be used: %s; showing the frames unstyled", spec, exc,
                      extra={"style": spec})
            return None
        self._models[spec] = model
        while len(self._models) > self._keep:
            self._models.popitem(last=False)
        return model

    def apply(self, recipe: DreamRecipe) -> bool:
        if recipe.style == self._spec:
            return False
        changed = self._spec is not None
        self._spec = recipe.style
        self.current = self._get(recipe.style) if recipe.style else None
        return changed

    def step(self, canvas: RGB, recipe: DreamRecipe) -> RGB:
        model = self.current
        mix = float(np.clip(recipe.style_mix, 0.0, 1.0))
        if model is None or mix <= 0.0:
            return canvas
        styled = np.asarray(model.stylize(canvas), np.float32)
        if mix >= 1.0:
            return styled
        out: RGB = (mix * styled + (1.0 - mix) * canvas).astype(np.float32)
        return out
