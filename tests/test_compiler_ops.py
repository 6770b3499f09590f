"""Every supported op: the compiled gradient matches central finite differences (fp64).

Each case builds a tiny random ONNX graph with onnx.helper, compiles a dream step for its last
tensor, evaluates the step in float64 (onnx reference evaluator) and compares it with finite
differences of the forward model; onnxruntime's fp32 result of the same graph is checked too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from dreamstate.models.backward import Lowering
from dreamstate.models.compiler import compile_step
from tests.test_compiler_helpers import G, check_gradient, forward_graph, tiny

Case = tuple[Callable[[G], str], tuple[int, ...]]


def _after_conv(op: str, **attrs: Any) -> Callable[[G], str]:
    def build(g: G) -> str:
        return str(g.op(op, [g.conv("x", 2, 3, 3, pads=[1, 1, 1, 1])], **attrs))

    return build


def _pool(op: str, **attrs: Any) -> Callable[[G], str]:
    def build(g: G) -> str:
        h = g.op("Relu", [g.conv("x", 2, 3, 3, pads=[1, 1, 1, 1])]) if op == "MaxPool" else g.conv("x", 2, 3, 1)
        return str(g.op(op, [h], **attrs))

    return build


CASES: dict[str, Case] = {
    "conv-s1-p1": (lambda g: g.conv("x", 2, 4, 3, pads=[1, 1, 1, 1]), (1, 2, 9, 9)),
    "conv-s2-odd": (lambda g: g.conv("x", 2, 4, 3, strides=[2, 2], pads=[1, 1, 1, 1]), (1, 2, 11, 10)),
    "conv-s3-valid": (lambda g: g.conv("x", 2, 3, 3, strides=[3, 3]), (2, 2, 13, 11)),
    "conv-groups": (lambda g: g.conv("x", 4, 4, 3, group=2, pads=[1, 0, 1, 2]), (1, 4, 8, 9)),
    "conv-depthwise-dil": (lambda g: g.conv("x", 3, 3, 3, group=3, dilations=[2, 2], pads=[2, 2, 2, 2]), (1, 3, 9, 9)),
    "conv-same-upper-s2": (lambda g: g.conv("x", 2, 3, 3, strides=[2, 2], auto_pad="SAME_UPPER"), (1, 2, 10, 9)),
    "conv-same-lower-s2": (lambda g: g.conv("x", 2, 3, 4, strides=[2, 2], auto_pad="SAME_LOWER"), (1, 2, 9, 11)),
    "conv-same-upper-s1": (lambda g: g.conv("x", 2, 3, 4, auto_pad="SAME_UPPER"), (1, 2, 8, 7)),
    "conv-valid-k1": (lambda g: g.conv("x", 2, 5, 1, auto_pad="VALID"), (1, 2, 6, 6)),
    "relu": (_after_conv("Relu"), (1, 2, 8, 8)),
    "leakyrelu": (_after_conv("LeakyRelu", alpha=0.1), (1, 2, 8, 8)),
    "clip": (lambda g: str(g.op("Clip", [g.conv("x", 2, 3, 3, pads=[1, 1, 1, 1]), g.c(-0.5), g.c(0.7)])), (1, 2, 8, 8)),
    "clip-min-only": (lambda g: str(g.op("Clip", [g.conv("x", 2, 3, 3), g.c(0.0)])), (1, 2, 8, 8)),
    "sigmoid": (_after_conv("Sigmoid"), (1, 2, 8, 8)),
    "hardsigmoid": (_after_conv("HardSigmoid", alpha=0.3, beta=0.4), (1, 2, 8, 8)),
    "hardswish": (lambda g: str(g.op("HardSwish", [g.op("Mul", [g.conv("x", 2, 3, 3), g.c(4.0)])])), (1, 2, 8, 8)),
    "maxpool-3x3-s2": (_pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2]), (1, 2, 11, 11)),
    "maxpool-3x3-s2-ceil": (_pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), (1, 2, 10, 12)),
    "maxpool-pads": (_pool("MaxPool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), (1, 2, 7, 7)),
    "maxpool-2x2": (_pool("MaxPool", kernel_shape=[2, 2], strides=[2, 2]), (2, 2, 8, 9)),
    "avgpool": (_pool("AveragePool", kernel_shape=[3, 3], strides=[2, 2]), (1, 2, 11, 11)),
    "avgpool-pad-exclude": (
        _pool("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        (1, 2, 9, 10),
    ),
    "avgpool-pad-include": (
        _pool("AveragePool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
        (1, 2, 7, 8),
    ),
    "avgpool-ceil": (_pool("AveragePool", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1), (1, 2, 10, 10)),
    "avgpool-ceil-include": (
        _pool("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
        (1, 2, 10, 9),
    ),
    "globalavgpool": (lambda g: str(g.op("GlobalAveragePool", [g.conv("x", 2, 3, 3)])), (1, 2, 8, 7)),
    "reducemean-hw-keep": (
        lambda g: str(g.op("ReduceMean", [g.conv("x", 2, 3, 3), g.c([2, 3], np.int64)])),
        (2, 2, 8, 7),
    ),
    "reducemean-c-drop": (
        lambda g: str(g.op("ReduceMean", [g.conv("x", 2, 3, 3), g.c([1, -1], np.int64)], keepdims=0)),
        (1, 2, 7, 6),
    ),
    "lrn-5": (lambda g: str(g.op("LRN", [g.conv("x", 2, 7, 3)], size=5, alpha=0.5, beta=0.75, bias=1.0)), (1, 2, 7, 7)),
    "lrn-3": (lambda g: str(g.op("LRN", [g.conv("x", 2, 6, 3)], size=3, alpha=0.3, beta=0.6, bias=2.0)), (1, 2, 6, 6)),
    "batchnorm": (
        lambda g: str(
            g.op(
                "BatchNormalization",
                [
                    g.conv("x", 2, 3, 3),
                    g.c([1.5, -0.5, 2.0]),
                    g.c([0.1, 0.2, 0.3]),
                    g.c([0.3, -0.2, 0.1]),
                    g.c([0.5, 2.0, 1.0]),
                ],
                epsilon=1e-3,
            )
        ),
        (1, 2, 7, 7),
    ),
    "concat": (
        lambda g: str(
            g.op("Concat", [g.conv("x", 2, 3, 1), g.op("Relu", [g.conv("x", 2, 2, 3, pads=[1, 1, 1, 1])])], axis=1)
        ),
        (1, 2, 6, 6),
    ),
    "split": (
        lambda g: str(
            g.op("Mul", g.op("Split", [g.conv("x", 2, 4, 3), g.c([1, 3], np.int64)], n_out=2, axis=1)[::-1][:1] * 2)
        ),
        (1, 2, 6, 6),
    ),
    "split-both": (
        lambda g: str(g.op("Add", g.op("Split", [g.conv("x", 2, 4, 3)], n_out=2, axis=1, num_outputs=2))),
        (1, 2, 6, 6),
    ),
    "add-broadcast-const": (lambda g: str(g.op("Add", [g.conv("x", 2, 3, 3), g.w(3, 1, 1)])), (1, 2, 6, 6)),
    "sub-both": (lambda g: str(g.op("Sub", [g.w(3, 1, 1), g.op("Relu", [g.conv("x", 2, 3, 3)])])), (1, 2, 6, 6)),
    "mul-broadcast-both": (
        lambda g: str(g.op("Mul", [g.conv("x", 2, 3, 3), g.op("GlobalAveragePool", [g.conv("x", 2, 3, 1)])])),
        (1, 2, 6, 7),
    ),
    "div-both": (
        lambda g: str(
            g.op(
                "Div",
                [
                    g.conv("x", 2, 3, 3),
                    g.op("Add", [g.op("Sigmoid", [g.op("GlobalAveragePool", [g.conv("x", 2, 3, 1)])]), g.c(0.5)]),
                ],
            )
        ),
        (1, 2, 6, 6),
    ),
    "reshape": (lambda g: str(g.op("Reshape", [g.conv("x", 2, 4, 3), g.c([0, 2, 2, -1], np.int64)])), (1, 2, 5, 5)),
    "flatten-gemm": (
        lambda g: str(
            g.op(
                "Gemm",
                [g.op("Flatten", [g.conv("x", 2, 3, 3)], axis=1), g.w(5, 27), g.w(5)],
                transB=1,
                alpha=0.7,
                beta=0.3,
            )
        ),
        (1, 2, 5, 5),
    ),
    "gemm-transA": (
        lambda g: str(
            g.op(
                "Gemm",
                [g.op("Transpose", [g.op("Flatten", [g.conv("x", 2, 3, 3)])], perm=[1, 0]), g.w(27, 4)],
                transA=1,
            )
        ),
        (1, 2, 5, 5),
    ),
    "transpose": (lambda g: str(g.op("Transpose", [g.conv("x", 2, 3, 3)], perm=[0, 2, 3, 1])), (1, 2, 6, 5)),
    "matmul": (
        lambda g: str(g.op("Add", [g.op("MatMul", [g.op("Flatten", [g.conv("x", 2, 3, 3)]), g.w(48, 6)]), g.w(1, 6)])),
        (2, 2, 6, 6),
    ),
    "matmul-spatial": (
        lambda g: str(
            g.op("MatMul", [g.conv("x", 2, 3, 3), g.op("Transpose", [g.conv("x", 2, 3, 3)], perm=[0, 1, 3, 2])])
        ),
        (1, 2, 6, 6),
    ),
    "dropout-identity": (
        lambda g: str(g.op("Identity", [g.op("Dropout", [g.conv("x", 2, 3, 3)], n_out=1)])),
        (1, 2, 6, 6),
    ),
    "softmax": (lambda g: str(g.op("Softmax", [g.op("Flatten", [g.conv("x", 2, 3, 3)])], axis=1)), (1, 2, 5, 5)),
    "unsqueeze-squeeze": (
        lambda g: str(
            g.op("Squeeze", [g.op("Unsqueeze", [g.conv("x", 2, 3, 3), g.c([0], np.int64)]), g.c([0], np.int64)])
        ),
        (1, 2, 5, 5),
    ),
    "shape-driven-reshape": (
        lambda g: str(
            g.op(
                "Reshape",
                [
                    g.conv("x", 2, 3, 3),
                    g.op(
                        "Concat",
                        [
                            g.op("Slice", [g.op("Shape", ["x"]), g.c([0], np.int64), g.c([1], np.int64)]),
                            g.c([-1], np.int64),
                        ],
                        axis=0,
                    ),
                ],
            )
        ),
        (1, 2, 6, 6),
    ),
}


def _pad(mode: str, pads: list[int], value: float | None = None, axes: list[int] | None = None) -> Callable[[G], str]:
    """Pad after a conv, then a Relu, so the Pad's own backward is exercised (not folded)."""

    def build(g: G) -> str:
        ins = [g.conv("x", 2, 3, 3), g.c(pads, np.int64)]
        if value is not None or axes is not None:
            ins.append(g.c(0.0 if value is None else value))
        if axes is not None:
            ins.append(g.c(axes, np.int64))
        return str(g.op("Relu", [g.op("Pad", ins, mode=mode)]))

    return build


