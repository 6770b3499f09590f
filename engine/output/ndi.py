"""NDI video out: the displayed frames as an NDI source that TouchDesigner, OBS or Resolume receive.

``NdiOutput`` is an ``Output`` like the others (``engine/output/base.py``), used alone
(``[output] kind = "ndi"``) or beside the projector window through a ``TeeOutput``
(``[output] ndi = "source name"``). The library is cyndilib, an optional extra
(``pip install 'dreamstate[ndi]'``) whose wheels bundle the NDI runtime (libndi, proprietary,
licensed by Vizrt NDI AB; see ``docs/ndi.md``).

The NDI send (RGB to RGBX, then libndi's compression) costs several milliseconds a frame
(``dreamstate bench render --sink ndi``), so it never runs on the display thread:
``present`` copies the frame into a latest-frame-wins ``LatestSlot`` and returns; a sender
thread takes the newest frame and sends it. A frame replaced before the thread took it is
counted in ``dropped``; frames the thread sent are counted in ``sent``.
"""

from __future__ import annotations

import collections
import importlib
import logging
import threading
import time
from fractions import Fraction
from typing import Any

import numpy as np

from dreamstate.engine.core.background import report_background_error
from dreamstate.engine.core.channels import LatestSlot
from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.show import LoadedShow
from dreamstate.engine.output.base import U8, Output

log = logging.getLogger("dreamstate.output")

INSTALL_HINT = "pip install 'dreamstate[ndi]' (the cyndilib package; its wheels bundle the NDI runtime)"
DEFAULT_SOURCE_NAME = "dreamstate"


def ndi_missing() -> str | None:
    """None when cyndilib imports, else why not (one line, for ``check`` and errors)."""
    try:
        importlib.import_module("cyndilib")
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def load_cyndilib() -> Any:
    """The cyndilib module. Raises ``RenderError`` naming the extra to install when it is absent
    (or its bundled NDI runtime cannot load)."""
    try:
        return importlib.import_module("cyndilib")
    except ImportError as exc:
        raise RenderError(f"NDI output needs the optional cyndilib library, which cannot be imported "
                          f"({type(exc).__name__}: {exc})", hint=INSTALL_HINT) from None


def check_ndi(loaded: LoadedShow) -> list[tuple[str, str]]:
    """Show-check problems for NDI: one ``(key path, message)`` naming the extra to install when
    the show asks for NDI (``output.kind = "ndi"`` or ``output.ndi``) and cyndilib cannot be
    imported; else ``[]``."""
    out = loaded.show.output
    if out.kind != "ndi" and out.ndi is None:
        return []
    why = ndi_missing()
    if why is None:
        return []
    key = "output.kind" if out.kind == "ndi" else "output.ndi"
    return [(key, f"the show sends NDI video but the NDI library cannot be imported ({why}); "
                  f"fix: {INSTALL_HINT}")]


