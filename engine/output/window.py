"""The projector window: SDL2 through pygame-ce.

``WindowOutput(size, display=0, fullscreen=False, vsync=True, hide_cursor=True, scale="gpu")``:

* ``display``: the SDL display index (0 = primary). An index that does not exist raises
  ``RenderError`` listing the displays that do (index and size).
* ``fullscreen``: borderless fullscreen: a frameless window exactly the size of that display,
  placed on it (X11, KMS/DRM), or SDL desktop-fullscreen on Wayland. The output size becomes the
  display's size, so the renderer composes frames at the projector's native resolution.
* ``vsync``: ``present`` waits for the display refresh; when the driver refuses vsync the window
  opens without it (a warning says so) and the display loop paces itself.
* ``hide_cursor``: no mouse pointer over the projection.
* ``scale``: ``"gpu"`` (default) draws through SDL's renderer: each frame is uploaded as a
  streaming texture at the size it comes in (the dream size) and scaled to the window by the GPU
  (linear filtering), so the CPU never touches a projector-sized frame (``scales`` is True
  after ``open``). When SDL cannot make a renderer the window falls back to ``"cpu"`` with a
  warning: frames are upscaled with OpenCV and blitted to the window surface.

Video drivers (SDL picks one from the environment; set ``SDL_VIDEODRIVER`` to force it):

* X11: ``DISPLAY=:0`` (also works under Xvfb for tests);
* Wayland: ``WAYLAND_DISPLAY`` set, or ``SDL_VIDEODRIVER=wayland``;
* console kiosk without a desktop (KMS/DRM): ``SDL_VIDEODRIVER=kmsdrm dreamstate run show.toml``
  from a text console; the user needs to be in the ``video`` and ``input`` groups and no X or
  Wayland session may hold the GPU. The window is always fullscreen there.

When no display is present ``open`` raises ``NoDisplayError``; ``engine.output.open_output``
with ``kind = "auto"`` then falls back to the headless video sink with a warning.
Every pygame call happens on the thread that calls ``open`` (the display thread).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.output.base import U8, Output

log = logging.getLogger("dreamstate.output")

HEADLESS_DRIVERS = ("dummy", "offscreen")


MODIFIERS = ("ctrl", "alt", "shift", "meta")


def parse_chord(text: str) -> tuple[frozenset[str], str]:
    """``"ctrl+alt+q"`` -> ({"ctrl", "alt"}, "q"). At least one modifier, so no visitor ends
    the show by leaning on the keyboard. Raises RenderError with the fix."""
    parts = [p.strip().lower() for p in text.split("+") if p.strip()]
    mods, keys = [p for p in parts if p in MODIFIERS], [p for p in parts if p not in MODIFIERS]
    if len(keys) != 1 or not mods:
        raise RenderError(f"quit chord {text!r} is not modifiers+key",
                          hint="write e.g. ctrl+alt+q (at least one of ctrl, alt, shift, meta, then one key)")
    return frozenset(mods), keys[0]


class NoDisplayError(RenderError):
    """No display server or console display is available for a window."""


def display_present(env: dict[str, str] | None = None) -> bool:
    """True when a window can be opened: X11, Wayland, or an explicit SDL video driver."""
    e = os.environ if env is None else env
    driver = e.get("SDL_VIDEODRIVER", "")
    if driver:
        return driver not in HEADLESS_DRIVERS or e.get("DREAMSTATE_ALLOW_DUMMY_WINDOW") == "1"
    return bool(e.get("DISPLAY") or e.get("WAYLAND_DISPLAY"))


def list_displays() -> list[tuple[int, int, int]]:
    """(index, width, height) of each display SDL sees (initialises SDL video if needed)."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    if not pygame.display.get_init():
        pygame.display.init()
    return [(i, int(w), int(h)) for i, (w, h) in enumerate(pygame.display.get_desktop_sizes())]


