"""OpenCV, typed loosely.

opencv-python 5 ships stubs that reject NumPy arrays typed with a precise dtype (and miss
names such as ``VideoWriter_fourcc``), so the renderer reaches OpenCV through ``cv()`` which
returns the module as ``Any``; results are given their real types where they are used.
"""

from __future__ import annotations

import importlib
from typing import Any


def cv() -> Any:
    """The ``cv2`` module (imported on first use, so ``dreamstate --help`` stays fast)."""
    return importlib.import_module("cv2")
