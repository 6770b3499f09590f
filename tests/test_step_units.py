"""``step`` means the same change on screen for every model (display levels, 0..255).

One dream step on every model the tests reach (the two bundled ones, SqueezeNet and mnist from
``../shared/models``) and on EfficientNet-Lite0 described by sidecars in each range, mean/std
and channel-order convention: the mean change of the displayed pixels must be ``step`` levels
within 20 %, for all of them at the same ``step``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.core.images import resize
from dreamstate.engine.render.dream import DreamParams, ascent_step
from dreamstate.models import registry
from dreamstate.models.dream import DreamModel

STEP = 1.5

SIDECARS: dict[str, dict[str, object]] = {
    "0..255, mean 127, std 128": {"range": [0, 255], "mean": [127, 127, 127], "std": [128, 128, 128]},
    "0..1, mean 0.498, std 0.502": {"range": [0, 1], "mean": [0.498] * 3, "std": [0.502] * 3},
    "0..1, ImageNet mean/std": {"range": [0, 1], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "0..255 BGR, Caffe mean, std 1": {"range": [0, 255], "mean": [123, 117, 104], "std": [1, 1, 1], "bgr": True},
    "-1..1 as 0..2, std 0.25": {"range": [0, 2], "mean": [1, 1, 1], "std": [0.25, 0.25, 0.25]},
}


def _china(w: int, h: int) -> np.ndarray:
    from dreamstate.engine.core.images import load_image
    from dreamstate.engine.runtime.app import default_source_path

    path = default_source_path()
    assert path is not None
    return resize(load_image(path), (w, h))


def _shown_change(model: DreamModel, rgb: np.ndarray, layers: dict[str, float] | None = None) -> float:
    """Mean |change| of the displayed 8-bit picture after one step, in display levels."""
    x0 = model.to_model_space(rgb)
    x1, _ = ascent_step(model, x0.copy(), DreamParams(layer_weights=layers, step=STEP, jitter=0),
                        rng=np.random.default_rng(0))
    before = np.clip(model.from_model_space(x0), 0, 1)
    after = np.clip(model.from_model_space(x1), 0, 1)
    return float(np.abs(after - before).mean() * 255.0)


def _models(shared: Path, tmp: Path) -> dict[str, DreamModel]:
    out = {
        "starter": DreamModel.load("starter", device="cpu", threads=2),
        "efficientnet-lite0": DreamModel.load("efficientnet-lite0", device="cpu", threads=2),
        "SqueezeNet (shared)": DreamModel.load(shared / "SqueezeNet_fp16.onnx", device="cpu", threads=2),
    }
    lite0_file, _ = registry.resolve("efficientnet-lite0")
    for i, (label, pre) in enumerate(SIDECARS.items()):
        path = tmp / f"lite0_{i}.onnx"
        path.symlink_to(lite0_file)
        path.with_suffix(".json").write_text(json.dumps({"preprocessing": pre, "recommended_layers": ["block10"]}))
        out[f"Lite0 sidecar {label}"] = DreamModel.load(path, device="cpu", threads=2, cache_dir=tmp)
    return out


def test_one_step_changes_the_picture_by_step_levels_for_every_model(shared_models: Path, tmp_path: Path) -> None:
    rgb = _china(160, 107)
    changes = {name: _shown_change(m, rgb) for name, m in _models(shared_models, tmp_path).items()}
    mnist = DreamModel.load(shared_models / "mnist.onnx", objective="class", device="cpu", threads=2)
    digit = np.zeros((28, 28, 3), np.float32)
    digit[6:22, 12:16] = 0.6  # a grey "1", away from the clipping range
    digit += 0.2
    changes["mnist (grayscale, 0..255)"] = _shown_change(mnist, digit)
    report = ", ".join(f"{k}: {v:.2f}" for k, v in changes.items())
    print(f"mean displayed change at step {STEP}: {report}")  # noqa: T201
    for name, change in changes.items():
        assert abs(change - STEP) <= 0.2 * STEP, f"{name}: {change:.2f} levels at step {STEP} ({report})"


def test_pixel_scale_follows_range_and_std(tmp_path: Path) -> None:
    lite0_file, _ = registry.resolve("efficientnet-lite0")
    path = tmp_path / "m.onnx"
    path.symlink_to(lite0_file)
    path.with_suffix(".json").write_text(
        json.dumps({"preprocessing": {"range": [0, 1], "mean": [0.4, 0.5, 0.6], "std": [0.1, 0.2, 0.4], "bgr": True}})
    )
    m = DreamModel.load(path, ["block10"], device="cpu", cache_dir=tmp_path)
    # BGR: model channel 0 is blue (std 0.4), channel 2 red (std 0.1)
    assert m.pixel_scale.reshape(-1) == pytest.approx([1 / (255 * 0.4), 1 / (255 * 0.2), 1 / (255 * 0.1)])
