"""The committed starter model: real file, real onnxruntime session, real held-out crops.

No torch here: the crops come from the torch-free generator the training script used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from dreamstate.models.starter import data

STARTER = Path(__file__).resolve().parents[1] / "models" / "starter"
ONNX_PATH = STARTER / "starter.onnx"
# What the dream compiler supports; the starter model must stay inside this set.
SUPPORTED_OPS = {
    "Conv", "Relu", "LeakyRelu", "MaxPool", "AveragePool", "GlobalAveragePool",
    "BatchNormalization", "Concat", "Add", "Sub", "Mul", "Div", "Reshape", "Flatten",
    "Gemm", "MatMul", "Identity", "Softmax",
}  # fmt: skip
BLOCKS = ("block1", "block2", "block3", "block4")


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((STARTER / "model.json").read_text())
    return result


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(str(ONNX_PATH))


@pytest.fixture(scope="module")
def sources() -> data.Sources:
    return data.load_sources()


def _session(m: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


def test_file_matches_model_json(meta: dict[str, Any]) -> None:
    blob = ONNX_PATH.read_bytes()
    assert meta["name"] == "starter"
    assert meta["file"] == ONNX_PATH.name
    assert hashlib.sha256(blob).hexdigest() == meta["sha256"]
    assert len(blob) <= 10 * 1024 * 1024
    assert meta["classes"] == list(data.CLASSES)
    assert set(meta["layers"]) == set(BLOCKS)
    assert set(meta["recommended_layers"]) <= set(meta["layers"])
    pre = meta["preprocess"]
    assert pre["bgr"] is False and pre["range"] == [0, 1]
    assert pre["mean"] == [0.0, 0.0, 0.0] and pre["std"] == [1.0, 1.0, 1.0]


def test_graph_uses_only_supported_ops_and_declared_names(
    model: onnx.ModelProto, meta: dict[str, Any]
) -> None:
    onnx.checker.check_model(model)
    assert model.ir_version <= 13
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 18)}
    ops = {n.op_type for n in model.graph.node}
    assert ops <= SUPPORTED_OPS, f"unsupported ops: {sorted(ops - SUPPORTED_OPS)}"
    (inp,) = model.graph.input
    assert inp.name == meta["input"] == "image"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) and d for d in (dims[0], dims[2], dims[3]))
    assert [o.name for o in model.graph.output] == ["logits"]
    produced = {out for n in model.graph.node for out in n.output}
    assert set(BLOCKS) <= produced
    for name in BLOCKS:  # each dream layer is a ReLU output
        (node,) = [n for n in model.graph.node if name in n.output]
        assert node.op_type == "Relu"
    # the in-graph normalisation is the one model.json documents
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_allclose(consts["rgb_mean"].ravel(), meta["preprocess"]["in_graph_mean"])
    np.testing.assert_allclose(consts["rgb_std"].ravel(), meta["preprocess"]["in_graph_std"])


@pytest.mark.parametrize("hw", [(64, 64), (97, 130)])
def test_dynamic_size_and_layer_tensors(
    model: onnx.ModelProto, meta: dict[str, Any], hw: tuple[int, int]
) -> None:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in BLOCKS:
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = _session(probe)
    x = np.random.default_rng(3).uniform(0, 1, (2, 3, *hw)).astype(np.float32)
    outs = dict(zip(["logits", *BLOCKS], sess.run(["logits", *BLOCKS], {"image": x}), strict=True))
    assert outs["logits"].shape == (2, len(meta["classes"]))
    assert np.isfinite(outs["logits"]).all()
    for name in BLOCKS:
        info = meta["layers"][name]
        a = outs[name]
        assert a.shape == (2, info["channels"], hw[0] // info["stride"], hw[1] // info["stride"])
        assert (a >= 0).all() and a.max() > 0, f"{name} is dead on a random image"


def test_classifies_held_out_crops(meta: dict[str, Any], sources: data.Sources) -> None:
    x, y = data.validation_set(sources, meta["val_per_class"], meta["val_seed"])
    logits = _session(onnx.load(str(ONNX_PATH))).run(["logits"], {"image": x})[0]
    pred = logits.argmax(axis=1)
    acc = float((pred == y).mean())
    chance = 1.0 / len(data.CLASSES)
    assert acc >= 0.6, f"held-out accuracy {acc:.3f} (chance {chance:.3f})"
    assert abs(acc - meta["accuracy"]) <= 0.05, f"{acc:.3f} vs recorded {meta['accuracy']}"
    recall = np.array([(pred[y == k] == k).mean() for k in range(len(data.CLASSES))])
    assert (recall > 3 * chance).sum() >= len(data.CLASSES) - 2, dict(
        zip(data.CLASSES, recall.round(2), strict=True)
    )


def test_generator_is_seeded_and_splits_photos(sources: data.Sources) -> None:
    a, ya = data.validation_set(sources, 2, seed=11)
    b, yb = data.validation_set(sources, 2, seed=11)
    c, _ = data.validation_set(sources, 2, seed=12)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a, c)
    assert a.shape == (2 * len(data.CLASSES), 3, data.CROP, data.CROP)
    assert a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
    xb, lb = data.make_batch(sources, np.random.default_rng(5), 16)
    assert xb.shape == (16, 3, data.CROP, data.CROP) and lb.dtype == np.int64
    # training and validation parts of a photograph do not overlap: together they make it up
    for name in data.PHOTO_CLASSES:
        if name == "faces":
            continue
        tr, va = sources.train[name].full, sources.val[name].full
        assert tr.shape[0] == va.shape[0]
        assert 0.2 < va.shape[1] / (tr.shape[1] + va.shape[1]) < 0.3


def test_dreams_structure_through_the_engine(tmp_path: Path) -> None:
    """The real path: registry name -> compiled dream step -> octave dream from grey noise.

    The dream must raise its layer objective and add structure, not noise: the detail it adds
    keeps almost all of its energy below a quarter cycle per pixel (white noise keeps ~80 %
    above it).
    """
    from dreamstate.engine.render.dream import DreamParams, dream_image
    from dreamstate.models.dream import DreamModel

    model = DreamModel.load("starter", ["block4"], device="cpu", cache_dir=tmp_path)
    rng = np.random.default_rng(0)
    img = (0.5 + 0.05 * rng.standard_normal((128, 128, 3))).astype(np.float32)
    out = dream_image(model, img, DreamParams(octaves=3, steps_per_octave=10))

    def objective(rgb: np.ndarray) -> float:
        return float((model.features(model.to_model_space(rgb))["block4"] ** 2).mean())

    assert objective(out) > 3 * objective(img)
    delta = (out - img) - (out - img).mean(axis=(0, 1))
    assert delta.std() > 0.03, "the dream barely changed the image"
    power = (np.abs(np.fft.fft2(delta, axes=(0, 1))) ** 2).sum(axis=-1)
    fy = np.fft.fftfreq(delta.shape[0])[:, None]
    fx = np.fft.fftfreq(delta.shape[1])[None, :]
    high = float(power[np.hypot(fx, fy) > 0.25].sum() / power.sum())
    assert high < 0.15, f"{high:.2f} of the added detail is above 0.25 cycles/px: noise-like"
