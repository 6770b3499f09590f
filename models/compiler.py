"""The dream compiler: forward classifier ONNX -> "dream step" ONNX (forward + backward to the image).

The step graph uses standard ONNX ops only (opset 18, IR version 10), so the same file runs in
stock onnxruntime on CPU and CUDA. Inputs and outputs of the step graph:

- ``image`` (N, C, H, W) float32, N/H/W dynamic: one session serves every octave size.
- ``layer_weights`` (K,) float32, one weight per compiled layer, in the compiled order.
- objective ``channels`` / ``class``: ``channel_weights_{k}`` (C_k,) per layer.
- guide objective: ``guide_{k}`` (1, C_k, Hg, Wg) per layer: the guide image's features.
- outputs ``grad`` (image's shape) and ``loss`` (scalar).

Objectives (``numel`` is the element count of the layer tensor):

- layers:   loss = sum_k w_k * mean(a_k^2) / 2
- channels: loss = sum_k w_k * mean(c_k * a_k^2) / 2     (c_k broadcast over the channel axis)
- class:    loss = sum_k w_k * mean_over_non_channel(sum_c c_k[c] * a_k[:, c])  (logits)
- guide:    loss = sum_k w_k * sum_positions max_j <a_k[:, p], guide_k[:, j]> / numel
  (the gradient at each position is the best-matching guide feature vector, as in Google's
  notebook).

The backward rules per op live in :mod:`models.backward`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dreamstate.engine.core.errors import ModelError
from dreamstate.models import backward
from dreamstate.models.backward import Lowering
from dreamstate.models.graph import IR_VERSION, OPSET, ForwardGraph, Node, default_class_layer, fold_pads, needed_nodes

log = logging.getLogger("dreamstate.models")

Objective = Literal["layers", "channels", "class"]
OBJECTIVES: tuple[str, ...] = ("layers", "channels", "class")
COMPILER_VERSION = "2"
ASCENT_VERSION = "1"
"""bumped when the fused ascent graph's own part changes (its cache key holds it and COMPILER_VERSION)"""


@dataclass(frozen=True)
class CompiledInfo:
    """What a compiled step graph expects (stored in the model's metadata too)."""

    layers: tuple[str, ...]
    channels: tuple[int | None, ...]
    objective: str
    guide: bool
    fp32_nodes: tuple[str, ...] = ()
    """Names of the nodes that compute the objective (loss, seeds and their constants), undo
    the gradient scale and (in the ascent graph) update the frame: the ones
    ``models.precision.to_fp16`` keeps in float32."""


