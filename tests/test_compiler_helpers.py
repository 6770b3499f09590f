"""Helpers for the dream-compiler tests: tiny ONNX graphs, fp64 evaluation, finite differences.

The compiled step graph is evaluated in float64 with onnx's reference evaluator (every float
tensor converted to double); the loss is recomputed independently from the *forward* model's
layer activations (also fp64) and differentiated by central finite differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from dreamstate.models.backward import Lowering
from dreamstate.models.compiler import compile_step, forward_features_model
from dreamstate.models.graph import ForwardGraph, load_forward


class G:
    """A tiny forward graph under construction: input ``x`` (N, C, H, W)."""

    def __init__(self, shape: Sequence[int], seed: int = 0) -> None:
        self.shape = list(shape)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def w(self, *shape: int, scale: float = 0.5) -> str:
        self.n += 1
        name = f"w{self.n}"
        arr = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def c(self, value: Any, dtype: Any = np.float32) -> str:
        self.n += 1
        name = f"k{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        self.n += 1
        outs = [f"t{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"{op_type.lower()}{self.n}", **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x: str, cin: int, cout: int, k: int = 3, **attrs: Any) -> str:
        group = int(attrs.get("group", 1))
        return str(self.op("Conv", [x, self.w(cout, cin // group, k, k), self.w(cout, scale=0.1)], **attrs))

    def model(self, output: str, opset: int = 18) -> bytes:
        graph = helper.make_graph(
            self.nodes,
            "tiny",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
        return bytes(m.SerializeToString())


class LRN(OpRun):
    """LRN exactly as the ONNX spec (and onnxruntime) define it; onnx 1.23's reference differs."""

    op_domain = ""

    def _run(self, x, *, alpha=None, beta=None, bias=None, size=None):  # type: ignore[no-untyped-def]
        alpha = 1e-4 if alpha is None else alpha
        beta = 0.75 if beta is None else beta
        bias = 1.0 if bias is None else bias
        c = x.shape[1]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        sq = np.stack([(x[:, max(0, i - lo) : min(c - 1, i + hi) + 1] ** 2).sum(1) for i in range(c)], 1)
        return ((x / (bias + alpha / size * sq) ** beta).astype(x.dtype),)


class MaxPool(OpRun):
    """2-D MaxPool with Indices over the *unpadded* input, as onnxruntime computes them.

    onnx 1.23's reference evaluator returns indices into the padded input when pads > 0.
    """

    op_domain = ""

    def _run(  # type: ignore[no-untyped-def]
        self,
        x,
        *,
        auto_pad=None,
        ceil_mode=None,
        dilations=None,
        kernel_shape=None,
        pads=None,
        storage_order=None,
        strides=None,
    ):
        assert auto_pad in (None, "NOTSET", b"NOTSET") and not storage_order
        kh, kw = kernel_shape
        sh, sw = strides or (1, 1)
        dh, dw = dilations or (1, 1)
        pt, pl, pb, pr = pads or (0, 0, 0, 0)
        n, c, h, w = x.shape
        rnd = np.ceil if ceil_mode else np.floor
        oh = int(rnd((h + pt + pb - dh * (kh - 1) - 1) / sh)) + 1
        ow = int(rnd((w + pl + pr - dw * (kw - 1) - 1) / sw)) + 1
        if ceil_mode:  # the last window must start inside the input or the left padding
            oh -= int((oh - 1) * sh >= h + pt)
            ow -= int((ow - 1) * sw >= w + pl)
        y = np.full((n, c, oh, ow), -np.inf, x.dtype)
        idx = np.zeros((n, c, oh, ow), np.int64)
        for i in range(oh):
            for j in range(ow):
                for a in range(kh):
                    for b in range(kw):
                        r, q = i * sh - pt + a * dh, j * sw - pl + b * dw
                        if 0 <= r < h and 0 <= q < w:
                            v = x[:, :, r, q]
                            better = v > y[:, :, i, j]
                            y[:, :, i, j] = np.where(better, v, y[:, :, i, j])
                            flat = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * h * w + r * w + q
                            idx[:, :, i, j] = np.where(better, flat, idx[:, :, i, j])
        return (y, idx)


