"""DeepDream on stills with the real SqueezeNet: objective, masks, guides, tiling, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import ModelError, RenderError
from dreamstate.engine.core.images import load_image, save_image
from dreamstate.engine.render.dream import (
    DreamParams,
    ascent_step,
    dream_image,
    guide_features,
    octave_sizes,
    tile_edges,
    tiled_gradient,
)
from dreamstate.engine.render.masks import circle_mask, fit_mask, image_mask, make_mask, radial_mask
from dreamstate.engine.tools.cli import main as cli_main
from dreamstate.models.dream import DreamModel

LAYER = "fire5/concat"


@pytest.fixture(scope="module")
def squeezenet(shared_models: Path) -> DreamModel:
    return DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", [LAYER], device="cpu",
                           threads=2)


def _sample(name: str, w: int, h: int) -> np.ndarray:
    """A scikit-image sample picture as float32 RGB [0, 1] at (w, h)."""
    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
    out: np.ndarray = cv().resize(img, (w, h), interpolation=cv().INTER_AREA)
    return out


def _cat(w: int = 160, h: int = 128) -> np.ndarray:
    return _sample("chelsea", w, h)


def test_steps_raise_the_objective(squeezenet: DreamModel) -> None:
    x = squeezenet.to_model_space(_cat())
    _, before = squeezenet.step(x)
    rng = np.random.default_rng(0)
    params = DreamParams(step=1.5, jitter=8)
    losses = []
    for _ in range(6):
        x, loss = ascent_step(squeezenet, x, params, rng=rng)
        losses.append(loss)
    _, after = squeezenet.step(x)
    assert after > before * 1.2, (before, after, losses)
    lo, hi = squeezenet._lo, squeezenet._hi
    assert np.all(x >= lo - 1e-4) and np.all(x <= hi + 1e-4), "steps must clip to the valid range"


def test_dream_image_changes_picture_and_keeps_range(squeezenet: DreamModel) -> None:
    img = _cat()
    out = dream_image(squeezenet, img, DreamParams(octaves=3, steps_per_octave=4, jitter=8))
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - img).mean() > 0.005


def test_octaves_carry_detail_from_coarse_to_fine(squeezenet: DreamModel) -> None:
    calls: list[tuple[int, int]] = []
    done: list[int] = []

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(squeezenet, name)

        def step(self, x: np.ndarray, *a: object, **k: object) -> tuple[np.ndarray, float]:
            calls.append((x.shape[3], x.shape[2]))
            return squeezenet.step(x, *a, **k)  # type: ignore[arg-type]

    params = DreamParams(octaves=3, octave_scale=1.4, steps_per_octave=2, jitter=0)
    dream_image(Spy(), _cat(), params, progress=lambda d, t: done.append(d))  # type: ignore[arg-type]
    sizes = octave_sizes(160, 128, 3, 1.4)
    assert calls == [s for s in reversed(sizes) for _ in range(2)]
    assert done == list(range(1, 7))


def test_circle_mask_leaves_outside_pixels_unchanged(squeezenet: DreamModel) -> None:
    img = _cat()
    mask = circle_mask(128, 160)
    out = dream_image(squeezenet, img, DreamParams(octaves=3, steps_per_octave=3, jitter=8),
                      mask=mask)
    outside = mask == 0
    inside = mask == 1
    assert outside.sum() > 1000 and inside.sum() > 1000
    assert np.array_equal(out[outside], img[outside])
    assert np.abs(out[inside] - img[inside]).mean() > 0.005


def test_guide_moves_features_towards_the_guide(shared_models: Path,
                                                squeezenet: DreamModel) -> None:
    guided = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", [LAYER], guide=True,
                             device="cpu", threads=2)
    img = _cat()
    guide_img = _sample("coffee", 160, 128)
    gf = guide_features(squeezenet, guide_img)
    assert set(gf) == {LAYER}

    def sim(rgb: np.ndarray) -> float:
        def pooled(f: np.ndarray) -> np.ndarray:
            v = f.mean(axis=(0, 2, 3))
            out: np.ndarray = v / np.linalg.norm(v)
            return out
        feats = squeezenet.features(squeezenet.to_model_space(rgb))[LAYER]
        return float(pooled(feats) @ pooled(gf[LAYER]))

    params = DreamParams(octaves=2, steps_per_octave=8, jitter=8)
    with_guide = dream_image(guided, img, params, guide=gf)
    without = dream_image(squeezenet, img, params)
    assert sim(with_guide) > sim(img) + 0.01
    assert sim(with_guide) > sim(without) + 0.02


def test_tiling_bounds_the_tile_size_and_covers_the_frame(squeezenet: DreamModel) -> None:
    assert tile_edges(1080, 512) == [(0, 360), (360, 720), (720, 1080)]
    assert tile_edges(300, 512) == [(0, 300)]
    assert tile_edges(300, 0) == [(0, 300)]
    seen: list[tuple[int, int]] = []

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(squeezenet, name)

        def step(self, x: np.ndarray, *a: object, **k: object) -> tuple[np.ndarray, float]:
            seen.append((x.shape[2], x.shape[3]))
            return squeezenet.step(x, *a, **k)  # type: ignore[arg-type]

    img = _cat(200, 150)
    x = squeezenet.to_model_space(img)
    g, _ = tiled_gradient(Spy(), x, DreamParams(tile=96))  # type: ignore[arg-type]
    assert len(seen) == 6 and all(h <= 96 and w <= 96 for h, w in seen)
    assert g.shape == x.shape
    # every tile got a gradient (no tile left at zero)
    for y0, y1 in tile_edges(150, 96):
        for x0, x1 in tile_edges(200, 96):
            assert np.abs(g[:, :, y0:y1, x0:x1]).mean() > 0
    out = dream_image(squeezenet, img, DreamParams(octaves=1, steps_per_octave=3, tile=96))
    assert np.abs(out - img).mean() > 0.002


def test_masks_builtin_and_from_images(tmp_path: Path) -> None:
    c = circle_mask(90, 160)
    assert c[45, 80] == 1.0 and c[0, 0] == 0.0
    r = radial_mask(90, 160)
    assert r[45, 80] > 0.99 and r[0, 0] < 0.01
    rgb = np.zeros((60, 80, 3), np.float32)
    rgb[:, 40:] = 1.0
    lum = image_mask(rgb, "luminance")
    assert lum[0, 0] == 0.0 and lum[0, 79] == pytest.approx(1.0)
    edges = image_mask(rgb, "edges")
    assert edges[30, 39:41].max() > 0.5 and edges[30, 5] < 0.05
    save_image(tmp_path / "m.png", rgb)
    assert make_mask("edges:" + str(tmp_path / "m.png"), 60, 80).shape == (60, 80)
    assert make_mask(str(tmp_path / "m.png"), 60, 80)[0, 79] == pytest.approx(1.0)


def test_mask_of_other_size_is_resized_and_said(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    save_image(tmp_path / "m.png", np.ones((30, 40, 3), np.float32))
    with caplog.at_level(logging.WARNING, logger="dreamstate.render"):
        m = make_mask(str(tmp_path / "m.png"), 90, 160)
    assert m.shape == (90, 160)
    assert any("resizing the mask" in r.getMessage() and "40x30" in r.getMessage()
               for r in caplog.records)
    with caplog.at_level(logging.WARNING, logger="dreamstate.render"):
        assert fit_mask(np.ones((10, 10), np.float32), 20, 20, name="x").shape == (20, 20)


def test_missing_and_unreadable_images_say_which_file(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"nope\.png.*not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(RenderError, match=r"bad\.png.*not a readable image"):
        load_image(bad)
    with pytest.raises(RenderError, match=r"mask image"):
        make_mask(str(bad), 10, 10)


def test_unknown_layer_is_a_clear_error(shared_models: Path) -> None:
    with pytest.raises(ModelError, match=r"'fire99/concat'.*fire5/concat"):
        DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire99/concat"], device="cpu")


@pytest.mark.usefixtures("restore_logging")
def test_cli_dream_writes_a_dreamed_png(shared_models: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "cat.png"
    save_image(src, _cat(192, 144))
    out = tmp_path / "out.png"
    code = cli_main(["dream", str(src), "--model", str(shared_models / "SqueezeNet_fp16.onnx"),
                     "--layers", "fire3/concat=1", "--octaves", "2", "--steps", "3",
                     "--mask", "radial", "--device", "cpu", "--out", str(out)])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    a, b = load_image(src), load_image(out)
    assert a.shape == b.shape and np.abs(a - b).mean() > 0.003


@pytest.mark.usefixtures("restore_logging")
def test_cli_dream_bad_inputs_return_1_with_message(shared_models: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model = str(shared_models / "SqueezeNet_fp16.onnx")
    assert cli_main(["dream", str(tmp_path / "missing.png"), "--model", model,
                     "--out", str(tmp_path / "o.png")]) == 1
    err = capsys.readouterr().err
    assert "missing.png" in err and "not found" in err
    src = tmp_path / "cat.png"
    save_image(src, _cat(64, 64))
    assert cli_main(["dream", str(src), "--model", model, "--layers", "fire99/concat",
                     "--device", "cpu", "--out", str(tmp_path / "o.png")]) == 1
    assert "fire99/concat" in capsys.readouterr().err


def test_starter_model_dreams_too() -> None:
    """The bundled starter model: steps raise its objective and the still changes."""
    starter = DreamModel.load("starter", ["block3"], device="cpu", threads=2)
    img = _cat(128, 96)
    x = starter.to_model_space(img)
    _, before = starter.step(x)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, _loss = ascent_step(starter, x, DreamParams(jitter=8), rng=rng)
    _, after = starter.step(x)
    assert after > before * 1.1, (before, after)
    out = dream_image(starter, img, DreamParams(octaves=2, steps_per_octave=3, jitter=8))
    assert np.abs(out - img).mean() > 0.003


def test_live_octaves_land_on_a_few_bucketed_shapes(squeezenet: DreamModel) -> None:
    """A slider sweeping octave_scale over 1.20..1.60 in 0.005 steps (81 values): unbucketed,
    nearly every value is a new set of image shapes for onnxruntime (and a new cuDNN tuning);
    bucketed to 16 px, the live steps see a few shapes, each a multiple of 16 below full size."""
    from dreamstate.engine.render.dream import OCTAVE_BUCKET_PX, dream_octave

    scales = [1.2 + 0.005 * i for i in range(81)]
    raw = {s for v in scales for s in octave_sizes(640, 360, 4, v)[1:]}
    bucketed = {s for v in scales for s in octave_sizes(640, 360, 4, v, bucket=OCTAVE_BUCKET_PX)[1:]}
    assert len(raw) > 150 and len(bucketed) < len(raw) / 4
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in bucketed)
    seen: set[tuple[int, int]] = set()

    class Spy:
        def __getattr__(self, name: str) -> object:
            return getattr(squeezenet, name)

        def step(self, x: np.ndarray, *a: object, **k: object) -> tuple[np.ndarray, float]:
            seen.add((x.shape[3], x.shape[2]))
            return squeezenet.step(x, *a, **k)  # type: ignore[arg-type]

    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).random((90, 160, 3), dtype=np.float32)
    for v in (1.30, 1.31, 1.32):
        dream_octave(Spy(), img, DreamParams(octaves=2, octave_scale=v, jitter=0), 1, rng=rng)  # type: ignore[arg-type]
    assert seen == {(128, 64)}  # 160/1.3..1.32 = 121..123 -> 128; 90/1.3.. = 68..69 -> 64