class Emitter:
    """Accumulates nodes and initializers for the step graph; names are made unique."""

    def __init__(self, fg: ForwardGraph) -> None:
        self.fg = fg
        self.nodes: list[Any] = []
        self.inits: dict[str, np.ndarray] = {}
        self._used: set[str] = {o for n in fg.nodes for o in n.outputs} | set(fg.consts)
        self._used.add(fg.image)
        self._counter = 0
        self._shape_cache: dict[str, str] = {}
        self._const_cache: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def fresh(self, hint: str) -> str:
        while True:
            self._counter += 1
            name = f"{hint}__g{self._counter}"
            if name not in self._used:
                self._used.add(name)
                return name

    def op(self, op_type: str, inputs: Sequence[str | None], hint: str = "t", n_out: int = 1, **attrs: Any) -> Any:
        """Emit a node; returns its output name (or list of names when ``n_out`` > 1)."""
        from onnx import helper

        if any(i is None for i in inputs):
            raise ModelError(f"internal compiler error: {op_type} node with a missing gradient input")

        outs = [self.fresh(f"{hint}_{op_type}") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, [str(i) for i in inputs], outs, name=outs[0], **attrs))
        return outs[0] if n_out == 1 else outs

    def raw(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=self.fresh(op_type), **attrs))

    def const(self, value: Any, dtype: Any = np.float32, hint: str = "c") -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (str(arr.dtype), arr.tobytes(), arr.shape)
        if key in self._const_cache:
            return self._const_cache[key]
        name = self.fresh(hint)
        self.inits[name] = arr
        self._const_cache[key] = name
        return name

    def use_const(self, name: str) -> str:
        """Reference a forward constant (copied into the step graph's initializers)."""
        self.inits[name] = self.fg.consts[name]
        return name

    def shape(self, x: str) -> str:
        if x not in self._shape_cache:
            self._shape_cache[x] = self.op("Shape", [x], hint="shape")
        return self._shape_cache[x]

    def static_shape(self, x: str) -> list[int | str | None] | None:
        if x in self.fg.consts:
            return list(self.fg.consts[x].shape)
        return self.fg.shapes.get(x)

    def rank(self, x: str, what: str) -> int:
        s = self.static_shape(x)
        if s is None:
            raise ModelError(
                f"the rank of tensor {x!r} is unknown ({what})",
                hint="run onnx shape inference on the model or re-export it with shapes",
            )
        return len(s)

    def zeros_like(self, x: str) -> str:
        from onnx import helper

        zero = helper.make_tensor("zero", 1, [1], [0.0])
        return str(self.op("ConstantOfShape", [self.shape(x)], hint="zeros", value=zero))

    def tail_shape(self, x: str, start: int) -> str:
        """Shape(x)[start:] as int64 (1-D)."""
        return str(self.op("Slice", [self.shape(x), self.const([start], np.int64), self.const([1 << 62], np.int64)]))

    def pad_end_to(self, y: str, like: str) -> str:
        """Zero-pad ``y`` at the end of each axis so it has ``like``'s shape (dynamic sizes)."""
        r = self.rank(like, "pad back to input shape")
        diff = self.op("Sub", [self.shape(like), self.shape(y)], hint="padamt")
        pads = self.op("Concat", [self.const([0] * r, np.int64), diff], axis=0, hint="pads")
        return str(self.op("Pad", [y, pads], hint="padback"))


def forward_context(em: Emitter, fwd: Sequence[Node], *, lowering: Lowering, diff: set[str],
                    seeded: set[str]) -> backward.Context:
    """The backward rules' context for the forward nodes ``fwd``: who produces each tensor and
    how many nodes read it (shared by the dream step, the attribution and the drawing gradient)."""
    ctx = backward.Context(em, lowering=lowering, diff=diff, seeded=seeded)
    for n in fwd:
        for o in n.outputs:
            ctx.producers[o] = n
        for i in n.inputs:
            if i:
                ctx.readers[i] = ctx.readers.get(i, 0) + 1
    return ctx


def emit_forward(ctx: backward.Context, fg: ForwardGraph, fwd: Sequence[Node]) -> None:
    """Emit the forward pass; an op whose rule rewrites its forward (MaxPool also emitting its
    Indices, ...) does so where one of its inputs needs a gradient."""
    em = ctx.em
    for n in fwd:
        for i in n.inputs:
            if i and i in fg.consts:
                em.use_const(i)
        rule = backward.RULES.get(n.op)
        if rule is not None and rule.forward is not None and any(i in ctx.diff for i in n.inputs if i):
            rule.forward(ctx, n)
        else:
            em.raw(n.op, n.inputs, n.outputs, **n.attrs)


@dataclass
class _StepParts:
    """The step's emission shared by the step and the ascent graphs: the objective's inputs
    (after the image), the name of the image gradient, and what was compiled. The loss is
    emitted as the tensor ``loss``."""

    inputs: list[Any]
    grad: str
    info: CompiledInfo


