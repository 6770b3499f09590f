"""DeepDream rendering: stills, zoom feedback and the live renderer.

* ``engine.render.dream``: octaves, normalised jittered steps, tiling, masks, guides;
* ``engine.render.feedback``: zoom-feedback (offline video and the real-time loop's state);
* ``engine.render.renderer``: ``Renderer``, the dream worker thread plus the display loop;
* ``engine.render.checks``: show-file checks (registered in ``engine.show.EXTRA_CHECKS`` when
  this package is imported).

Heavy libraries (OpenCV, onnxruntime, pygame) are imported where they are used.
"""

from engine.render.checks import check_render, register

register()

__all__ = ["check_render", "register"]