def _pad_runtime_pads(g: G) -> str:
    """Constant-mode Pad whose pads come from the image shape (W end pad = H // 4)."""
    h = g.op("Slice", [g.op("Shape", ["x"]), g.c([2], np.int64), g.c([3], np.int64)])
    pads = g.op("Concat", [g.c([0, 0, 1, 0, 0, 0, 0], np.int64), g.op("Div", [h, g.c([4], np.int64)])], axis=0)
    return str(g.op("Relu", [g.op("Pad", [g.conv("x", 2, 3, 3), pads, g.c(0.25)])]))


CASES.update(
    {
        "pad-constant": (_pad("constant", [0, 0, 1, 2, 0, 0, 2, 1]), (1, 2, 7, 8)),
        "pad-constant-value-negative": (_pad("constant", [0, 0, -1, 2, 0, 0, 1, -2], value=0.5), (1, 2, 8, 8)),
        "pad-constant-channels": (_pad("constant", [0, 1, 0, 0, 0, 2, 1, 0]), (1, 2, 6, 6)),
        "pad-constant-runtime-pads": (_pad_runtime_pads, (1, 2, 9, 7)),
        "pad-reflect": (_pad("reflect", [0, 0, 2, 1, 0, 0, 1, 2]), (1, 2, 8, 7)),
        "pad-reflect-negative": (_pad("reflect", [0, 0, -1, 2, 0, 0, 2, -1]), (1, 2, 8, 8)),
        "pad-reflect-axes": (_pad("reflect", [1, 3, 2, 1], axes=[2, -1]), (1, 2, 8, 9)),
        "pad-edge": (_pad("edge", [0, 0, 3, 1, 0, 0, 0, 2]), (1, 2, 7, 7)),
        "pad-edge-negative": (_pad("edge", [0, 0, 2, -2, 0, 0, -1, 3]), (1, 2, 8, 8)),
        "pad-then-conv": (
            lambda g: g.conv(
                g.op("Pad", [g.op("Relu", [g.conv("x", 2, 3, 3)]), g.c([0, 0, 0, 1, 0, 0, 1, 2], np.int64)]),
                3, 4, 3, strides=[2, 2],
            ),
            (1, 2, 10, 9),
        ),
    }
)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_finite_differences(case: str) -> None:
    build, shape = CASES[case]
    model, out = tiny(build, shape, seed=sum(map(ord, case)))
    check_gradient(model, [out], shape=shape, seed=3)