def _emit_step(
    em: Emitter, fg: ForwardGraph, layers: Sequence[str], *, objective: str, guide: bool, lowering: Lowering,
    grad_scale: float = 1.0,
) -> _StepParts:
    """Emit the forward, the objective and the backward to ``fg.image`` into ``em`` (whatever
    produces ``fg.image``: the step graph's input, or the ascent graph's rolled frame).

    ``grad_scale`` multiplies the gradient seeds and divides the image gradient at the end, so
    the gradient does not change; in between, the backward pass carries gradients that much
    larger, which keeps them above float16's smallest values (loss scaling, ``models.precision``)."""
    from onnx import TensorProto, helper

    if objective not in OBJECTIVES:
        raise ModelError(f"unknown objective {objective!r}", hint=f"use one of {', '.join(OBJECTIVES)}")
    if objective == "class" and not layers:
        layers = [default_class_layer(fg)]
    if not layers:
        raise ModelError("no dream layers given", hint="pass --layers L1,L2 (see `dreamstate models layers`)")
    if guide and objective != "layers":
        raise ModelError(
            f"a guide image works with the 'layers' objective, not {objective!r}",
            hint="compile with objective='layers' and guide=True",
        )
    tensors = [fg.resolve_layer(name) for name in layers]
    if len(set(tensors)) != len(tensors):
        raise ModelError(f"layer list {list(layers)} names the same tensor twice", hint="list each layer once")
    fwd = needed_nodes(fg, tensors)
    if lowering.fold_pads:
        fwd = fold_pads(fwd, fg.consts, keep={*tensors, *fg.outputs})
    diff = fg.differentiable()
    # Check op coverage on the differentiable path before emitting anything.
    for n in fwd:
        if n.op in backward.NO_GRADIENT:
            continue
        if any(i in diff for i in n.inputs if i) and n.op not in backward.RULES:
            raise ModelError(
                f"op {n.op} (node {n.name or n.outputs[0]!r}) on the path from the image to the dream "
                f"layers has no backward rule in the dream compiler",
                hint=f"choose an earlier layer, or use a model with supported ops only: "
                f"{', '.join(sorted(backward.SUPPORTED_OPS))}",
            )

    # Seeds of the "layers"/"channels" objectives are layer * constant, zero wherever the layer
    # is; guide and class seeds are not (see Lowering.relu_pool).
    zero_seeds = objective in ("layers", "channels") and not guide
    seeded = {fg.image} | (set() if zero_seeds else set(tensors))
    ctx = forward_context(em, fwd, lowering=lowering, diff=diff, seeded=seeded)
    # Forward pass (with small rewrites that let the backward reuse forward results).
    emit_forward(ctx, fg, fwd)
    # Objective: per-layer loss terms and gradient seeds.
    inputs = [helper.make_tensor_value_info("layer_weights", TensorProto.FLOAT, [len(tensors)])]
    grads: dict[str, list[str]] = {}
    losses: list[str] = []
    channels: list[int | None] = []
    first_objective = len(em.nodes)
    for k, a in enumerate(tensors):
        shape = fg.shapes.get(a)
        ch = shape[1] if shape and len(shape) > 1 and isinstance(shape[1], int) else None
        channels.append(ch)
        w = em.op("Gather", ["layer_weights", em.const(k, np.int64)], hint=f"w{k}", axis=0)
        numel = em.op("Cast", [em.op("Size", [a])], to=TensorProto.FLOAT, hint="numel")
        scale = em.op("Div", [w, numel], hint="scale")
        # the seeds carry the gradient scale, the losses do not
        sscale = em.op("Mul", [scale, em.const(grad_scale)], hint="gscale") if grad_scale != 1.0 else scale
        r = em.rank(a, f"dream layer {a}")
        if guide:
            name = f"guide_{k}"
            inputs.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, ch or f"C{k}", f"Hg{k}", f"Wg{k}"])
            )
            seed, term = _guide_objective(em, a, name, r=r, ch=ch)
            losses.append(em.op("Mul", [term, scale]))
            grads.setdefault(a, []).append(em.op("Mul", [seed, sscale], hint="seed"))
            continue
        if objective == "layers":
            sq = em.op("ReduceSumSquare", [a], keepdims=0)
            half = em.op("Mul", [scale, em.const(0.5)])
            losses.append(em.op("Mul", [sq, half], hint="loss"))
            grads.setdefault(a, []).append(em.op("Mul", [a, sscale], hint="seed"))
            continue
        if r < 2:
            raise ModelError(
                f"layer {a!r} has rank {r}; channel weights need a channel axis", hint="pick another layer"
            )
        name = f"channel_weights_{k}"
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [ch or f"C{k}"]))
        cw = em.op("Reshape", [name, em.const([1, -1] + [1] * (r - 2), np.int64)], hint="cw")
        if objective == "channels":
            sq = em.op("Mul", [a, a])
            wsq = em.op("ReduceSum", [em.op("Mul", [sq, cw])], keepdims=0)
            losses.append(em.op("Mul", [wsq, em.op("Mul", [scale, em.const(0.5)])], hint="loss"))
            grads.setdefault(a, []).append(em.op("Mul", [em.op("Mul", [a, cw]), sscale], hint="seed"))
        else:  # class: linear in the logits, normalised per position (not per channel)
            per = em.op(
                "Mul", [scale, em.op("Cast", [em.op("Gather", [em.shape(a), em.const(1, np.int64)], axis=0)], to=1)]
            )
            lin = em.op("ReduceSum", [em.op("Mul", [a, cw])], keepdims=0)
            losses.append(em.op("Mul", [lin, per], hint="loss"))
            sper = em.op("Mul", [per, em.const(grad_scale)], hint="gscale") if grad_scale != 1.0 else per
            grads.setdefault(a, []).append(em.op("Expand", [em.op("Mul", [cw, sper]), em.shape(a)], hint="seed"))
    objective_nodes = em.nodes[first_objective:]

    # Backward pass in reverse topological order.
    for n in reversed(fwd):
        gouts = [take_grad(em, grads, o) for o in n.outputs]
        if all(g is None for g in gouts):
            continue
        if n.op in backward.NO_GRADIENT:
            continue
        rule = backward.RULES[n.op]
        gins = rule.backward(ctx, n, gouts)
        for i, gi in zip(n.inputs, gins, strict=False):
            if gi is not None and i in diff:
                grads.setdefault(i, []).append(gi)
    gimg = take_grad(em, grads, fg.image)
    if gimg is None:
        raise ModelError(f"layers {list(layers)} do not depend on the image", hint="pick other layers")
    last_backward = len(em.nodes)
    if grad_scale != 1.0:
        gimg = em.op("Mul", [gimg, em.const(1.0 / grad_scale)], hint="unscale")
    if len(losses) == 1:
        em.raw("Identity", [losses[0]], ["loss"])
    else:
        em.raw("Sum", losses, ["loss"])
    # Shape and Size read an activation's shape only: in float32 they would cost it a cast
    fp32_nodes = tuple(n.name for n in [*objective_nodes, *em.nodes[last_backward:]]
                       if n.op_type not in ("Shape", "Size"))
    return _StepParts(inputs, gimg, CompiledInfo(tuple(tensors), tuple(channels), objective, guide, fp32_nodes))


