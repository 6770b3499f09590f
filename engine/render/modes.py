"""Scene modes: what one dream-worker step does to the picture.

``mode = "dream"`` (the default) is DeepDream, built into :class:`~engine.render.renderer.DreamLoop`.
Every other mode is a :class:`FrameMode` handed to the renderer by name (``Renderer(modes=...)``):
the loop still moves the canvas (zoom, rotation, translation: the zoom-feedback loop) and keeps
the stabilisers and the picture watchdog; the mode only replaces the dream step. A recipe that
names a mode the renderer was not given is dreamed instead, logged once and counted
(``mode_unsupported``).
"""

from __future__ import annotations

from typing import Protocol

from dreamstate.engine.core.images import RGB
from dreamstate.engine.core.records import DreamRecipe


class FrameMode(Protocol):
    """One scene mode other than ``dream``. Called from the dream worker thread only."""

    name: str

    def apply(self, recipe: DreamRecipe) -> bool:
        """Take a recipe in this mode (any time; also between steps of a crossfade). Returns True
        when what is shown changes at once (e.g. another style model): the display then
        crossfades to the new picture over the recipe's ``crossfade_s``."""
        ...

    def step(self, canvas: RGB, recipe: DreamRecipe) -> RGB:
        """One step: the new canvas, (H, W, 3) float32 RGB in [0, 1], the shape of ``canvas``
        (the previous frame already moved to now). Never writes ``canvas``."""
        ...