LOWERINGS = [
    Lowering(maxpool="argmax"),
    Lowering(blocks_pool=False, subpixel=True),
    Lowering(relu="where", conv_as_conv=False),
    Lowering(relu="sign"),
    Lowering(maxpool="separable"),
    Lowering(relu_pool=False),
    Lowering(blocks_form="share"),
    Lowering(blocks_form="argmax"),
]


@pytest.mark.parametrize("lowering", LOWERINGS, ids=lambda lw: lw.key())
@pytest.mark.parametrize("case", [c for c in sorted(CASES) if c.startswith(("maxpool", "conv", "relu"))])
def test_alternative_lowerings_are_exact_too(case: str, lowering: Lowering) -> None:
    build, shape = CASES[case]
    model, out = tiny(build, shape, seed=sum(map(ord, case)))
    check_gradient(model, [out], shape=shape, seed=4, lowering=lowering)


def _maxpool_reference(x: np.ndarray, **attrs: Any) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort
    from onnx import helper

    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
    outs = [helper.make_tensor_value_info("y", 1, None), helper.make_tensor_value_info("i", 7, None)]
    graph = helper.make_graph([node], "p", [helper.make_tensor_value_info("x", 1, None)], outs)
    ref = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    y, idx = ort.InferenceSession(ref.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    return y, idx


TIE_CASES: dict[str, dict[str, Any]] = {
    "3x3s2-pads-ceil": {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1},
    "3x3s2": {"kernel_shape": [3, 3], "strides": [2, 2]},
    "2x2s2": {"kernel_shape": [2, 2], "strides": [2, 2]},
    "3x3s3": {"kernel_shape": [3, 3], "strides": [3, 3]},
}


@pytest.mark.parametrize("case", sorted(TIE_CASES))
@pytest.mark.parametrize("mode", ["indices", "argmax", "separable", "blocks-off", "blocks-argmax"])
def test_maxpool_ties_break_like_onnxruntime_argmax(mode: str, case: str) -> None:
    """Integer-valued input: many exact ties. Every lowering must give the gradient exactly to
    the pixel onnxruntime's MaxPool picks (its Indices output: first maximum, row-major)."""
    import onnxruntime as ort

    attrs: dict[str, Any] = TIE_CASES[case]
    lowering = {"blocks-off": Lowering(blocks_pool=False), "blocks-argmax": Lowering(blocks_form="argmax")}.get(
        mode, Lowering(maxpool=mode))
    g = G((1, 2, 9, 10))
    pooled = g.op("MaxPool", ["x"], **attrs)
    step, _ = compile_step(forward_graph(g.model(str(pooled))), [str(pooled)], lowering=lowering)
    x = np.random.default_rng(0).integers(0, 3, (1, 2, 9, 10)).astype(np.float32)
    sess = ort.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])
    grad, _ = sess.run(["grad", "loss"], {"x": x, "layer_weights": np.ones(1, np.float32)})
    y, idx = _maxpool_reference(x, **attrs)
    assert (x.reshape(-1)[idx.ravel()] == y.ravel()).all()
    expected = np.zeros(x.size, np.float64)
    np.add.at(expected, idx.ravel(), (y / y.size).ravel())  # d(mean(y^2)/2)/dy = y / numel
    np.testing.assert_allclose(grad.ravel(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("source", ["relu", "concat", "concat-layer"])
@pytest.mark.parametrize("case", sorted(TIE_CASES))
@pytest.mark.parametrize("mode", ["indices", "argmax", "separable"])
def test_relu_mask_moved_onto_the_pool_output_is_exact(mode: str, case: str, source: str) -> None:
    """Relu (or Concat of Relus) -> MaxPool with many ties (zeros from the Relu, equal
    integers): applying the Relu mask on the pool output (relu_pool) gives bit-identical
    gradients to masking the input; also when the pool input is itself a dream layer."""
    import onnxruntime as ort

    g = G((1, 2, 9, 10))
    if source == "relu":
        h = g.op("Relu", ["x"])
    else:
        h = g.op("Concat", [g.op("Relu", ["x"]), g.op("Relu", [g.conv("x", 2, 2, 1)])], axis=1)
    pooled = g.op("MaxPool", [h], **TIE_CASES[case])
    layers = [str(h), str(pooled)] if source == "concat-layer" else [str(pooled)]
    fg = forward_graph(g.model(str(pooled)))
    x = np.random.default_rng(1).integers(-1, 3, (1, 2, 9, 10)).astype(np.float32)
    grads = []
    for relu_pool in (True, False):
        step, _ = compile_step(fg, layers, lowering=Lowering(maxpool=mode, relu_pool=relu_pool))
        moved = any("drelu_pooled" in n.output[0] for n in step.graph.node)
        assert moved == relu_pool
        sess = ort.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {"x": x, "layer_weights": np.asarray([0.7, -1.3][: len(layers)], np.float32)}
        grads.append(sess.run(["grad"], feeds)[0])
    assert np.abs(grads[1]).max() > 0
    np.testing.assert_array_equal(grads[0], grads[1])


def test_relu_mask_moved_for_concat_layer_matches_finite_differences() -> None:
    g = G((1, 2, 11, 11), seed=9)
    h = g.op(
        "Concat",
        [g.op("Relu", [g.conv("x", 2, 3, 3, pads=[1, 1, 1, 1])]), g.op("Relu", [g.conv("x", 2, 2, 1)])],
        axis=1,
    )
    pooled = g.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2])
    check_gradient(g.model(str(pooled)), [str(h), str(pooled)], weights=[0.5, 2.0], shape=(1, 2, 11, 11))