def _finish(em: Emitter, fg: ForwardGraph, what: str, inputs: list[Any], outputs: list[Any], *,
            info: CompiledInfo) -> Any:
    """The checked ModelProto of an emitted step or ascent graph, with dreamstate's properties."""
    import onnx
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(v, k) for k, v in em.inits.items()]
    graph = helper.make_graph(em.nodes, what, inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="dreamstate",
        producer_version=COMPILER_VERSION,
    )
    helper.set_model_props(
        model,
        {
            "dreamstate.layers": ",".join(info.layers),
            "dreamstate.objective": info.objective,
            "dreamstate.guide": "1" if info.guide else "0",
            "dreamstate.source_sha256": fg.sha256,
            "dreamstate.compiler": COMPILER_VERSION,
        },
    )
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:  # checker errors are ValidationError; report them as compiler bugs
        raise ModelError(f"compiled {what} graph failed the ONNX checker: {exc}", hint="report this model") from exc
    log.info(
        "dream step compiled" if what == "dream_step" else "dream ascent compiled",
        extra={"model": fg.source, "layers": list(info.layers), "objective": info.objective, "nodes": len(em.nodes)},
    )
    return model


def compile_step(
    fg: ForwardGraph,
    layers: Sequence[str],
    *,
    objective: str = "layers",
    guide: bool = False,
    lowering: Lowering | None = None,
    grad_scale: float = 1.0,
) -> tuple[Any, CompiledInfo]:
    """Build the dream-step ModelProto for ``layers`` (names or aliases) of ``fg``
    (``grad_scale``: loss scaling, see ``_emit_step``)."""
    import onnx
    from onnx import helper

    em = Emitter(fg)
    parts = _emit_step(em, fg, layers, objective=objective, guide=guide, lowering=lowering or Lowering(),
                       grad_scale=grad_scale)
    em.raw("Identity", [parts.grad], ["grad"])
    parts.info = dataclasses.replace(parts.info, fp32_nodes=(*parts.info.fp32_nodes, em.nodes[-1].name))
    image_c = fg.image_channels
    frame = ["N", image_c or "C", "H", "W"]
    inputs = [helper.make_tensor_value_info(fg.image, onnx.TensorProto.FLOAT, frame), *parts.inputs]
    outputs = [
        helper.make_tensor_value_info("grad", onnx.TensorProto.FLOAT, frame),
        helper.make_tensor_value_info("loss", onnx.TensorProto.FLOAT, []),
    ]
    return _finish(em, fg, "dream_step", inputs, outputs, info=parts.info), parts.info


