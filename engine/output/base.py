"""The ``Output`` interface every sink implements, and a tee that feeds several at once.

Lifecycle (all calls from one thread, the display thread, because SDL windows belong to the
thread that made them):

* after ``__init__``: configured, nothing opened; ``size`` is the requested (width, height).
* after ``open()``: ready; ``size`` is the real size (a fullscreen window takes its display's
  size); ``paced`` says whether ``present`` itself waits for the refresh (vsync).
* ``present(frame)``: show or store one uint8 RGB frame of shape (height, width, 3).
* ``poll()``: handle window events; False once the viewer asked to quit (window closed, Esc).
* after ``close()``: everything released; ``close`` twice is harmless.
"""

from __future__ import annotations

import abc

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]


class Output(abc.ABC):
    name: str = "output"
    paced: bool = False
    scales: bool = False
    """set by ``open()``: ``present`` takes frames of any size with the output's aspect ratio and
    scales them to ``size`` itself (the window's GPU texture path), so the renderer hands it
    frames at dream size and never upscales on the CPU"""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.frames = 0
        self.dropped = 0

    def open(self) -> tuple[int, int]:
        return self.size

    @abc.abstractmethod
    def present(self, frame: U8) -> None: ...

    def poll(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def describe(self) -> str:
        return self.name


class NullOutput(Output):
    """Discards frames (``kind = "none"``); counts them."""

    name = "none"

    def present(self, frame: U8) -> None:
        self.frames += 1


class TeeOutput(Output):
    """Presents every frame to a primary output and to extra sinks (preview, snapshots).

    ``paced`` and ``size`` follow the primary; ``poll`` is False when any output says quit.
    """

    def __init__(self, primary: Output, *extra: Output) -> None:
        super().__init__(primary.size)
        self.primary = primary
        self.extra = list(extra)
        self.name = "+".join(o.name for o in (primary, *extra))

    def open(self) -> tuple[int, int]:
        self.size = self.primary.open()
        self.paced = self.primary.paced
        for o in self.extra:
            o.size = self.size
            o.open()
        self.scales = all(o.scales for o in (self.primary, *self.extra))
        return self.size

    def present(self, frame: U8) -> None:
        self.primary.present(frame)
        for o in self.extra:
            o.present(frame)
        self.frames += 1

    def poll(self) -> bool:
        ok = self.primary.poll()
        for o in self.extra:
            ok = o.poll() and ok
        return ok

    def close(self) -> None:
        for o in (self.primary, *self.extra):
            o.close()

    def describe(self) -> str:
        return " + ".join(o.describe() for o in (self.primary, *self.extra))