@pytest.mark.parametrize("second_reader", [False, True])
def test_relu_read_elsewhere_keeps_its_own_mask(second_reader: bool) -> None:
    """The Relu mask moves onto the pool output only when the pool alone reads the Relu: here
    the Relu output is also a dream layer with a guide objective (its seed is not zero where
    the Relu is), or it also feeds a conv; gradients stay exact."""

    def build(g: G) -> str:
        r = g.op("Relu", [g.conv("x", 2, 3, 3, pads=[1, 1, 1, 1])])
        g.extra = r  # type: ignore[attr-defined]
        p = g.op("MaxPool", [r], kernel_shape=[3, 3], strides=[2, 2])
        if second_reader:
            return str(g.op("Add", [p, g.conv(r, 3, 3, 3, strides=[2, 2])]))
        return str(p)

    g = G((1, 2, 11, 11), seed=5)
    out = build(g)
    if second_reader:
        check_gradient(g.model(out), [out], shape=(1, 2, 11, 11))
        return
    guides = [np.random.default_rng(k).standard_normal((1, 3, 4, 5)) for k in range(2)]
    layers = [g.extra, out]  # type: ignore[attr-defined]
    check_gradient(g.model(out), layers, objective="guide", extra=guides, shape=(1, 2, 11, 11))