class WindowOutput(Output):
    """An SDL window (see the module docstring for options and drivers)."""

    name = "window"

    def __init__(self, size: tuple[int, int], *, display: int = 0, fullscreen: bool = False,
                 vsync: bool = True, hide_cursor: bool = True, title: str = "dreamstate",
                 quit_chord: str | None = None, scale: str = "gpu") -> None:
        """``quit_chord`` (kiosk mode), e.g. ``"ctrl+alt+q"``: only that key with those
        modifiers ends the show; Esc, q and the window manager's close are ignored. None: Esc,
        q or closing the window end it."""
        super().__init__(size)
        if scale not in ("gpu", "cpu"):
            raise RenderError(f"window scale {scale!r} is not gpu or cpu", hint="use scale = \"gpu\" or \"cpu\"")
        self.scale = scale
        self._window: Any = None
        self._renderer: Any = None
        self._texture: Any = None
        self._scale_used = "cpu"
        self.quit_chord = parse_chord(quit_chord) if quit_chord else None
        self.display = display
        self.fullscreen = fullscreen
        self.vsync = vsync
        self.hide_cursor = hide_cursor
        self.title = title
        self.driver = ""
        self._screen: Any = None
        self._pg: Any = None

    def open(self) -> tuple[int, int]:
        if not display_present():
            raise NoDisplayError(
                "no display for the projector window (DISPLAY, WAYLAND_DISPLAY and "
                "SDL_VIDEODRIVER are unset)",
                hint="start it inside a desktop session, set SDL_VIDEODRIVER=kmsdrm on a console "
                     "kiosk, or use [output] kind = 'video' for headless runs")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        os.environ.setdefault("SDL_RENDER_SCALE_QUALITY", "linear")  # GPU scaling filters linearly
        import pygame

        self._pg = pygame
        try:
            pygame.display.init()
        except pygame.error as exc:
            raise NoDisplayError(f"SDL could not start a video driver: {exc}",
                                 hint="check DISPLAY / WAYLAND_DISPLAY, or set "
                                      "SDL_VIDEODRIVER=kmsdrm on a console") from None
        self.driver = pygame.display.get_driver()
        if self.driver in HEADLESS_DRIVERS and not display_present({
                "SDL_VIDEODRIVER": os.environ.get("SDL_VIDEODRIVER", ""),
                "DREAMSTATE_ALLOW_DUMMY_WINDOW": os.environ.get("DREAMSTATE_ALLOW_DUMMY_WINDOW",
                                                                "")}):
            pygame.display.quit()
            raise NoDisplayError(
                f"no display could be opened (DISPLAY={os.environ.get('DISPLAY', '')!r}); SDL fell "
                f"back to its {self.driver!r} driver",
                hint="check that the X server / Wayland compositor runs, or set "
                     "SDL_VIDEODRIVER=kmsdrm on a console")
        sizes = pygame.display.get_desktop_sizes()
        if not 0 <= self.display < len(sizes):
            listing = ", ".join(f"{i}: {w}x{h}" for i, (w, h) in enumerate(sizes)) or "none"
            pygame.display.quit()
            raise RenderError(
                f"display {self.display} does not exist; displays present: {listing}",
                hint="set [output] display to one of the listed indices")
        flags = 0
        size = self.size
        if self.fullscreen or self.driver == "kmsdrm":
            size = (int(sizes[self.display][0]), int(sizes[self.display][1]))
            flags = pygame.FULLSCREEN if self.driver in ("wayland", "kmsdrm") else pygame.NOFRAME
        if self.scale == "gpu":
            try:
                self._open_renderer(size, full=bool(flags))
            except (pygame.error, ImportError, AttributeError) as exc:
                log.warning("SDL renderer unavailable on the %s driver (%s); scaling frames on the CPU",
                            self.driver, exc, extra={"output": self.name})
                self._close_renderer()
        if self._renderer is None:
            self._open_surface(size, flags)
        self._scale_used = "gpu" if self._renderer is not None else "cpu"
        if self.hide_cursor:
            pygame.mouse.set_visible(False)
        log.info("window open", extra={"driver": self.driver, "display": self.display,
                                       "size": self.size, "vsync": self.paced, "scale": self.scale_used})
        return self.size

    @property
    def scale_used(self) -> str:
        """``gpu`` when the last ``open`` drew through SDL's renderer, ``cpu`` otherwise (kept
        after ``close``)."""
        return self._scale_used

    def _open_renderer(self, size: tuple[int, int], *, full: bool) -> None:
        """A window with an SDL renderer (GPU scaling); raises pygame.error when SDL has none."""
        pygame = self._pg
        from pygame._sdl2 import video

        where = 0x1FFF0000 | self.display  # SDL_WINDOWPOS_UNDEFINED_DISPLAY(display): on that display
        kw = {}
        if full:
            kw = {"fullscreen_desktop": True} if self.driver in ("wayland", "kmsdrm") else {"borderless": True}
        self._window = pygame.Window(self.title, size, position=(where, where), **kw)
        try:
            self._renderer = video.Renderer(self._window, vsync=self.vsync)
        except pygame.error:
            if not self.vsync:
                raise
            log.warning("vsync refused by the %s renderer; opening without it", self.driver,
                        extra={"output": self.name})
            self._renderer = video.Renderer(self._window)
            self.vsync = False
        self.paced = self.vsync
        self.scales = True
        self.size = (int(self._window.size[0]), int(self._window.size[1]))
        self._screen = self._window

    def _close_renderer(self) -> None:
        self._texture = self._renderer = None
        if self._window is not None:
            self._window.destroy()
        self._window = self._screen = None
        self.scales = False

    def _open_surface(self, size: tuple[int, int], flags: int) -> None:
        pygame = self._pg
        try:
            self._screen = pygame.display.set_mode(size, flags, display=self.display,
                                                   vsync=1 if self.vsync else 0)
            self.paced = self.vsync
        except pygame.error as exc:
            if not self.vsync:
                pygame.display.quit()
                raise RenderError(f"cannot open a window on display {self.display}: {exc}",
                                  hint="check the display settings") from None
            log.warning("vsync refused by the %s driver (%s); opening without it",
                        self.driver, exc, extra={"output": self.name})
            self._screen = pygame.display.set_mode(size, flags, display=self.display)
            self.paced = False
        pygame.display.set_caption(self.title)
        self.size = (int(self._screen.get_width()), int(self._screen.get_height()))

    def present(self, frame: U8) -> None:
        pygame = self._pg
        if self._screen is None or pygame is None:
            raise RenderError("window output used before open()", hint="call open() first")
        h, w = frame.shape[:2]
        if self._renderer is not None:
            self._present_texture(np.ascontiguousarray(frame), (w, h))
            return
        if (w, h) != self.size:
            cv2 = cv()

            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_LINEAR)
            w, h = self.size
        surf = pygame.image.frombuffer(np.ascontiguousarray(frame), (w, h), "RGB")
        self._screen.blit(surf, (0, 0))
        pygame.display.flip()
        self.frames += 1

    def _present_texture(self, frame: U8, size: tuple[int, int]) -> None:
        """Upload ``frame`` (uint8 RGB, any size) and let the GPU scale it to the window."""
        pygame = self._pg
        from pygame._sdl2 import video

        if self._texture is None or (self._texture.width, self._texture.height) != size:
            self._texture = video.Texture(self._renderer, size, streaming=True)
        self._texture.update(pygame.image.frombuffer(frame, size, "RGB"))
        self._renderer.blit(self._texture, pygame.Rect(0, 0, *self.size))
        self._renderer.present()
        self.frames += 1

    def poll(self) -> bool:
        pygame = self._pg
        if pygame is None or self._screen is None:
            return True
        ok = True
        for ev in pygame.event.get():
            if self.quit_chord is not None:
                if ev.type == pygame.KEYDOWN and self._chord(ev):
                    log.info("quit chord pressed", extra={"output": self.name})
                    ok = False
            elif ev.type == pygame.QUIT or (ev.type == pygame.KEYDOWN
                                            and ev.key in (pygame.K_ESCAPE, pygame.K_q)):
                ok = False
        return ok

    def _chord(self, ev: Any) -> bool:
        pygame = self._pg
        assert self.quit_chord is not None and pygame is not None
        mods, key = self.quit_chord
        want = {"ctrl": pygame.KMOD_CTRL, "alt": pygame.KMOD_ALT, "shift": pygame.KMOD_SHIFT,
                "meta": pygame.KMOD_META | pygame.KMOD_GUI}
        return bool(ev.key == pygame.key.key_code(key) and all(ev.mod & want[m] for m in mods))

    def close(self) -> None:
        if self._pg is not None and self._screen is not None:
            if self._renderer is not None:
                self._close_renderer()
            self._pg.display.quit()
        self._screen = None

    def describe(self) -> str:
        mode = "fullscreen" if self.fullscreen else "windowed"
        return f"window (display {self.display}, {mode}, {self.size[0]}x{self.size[1]}, " \
               f"driver {self.driver or '?'}, vsync {'on' if self.paced else 'off'}, {self.scale_used} scaling)"