ASCENT_INPUTS = ("ascent_x", "ascent_shift", "ascent_step", "ascent_mask", "ascent_grad_scale",
                 "ascent_update_scale", "ascent_lo", "ascent_hi")
"""the ascent graph's own inputs, beside the step's (``layer_weights``, channel weights, guide)"""
ASCENT_OUTPUTS = ("x_next", "loss")


def _roll(em: Emitter, x: str, shift: str, *, back: bool, out: str | None = None) -> str:
    """``np.roll(x, shift, axis=(2, 3))`` (``-shift`` when ``back``) for a dynamic (N, C, H, W)
    ``x`` and an int64 [2] ``shift``: per axis, the last ``k = shift mod n`` rows move to the
    front (Slice + Concat: a copy, no index tensor)."""
    for i, axis in enumerate((2, 3)):
        s = em.op("Slice", [shift, em.const([i], np.int64), em.const([i + 1], np.int64)], hint="jit")
        if back:
            s = em.op("Neg", [s], hint="jitback")
        n = em.op("Slice", [em.shape(x), em.const([axis], np.int64), em.const([axis + 1], np.int64)], hint="len")
        cut = em.op("Sub", [n, em.op("Mod", [s, n], hint="k")], hint="cut")
        ax = em.const([axis], np.int64)
        tail = em.op("Slice", [x, cut, n, ax], hint="rolltail")
        head = em.op("Slice", [x, em.const([0], np.int64), cut, ax], hint="rollhead")
        if out is not None and i == 1:
            em.raw("Concat", [tail, head], [out], axis=axis)
            return out
        x = em.op("Concat", [tail, head], axis=axis, hint="roll")
    return x


