"""float16 dream steps (``[output] precision = "fp16"``, ``models.precision``).

onnxruntime's CPU provider runs the converted graphs: where it has no float16 kernel it casts
around the node, so weights and the values between float16 kernels are rounded to float16, while
a chain of nodes without float16 kernels computes in float32 in between (a float16 -> float32 ->
float16 round trip is removed). So on the CPU these tests measure the converted graph (its types,
its weights, where it keeps float32) and the backward values loss scaling protects, computed on
the float32 graph; the speed, and float16 arithmetic throughout, are the ``gpu`` test's.
"""

from __future__ import annotations

import itertools
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dreamstate.engine.core.errors import ModelError, ShowError
from dreamstate.models import compiler, registry
from dreamstate.models.dream import DreamModel, compile_cached
from dreamstate.models.graph import load_forward
from dreamstate.models.precision import GRAD_SCALE, to_fp16
from dreamstate.models.session import session_options

SCENES = '[scenes.calm]\nlayers = { "block2" = 1.0 }\n[scenes.attract]\nlayers = { "block2" = 1.0 }\n' \
         '[show]\nmodel = "starter"\n'
HAVE_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()

# Cosine of the float16 gradient with the float32 one at 224x224 (china.jpg), measured on the
# CPU: starter 0.998, SqueezeNet 0.999, EfficientNet-Lite0 0.990 (its depthwise weights and
# folded batch norms lose most to float16 rounding; 0.979 at 1280x720).
COSINE_BOUND = {"starter": 0.995, "squeezenet": 0.995, "efficientnet-lite0": 0.98}


def _china(w: int, h: int) -> np.ndarray:
    import cv2
    import sklearn.datasets

    path = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    bgr = cv2.resize(cv2.imread(str(path)), (w, h), interpolation=cv2.INTER_AREA)
    return (bgr[:, :, ::-1] / 255.0).astype(np.float32)


def _source(name: str, shared_models: Path) -> str:
    return str(shared_models / "SqueezeNet_fp16.onnx") if name == "squeezenet" else name


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled")


def _cpu(data: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(data, session_options(2), providers=["CPUExecutionProvider"])


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def test_the_fp16_step_keeps_fp32_io_and_the_objective_in_fp32(cache: Path) -> None:
    """Inputs and outputs stay float32; the convolutions read float16 weights and inputs; the
    loss reductions and the final unscaling read float32; the step is cached apart from the
    float32 one, which is unchanged."""
    fp32 = compile_cached("starter", cache_dir=cache)
    fp16 = compile_cached("starter", cache_dir=cache, precision="fp16")
    assert fp16.path != fp32.path and fp16.path.exists()
    again = compile_cached("starter", cache_dir=cache, precision="fp16")
    assert again.data == fp16.data and compile_cached("starter", cache_dir=cache).data == fp32.data
    model = onnx.load_from_string(fp16.data)
    onnx.checker.check_model(model, full_check=True)
    f, h = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert all(v.type.tensor_type.elem_type == f for v in (*model.graph.input, *model.graph.output))
    types = _elem_types(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.input[0]] == h and types[n.input[1]] == h for n in convs)
    reductions = [n for n in model.graph.node if n.op_type == "ReduceSumSquare"]
    assert len(reductions) == 3 and all(types[n.input[0]] == f for n in reductions)
    unscale = next(n for n in model.graph.node if n.op_type == "Mul" and "unscale" in n.name)
    assert types[unscale.input[0]] == f and types[unscale.output[0]] == f
    seeds = [n for n in model.graph.node if n.op_type == "Mul" and n.name.startswith("seed_")]
    assert len(seeds) == 3 and all(types[n.output[0]] == f for n in seeds)
    # no float32 value goes through float16 and back (the converter leaves such round trips
    # where a kept tensor has several readers: the 1/numel scale, read by a loss and a seed)
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        first = producer.get(n.input[0]) if n.op_type == "Cast" and n.attribute[0].i == f else None
        assert not (first is not None and first.op_type == "Cast" and types[first.input[0]] == f), n.name
    with pytest.raises(ModelError, match="precision 'fp8'"):
        compile_cached("starter", cache_dir=cache, precision="fp8")


