"""Feed-forward style models (models.style) on the real candy.onnx / mosaic.onnx and on tiny
graphs built here with the old experimental ops, against onnxruntime running the original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.core.errors import ModelError


def _china(size: tuple[int, int]) -> np.ndarray:
    """scikit-learn's bundled china.jpg as RGB float32 [0, 1] at ``size`` (w, h)."""
    import cv2
    from sklearn.datasets import load_sample_image

    img = load_sample_image("china.jpg").astype(np.float32) / 255.0
    return np.ascontiguousarray(cv2.resize(img, size, interpolation=cv2.INTER_AREA), dtype=np.float32)


def _original_session(path: Path) -> object:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _hue_gap_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-pixel hue difference in degrees between two RGB pictures, weighted by the
    smaller saturation of the two (grey pixels have no hue)."""
    import cv2

    ha, hb = (cv2.cvtColor(np.clip(x, 0, 1).astype(np.float32), cv2.COLOR_RGB2HSV) for x in (a, b))
    d = np.abs(np.angle(np.exp(1j * np.deg2rad(ha[..., 0] - hb[..., 0]))))
    w = np.minimum(ha[..., 1], hb[..., 1])
    return float(np.rad2deg((d * w).sum() / max(float(w.sum()), 1e-9)))


# --------------------------------------------------------------------------- tiny graphs
def _tiny_model(nodes: list[object], inits: dict[str, np.ndarray], *, size: int = 8, out_size: int | None = None,
                opset: int = 7) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])]
    # old IR style: weights listed as inputs too
    inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inits.items()]
    o = out_size or size
    graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                    [1, 3, o, o])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=3)
    return bytes(model.SerializeToString()) if onnx else b""


def _run_prepared(data: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from dreamstate.models.style import prepare_style_graph

    p = prepare_style_graph(data, label="tiny")
    s = ort.InferenceSession(p.model.SerializeToString(), providers=["CPUExecutionProvider"])
    out: np.ndarray = s.run(None, {p.input: x})[0]
    return out


def test_experimental_ops_lowered_match_onnxruntime_running_the_original() -> None:
    import onnxruntime as ort
    from onnx import helper

    nodes = [
        helper.make_node("ImageScaler", ["x"], ["a"], scale=2.0, bias=[-1.0, 0.5, 3.0]),
        helper.make_node("Crop", ["a"], ["b"], border=[1, 2, 0, 1]),  # left, top, right, bottom
        helper.make_node("Affine", ["b"], ["c"], alpha=-0.5, beta=0.25),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    data = _tiny_model(nodes, {}, size=8, out_size=None)
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = _run_prepared(data, x)
    assert got.shape == want.shape == (1, 3, 5, 7)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # by hand: Crop keeps rows 2..6 and columns 1..7
    by_hand = np.maximum(0.0, -0.5 * (2.0 * x + np.array([-1.0, 0.5, 3.0], np.float32).reshape(1, 3, 1, 1))
                         [:, :, 2:7, 1:8] + 0.25)
    np.testing.assert_allclose(got, by_hand, rtol=1e-6, atol=1e-6)
    # and it now runs at another size
    x2 = np.random.default_rng(1).normal(size=(2, 3, 13, 10)).astype(np.float32)
    assert _run_prepared(data, x2).shape == (2, 3, 10, 9)


def test_conv_transpose_fixed_output_shape_follows_the_input() -> None:
    import onnxruntime as ort
    from onnx import helper

    rng = np.random.default_rng(2)
    w = rng.normal(size=(3, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["t"], kernel_shape=[3, 3], strides=[2, 2],
                              auto_pad="VALID", output_shape=[16, 16]),
             helper.make_node("Crop", ["t"], ["y"], border=[1, 1, 1, 1])]
    data = _tiny_model(nodes, {"w": w}, size=8, out_size=14)
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = _run_prepared(data, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # 2x the input, less the crop, at a size the file never declared
    assert _run_prepared(data, rng.normal(size=(1, 3, 20, 11)).astype(np.float32)).shape == (1, 3, 38, 20)


def test_fixed_size_crop_and_unknown_experimental_op_are_refused_by_name() -> None:
    from onnx import helper

    from dreamstate.models.style import prepare_style_graph

    fixed = _tiny_model([helper.make_node("Crop", ["x"], ["y"], border=[1, 1, 0, 0], scale=[4, 4])], {}, out_size=4)
    with pytest.raises(ModelError, match=r"Crop node .* fixed size .*scale=\[4, 4\]"):
        prepare_style_graph(fixed, label="tiny")
    scaled = _tiny_model([helper.make_node("ScaledTanh", ["x"], ["y"], alpha=1.0, beta=1.0)], {})
    with pytest.raises(ModelError, match=r"op ScaledTanh .*experimental.*ImageScaler, Affine, Crop"):
        prepare_style_graph(scaled, label="tiny")


def test_sidecar_gives_channel_order_and_range(tmp_path: Path) -> None:
    """A model of this family with a sidecar: RGB [0, 1] in and out, no BGR swap, no 255."""
    from onnx import helper

    from dreamstate.models.style import StyleModel

    # y = 1 - x (per channel): a "negative" style network, with a Crop of nothing
    nodes = [helper.make_node("Affine", ["x"], ["a"], alpha=-1.0, beta=1.0),
             helper.make_node("Crop", ["a"], ["b"], border=[0, 0, 0, 0]),
             helper.make_node("ImageScaler", ["b"], ["y"], scale=1.0, bias=[0.0, 0.0, 0.5])]
    path = tmp_path / "neg.onnx"
    path.write_bytes(_tiny_model(nodes, {}))
    (tmp_path / "neg.json").write_text(json.dumps({"kind": "style", "preprocessing": {
        "bgr": False, "value_range": [0, 1], "mean": [0, 0, 0], "std": [1, 1, 1]}}))
    m = StyleModel.load(path, device="cpu", threads=1)
    assert m.spec.kind == "style"
    rgb = np.random.default_rng(3).uniform(0, 0.4, size=(9, 5, 3)).astype(np.float32)
    out = m.stylize(rgb)
    np.testing.assert_allclose(out[..., :2], 1.0 - rgb[..., :2], atol=1e-6)
    np.testing.assert_allclose(out[..., 2], 1.0, atol=1e-6)  # 1 - x + 0.5 > 1: clipped
    # the same file with BGR 0..255 in its sidecar: the blue bias lands on what is read as red
    (tmp_path / "neg.json").write_text(json.dumps({"kind": "style", "preprocessing": {
        "bgr": True, "value_range": [0, 255], "mean": [0, 0, 0], "std": [1, 1, 1]}}))
    out_bgr = StyleModel.load(path, device="cpu", threads=1).stylize(rgb)
    np.testing.assert_allclose(out_bgr, np.clip((-rgb * 255 + 1.0 + np.array([0.5, 0, 0], np.float32)) / 255, 0, 1),
                               atol=1e-6)


# --------------------------------------------------------------------------- the real models
@pytest.mark.slow
def test_lowering_gives_the_original_output_at_720(shared_models: Path) -> None:
    from dreamstate.models.style import StyleModel

    path = shared_models / "candy.onnx"
    m = StyleModel.load(path, device="cpu", threads=2)
    assert m.prepared.lowered == {"ImageScaler": 1, "Crop": 7, "Affine": 1}
    assert m.prepared.relaxed_conv_transpose == 2 and m.prepared.declared == (720, 720)
    x = m.to_model(_china((720, 720)))
    want = _original_session(path).run(None, {"inputImage": x})[0]  # type: ignore[attr-defined]
    got = m.run_raw(x)
    assert got.shape == want.shape == (1, 3, 720, 720)
    assert float(np.abs(got - want).max()) < 0.05  # of a 0..255 range (float32 summation order)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["candy", "mosaic"])
def test_style_runs_at_640x360_and_1280x720(shared_models: Path, name: str) -> None:
    from dreamstate.models.style import StyleModel

    m = StyleModel.load(shared_models / f"{name}.onnx", device="cpu", threads=2)
    assert m.spec.name == name and m.spec.kind == "style"  # found in the registry by SHA-256
    for w, h in ((640, 360), (1280, 720)) if name == "candy" else ((640, 360),):
        src = _china((w, h))
        out = m.stylize(src)
        assert out.shape == (h, w, 3) and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
        assert float(np.abs(out - src).mean()) > 0.08  # repainted, not passed through
        # it keeps the picture's layout: the styled luminance still follows the source's
        lum_in, lum_out = src.mean(axis=2).ravel(), out.mean(axis=2).ravel()
        assert float(np.corrcoef(lum_in, lum_out)[0, 1]) > 0.3


@pytest.mark.slow
def test_bgr_order_is_respected(shared_models: Path) -> None:
    """The hue statistics of the RGB-in, RGB-out path match a reference run of the original
    graph fed BGR 0..255 by hand; feeding RGB by mistake (the README: it comes out blue) does
    not match, so the test can tell the two apart."""
    from dreamstate.models.style import StyleModel

    path = shared_models / "candy.onnx"
    src = _china((720, 720))
    ours = StyleModel.load(path, device="cpu", threads=2).stylize(src)
    sess = _original_session(path)
    bgr = np.ascontiguousarray(src[..., ::-1].transpose(2, 0, 1)[None] * 255.0, dtype=np.float32)
    ref = np.clip(sess.run(None, {"inputImage": bgr})[0][0].transpose(1, 2, 0)[..., ::-1] / 255.0, 0, 1)  # type: ignore[attr-defined]
    rgb_in = np.ascontiguousarray(src.transpose(2, 0, 1)[None] * 255.0, dtype=np.float32)
    raw_wrong = sess.run(None, {"inputImage": rgb_in})[0][0].transpose(1, 2, 0)  # type: ignore[attr-defined]
    wrong_in = np.clip(raw_wrong[..., ::-1] / 255.0, 0, 1)  # RGB fed as if BGR
    wrong_both = np.clip(raw_wrong / 255.0, 0, 1)  # and the BGR output shown as RGB
    assert _hue_gap_deg(ours, ref) < 2.0
    # measured: 26 and 119 degrees; the style's palette dominates, but each pixel's hue moves
    assert _hue_gap_deg(wrong_in, ref) > 10.0
    assert _hue_gap_deg(wrong_both, ref) > 60.0
    # the README's "it comes out blue": blue outweighs red where ours has red above blue
    assert wrong_both[..., 2].mean() > wrong_both[..., 0].mean() and ours[..., 0].mean() > ours[..., 2].mean()


def test_the_bundled_toon_model_is_what_make_toon_builds_and_it_styles() -> None:
    """The shipped toon.onnx is a rebuild away (deterministic, hand-set weights), its model.json
    carries the right SHA-256, and it repaints: flat bands (fewer distinct colours) and ink."""
    import hashlib

    from dreamstate.engine.tools.make_toon import OUT_DIR, build
    from dreamstate.models import registry
    from dreamstate.models.style import StyleModel

    data = build().SerializeToString()
    shipped = (OUT_DIR / "toon.onnx").read_bytes()
    assert data == shipped, "models/toon/toon.onnx is stale: run python -m dreamstate.engine.tools.make_toon"
    spec = registry.get_spec("toon")
    assert spec.kind == "style" and spec.sha256 == hashlib.sha256(shipped).hexdigest()
    src = _china((320, 214))
    out = StyleModel.load("toon", device="cpu", threads=1).stylize(src)
    assert out.shape == src.shape
    colours_in = len(np.unique((src * 31).astype(np.uint8).reshape(-1, 3), axis=0))
    colours_out = len(np.unique((out * 31).astype(np.uint8).reshape(-1, 3), axis=0))
    assert colours_out < 0.7 * colours_in
    # ink lines: more near-black pixels than the source has (measured 0.068 against 0.060)
    assert float((out.mean(axis=2) < 0.08).mean()) > float((src.mean(axis=2) < 0.08).mean()) + 0.004