def compile_ascent(
    fg: ForwardGraph,
    layers: Sequence[str],
    *,
    objective: str = "layers",
    guide: bool = False,
    lowering: Lowering | None = None,
    grad_scale: float = 1.0,
) -> tuple[Any, CompiledInfo]:
    """One whole gradient-ascent step as one graph, so a frame can stay on the device for many
    steps (``DreamModel.ascend`` chains it with IOBinding). The same maths as the renderer's
    numpy step (``engine.render.dream.ascent_step`` with ``models.dream.ascent_update``):

    - ``xr = roll(ascent_x, ascent_shift)`` (jitter; int64 [2] = (dy, dx), ``np.roll`` semantics);
    - ``g``: the dream step's gradient at ``xr`` (the same emission as :func:`compile_step`,
      with the same objective inputs: ``layer_weights``, ``channel_weights_k``, ``guide_k``),
      rolled back by ``-shift``;
    - ``g = g * ascent_grad_scale * ascent_mask`` (``(1, C, 1, 1)`` and ``(H, W)``);
    - ``d = sum(|g| * [mask > 0]) / (N * C * count(mask > 0))``, the mean over the active pixels;
    - where ``d`` is finite and above 0: ``x = x + (ascent_step / d) * (g * ascent_update_scale)``,
      else ``x`` unchanged;
    - ``x_next = min(max(x, ascent_lo), ascent_hi)``; ``loss`` as the step's (at ``xr``).

    The scales carry the pixel scale: grad scale 1 and update scale ``s`` when one ``s`` serves
    every channel, both ``s_c`` otherwise, as the numpy path does. Raises ``ModelError`` when the
    model's own tensors use one of the ascent graph's names (``ASCENT_INPUTS``, ``x_next``)."""
    import onnx
    from onnx import helper

    clash = sorted(({*ASCENT_INPUTS, ASCENT_OUTPUTS[0]}) & ({fg.image} | {o for n in fg.nodes for o in n.outputs}
                                                            | set(fg.consts)))
    if clash:
        raise ModelError(f"the model {fg.source} names a tensor {clash[0]!r}, a name the fused ascent graph uses",
                         hint="rename the tensor in the model; the numpy step loop still dreams it")
    em = Emitter(fg)
    em._used.update(ASCENT_INPUTS)
    em._used.add(ASCENT_OUTPUTS[0])
    x, shift = ASCENT_INPUTS[0], ASCENT_INPUTS[1]
    _roll(em, x, shift, back=False, out=fg.image)  # the step's forward reads the rolled frame
    parts = _emit_step(em, fg, layers, objective=objective, guide=guide, lowering=lowering or Lowering(),
                       grad_scale=grad_scale)
    first_update = len(em.nodes)
    g = _roll(em, parts.grad, shift, back=True)
    step, mask, gscale, uscale, lo, hi = ASCENT_INPUTS[2:]
    mask4 = em.op("Unsqueeze", [mask, em.const([0, 1], np.int64)], hint="mask4")
    g = em.op("Mul", [em.op("Mul", [g, gscale], hint="gdisp"), mask4], hint="gmask")
    active = em.op("Cast", [em.op("Greater", [mask4, em.const(0.0)])], to=onnx.TensorProto.FLOAT, hint="active")
    total = em.op("ReduceSum", [em.op("Mul", [em.op("Abs", [g]), active])], keepdims=0, hint="gabs")
    nc = em.op("Cast", [em.op("ReduceProd", [em.op("Slice", [em.shape(x), em.const([0], np.int64),
                                                            em.const([2], np.int64)])], keepdims=0)],
               to=onnx.TensorProto.FLOAT, hint="nc")
    count = em.op("Mul", [em.op("ReduceSum", [active], keepdims=0), nc], hint="count")
    denom = em.op("Div", [total, count], hint="denom")
    ok = em.op("And", [em.op("Greater", [denom, em.const(0.0)]), em.op("Not", [em.op("IsInf", [denom])])], hint="ok")
    rate = em.op("Div", [step, denom], hint="rate")
    moved = em.op("Add", [x, em.op("Mul", [rate, em.op("Mul", [g, uscale])])], hint="moved")
    kept = em.op("Where", [ok, moved, x], hint="kept")
    em.raw("Min", [em.op("Max", [kept, lo], hint="clip"), hi], [ASCENT_OUTPUTS[0]])
    # the update, normalisation and clipping of the frame stay float32 in a float16 graph
    parts.info = dataclasses.replace(parts.info, fp32_nodes=(
        *parts.info.fp32_nodes, *(n.name for n in em.nodes[first_update:] if n.op_type not in ("Shape", "Size"))))
    c = fg.image_channels or "C"
    frame = ["N", c, "H", "W"]
    per_channel = [1, c, 1, 1]
    inputs = [
        helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, frame),
        helper.make_tensor_value_info(shift, onnx.TensorProto.INT64, [2]),
        helper.make_tensor_value_info(step, onnx.TensorProto.FLOAT, []),
        helper.make_tensor_value_info(mask, onnx.TensorProto.FLOAT, ["H", "W"]),
        *(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, per_channel) for n in (gscale, uscale, lo, hi)),
        *parts.inputs,
    ]
    outputs = [
        helper.make_tensor_value_info(ASCENT_OUTPUTS[0], onnx.TensorProto.FLOAT, frame),
        helper.make_tensor_value_info("loss", onnx.TensorProto.FLOAT, []),
    ]
    return _finish(em, fg, "dream_ascent", inputs, outputs, info=parts.info), parts.info