class ConvTranspose(OpRun):
    """2-D ConvTranspose with groups (onnx 1.23's reference fails to broadcast for group > 1)."""

    op_domain = ""

    def _run(  # type: ignore[no-untyped-def]
        self,
        x,
        w,
        b=None,
        *,
        auto_pad=None,
        dilations=None,
        group=None,
        kernel_shape=None,
        output_padding=None,
        output_shape=None,
        pads=None,
        strides=None,
    ):
        assert auto_pad in (None, "NOTSET", b"NOTSET") and not output_shape and not any(output_padding or [])
        group = group or 1
        n, cin, h, wd = x.shape
        _, mg, kh, kw = w.shape
        sh, sw = strides or (1, 1)
        dh, dw = dilations or (1, 1)
        pt, pl, pb, pr = pads or (0, 0, 0, 0)
        fh, fw = (h - 1) * sh + dh * (kh - 1) + 1, (wd - 1) * sw + dw * (kw - 1) + 1
        y = np.zeros((n, mg * group, fh, fw), x.dtype)
        cg = cin // group
        for gi in range(group):
            xg = x[:, gi * cg : (gi + 1) * cg]
            for a in range(kh):
                for bb in range(kw):
                    contrib = np.einsum("nchw,cm->nmhw", xg, w[gi * cg : (gi + 1) * cg, :, a, bb])
                    y[
                        :,
                        gi * mg : (gi + 1) * mg,
                        a * dh : a * dh + (h - 1) * sh + 1 : sh,
                        bb * dw : bb * dw + (wd - 1) * sw + 1 : sw,
                    ] += contrib
        y = y[:, :, pt : fh - pb, pl : fw - pr]
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        return (y,)


class Pad(OpRun):
    """Pad as onnxruntime computes it (checked in the compiler tests through the fp32 run):
    per axis, negative pads crop first, then positive pads pad the cropped tensor.
    onnx 1.23's reference rejects negative pads."""

    op_domain = ""

    def _run(self, x, pads, constant_value=None, axes=None, *, mode=None):  # type: ignore[no-untyped-def]
        r = x.ndim
        ax = list(range(r)) if axes is None else [int(a) % r for a in axes]
        k = len(ax)
        begin, end = [0] * r, [0] * r
        for j, a in enumerate(ax):
            begin[a], end[a] = int(pads[j]), int(pads[k + j])
        pairs = list(zip(begin, end, strict=True))
        crop = tuple(slice(max(-b, 0), x.shape[a] - max(-e, 0)) for a, (b, e) in enumerate(pairs))
        width = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end, strict=True)]
        mode = (mode.decode() if isinstance(mode, bytes) else mode) or "constant"
        if mode == "constant":
            fill = 0.0 if constant_value is None or np.size(constant_value) == 0 else np.ravel(constant_value)[0]
            return (np.pad(x[crop], width, mode="constant", constant_values=fill),)
        return (np.pad(x[crop], width, mode=mode),)


def reference(model: Any) -> ReferenceEvaluator:
    return ReferenceEvaluator(model, new_ops=[LRN, MaxPool, ConvTranspose, Pad])