def test_concat_of_relus_read_elsewhere_keeps_their_masks() -> None:
    g = G((1, 2, 11, 11), seed=6)
    r = g.op("Relu", [g.conv("x", 2, 3, 3, pads=[1, 1, 1, 1])])
    h = g.op("Concat", [r, g.op("Relu", [g.conv("x", 2, 2, 1)])], axis=1)
    pooled = g.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2])
    out = g.op("Add", [pooled, g.conv(r, 3, 5, 3, strides=[2, 2])])
    check_gradient(g.model(str(out)), [str(out)], shape=(1, 2, 11, 11))


def test_two_layers_weighted_and_shared_path() -> None:
    def build(g: G) -> str:
        a = g.op("Relu", [g.conv("x", 2, 4, 3, pads=[1, 1, 1, 1])])
        g.extra = a  # type: ignore[attr-defined]
        b = g.op("MaxPool", [g.conv(a, 4, 3, 3)], kernel_shape=[3, 3], strides=[2, 2])
        return str(b)

    g = G((1, 2, 10, 10), seed=7)
    out = build(g)
    first = g.extra  # type: ignore[attr-defined]
    check_gradient(g.model(out), [first, out], weights=[0.3, 2.0], shape=(1, 2, 10, 10))


def test_channels_objective() -> None:
    model, out = tiny(lambda g: str(g.op("Relu", [g.conv("x", 2, 5, 3)])), (1, 2, 7, 7))
    cw = np.array([1.0, 0.0, -2.0, 0.5, 3.0])
    check_gradient(model, [out], objective="channels", extra=[cw], shape=(1, 2, 7, 7))


