"""Kiosk mode: only the quit chord ends the show; no display means wait and retry, never a
video file growing in a room nobody looks at."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.output.window import WindowOutput, parse_chord


def test_chords_need_a_modifier_and_one_key() -> None:
    assert parse_chord("ctrl+alt+q") == (frozenset({"ctrl", "alt"}), "q")
    assert parse_chord("Shift + F12") == (frozenset({"shift"}), "f12")
    for bad in ("q", "ctrl+alt", "ctrl+q+w", ""):
        with pytest.raises(RenderError, match="modifiers\\+key"):
            parse_chord(bad)


@pytest.fixture
def dummy_video(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("DREAMSTATE_ALLOW_DUMMY_WINDOW", "1")
    yield


def _post(*events: tuple[int, dict[str, int]]) -> None:
    import pygame

    for kind, attrs in events:
        pygame.event.post(pygame.event.Event(kind, **attrs))


def test_in_a_kiosk_only_the_chord_quits(dummy_video: None) -> None:
    import pygame

    w = WindowOutput((64, 48), quit_chord="ctrl+alt+q", vsync=False)
    w.open()
    try:
        _post((pygame.KEYDOWN, {"key": pygame.K_ESCAPE, "mod": 0}), (pygame.QUIT, {}),
              (pygame.KEYDOWN, {"key": pygame.K_q, "mod": 0}),
              (pygame.KEYDOWN, {"key": pygame.K_q, "mod": pygame.KMOD_LCTRL}))
        assert w.poll() is True  # a visitor at the keyboard ends nothing
        _post((pygame.KEYDOWN, {"key": pygame.K_q, "mod": pygame.KMOD_LCTRL | pygame.KMOD_LALT}))
        assert w.poll() is False
    finally:
        w.close()


def test_outside_a_kiosk_escape_quits(dummy_video: None) -> None:
    import pygame

    w = WindowOutput((64, 48), vsync=False)
    w.open()
    try:
        _post((pygame.KEYDOWN, {"key": pygame.K_ESCAPE, "mod": 0}))
        assert w.poll() is False
    finally:
        w.close()


@pytest.mark.slow
def test_kiosk_without_a_display_waits_instead_of_writing_video(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    r = subprocess.run([sys.executable, "-m", "dreamstate", "kiosk", "--seconds", "6"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "stage render failed: no display" in r.stderr and "retrying in" in r.stderr, r.stderr
    assert "falls back" not in r.stderr and not list(tmp_path.glob("*.mp4"))


def test_a_bad_chord_is_a_usage_error(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "dreamstate", "kiosk", "--quit-chord", "q"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "modifiers+key" in r.stderr


@pytest.mark.slow
def test_a_kiosk_started_before_x_comes_up_fills_the_screen_once_it_does(tmp_path: Path) -> None:
    """What a gallery PC does at boot: the unit starts before the X server. The kiosk waits
    (render stage retries with backoff, no video file), and once a real X server (Xvfb) is up
    on its DISPLAY it opens fullscreen: the whole screen shows the picture."""
    import random
    import threading
    import time

    from tests.test_output_window import screenshot

    # a number of its own, far from the window tests' (:40 up), which may start one meanwhile
    n = next(n for n in random.Random().sample(range(500, 900), 400)
             if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists())
    display = f":{n}"
    env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    env["DISPLAY"] = display
    show = tmp_path / "show.toml"
    show.write_text('[show]\nmodel = "starter"\n[scenes.calm]\nlayers = { block2 = 1.0 }\n'
                    '[scenes.attract]\nlayers = { block2 = 1.0 }\n[output]\nsize = [320, 180]\n'
                    'dream_size = [160, 90]\nfps = 30\n')
    kiosk = subprocess.Popen([sys.executable, "-m", "dreamstate", "kiosk", str(show), "--seconds", "60"],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(kiosk.stderr.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    xvfb: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while sum("no display" in line for line in lines) < 2:  # waiting for a display, and retrying
            assert time.monotonic() < deadline and kiosk.poll() is None, "".join(lines)
            time.sleep(0.2)
        xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "320x180x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 45
        shown = False
        while time.monotonic() < deadline and not shown:
            time.sleep(1.0)
            try:
                shot = screenshot(display)
            except subprocess.CalledProcessError:
                continue  # the X server is not answering yet
            quarters = [shot[:90, :160], shot[:90, 160:], shot[90:, :160], shot[90:, 160:]]
            shown = all(float(q.mean()) > 12.0 and float(q.std()) > 3.0 for q in quarters)
        assert shown, "the kiosk never filled the screen"
        assert kiosk.poll() is None
    finally:
        kiosk.terminate()
        kiosk.wait(30)
        reader.join(10)
        kiosk.stderr.close()  # type: ignore[union-attr]
        err = "".join(lines)
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(10)
    assert kiosk.returncode == 0, err
    assert "no display" in err and not list(tmp_path.glob("*.mp4")), err