def to_double(model: Any) -> Any:
    """A copy of ``model`` with every float32 tensor, Cast and constant turned into float64."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE
            if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    return m


def layer_loss(
    acts: Sequence[np.ndarray], weights: Sequence[float], objective: str, extra: Sequence[np.ndarray] | None = None
) -> float:
    """The documented objective, recomputed in numpy (fp64) from layer activations."""
    total = 0.0
    for k, (a, w) in enumerate(zip(acts, weights, strict=True)):
        if objective == "layers":
            total += w * float(np.mean(a * a)) / 2
        elif objective == "channels":
            assert extra is not None
            cw = extra[k].reshape([1, -1] + [1] * (a.ndim - 2))
            total += w * float(np.sum(cw * a * a)) / a.size / 2
        elif objective == "class":
            assert extra is not None
            cw = extra[k].reshape([1, -1] + [1] * (a.ndim - 2))
            total += w * float(np.sum(cw * a)) / (a.size / a.shape[1])
        elif objective == "guide":
            assert extra is not None
            c = a.shape[1]
            xr = np.moveaxis(a, 1, -1).reshape(a.shape[0], -1, c)
            yr = np.moveaxis(extra[k], 1, -1).reshape(-1, c)
            total += w * float(np.sum(np.max(xr @ yr.T, axis=2))) / a.size
    return total


def check_gradient(
    model_bytes: bytes,
    layers: Sequence[str],
    *,
    objective: str = "layers",
    weights: Sequence[float] | None = None,
    extra: Sequence[np.ndarray] | None = None,
    x: np.ndarray | None = None,
    shape: Sequence[int] | None = None,
    directions: int = 4,
    eps: float = 1e-5,
    seed: int = 0,
    scale: float = 1.0,
    lowering: Lowering | None = None,
) -> dict[str, float]:
    """Compile, then compare the fp64 compiled gradient with central finite differences.

    Also checks onnxruntime's fp32 gradient of the same step graph against the fp64 one.
    Returns the errors measured (for messages).
    """
    import onnxruntime as ort

    fg = load_forward(model_bytes, label="tiny")
    guide = objective == "guide"
    step, info = compile_step(fg, layers, objective="layers" if guide else objective, guide=guide, lowering=lowering)
    rng = np.random.default_rng(seed)
    if x is None:
        assert shape is not None
        x = rng.standard_normal(shape) * scale
    x = np.asarray(x, np.float64)
    w = list(weights) if weights is not None else [1.0] * len(info.layers)
    feeds: dict[str, np.ndarray] = {fg.image: x, "layer_weights": np.asarray(w, np.float64)}
    for k in range(len(info.layers)):
        if objective in ("channels", "class"):
            assert extra is not None
            feeds[f"channel_weights_{k}"] = np.asarray(extra[k], np.float64)
        if guide:
            assert extra is not None
            feeds[f"guide_{k}"] = np.asarray(extra[k], np.float64)
    ref = reference(to_double(step))
    grad64, loss64 = (np.asarray(v) for v in ref.run(["grad", "loss"], feeds))
    assert grad64.shape == x.shape

    fwd = reference(to_double(forward_features_model(fg, info.layers)))

    def loss_at(xx: np.ndarray) -> float:
        acts = [np.asarray(a) for a in fwd.run(None, {fg.image: xx})]
        return layer_loss(acts, w, objective, extra)

    base = loss_at(x)
    assert abs(base - float(loss64)) <= 1e-9 * max(1.0, abs(base)), (base, float(loss64))
    worst = 0.0
    for _ in range(directions):
        d = rng.standard_normal(x.shape)
        fd = (loss_at(x + eps * d) - loss_at(x - eps * d)) / (2 * eps)
        an = float(np.sum(grad64 * d))
        err = abs(fd - an) / max(1e-8, abs(fd), abs(an))
        worst = max(worst, err)
        assert err < 1e-5, f"directional derivative: finite difference {fd!r} vs compiled {an!r}"
    # Single coordinates too (a few of the largest-gradient pixels and a few random ones).
    flat = np.argsort(-np.abs(grad64).ravel())[:3].tolist() + rng.integers(0, x.size, 3).tolist()
    for i in flat:
        d = np.zeros(x.size)
        d[i] = 1.0
        d = d.reshape(x.shape)
        fd = (loss_at(x + eps * d) - loss_at(x - eps * d)) / (2 * eps)
        an = float(grad64.ravel()[i])
        assert abs(fd - an) <= 1e-5 * max(1e-3, np.abs(grad64).max()), f"pixel {i}: fd {fd!r} vs {an!r}"
    # onnxruntime fp32 runs the same graph
    sess = ort.InferenceSession(step.SerializeToString(), providers=["CPUExecutionProvider"])
    g32, l32 = sess.run(["grad", "loss"], {k: v.astype(np.float32) for k, v in feeds.items()})
    ort_err = float(np.abs(g32 - grad64).max() / max(1e-12, np.abs(grad64).max()))
    assert ort_err < 2e-4, f"onnxruntime fp32 gradient differs from fp64 by {ort_err:.2e} (relative)"
    assert abs(float(l32) - float(loss64)) <= 1e-4 * max(1.0, abs(float(loss64)))
    return {"fd": worst, "ort": ort_err}


def tiny(
    build: Callable[[G], str], shape: Sequence[int] = (1, 2, 9, 9), seed: int = 0, opset: int = 18
) -> tuple[bytes, str]:
    g = G(shape, seed)
    out = build(g)
    return g.model(out, opset), out


def forward_graph(model_bytes: bytes) -> ForwardGraph:
    return load_forward(model_bytes, label="tiny")


def test_to_double_converts_every_float_tensor() -> None:
    mb, out = tiny(lambda g: str(g.op("Relu", [g.conv("x", 2, 3)])))
    step, _ = compile_step(forward_graph(mb), [out])
    d = to_double(step)
    assert all(t.data_type != TensorProto.FLOAT for t in d.graph.initializer)
    assert d.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