def test_class_objective_on_logits() -> None:
    model, out = tiny(lambda g: str(g.op("Gemm", [g.op("Flatten", [g.conv("x", 2, 3, 3)]), g.w(27, 6)])), (2, 2, 5, 5))
    cw = np.eye(6)[4]
    check_gradient(model, [out], objective="class", extra=[cw], shape=(2, 2, 5, 5))


def test_guide_objective_best_match() -> None:
    model, out = tiny(lambda g: str(g.op("Relu", [g.conv("x", 2, 4, 3)])), (1, 2, 8, 8))
    guide = np.random.default_rng(5).standard_normal((1, 4, 3, 5))
    check_gradient(model, [out], objective="guide", extra=[guide], shape=(1, 2, 8, 8))


def test_old_opset_model_is_converted() -> None:
    """Opset 9 graph (Clip with attributes, Dropout ratio) compiles through version conversion."""

    def build(g: G) -> str:
        h = g.op("Clip", [g.conv("x", 2, 3, 3)], min=-0.3, max=0.4)
        return str(g.op("Dropout", [h], ratio=0.5))

    model, out = tiny(build, (1, 2, 7, 7), opset=9)
    check_gradient(model, [out], shape=(1, 2, 7, 7))


def test_pad_attribute_form_of_old_opsets() -> None:
    """Opset 2-10 Pad takes pads and value as attributes; the model is converted and compiles."""

    def build(g: G) -> str:
        h = g.op("Pad", [g.conv("x", 2, 3, 3)], mode="reflect", pads=[0, 0, 1, 2, 0, 0, 2, 1])
        return str(g.op("Relu", [h]))

    model, out = tiny(build, (1, 2, 7, 8), opset=9)
    check_gradient(model, [out], shape=(1, 2, 7, 8))


@pytest.mark.parametrize("fold", [True, False])
def test_zero_pads_fold_into_the_conv_exactly(fold: bool) -> None:
    build, shape = CASES["pad-then-conv"]
    model, out = tiny(build, shape, seed=7)
    lowering = Lowering(fold_pads=fold)
    check_gradient(model, [out], shape=shape, seed=8, lowering=lowering)
    fg = forward_graph(model)
    (pad_out,) = [n.outputs[0] for n in fg.nodes if n.op == "Pad"]
    step, _ = compile_step(fg, [out], lowering=lowering)
    assert (pad_out not in {o for n in step.graph.node for o in n.output}) == fold


