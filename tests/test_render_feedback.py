"""Zoom feedback with the real SqueezeNet: offline video, real-time octave cycling, flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data

from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.images import save_image
from dreamstate.engine.render.dream import DreamParams
from dreamstate.engine.render.feedback import FeedbackDreamer, Motion, OpticalFlow, render_feedback_video
from dreamstate.engine.render.renderer import noise_source
from dreamstate.models.dream import DreamModel


@pytest.fixture(scope="module")
def squeezenet(shared_models: Path) -> DreamModel:
    return DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire3/concat"],
                           device="cpu", threads=2)


def _sample(name: str, w: int, h: int) -> np.ndarray:
    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
    out: np.ndarray = cv().resize(img, (w, h), interpolation=cv().INTER_AREA)
    return out


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv().VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[:, :, ::-1].astype(np.float32) / 255.0)
    cap.release()
    return frames


def test_feedback_video_zooms_and_dreams(squeezenet: DreamModel, tmp_path: Path) -> None:
    src = _sample("astronaut", 128, 96)
    out = tmp_path / "fb.mp4"
    n = render_feedback_video(squeezenet, src, out, seconds=1.0, fps=5, size=(128, 96),
                              params=DreamParams(octaves=2, steps_per_octave=2, jitter=8),
                              motion=Motion(zoom=1.05))
    assert n == 5
    frames = _read_video(out)
    assert len(frames) == 5 and frames[0].shape == (96, 128, 3)
    assert np.abs(frames[0] - src).mean() > 0.005          # dreamed
    assert np.abs(frames[4] - frames[0]).mean() > 0.01     # it moves


def test_cli_feedback_writes_a_video(shared_models: Path, tmp_path: Path) -> None:
    import logging

    from dreamstate.engine.tools.cli import main as cli_main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    src = tmp_path / "a.png"
    save_image(src, _sample("astronaut", 96, 64))
    out = tmp_path / "v.mp4"
    try:
        code = cli_main(["feedback", str(src), "--model",
                         str(shared_models / "SqueezeNet_fp16.onnx"), "--seconds", "0.6",
                         "--fps", "5", "--realtime", "--steps-per-frame", "1", "--octaves", "2",
                         "--rotate", "2", "--device", "cpu", "--out", str(out)])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 0
    assert len(_read_video(out)) == 3


def test_realtime_cycles_octaves_coarse_to_fine(squeezenet: DreamModel) -> None:
    d = FeedbackDreamer(squeezenet, (160, 120), noise_source((160, 120)), seed=1)
    params = DreamParams(octaves=3, octave_scale=1.4, steps_per_octave=2, jitter=4)
    seen = []
    for _ in range(8):
        seen.append(d.current_octave(params))
        d.dream_realtime(params, 1)
    assert seen == [2, 2, 1, 1, 0, 0, 2, 2]
    assert d.steps_done == 8


def test_temporal_blend_damps_the_change(squeezenet: DreamModel) -> None:
    src = _sample("astronaut", 96, 64)
    params = DreamParams(octaves=1, steps_per_octave=1, jitter=0)
    changes = []
    for blend in (0.0, 0.75):
        d = FeedbackDreamer(squeezenet, (96, 64), src, seed=0)
        d.dream_realtime(params, 1, blend)
        changes.append(float(np.abs(d.canvas - src).mean()))
    assert changes[1] == pytest.approx(0.25 * changes[0], rel=0.05)


def test_source_mix_pulls_back_to_the_source(squeezenet: DreamModel) -> None:
    src = _sample("astronaut", 96, 64)
    d = FeedbackDreamer(squeezenet, (96, 64), src)
    d.canvas = np.zeros_like(src)
    d.move(Motion(), 1.0, source_mix=0.5)
    assert np.allclose(d.canvas, 0.5 * src, atol=1e-6)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_optical_flow_aligns_the_previous_frame(method: str) -> None:
    a = _sample("astronaut", 160, 120)
    shifted = np.roll(a, (3, 5), axis=(0, 1))
    flow = OpticalFlow(method)  # type: ignore[arg-type]
    warped = flow.warp_previous(a, a, shifted)
    inner = (slice(15, -15), slice(15, -15))
    err_before = np.abs(a - shifted)[inner].mean()
    err_after = np.abs(warped - shifted)[inner].mean()
    assert err_after < 0.5 * err_before


def test_flow_feedback_with_motion_tracks_the_source(squeezenet: DreamModel) -> None:
    src = _sample("astronaut", 128, 96)
    d = FeedbackDreamer(squeezenet, (128, 96), src, flow="dis")
    for _ in range(3):
        d.move(Motion(zoom=1.03), 1.0)
    inner = (slice(12, -12), slice(12, -12))
    assert np.abs(d.canvas - d.source_now)[inner].mean() < 0.03


def test_unknown_flow_method_and_bad_video(tmp_path: Path, squeezenet: DreamModel) -> None:
    with pytest.raises(RenderError, match="optical flow method 'lk'"):
        OpticalFlow("lk")  # type: ignore[arg-type]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    with pytest.raises(RenderError, match=r"bad\.mp4"):
        render_feedback_video(squeezenet, bad, tmp_path / "o.mp4", seconds=1, fps=2,
                              size=(64, 64), params=DreamParams(), motion=Motion())


def test_restart_octaves_goes_back_to_the_coarsest(squeezenet: DreamModel) -> None:
    d = FeedbackDreamer(squeezenet, (160, 120), noise_source((160, 120)), seed=1)
    params = DreamParams(octaves=3, steps_per_octave=1, jitter=4)
    d.dream_realtime(params, 1)
    assert d.current_octave(params) == 1
    d.restart_octaves()
    assert d.current_octave(params) == 2
