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