def test_the_converter_alone_gives_a_graph_that_does_not_load(cache: Path) -> None:
    """Why ``to_fp16`` repairs the converter's output: on the same step graph and the same kept
    nodes, ``convert_float_to_float16`` by itself leaves the ReLU masks' ``Cast(to=FLOAT)`` feeding
    float16 nodes (and shared initializers float32), and onnxruntime refuses the graph."""
    from onnxconverter_common import float16

    path, _ = registry.resolve("starter")
    fg = load_forward(path, label=str(path))
    scaled, info = compiler.compile_step(fg, [fg.resolve_layer(n) for n in ("block2", "block3")],
                                         grad_scale=GRAD_SCALE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on constants clamped into float16's range
        raw = float16.convert_float_to_float16(scaled, keep_io_types=True, node_block_list=list(info.fp32_nodes))
    with pytest.raises(Exception, match=r"(?i)type"):
        _cpu(raw.SerializeToString())
    _cpu(to_fp16(scaled, info.fp32_nodes).SerializeToString())  # the repaired one loads


@pytest.mark.parametrize("name", ["starter", "squeezenet", "efficientnet-lite0"])
def test_the_fp16_gradient_points_where_the_fp32_one_does(name: str, shared_models: Path, cache: Path) -> None:
    """Cosine similarity of the float16 step's gradient with the float32 one, per model (bounds
    in COSINE_BOUND, with the measured values); the float16 gradient is not the float32 one
    (the float16 graph really ran)."""
    source = _source(name, shared_models)
    dm = DreamModel.load(source, device="cpu", threads=2, cache_dir=cache)
    s16 = _cpu(compile_cached(source, cache_dir=cache, precision="fp16").data)
    x = dm.to_model_space(_china(224, 224))
    w = dm.layer_vector(None)
    g32, l32 = dm.step(x)
    g16, l16 = s16.run(["grad", "loss"], {dm._image: x, "layer_weights": w})
    assert g16.dtype == np.float32 and np.isfinite(g16).all()
    cos = float(np.sum(g32 * g16) / (np.linalg.norm(g32) * np.linalg.norm(g16)))
    assert cos >= COSINE_BOUND[name], f"{name}: cosine {cos:.4f}"
    assert not np.array_equal(g16, g32)
    assert abs(float(np.linalg.norm(g16) / np.linalg.norm(g32)) - 1) < 0.05  # the loss scale is undone
    assert abs(float(l16) - l32) <= 0.02 * abs(l32)  # the loss too, computed in fp32 from fp16 activations


@pytest.mark.parametrize("name", ["starter", "squeezenet", "efficientnet-lite0"])
def test_the_fused_ascent_graph_converts_too_and_moves_the_frame_like_fp32(name: str, shared_models: Path,
                                                                           cache: Path) -> None:
    """``DreamModel.ascend`` on an fp16 show runs the fused ascent graph in fp16: its update,
    normalisation and clip stay float32 (``CompiledInfo.fp32_nodes``), and one step moves the
    frame where the float32 graph moves it."""
    source = _source(name, shared_models)
    dm = DreamModel.load(source, device="cpu", threads=2, cache_dir=cache)
    x = dm.to_model_space(_china(128, 96))
    c = x.shape[1]
    feed = {"ascent_x": x, "ascent_shift": np.array([3, 5], np.int64), "ascent_step": np.array(0.01, np.float32),
            "ascent_mask": np.ones(x.shape[2:], np.float32), "ascent_grad_scale": np.ones((1, c, 1, 1), np.float32),
            "ascent_update_scale": np.ones((1, c, 1, 1), np.float32),
            "ascent_lo": np.full((1, c, 1, 1), -1e3, np.float32), "ascent_hi": np.full((1, c, 1, 1), 1e3, np.float32),
            "layer_weights": dm.layer_vector(None)}
    moved = {}
    for precision in ("fp32", "fp16"):
        data = compile_cached(source, cache_dir=cache, precision=precision, ascent=True).data
        if precision == "fp16":
            model = onnx.load_from_string(data)
            assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
            assert _elem_types(model)["x_next"] == onnx.TensorProto.FLOAT
        x_next, _loss = _cpu(data).run(["x_next", "loss"], feed)
        moved[precision] = (x_next - x).ravel()
    d32, d16 = moved["fp32"], moved["fp16"]
    cos = float(d32 @ d16 / (np.linalg.norm(d32) * np.linalg.norm(d16)))
    assert cos >= COSINE_BOUND[name], f"{name}: cosine {cos:.4f}"
    assert abs(float(np.linalg.norm(d16) / np.linalg.norm(d32)) - 1) < 0.05  # same step length


@pytest.mark.parametrize(("objective", "guide"), [("channels", False), ("layers", True), ("class", False)])
def test_every_objective_converts_and_agrees(objective: str, guide: bool, cache: Path) -> None:
    """The channel, guide and class objectives convert too, and their fp16 gradients agree
    with fp32 (the starter; the same DreamModel.step feeds both sessions)."""
    dm = DreamModel.load("starter", objective=objective, guide=guide, device="cpu", threads=2,  # type: ignore[arg-type]
                         cache_dir=cache)
    x = dm.to_model_space(_china(128, 96))
    kw: dict[str, Any] = {}
    if guide:
        kw["guide"] = dm.features(dm.to_model_space(_china(96, 64)[::-1].copy()))
    if objective == "channels":
        kw["channel_weights"] = {dm.layers[0]: np.linspace(-1, 1, dm.channels[0] or 1, dtype=np.float32)}
    g32, l32 = dm.step(x, **kw)
    dm._session = _cpu(compile_cached("starter", objective=objective, guide=guide,  # type: ignore[arg-type]
                                      cache_dir=cache, precision="fp16").data)
    g16, l16 = dm.step(x, **kw)
    cos = float(np.sum(g32 * g16) / (np.linalg.norm(g32) * np.linalg.norm(g16)))
    assert cos >= COSINE_BOUND["starter"] and not np.array_equal(g16, g32), cos
    assert abs(float(np.linalg.norm(g16) / np.linalg.norm(g32)) - 1) < 0.05  # the loss scale is undone
    assert abs(l16 - l32) <= 0.01 * abs(l32)


def test_an_initializer_shared_with_a_kept_node_gets_a_float16_copy() -> None:
    """``y = (x * c) * c`` with the second Mul kept float32: the converter alone leaves ``c``
    float32 for the float16 Mul too (a type error); ``to_fp16`` gives that Mul its own copy."""
    from onnx import TensorProto, helper, numpy_helper

    c = numpy_helper.from_array(np.array([3.0], np.float32), "c")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "c"], ["xc"], name="converted"),
         helper.make_node("Mul", ["xc", "c"], ["y"], name="kept")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    out = to_fp16(model, ["kept"])
    kinds = {i.name: i.data_type for i in out.graph.initializer}
    assert kinds == {"c": TensorProto.FLOAT, "c__fp16": TensorProto.FLOAT16}
    y = _cpu(out.SerializeToString()).run(["y"], {"x": np.array([1.0, -2.0], np.float32)})[0]
    np.testing.assert_allclose(y, [9.0, -18.0])
    assert y.dtype == np.float32