class NdiOutput(Output):
    """Sends presented frames as the NDI source ``source_name`` (RGBX, progressive), at most
    ``max_fps`` frames a second (None: every presented frame the sender can keep up with; the
    stream is announced at ``max_fps`` or else ``fps``).

    ``present(frame)`` takes a uint8 RGB frame of shape (height, width, 3) and returns at once
    (one copy, about 1 ms at 1920x1080); a frame of another size is resized to ``size`` on the
    sender thread. After ``open()`` the source is visible on the network (NDI discovery: mDNS,
    or a discovery server / extra IPs from the NDI configuration file); ``close()`` stops the
    thread after its current send and releases the sender. Counters: ``frames`` (presented),
    ``sent`` (handed to libndi), ``dropped`` (replaced in the slot before the sender took them,
    because a send was under way or ``max_fps`` held the sender back),
    ``send_s`` (total seconds spent in sends, so ``send_s / sent`` is the mean cost per frame) and
    ``send_times`` (the last 1000 sends, seconds each).

    Raises ``RenderError`` from ``open()`` when cyndilib is absent (naming the extra) or the NDI
    sender cannot be created.
    """

    name = "ndi"

    def __init__(self, size: tuple[int, int], *, source_name: str = DEFAULT_SOURCE_NAME, fps: float = 60.0,
                 max_fps: float | None = None, groups: str = "") -> None:
        super().__init__(size)
        if max_fps is not None and max_fps <= 0:
            raise RenderError(f"NDI max_fps must be above 0, not {max_fps}", hint="leave it unset to send every frame")
        self.source_name = source_name
        self.fps = fps
        self.max_fps = max_fps
        self.groups = groups
        self.slot: LatestSlot[U8] = LatestSlot()
        self.sent = 0
        self.send_s = 0.0
        self.send_times: collections.deque[float] = collections.deque(maxlen=1000)
        self.full_name: str | None = None
        self._sender: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def open(self) -> tuple[int, int]:
        nd = load_cyndilib()
        w, h = self.size
        try:
            frame = nd.VideoSendFrame()
            frame.set_resolution(w, h)
            frame.set_fourcc(nd.FourCC.RGBX)
            frame.set_frame_rate(Fraction(self.max_fps or self.fps).limit_denominator(1001))
            # clock_video=False: the display loop sets the pace; a clocked send would sleep in libndi
            sender = nd.Sender(self.source_name, ndi_groups=self.groups, clock_video=False, clock_audio=False)
            sender.set_video_frame(frame)
            sender.open()
        except Exception as exc:  # noqa: BLE001 -- cyndilib raises bare Exception/RuntimeError; re-raised named
            raise RenderError(f"NDI sender {self.source_name!r} could not start: {type(exc).__name__}: {exc}",
                              hint="check the NDI runtime (`dreamstate check`) and the source name") from None
        self._sender = sender
        self.full_name = str(sender.source.name) if sender.source is not None else self.source_name
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ndi-sender", daemon=True)
        self._thread.start()
        log.info("NDI source %r sending %dx%d", self.full_name, w, h, extra={"output": self.name})
        return self.size

    def present(self, frame: U8) -> None:
        # a copy: the caller may reuse its array (the display loop's black frame) once this returns
        before = self.slot.overwritten
        self.slot.put(np.array(frame, dtype=np.uint8, copy=True))
        self.dropped += self.slot.overwritten - before
        self.frames += 1

    def _run(self) -> None:
        version = 0
        w, h = self.size
        while not self._stop.is_set():
            frame, version = self.slot.wait_newer(version, timeout=0.2)
            if frame is None:
                continue
            started = time.monotonic()
            try:
                self._send(frame, w, h)
            except Exception as exc:  # noqa: BLE001 -- reported; the sender takes the next frame
                report_background_error("NDI sender", exc, log, output=self.name, source=self.source_name)
            if self.max_fps is not None:  # frames presented meanwhile replace each other (dropped)
                self._stop.wait(max(0.0, started + 1.0 / self.max_fps - time.monotonic()))

    def _send(self, frame: U8, w: int, h: int) -> None:
        cv2 = cv()
        if frame.shape[:2] != (h, w):
            frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)
        rgbx = cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA)
        t0 = time.perf_counter()
        self._sender.write_video(rgbx.reshape(-1))
        took = time.perf_counter() - t0
        self.send_s += took
        self.send_times.append(took)
        self.sent += 1

    def connections(self, timeout_s: float = 0.0) -> int:
        """How many receivers are connected now (waits up to ``timeout_s`` for one); 0 when closed."""
        if self._sender is None:
            return 0
        return int(self._sender.get_num_connections(timeout_s))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._sender is not None:
            self._sender.close()
            self._sender = None
            mean = 1e3 * self.send_s / self.sent if self.sent else 0.0
            log.info("NDI source %r closed: %d frames presented, %d sent, %d dropped, %.1f ms a send",
                     self.full_name, self.frames, self.sent, self.dropped, mean, extra={"output": self.name})

    def describe(self) -> str:
        return f"NDI source {self.full_name or self.source_name!r} ({self.size[0]}x{self.size[1]})"