def test_pad_folding_leaves_what_it_cannot_fold() -> None:
    """A nonzero fill, a Pad read by a non-Conv too, and a reflect Pad all stay Pads."""
    from dreamstate.models.graph import fold_pads

    def build(g: G) -> str:
        a = g.op("Pad", ["x", g.c([0, 0, 1, 1, 0, 0, 1, 1], np.int64), g.c(0.5)])
        b = g.op("Pad", ["x", g.c([0, 0, 1, 1, 0, 0, 1, 1], np.int64)], mode="reflect")
        c = g.op("Pad", ["x", g.c([0, 0, 1, 1, 0, 0, 1, 1], np.int64)])
        return str(g.op("Add", [g.op("Add", [g.conv(a, 2, 2, 3), g.conv(b, 2, 2, 3)]), g.op("Relu", [c])]))

    model, _ = tiny(build, (1, 2, 6, 6))
    fg = forward_graph(model)
    assert sum(n.op == "Pad" for n in fold_pads(fg.nodes, fg.consts)) == 3


@pytest.mark.parametrize("what", ["wrap", "reflect-runtime-pads"])
def test_unsupported_pads_are_clear_errors(what: str) -> None:
    from dreamstate.engine.core.errors import ModelError

    def build(g: G) -> str:
        if what == "wrap":
            return str(g.op("Pad", [g.conv("x", 2, 3, 3), g.c([0, 0, 1, 1, 0, 0, 1, 1], np.int64)], mode="wrap"))
        h = g.op("Slice", [g.op("Shape", ["x"]), g.c([2], np.int64), g.c([3], np.int64)])
        pads = g.op("Concat", [g.c([0, 0, 1, 0, 0, 0, 0], np.int64), g.op("Div", [h, g.c([4], np.int64)])], axis=0)
        return str(g.op("Pad", [g.conv("x", 2, 3, 3), pads], mode="reflect"))

    model, out = tiny(build, (1, 2, 8, 8), opset=19 if what == "wrap" else 18)
    with pytest.raises(ModelError, match="Pad node") as err:
        compile_step(forward_graph(model), [out])
    assert ("wrap" in str(err.value)) == (what == "wrap")


@pytest.mark.parametrize("case", ["2x2s2", "3x3s3"])
def test_the_mask_form_of_block_pools_shares_a_tied_window_equally(case: str) -> None:
    """blocks_form "share" (opt-in): on integer input with many exact ties, each window's gradient goes
    in equal shares to its tied maxima (a valid subgradient of max), and where a window has one
    maximum it is exactly the default lowering's."""
    import onnxruntime as ort

    attrs: dict[str, Any] = TIE_CASES[case]
    k = attrs["kernel_shape"][0]
    g = G((1, 2, 9, 10))
    pooled = g.op("MaxPool", ["x"], **attrs)
    fg = forward_graph(g.model(str(pooled)))
    x = np.random.default_rng(5).integers(0, 3, (1, 2, 9, 10)).astype(np.float32)
    grads = {}
    for name, lowering in (("mask", Lowering(blocks_form="share")), ("argmax", Lowering(blocks_form="argmax"))):
        step, _ = compile_step(fg, [str(pooled)], lowering=lowering)
        sess = ort.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])
        grads[name] = sess.run(["grad"], {"x": x, "layer_weights": np.ones(1, np.float32)})[0]
    y, _ = _maxpool_reference(x, **attrs)
    ho, wo = y.shape[2:]
    xc = x[..., : ho * k, : wo * k].reshape(1, 2, ho, k, wo, k)
    win = xc == y[:, :, :, None, :, None]
    count = win.sum(axis=(3, 5), keepdims=True)
    gm = grads["mask"][..., : ho * k, : wo * k].reshape(1, 2, ho, k, wo, k)
    ga = grads["argmax"][..., : ho * k, : wo * k].reshape(1, 2, ho, k, wo, k)
    np.testing.assert_allclose(gm.sum(axis=(3, 5)), ga.sum(axis=(3, 5)), rtol=1e-6)  # each window's total
    np.testing.assert_allclose(gm, np.where(win, ga.sum(axis=(3, 5), keepdims=True) / count, 0.0), rtol=1e-6)
    assert (count > 1).any() and (count == 1).any()  # the input has both kinds of window
    np.testing.assert_array_equal(grads["mask"][..., ho * k:, :], 0)  # rows past the last window
