"""Zoom, rotation and translation are geometrically right."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamstate.engine.render.feedback import Motion
from dreamstate.engine.render.geometry import motion_matrix, warp


def _apply(m: np.ndarray, x: float, y: float) -> tuple[float, float]:
    px, py = m @ np.array([x, y, 1.0])
    return float(px), float(py)


def _textured(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.uniform(0, 1, (h, w, 3)).astype(np.float32)


def test_centre_pixel_stays_fixed_under_pure_zoom() -> None:
    img = _textured(101, 151)
    for zoom in (1.05, 1.5, 0.8):
        out = warp(img, motion_matrix(151, 101, zoom=zoom))
        assert np.allclose(out[50, 75], img[50, 75], atol=1e-5)
        assert not np.allclose(out[10, 10], img[10, 10], atol=1e-3)


def test_chosen_centre_stays_fixed_under_zoom_and_rotation() -> None:
    img = _textured(80, 120)
    m = Motion(zoom=1.3, rotate_deg=17.0, center=(30 / 119, 20 / 79)).matrix(120, 80)
    assert np.allclose(_apply(m, 30, 20), (30, 20))
    out = warp(img, m)
    assert np.allclose(out[20, 30], img[20, 30], atol=1e-5)


def test_zoom_scales_distances_from_the_centre() -> None:
    m = motion_matrix(101, 101, zoom=2.0)
    assert np.allclose(_apply(m, 60, 50), (70, 50))  # 10 px right of centre -> 20 px
    assert np.allclose(_apply(m, 50, 45), (50, 40))


def test_rotation_turns_counter_clockwise_on_screen() -> None:
    m = motion_matrix(101, 101, rotate_deg=90.0)
    # a point right of centre goes to above the centre (screen y points down)
    assert np.allclose(_apply(m, 60, 50), (50, 40), atol=1e-9)


def test_translation_is_a_fraction_of_the_frame() -> None:
    img = np.zeros((50, 100, 3), np.float32)
    img[25, 40] = 1.0
    out = warp(img, motion_matrix(100, 50, translate=(0.1, 0.2)), border="constant")
    assert out[35, 50].max() == 1.0 and out[25, 40].max() == 0.0


def test_identity_returns_the_same_frame() -> None:
    img = _textured(10, 10)
    assert warp(img, motion_matrix(10, 10)) is img


@settings(max_examples=60, deadline=None)
@given(z=st.floats(0.8, 1.25), r=st.floats(-30, 30), a=st.floats(0, 3), b=st.floats(0, 3))
def test_fractional_ticks_compose(z: float, r: float, a: float, b: float) -> None:
    """a ticks then b ticks equals a + b ticks (zoom and rotation about one centre)."""
    mo = Motion(zoom=z, rotate_deg=r)
    ma, mb, mab = (np.vstack([mo.matrix(64, 48, t), [0, 0, 1]]) for t in (a, b, a + b))
    assert np.allclose(mb @ ma, mab, atol=1e-9)
