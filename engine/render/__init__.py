"""DeepDream rendering: stills, zoom feedback and the live renderer.

* ``engine.render.dream``: octaves, normalised jittered steps, tiling, masks, guides;
* ``engine.render.feedback``: zoom-feedback (offline video and the real-time loop's state);
* ``engine.render.renderer``: ``Renderer``, the dream worker thread plus the display loop;
* ``engine.render.health`` and ``engine.render.stabilise``: keeping the feedback loop alive;
* ``engine.render.checks``: show-file checks (called by ``engine.runtime.showfile``).

Heavy libraries (OpenCV, onnxruntime, pygame) are imported where they are used.
"""
