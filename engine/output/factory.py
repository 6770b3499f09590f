"""Build the output a show asks for.

``open_output(cfg, loaded)`` returns a configured, *unopened* ``Output`` (the display thread
opens it, because SDL windows belong to the thread that opens them):

* ``window``: the projector window (``WindowOutput``); without a display (or when the window
  cannot open for lack of one) the video file takes over, with one warning that says how to
  give it a display;
* ``video``: a video file at ``cfg.path`` (show-relative);
* ``png``: PNG snapshots into the folder ``cfg.path`` names (on demand, or once a second);
* ``ndi``: an NDI source only (``NdiOutput``, named by ``cfg.ndi`` or "dreamstate"), no window;
* ``none``: frames are discarded (statistics still run);
* ``auto``: the window when a display is present, else the video file, with a warning;
  if the window then fails to open for lack of a display, the video file takes over too.

``mjpeg_port`` adds an MJPEG preview on 127.0.0.1 to any of them, and ``ndi`` (a source name)
an NDI source beside any of them (``with_ndi``). Asking for NDI without the ``ndi`` extra
raises ``RenderError`` here, before anything opens, naming ``pip install 'dreamstate[ndi]'``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.show import LoadedShow, OutputConfig
from dreamstate.engine.output.base import U8, NullOutput, Output, TeeOutput
from dreamstate.engine.output.ndi import DEFAULT_SOURCE_NAME, NdiOutput, load_cyndilib
from dreamstate.engine.output.sinks import MjpegOutput, PngOutput, VideoOutput
from dreamstate.engine.output.window import NoDisplayError, WindowOutput, display_present

log = logging.getLogger("dreamstate.output")


class FallbackOutput(Output):
    """Tries ``primary``; if it cannot open for lack of a display, uses ``fallback`` instead.

    After ``open()``, ``active`` is whichever opened, and every call goes to it.
    """

    def __init__(self, primary: Output, fallback: Output) -> None:
        super().__init__(primary.size)
        self.primary = primary
        self.fallback = fallback
        self.active: Output = primary
        self.name = primary.name

    def open(self) -> tuple[int, int]:
        try:
            self.size = self.primary.open()
            self.active = self.primary
        except NoDisplayError as exc:
            log.warning("no display (%s); falling back to %s", exc, self.fallback.describe(),
                        extra={"output": self.fallback.name})
            self.fallback.size = self.primary.size
            self.size = self.fallback.open()
            self.active = self.fallback
        self.name = self.active.name
        self.paced = self.active.paced
        self.scales = self.active.scales
        return self.size

    def present(self, frame: U8) -> None:
        self.active.present(frame)
        self.frames += 1

    def poll(self) -> bool:
        return self.active.poll()

    def close(self) -> None:
        self.active.close()

    def describe(self) -> str:
        return self.active.describe()


def _path(cfg_path: str, loaded: LoadedShow | None) -> Path:
    return loaded.path(cfg_path, what="output.path") if loaded is not None else Path(cfg_path)


def open_output(cfg: OutputConfig, loaded: LoadedShow | None = None) -> Output:
    """The output ``cfg`` describes (unopened; see the module docstring)."""
    size = (int(cfg.size[0]), int(cfg.size[1]))

    def video() -> VideoOutput:
        limit = None if cfg.video_limit_mb is None else int(cfg.video_limit_mb * 1e6)
        return VideoOutput(_path(cfg.path, loaded), size, cfg.fps, max_bytes=limit, realtime=True)

    out: Output
    if cfg.kind in ("window", "auto"):
        # an explicit window without a display falls back like auto does: one warning, then
        # the video file (restarting the render stage for a display that is not there helps nobody)
        window = WindowOutput(size, display=cfg.display, fullscreen=cfg.fullscreen, vsync=cfg.vsync,
                              scale=cfg.scale)
        if display_present():
            out = FallbackOutput(window, video())
        else:
            v = video()
            log.warning("no display found%s; output falls back to %s (set DISPLAY or WAYLAND_DISPLAY, or "
                        "SDL_VIDEODRIVER=kmsdrm on a console, for the projector window)",
                        " for the window the show asks for" if cfg.kind == "window" else "", v.describe(),
                        extra={"output": "video"})
            out = v
    elif cfg.kind == "video":
        out = video()
    elif cfg.kind == "png":
        folder = _path(cfg.path, loaded)
        folder = folder.with_suffix("") if folder.suffix else folder
        out = PngOutput(folder, size, every_s=1.0)
    elif cfg.kind == "ndi":
        load_cyndilib()
        out = NdiOutput(size, source_name=cfg.ndi or DEFAULT_SOURCE_NAME, fps=cfg.fps, max_fps=cfg.ndi_fps)
    elif cfg.kind == "none":
        out = NullOutput(size)
    else:
        raise RenderError(f"output.kind {cfg.kind!r} is not known",
                          hint="use auto, window, video, png, ndi or none")
    if cfg.mjpeg_port is not None:
        out = TeeOutput(out, MjpegOutput(size, host="127.0.0.1", port=cfg.mjpeg_port,
                                                   max_clients=cfg.mjpeg_clients))
    return out if cfg.kind == "ndi" else with_ndi(out, cfg)


def with_ndi(out: Output, cfg: OutputConfig) -> Output:
    """``out`` with an NDI source beside it (a ``TeeOutput``), named ``cfg.ndi`` (or "dreamstate"
    when ``cfg.kind`` is ``ndi``, for an opener such as the kiosk's that replaces the primary
    output); ``out`` itself when the show asks for no NDI. Raises ``RenderError`` naming the
    extra to install when cyndilib is absent."""
    name = cfg.ndi if cfg.ndi is not None else DEFAULT_SOURCE_NAME if cfg.kind == "ndi" else None
    if name is None:
        return out
    load_cyndilib()
    return TeeOutput(out, NdiOutput(out.size, source_name=name, fps=cfg.fps, max_fps=cfg.ndi_fps))


def preview_window(size: tuple[int, int] = (640, 360), *, display: int = 0) -> WindowOutput:
    """A development preview: a small framed window with the cursor visible."""
    return WindowOutput(size, display=display, fullscreen=False, vsync=True, hide_cursor=False,
                        title="dreamstate preview")