def take_grad(em: Emitter, grads: dict[str, list[str]], t: str) -> str | None:
    """Pop the gradient parts gathered for tensor ``t``: None, the one part, or their Sum."""
    parts = grads.pop(t, None)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return str(em.op("Sum", parts, hint="gsum"))


def _guide_objective(em: Emitter, a: str, guide: str, *, r: int, ch: int | None) -> tuple[str, str]:
    """Best-match guide objective: returns (gradient seed with a's shape, unnormalised loss)."""
    if r < 2:
        raise ModelError(f"guide layer {a!r} has rank {r}; needs a channel axis", hint="pick a conv layer")
    perm = [0, *range(2, r), 1]  # channels last
    at = em.op("Transpose", [a], perm=perm, hint="gx")
    c = (
        em.const([ch], np.int64)
        if ch
        else em.op("Slice", [em.shape(a), em.const([1], np.int64), em.const([2], np.int64)])
    )
    xr = em.op("Reshape", [at, em.op("Concat", [em.const([0, -1], np.int64), c], axis=0)], hint="gxr")
    gt = em.op("Transpose", [guide], perm=perm, hint="gy")
    yr = em.op("Reshape", [gt, em.op("Concat", [em.const([-1], np.int64), c], axis=0)], hint="gyr")  # (Q, C)
    dots = em.op("MatMul", [xr, em.op("Transpose", [yr], perm=[1, 0])], hint="gdot")  # (N, P, Q)
    best = em.op("ArgMax", [dots], axis=2, keepdims=0, hint="gbest")  # (N, P)
    picked = em.op("Gather", [yr, best], axis=0, hint="gpick")  # (N, P, C)
    back = em.op("Reshape", [picked, em.shape(at)])
    inv = [0, r - 1, *range(1, r - 1)]
    seed = em.op("Transpose", [back], perm=inv, hint="gseed")
    term = em.op("ReduceSum", [em.op("ReduceMax", [dots, em.const([2], np.int64)], keepdims=0)], keepdims=0)
    return str(seed), str(term)


