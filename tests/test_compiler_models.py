"""The compiler on real pretrained models from ../shared/models (SqueezeNet fp16, MNIST)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dreamstate.engine.core.errors import ModelError
from dreamstate.models.compiler import compile_step
from dreamstate.models.dream import DreamModel
from dreamstate.models.graph import load_forward
from tests.test_compiler_helpers import G, check_gradient


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMSTATE_CACHE", str(tmp_path / "cache"))


def _china(scale: int = 2) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    img: np.ndarray = load_sample_image("china.jpg")[::scale, ::scale].astype(np.float32) / 255.0
    return img


def test_squeezenet_normalised(shared_models: Path) -> None:
    fg = load_forward(shared_models / "SqueezeNet_fp16.onnx")
    assert all(a.dtype != np.float16 for a in fg.consts.values())
    assert fg.image == "data_0" and fg.image_channels == 3
    assert "fire2/concat" in fg.aliases() and fg.aliases()["fire9/concat"] == "fire9/concat_1"
    layers = {li.alias or li.name: li for li in fg.layers()}
    assert layers["fire5/concat"].channels == 256
    assert layers["fire5/concat"].stride == 8
    assert layers["pool1"].receptive_field == 7  # conv1 3x3/2 then pool 3x3/2


def test_squeezenet_fire_gradient_matches_finite_differences(shared_models: Path) -> None:
    data = (shared_models / "SqueezeNet_fp16.onnx").read_bytes()
    x = np.random.default_rng(0).uniform(-110.0, 130.0, (1, 3, 64, 56))
    errs = check_gradient(
        data, ["fire3/concat", "fire5/concat", "fire9/concat"], weights=[1.0, 0.5, 2.0], x=x, directions=3, eps=1e-4
    )
    assert errs["fd"] < 1e-5


def test_squeezenet_step_graph_is_standard_and_dynamic(shared_models: Path) -> None:
    import onnxruntime as ort

    fg = load_forward(shared_models / "SqueezeNet_fp16.onnx")
    model, _info = compile_step(fg, ["fire2/concat", "fire4/concat", "fire6/concat", "fire8/concat"])
    assert model.ir_version <= 13
    assert {o.domain for o in model.opset_import} == {""} and model.opset_import[0].version >= 18
    assert all(n.domain == "" for n in model.graph.node)
    assert "MaxUnpool" not in {n.op_type for n in model.graph.node}
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for h, w in ((67, 91), (120, 80)):  # one session, every octave size
        x = np.random.default_rng(h).uniform(-100, 100, (1, 3, h, w)).astype(np.float32)
        grad, loss = sess.run(["grad", "loss"], {"data_0": x, "layer_weights": np.ones(4, np.float32)})
        assert grad.shape == x.shape and float(loss) > 0 and np.abs(grad).sum() > 0


def test_squeezenet_objective_rises_on_a_photo(shared_models: Path) -> None:
    model = DreamModel.load(
        shared_models / "SqueezeNet_fp16.onnx", ["fire4/concat", "fire7/concat"], device="cpu", threads=2
    )
    assert model.name == "squeezenet1.0-fp16"  # matched by sha256 -> BGR, mean (104, 117, 123)
    x = model.to_model_space(_china(3))
    losses = []
    for _ in range(10):
        g, loss = model.step(x)
        losses.append(loss)
        x += 1.5 / (np.abs(g).mean() + 1e-8) * g
        model.clip(x)
    _, final = model.step(x)
    assert final > 2.0 * losses[0], losses
    assert sum(b > a for a, b in itertools.pairwise(losses)) >= 8, losses


def test_squeezenet_recognises_the_photo_with_our_preprocessing(shared_models: Path) -> None:
    """Checks to_model_space: the class objective's logits rank china.jpg as a church-like class."""
    model = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", objective="class", device="cpu")
    x = model.to_model_space(_center_crop(_china(1), 224))
    logits = model.features(x)[model.layers[0]].reshape(-1)
    assert int(np.argmax(logits)) in {442, 538, 497, 663, 832}


def _center_crop(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    s = size / min(h, w)
    r = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    top, left = (r.shape[0] - size) // 2, (r.shape[1] - size) // 2
    return np.ascontiguousarray(r[top : top + size, left : left + size])


def test_mnist_class_logit_gradient(shared_models: Path) -> None:
    data = (shared_models / "mnist.onnx").read_bytes()
    x = np.random.default_rng(1).uniform(0.0, 255.0, (1, 1, 28, 28))
    cw = np.zeros(10)
    cw[7] = 1.0
    cw[2] = -0.5
    check_gradient(data, [], objective="class", extra=[cw], x=x, directions=3, eps=1e-4)


def test_mnist_class_visualisation_raises_the_logit(shared_models: Path) -> None:
    model = DreamModel.load(shared_models / "mnist.onnx", objective="class", device="cpu")
    assert model.layers == ("logits",) and model.tensors == ("Plus214_Output_0",)
    x = np.full((1, 1, 28, 28), 100.0, np.float32)
    target = np.eye(10, dtype=np.float32)[3]
    start = model.features(x)["logits"][0, 3]
    for _ in range(10):
        g, _ = model.step(x, channel_weights={"logits": target})
        x += 2.0 / (np.abs(g).mean() + 1e-8) * g
        model.clip(x)
    logits = model.features(x)["logits"][0]
    assert logits[3] > start + 5.0 and int(np.argmax(logits)) == 3


# ----------------------------------------------------------------------------- bad models
def test_corrupt_file_is_a_clear_error(tmp_path: Path, shared_models: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes((shared_models / "mnist.onnx").read_bytes()[:1000] + b"\x00garbage")
    with pytest.raises(ModelError, match=r"broken\.onnx.*(not a valid ONNX|no nodes)") as info:
        load_forward(bad)
    assert "download it again" in str(info.value)
    with pytest.raises(ModelError, match="does not exist"):
        load_forward(tmp_path / "missing.onnx")


def test_unsupported_op_names_op_node_and_supported_ops() -> None:
    g = G((1, 2, 6, 6))
    h = g.op("Tanh", [g.conv("x", 2, 3, 3)])
    out = g.op("Relu", [h])
    fg = load_forward(g.model(str(out)))
    with pytest.raises(ModelError) as info:
        compile_step(fg, [str(out)])
    msg = str(info.value)
    assert "op Tanh" in msg and "tanh" in msg  # the node's name
    assert "ConvTranspose" not in msg and "MaxPool" in msg and "LRN" in msg and "Conv" in msg


def test_ops_after_the_dream_layer_are_pruned() -> None:
    g = G((1, 2, 6, 6))
    layer = g.op("Relu", [g.conv("x", 2, 3, 3)])
    out = g.op("Tanh", [layer])
    fg = load_forward(g.model(str(out)))
    model, _ = compile_step(fg, [str(layer)])
    assert "Tanh" not in {n.op_type for n in model.graph.node}


def test_missing_layer_lists_available_layers(shared_models: Path) -> None:
    fg = load_forward(shared_models / "SqueezeNet_fp16.onnx")
    with pytest.raises(ModelError, match=r"'fire42/concat' not found.*fire2/concat.*fire9/concat"):
        compile_step(fg, ["fire42/concat"])


def test_model_with_two_inputs_is_refused() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "two", [x, y], [z])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10).SerializeToString()
    with pytest.raises(ModelError, match="exactly one image input"):
        load_forward(data)
