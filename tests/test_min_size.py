"""Images, octaves, tiles and sizes below what a model accepts (issue 11, item 5).

The kind of fault: any spatial size that leaves some tensor of the dream step with no pixels
(a tiny image, a thin strip, a small ``--size``, a small ``--tile``, a deep octave) crashed in
onnxruntime. Each model now knows its minimum input (``models.graph.min_input_size``, from its
strides, kernels and pads); octaves stay above it, tiles and images below it are padded or
upscaled, and ``--size``/``--tile``/``output.dream_size`` are checked against it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from dreamstate.engine.render.dream import DreamParams, dream_image, model_min_size, octave_sizes, tiled_gradient
from dreamstate.engine.tools.cli import main as cli_main
from dreamstate.models.dream import DreamModel
from dreamstate.models.graph import load_forward, min_input_size

SQUEEZE = "squeezenet"  # the shared SqueezeNet_fp16.onnx, opened by path


@pytest.fixture(scope="module")
def models(shared_models: Path) -> dict[str, DreamModel]:
    return {"starter": DreamModel.load("starter"), "efficientnet-lite0": DreamModel.load("efficientnet-lite0"),
            SQUEEZE: DreamModel.load(shared_models / "SqueezeNet_fp16.onnx")}


def _runs(model: DreamModel, h: int, w: int) -> bool:
    x = np.zeros((1, model.preprocess.channels, h, w), np.float32)
    try:
        model.step(x)
    except (InvalidArgument, Fail, RuntimeException):  # onnxruntime refuses the shape
        return False
    return True


@pytest.mark.parametrize(("name", "want", "refused"), [
    # the starter's 2x2/2 pools: onnxruntime truncates, so a 1-px map still pools to 1 px and its
    # step (first-winner mask backward) runs at any size; the ONNX-formula bound is what we keep
    ("starter", (8, 8), None),
    ("efficientnet-lite0", (16, 16), 15),  # the bound is tight: one pixel less and onnxruntime refuses
    (SQUEEZE, (31, 31), 22),  # the ONNX formula; onnxruntime's pools still run down to 23
])
def test_each_model_knows_its_minimum_and_the_step_runs_there(models: dict[str, DreamModel], name: str,
                                                                 want: tuple[int, int], refused: int | None) -> None:
    model = models[name]
    assert model.min_size == want
    mh, mw = model.min_size
    assert _runs(model, mh, mw)
    assert _runs(model, mh, 3 * mw) and _runs(model, 3 * mh, mw)
    if refused is not None:  # never below what onnxruntime really needs
        assert not _runs(model, refused, 3 * mw)
        assert not _runs(model, 3 * mh, refused)
    # below the bound, some layer loses its last pixel by the ONNX formula: the dream code pads or
    # upscales there (see test_small_images_are_dreamed_with_a_message), it never steps there
    from dreamstate.models.graph import spatial_fits

    assert not spatial_fits(model._forward, mh - 1, 3 * mw, list(model.tensors))
    assert not spatial_fits(model._forward, 3 * mh, mw - 1, list(model.tensors))


def _one_op_model(node: onnx.NodeProto, weights: list[onnx.TensorProto]) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    g = helper.make_graph([node], "g", [x], [y], initializer=weights)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _conv(name: str, k: tuple[int, int], **attrs: object) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, *k], np.ones(4 * 3 * k[0] * k[1], np.float32))
    return helper.make_node("Conv", ["image", "w"], ["out"], name=name, **attrs), [w]


CASES = {
    "conv 3x3 stride 2": _conv("c", (3, 3), strides=[2, 2]),
    "conv 1x7 (inception)": _conv("c", (1, 7)),
    "conv dilated 3x3 d=3": _conv("c", (3, 3), dilations=[3, 3]),
    "conv 5x5 pads 1,2,0,0": _conv("c", (5, 5), pads=[1, 2, 0, 0]),
    "conv 7x7 SAME_UPPER": _conv("c", (7, 7), auto_pad="SAME_UPPER", strides=[2, 2]),
}
# onnxruntime sizes pools with C++ integer division (truncating toward zero), so a pool window
# may overhang the input by less than a stride; our bound follows the ONNX formula (floor), which
# the compiled backward pass relies on: it may be larger than onnxruntime's, never smaller
POOLS = {
    "avgpool 4x4 stride 4": (helper.make_node("AveragePool", ["image"], ["out"], kernel_shape=[4, 4],
                                              strides=[4, 4]), [], (4, 4)),
    "maxpool 3x3 stride 2": (helper.make_node("MaxPool", ["image"], ["out"], kernel_shape=[3, 3],
                                              strides=[2, 2]), [], (3, 3)),
    "maxpool 3x3 stride 2 ceil_mode": (helper.make_node("MaxPool", ["image"], ["out"], kernel_shape=[3, 3],
                                                        strides=[2, 2], ceil_mode=1), [], (3, 3)),
}


def _ort_min(model: onnx.ModelProto, axis: int) -> int:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for side in range(1, 64):
        shape = (1, 3, side, 40) if axis == 0 else (1, 3, 40, side)
        try:
            out = sess.run(None, {"image": np.zeros(shape, np.float32)})[0]
        except (InvalidArgument, Fail, RuntimeException):  # onnxruntime refuses: too small
            continue
        if out.size:
            return side
    raise AssertionError("nothing up to 63 px ran")


@pytest.mark.parametrize("case", list(CASES))
def test_minimum_matches_onnxruntime_on_single_layers(case: str) -> None:
    """Kernels, strides, dilations, asymmetric pads, non-square kernels and auto_pad, each
    against what onnxruntime itself accepts."""
    node, weights = CASES[case]
    model = _one_op_model(node, weights)
    g = load_forward(model.SerializeToString(), label=case)
    assert min_input_size(g) == (_ort_min(model, 0), _ort_min(model, 1))


@pytest.mark.parametrize("case", list(POOLS))
def test_pool_minimum_follows_the_onnx_formula(case: str) -> None:
    node, weights, want = POOLS[case]
    model = _one_op_model(node, weights)
    g = load_forward(model.SerializeToString(), label=case)
    assert min_input_size(g) == want
    assert want[0] >= _ort_min(model, 0) and want[1] >= _ort_min(model, 1)


@pytest.mark.parametrize("name", ["starter", "efficientnet-lite0", SQUEEZE])
@pytest.mark.parametrize("size", [(7, 7), (640, 16), (16, 640), (1, 1)])
def test_small_images_are_dreamed_with_a_message(models: dict[str, DreamModel], name: str,
                                                 size: tuple[int, int], caplog: pytest.LogCaptureFixture) -> None:
    model = models[name]
    w, h = size
    rgb = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    with caplog.at_level(logging.WARNING, "dreamstate.render"):
        out = dream_image(model, rgb, DreamParams(steps_per_octave=1, octaves=3), seed=1)
    assert out.shape == rgb.shape and np.isfinite(out).all()
    mh, mw = model.min_size
    if h < mh or w < mw:
        assert any("smaller than the model accepts" in r.getMessage() for r in caplog.records)
        assert not np.array_equal(out, rgb)  # it did dream


def test_tiles_smaller_than_the_model_are_padded_not_fatal(models: dict[str, DreamModel]) -> None:
    model = models[SQUEEZE]
    x = model.to_model_space(np.random.default_rng(0).random((40, 70, 3), dtype=np.float32))
    g, _ = tiled_gradient(model, x, DreamParams(tile=8))
    assert g.shape == x.shape and np.isfinite(g).all() and np.abs(g).sum() > 0


def test_octaves_never_go_below_the_model_minimum() -> None:
    sizes = octave_sizes(640, 360, 10, 1.4, (100, 60))
    assert sizes[0] == (640, 360)
    assert all(h >= 100 and w >= 60 for w, h in sizes)
    assert len(sizes) < len(octave_sizes(640, 360, 10, 1.4))


def test_step_model_without_min_size_defaults_to_one_pixel() -> None:
    assert model_min_size(object()) == (1, 1)


@pytest.mark.parametrize(("argv", "message"), [
    (["--size", "16x16"], "--size 16x16 is smaller than model squeezenet1.0-fp16 accepts (31x31 px)"),
    (["--tile", "8"], "a tile must be at least twice that (fix: use --tile 62 or more, or --tile 0"),
])
def test_cli_checks_size_and_tile_against_the_model(tmp_path: Path, argv: list[str], message: str,
                                                    capfd: pytest.CaptureFixture[str], shared_models: Path) -> None:
    from dreamstate.engine.core.images import save_image

    src = tmp_path / "a.png"
    save_image(src, np.full((64, 96, 3), 0.5, np.float32))
    code = cli_main(["dream", str(src), "--model", str(shared_models / "SqueezeNet_fp16.onnx"),
                     "--out", str(tmp_path / "o.png"), *argv])
    assert code == 1
    assert message in capfd.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_cli_dreams_a_7px_image_and_feedback_a_strip(tmp_path: Path, shared_models: Path) -> None:
    from dreamstate.engine.core.images import load_image, save_image

    save_image(tmp_path / "tiny.png", np.random.default_rng(0).random((7, 7, 3), dtype=np.float32))
    save_image(tmp_path / "strip.png", np.random.default_rng(0).random((16, 640, 3), dtype=np.float32))
    assert cli_main(["dream", str(tmp_path / "tiny.png"), "--model", "starter", "--steps", "1",
                     "--out", str(tmp_path / "o.png")]) == 0
    assert load_image(tmp_path / "o.png").shape == (7, 7, 3)
    squeeze = str(shared_models / "SqueezeNet_fp16.onnx")
    assert cli_main(["feedback", str(tmp_path / "strip.png"), "--model", squeeze, "--seconds", "0.2",
                     "--fps", "5", "--steps", "1", "--octaves", "2", "--out", str(tmp_path / "o.avi")]) == 0
    assert (tmp_path / "o.avi").stat().st_size > 0


def test_check_refuses_a_dream_size_the_model_cannot_take(tmp_path: Path, shared_models: Path) -> None:
    import shutil

    from dreamstate.engine.runtime.showfile import load_show

    shutil.copy(shared_models / "SqueezeNet_fp16.onnx", tmp_path / "squeeze.onnx")
    (tmp_path / "show.toml").write_text(
        '[show]\nname = "tiny"\nmodel = "squeeze.onnx"\ndefault_scene = "a"\n'
        '[output]\ndream_size = [24, 16]\n[scenes.a]\nstep = 1.0\n')
    with pytest.raises(Exception, match=r"output.dream_size: 24x16 is smaller than model squeezenet1.0-fp16"):
        load_show(tmp_path / "show.toml")