@pytest.mark.parametrize("name", ["starter", "squeezenet", "efficientnet-lite0"])
def test_the_objective_still_rises_with_fp16(name: str, shared_models: Path, cache: Path) -> None:
    """Gradient ascent with the float16 step, normalised as the renderer does: the loss after
    eight steps is above the loss before, every step raises it, and it gains at least 90 % of
    what the same eight float32 steps gain."""
    source = _source(name, shared_models)
    dm = DreamModel.load(source, device="cpu", threads=2, cache_dir=cache)
    s16 = _cpu(compile_cached(source, cache_dir=cache, precision="fp16").data)
    w = dm.layer_vector(None)

    def fp16_step(x: np.ndarray) -> tuple[np.ndarray, float]:
        g, loss = s16.run(["grad", "loss"], {dm._image: x, "layer_weights": w})
        return g, float(loss)

    def ascend(step: Callable[[np.ndarray], tuple[np.ndarray, float]]) -> list[float]:
        x = dm.to_model_space(_china(160, 120))
        losses = []
        for _ in range(8):
            g, loss = step(x)
            losses.append(loss)
            x = dm.clip(x + 1.5 * dm.pixel_scale * g / (np.abs(g).mean() + 1e-12))
        losses.append(step(x)[1])
        return losses

    l16, l32 = ascend(fp16_step), ascend(dm.step)
    assert l16[-1] > l16[0]
    assert all(b > a for a, b in itertools.pairwise(l16)), l16
    assert l16[-1] - l16[0] >= 0.9 * (l32[-1] - l32[0]), (l16, l32)