def forward_features_model(fg: ForwardGraph, layers: Sequence[str]) -> Any:
    """A forward-only model whose outputs are the given layer tensors (for guide features)."""
    import onnx
    from onnx import helper, numpy_helper

    tensors = [fg.resolve_layer(name) for name in layers]
    fwd = needed_nodes(fg, tensors)
    nodes = [
        helper.make_node(n.op, list(n.inputs), list(n.outputs), name=n.name or n.outputs[0], **n.attrs)
        for n in _inference_nodes(fwd)
    ]
    used = {i for n in fwd for i in n.inputs}
    inits = [numpy_helper.from_array(v, k) for k, v in fg.consts.items() if k in used]
    ch = fg.image_channels
    graph = helper.make_graph(
        nodes,
        "dream_features",
        [helper.make_tensor_value_info(fg.image, onnx.TensorProto.FLOAT, ["N", ch or "C", "H", "W"])],
        [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def _inference_nodes(nodes: Sequence[Node]) -> list[Node]:
    out = []
    for n in nodes:
        if n.op == "Dropout":
            out.append(Node("Identity", n.name, n.inputs[:1], n.outputs[:1], {}))
        else:
            out.append(n)
    return out


def compile_logprob_grad(fg: ForwardGraph, logits: str = "logits", *,
                         lowering: Lowering | None = None) -> Any:
    """The classifier's forward to ``logits`` plus the gradient of a weighted sum of its
    log-softmax with respect to the image, as one ONNX graph (the drawing mode's gradient search).

    Inputs: ``image`` (N, C, H, W) and ``target_weights`` (N, K). Outputs: ``logits`` (N, K) and
    ``grad`` (image's shape) = d/d image of ``sum_n sum_k w[n, k] * log_softmax(z_n)[k]``; the
    seed at the logits is ``w - softmax(z) * sum_k w`` (the log-softmax's vector-Jacobian
    product). Per-image weights let one call take the gradient of a different class, or of the
    mean over views (weights 1/N), for every image in the batch."""
    import onnx
    from onnx import helper, numpy_helper

    z = fg.resolve_layer(logits)
    lowering = lowering or Lowering()
    fwd = needed_nodes(fg, [z])
    if lowering.fold_pads:
        fwd = fold_pads(fwd, fg.consts, keep={z, *fg.outputs})
    diff = fg.differentiable()
    for n in fwd:
        if n.op in backward.NO_GRADIENT:
            continue
        if any(i in diff for i in n.inputs if i) and n.op not in backward.RULES:
            raise ModelError(f"op {n.op} (node {n.name or n.outputs[0]!r}) on the path from the image to the "
                             "logits has no backward rule in the dream compiler",
                             hint=f"use a model with supported ops only: {', '.join(sorted(backward.SUPPORTED_OPS))}")
    em = Emitter(fg)
    ctx = forward_context(em, fwd, lowering=lowering, diff=diff, seeded={fg.image, z})
    emit_forward(ctx, fg, fwd)
    r = em.rank(z, f"logits {z}")
    z2 = em.op("Flatten", [z], axis=1, hint="z2") if r != 2 else z
    soft = em.op("Softmax", [z2], axis=1, hint="soft")
    wsum = em.op("ReduceSum", ["target_weights", em.const([1], np.int64)], keepdims=1, hint="wsum")
    seed2 = em.op("Sub", ["target_weights", em.op("Mul", [soft, wsum])], hint="seed")
    seed = em.op("Reshape", [seed2, em.shape(z)], hint="seedz") if r != 2 else seed2
    grads: dict[str, list[str]] = {z: [seed]}
    for n in reversed(fwd):
        gouts = [take_grad(em, grads, o) for o in n.outputs]
        if all(g is None for g in gouts) or n.op in backward.NO_GRADIENT:
            continue
        gins = backward.RULES[n.op].backward(ctx, n, gouts)
        for i, gi in zip(n.inputs, gins, strict=False):
            if gi is not None and i in diff:
                grads.setdefault(i, []).append(gi)
    gimg = take_grad(em, grads, fg.image)
    if gimg is None:
        raise ModelError(f"logits {z!r} do not depend on the image", hint="use an image classifier")
    em.raw("Identity", [gimg], ["grad"])
    em.raw("Identity", [z2], ["logits_out"])
    ch = fg.image_channels
    inputs = [helper.make_tensor_value_info(fg.image, onnx.TensorProto.FLOAT, ["N", ch or "C", "H", "W"]),
              helper.make_tensor_value_info("target_weights", onnx.TensorProto.FLOAT, ["N", "K"])]
    outputs = [helper.make_tensor_value_info("logits_out", onnx.TensorProto.FLOAT, ["N", "K"]),
               helper.make_tensor_value_info("grad", onnx.TensorProto.FLOAT, ["N", ch or "C", "H", "W"])]
    inits = [numpy_helper.from_array(v, k) for k, v in em.inits.items()]
    graph = helper.make_graph(em.nodes, "logprob_grad", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="dreamstate", producer_version=COMPILER_VERSION)
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:  # checker errors are ValidationError; report them as compiler bugs
        raise ModelError(f"compiled gradient graph failed the ONNX checker: {exc}", hint="report this model") from exc
    return model