def _backward_values(name: str, size: tuple[int, int], grad_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(every gradient value of the backward pass, the image gradient) of the float32 step
    compiled with ``grad_scale``, at ``size`` on china.jpg. Gradient tensors are told apart
    from the forward ones and the masks by linearity: doubling the layer weights doubles them."""
    path, spec = registry.resolve(name)
    fg = load_forward(path, label=str(path))
    model, info = compiler.compile_step(fg, [fg.resolve_layer(n) for n in spec.layers], grad_scale=grad_scale)
    kept = set(info.fp32_nodes)
    nodes = list(model.graph.node)
    # forward, objective (kept), backward, then at most three kept nodes: unscale, grad, loss
    start = max(i for i, n in enumerate(nodes) if n.name in kept and i < len(nodes) - 3)
    types = _elem_types(model)
    tensors = [o for n in model.graph.node[start + 1:] for o in n.output
               if types.get(o) == onnx.TensorProto.FLOAT and o not in ("grad", "loss") and n.name not in kept]
    model.graph.output.extend([onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors])
    dm = DreamModel.load(name, device="cpu", threads=2)
    x = dm.to_model_space(_china(*size))
    sess = _cpu(model.SerializeToString())
    one = sess.run(["grad", *tensors], {fg.image: x, "layer_weights": np.ones(len(spec.layers), np.float32)})
    two = sess.run(tensors, {fg.image: x, "layer_weights": np.full(len(spec.layers), 2.0, np.float32)})
    linear = [a for a, b in zip(one[1:], two, strict=True) if np.abs(a).max() > 0 and np.allclose(b, 2 * a, rtol=1e-4)]
    assert len(linear) > 10
    return np.concatenate([a.ravel() for a in linear]), one[0]


@pytest.mark.slow
def test_loss_scaling_keeps_the_backward_pass_inside_fp16s_range() -> None:
    """Measured on the float32 step, where every value is exact: without a scale, 2.8 % of the
    starter's nonzero gradient values at 640x360 are below float16's smallest subnormal (they
    would become 0) and most are subnormal; with GRAD_SCALE none becomes 0, and the image
    gradient is the same. At the other end, EfficientNet-Lite0's largest gradient value at its
    smallest octave stays at least 4x below float16's largest value with GRAD_SCALE, where 2^16
    would pass it (inf, then NaN)."""
    tiny, normal, fp16_max = 2.0**-24, 2.0**-14, 65504.0
    plain, g1 = _backward_values("starter", (640, 360), 1.0)
    scaled, gs = _backward_values("starter", (640, 360), GRAD_SCALE)
    plain, scaled = np.abs(plain[plain != 0]), np.abs(scaled[scaled != 0])
    assert np.mean(plain < tiny / 2) > 0.01  # these round to 0 in float16
    assert np.mean(plain < normal) > 0.5
    assert np.mean(scaled < tiny / 2) < 1e-4
    assert np.mean(scaled < normal) < 0.1
    np.testing.assert_allclose(gs, g1, rtol=1e-4, atol=1e-6 * float(np.abs(g1).max()))
    lite, _ = _backward_values("efficientnet-lite0", (64, 48), GRAD_SCALE)
    top = float(np.abs(lite).max())
    assert top * 4 <= fp16_max
    assert top * (2.0**16 / GRAD_SCALE) > fp16_max


def test_fp16_without_cuda_warns_once_and_runs_fp32(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``device = "cpu"`` (``run --device cpu``) with fp16, and ``auto`` where there is no CUDA:
    one warning naming fp16, CUDA and the fix, then an fp32 step."""
    with caplog.at_level(logging.WARNING, logger="dreamstate.models"):
        m = DreamModel.load("starter", device="cpu", cache_dir=cache, precision="fp16")
    warned = [r.getMessage() for r in caplog.records if "fp16" in r.getMessage()]
    assert len(warned) == 1 and "needs CUDA" in warned[0] and "runs in fp32" in warned[0], warned
    assert "precision = \"fp32\"" in warned[0]
    assert m.precision == "fp32" and m.provider == "CPUExecutionProvider"
    assert m.step_path == compile_cached("starter", cache_dir=cache).path
    if HAVE_CUDA:
        return  # auto finds CUDA here: the gpu test covers it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dreamstate.models"):
        m = DreamModel.load("starter", device="auto", cache_dir=cache, precision="fp16")
    warned = [r.getMessage() for r in caplog.records if "fp16" in r.getMessage()]
    assert len(warned) == 1 and "no CUDA provider" in warned[0], warned
    assert m.precision == "fp32"
    m32 = DreamModel.load("starter", device="auto", cache_dir=cache)
    assert m32.precision == "fp32"
    with pytest.raises(ModelError, match="precision 'half'"):
        DreamModel.load("starter", device="auto", cache_dir=cache, precision="half")


def test_the_show_refuses_fp16_on_the_cpu_and_run_device_cpu_falls_back(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """``[output] device = "cpu"`` with ``precision = "fp16"`` is refused when the show loads,
    naming the key and the fix; an unknown precision is refused too; a show asking for fp16 with
    ``auto`` loads, and ``run --device cpu`` (the runtime's override) warns and dreams in fp32."""
    from dreamstate.engine.core.show import read_show
    from dreamstate.engine.runtime.app import load_show_model

    show = tmp_path / "s.toml"
    show.write_text(SCENES + '[output]\ndevice = "cpu"\nprecision = "fp16"\n')
    with pytest.raises(ShowError, match=r"output\.precision = \"fp16\" needs CUDA") as err:
        read_show(show)
    assert "precision = \"fp32\"" in str(err.value) and "device = \"auto\"" in str(err.value)
    show.write_text(SCENES + '[output]\nprecision = "fp8"\n')
    with pytest.raises(ShowError, match="precision"):
        read_show(show)
    show.write_text(SCENES + '[output]\nprecision = "fp16"\n')
    loaded = read_show(show)
    assert loaded.show.output.precision == "fp16" and read_show(None).show.output.precision == "fp32"
    out = loaded.show.output
    on_cpu = loaded.with_show(loaded.show.model_copy(update={"output": out.model_copy(update={"device": "cpu"})}))
    with caplog.at_level(logging.WARNING, logger="dreamstate.models"):
        m = load_show_model(on_cpu, ["block2"], False)
    assert m.precision == "fp32" and m.provider == "CPUExecutionProvider"
    assert sum("fp16 needs CUDA" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.skipif(HAVE_CUDA, reason="with CUDA fp16 runs: there is nothing to warn about")
def test_an_fp16_show_without_cuda_warns_once_from_its_check_to_its_dream(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``run`` checks the show (compiling what it will dream: fp32 here), then loads the model:
    one warning in all, not one from each."""
    from dreamstate.engine.runtime.app import load_show_model
    from dreamstate.engine.runtime.showfile import load_show

    show = tmp_path / "s.toml"
    show.write_text(SCENES + '[output]\nprecision = "fp16"\n')
    with caplog.at_level(logging.WARNING, logger="dreamstate.models"):
        loaded = load_show(show)
        m = load_show_model(loaded, ["block2"], False)
    assert m.precision == "fp32"
    assert sum("fp16 needs CUDA" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.usefixtures("restore_logging")
def test_check_refuses_fp16_on_the_cpu(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``dreamstate check`` on the same show: a nonzero exit and the key path in the message."""
    from dreamstate.engine.tools.cli import main as cli_main

    show = tmp_path / "s.toml"
    show.write_text(SCENES + '[output]\ndevice = "cpu"\nprecision = "fp16"\n')
    code = cli_main(["check", str(show)])
    assert code != 0
    assert "output.precision = \"fp16\" needs CUDA" in capfd.readouterr().err


@pytest.mark.gpu
def test_fp16_on_cuda_agrees_and_the_objective_rises(shared_models: Path, cache: Path) -> None:
    if not HAVE_CUDA:
        pytest.skip("no CUDA provider: pip install 'dreamstate[gpu]' on a machine with a GPU")
    for name in ("starter", "squeezenet", "efficientnet-lite0"):
        source = _source(name, shared_models)
        m32 = DreamModel.load(source, device="cuda", cache_dir=cache)
        m16 = DreamModel.load(source, device="cuda", cache_dir=cache, precision="fp16")
        assert m16.precision == "fp16" and m16.provider == "CUDAExecutionProvider"
        x = m32.to_model_space(_china(640, 360))
        g32, _ = m32.step(x)
        g16, _ = m16.step(x)
        cos = float(np.sum(g32 * g16) / (np.linalg.norm(g32) * np.linalg.norm(g16)))
        assert np.isfinite(g16).all() and cos >= COSINE_BOUND[name], f"{name}: cosine {cos:.4f}"
        losses = []
        for _ in range(8):
            g, loss = m16.step(x)
            losses.append(loss)
            x = m16.clip(x + 1.5 * m16.pixel_scale * g / (np.abs(g).mean() + 1e-12))
        assert m16.step(x)[1] > losses[0], (name, losses)


@pytest.mark.slow
@pytest.mark.usefixtures("restore_logging")
def test_bench_dream_and_render_take_precision(shared_models: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``bench dream --precision fp16`` and ``bench render --precision fp16`` on a CPU: the
    fp16-needs-CUDA warning, then fp32 figures that say so."""
    from dreamstate.engine.tools.cli import main as cli_main

    assert cli_main(["bench", "dream", "--model", "starter", "--sizes", "64x48", "--repeat", "1",
                     "--no-torch", "--threads", "1", "--precision", "fp16"]) == 0
    dream = capfd.readouterr()
    assert cli_main(["bench", "render", "--model", "starter", "--seconds", "1", "--warmup", "0.2",
                     "--dream-size", "64x48", "--output-size", "96x64", "--threads", "1",
                     "--flicker-seconds", "0.5", "--precision", "fp16"]) == 0
    render = capfd.readouterr()
    for run in (dream, render):
        assert "precision fp16 needs CUDA" in run.err
    assert "starter" in dream.out and "starter fp16" not in dream.out  # it ran fp32, and says so by omission
    assert re.search(r"dream precision\s+.\s+fp32", render.out), render.out
