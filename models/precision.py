"""float16 dream steps: the compiled step graph converted with onnxconverter-common.

``to_fp16(model, keep_fp32)`` returns a copy of a compiled dream step (``models.compiler``)
whose forward and backward passes run in float16, while

- the inputs (``image``, ``layer_weights``, ...) and outputs (``grad``, ``loss``) stay float32
  (``keep_io_types``): the renderer does not change;
- the nodes named in ``keep_fp32`` stay float32: the compiler lists the objective there (the
  loss reductions, whose sums of squares pass float16's largest value, 65504, on any real layer;
  the per-layer weights and ``1/numel`` scales; the seeds) and the division by the gradient
  scale at the end, whose result is far below float16's smallest normal value (6.1e-5).

Loss scaling: ``compile_step(..., grad_scale=GRAD_SCALE)`` multiplies the seeds by the scale
and divides the image gradient by it in float32 at the end, so ``grad`` means the same as in
float32 while the backward pass carries values that much larger (the technique of Micikevicius
et al., "Mixed Precision Training", 2018, which PyTorch's ``GradScaler`` automates). Without it
the seeds, ``activation * weight / numel`` (numel: a layer's element count, 10^3 to 10^6), sit at
1e-8 to 1e-4: measured on the float32 step (the gradient tensors of the backward pass, china.jpg),
99.8 % of the starter's gradient values at 640x360 are below float16's smallest normal value
(2^-14, so they keep fewer bits) and 2.8 % below its smallest subnormal (2^-24: they become
zero); at 1280x720 it is 100 % and 9.7 %. :data:`GRAD_SCALE` = 2^10 is the largest power of two
that keeps the largest gradient value measured (EfficientNet-Lite0 at its smallest octave,
64x48: 15.5 unscaled, so 1.6e4 scaled) four times below float16's largest value, 65504; 2^12
comes within 3 % of it and 2^16 overflows (``grad`` turns NaN). With 2^10 no gradient value of
the starter, SqueezeNet or EfficientNet-Lite0 becomes zero that was not zero in float32, from
64x48 to 1280x720, except 0.2-0.4 % of EfficientNet-Lite0's (2^16 would keep most of those and
overflow elsewhere); docs/gpu.md has the table.
``tests/test_precision.py`` checks both ends.

The converter is used as it is, with three repairs around it for its known mismatches:

- initializers read both by a kept (float32) node and a converted one are copied first: the
  converter leaves a shared initializer float32 and the converted node then reads the wrong
  type;
- ``Cast(to=FLOAT)`` nodes of the step graph (the ReLU masks) keep ``to=FLOAT`` after the
  converter marks their outputs float16; the ones outside ``keep_fp32`` are set to FLOAT16;
- the converter casts the output of every kept node to float16 and back before the next kept
  node, and removes that round trip only where the tensor has one reader; the remaining round
  trips (float32 -> float16 -> float32) are removed here, and a kept node that writes a graph
  output writes it as float32 again.

The result passes the ONNX checker with full type inference, or ``ModelError`` says why.
onnxruntime's CPU provider runs it too: where it has no float16 kernel it casts around the node
(its ``InsertCastTransformer``), so the values still pass through float16 between nodes; the
speed is a GPU's question (docs/gpu.md).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Collection, Sequence
from typing import Any, Literal

from dreamstate.engine.core.errors import ModelError

log = logging.getLogger("dreamstate.models")

Precision = Literal["fp32", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
GRAD_SCALE = 1024.0
"""Loss scale of float16 dream steps (2^10; the module docstring has the measurements behind it)."""

KEEP_OPS: tuple[str, ...] = ("ScatterElements",)
"""Ops kept in float32 wherever they are: ``ScatterElements`` with ``reduction = "add"`` (the 3x3/2
MaxPool backward) adds many gradient parts into one value, and onnxruntime's CPU provider has
no float16 kernel for it."""

FLOAT = 1
FLOAT16 = 10


def check_precision(precision: str) -> Precision:
    """``precision`` as a :data:`Precision`, or ``ModelError`` naming the allowed values."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}",
                         hint="use fp32, or fp16 on a CUDA GPU")
    return "fp16" if precision == "fp16" else "fp32"


def to_fp16(model: Any, keep_fp32: Collection[str]) -> Any:
    """A float16 copy of the step ``model`` (ModelProto) with float32 inputs and outputs and the
    nodes named in ``keep_fp32`` left in float32 (see the module docstring)."""
    import onnx
    from onnxconverter_common import float16

    keep = set(keep_fp32)
    work = onnx.ModelProto()
    work.CopyFrom(model)
    missing = keep - {n.name for n in work.graph.node}
    if missing:
        raise ModelError(f"internal compiler error: float32 nodes {sorted(missing)[:3]} are not in the step graph")
    keep |= {n.name for n in work.graph.node if n.op_type in KEEP_OPS}
    original_casts = {n.name for n in work.graph.node if n.op_type == "Cast"}
    _unshare_initializers(work.graph, keep)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = float16.convert_float_to_float16(work, keep_io_types=True, node_block_list=sorted(keep),
                                                   max_finite_val=65504.0)
        except Exception as exc:  # the converter raises ValueError/AssertionError on graphs it mishandles
            raise ModelError(f"the float16 converter failed on the dream step: {exc}",
                             hint="use precision = \"fp32\" and report the model") from exc
    for w in caught:  # constants clamped into float16's range: a debug line (57 of them for Lite0), not an error
        log.debug("float16 conversion", extra={"note": str(w.message)})
    graph = out.graph
    _fix_casts(graph, original_casts - keep)
    _drop_round_trips(out)
    _outputs_fp32(out, [o.name for o in model.graph.output if o.type.tensor_type.elem_type == FLOAT])
    out.graph.ClearField("value_info")  # stale after the repairs; onnxruntime infers them again
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:  # checker errors are ValidationError/InferenceError
        raise ModelError(f"the float16 dream step failed the ONNX checker: {exc}",
                         hint="use precision = \"fp32\" and report the model") from exc
    return out


def _unshare_initializers(graph: Any, keep: set[str]) -> None:
    """Give converted nodes their own copy of float initializers that kept nodes read too."""
    inits = {i.name: i for i in graph.initializer if i.data_type == FLOAT}
    kept_reads = {i for n in graph.node if n.name in keep for i in n.input if i in inits}
    for n in graph.node:
        if n.name in keep:
            continue
        for k, name in enumerate(n.input):
            if name in kept_reads:
                copy_name = f"{name}__fp16"
                if copy_name not in {i.name for i in graph.initializer}:
                    t = graph.initializer.add()
                    t.CopyFrom(inits[name])
                    t.name = copy_name
                n.input[k] = copy_name


def _fix_casts(graph: Any, converted_casts: set[str]) -> None:
    """The step graph's own ``Cast(to=FLOAT)`` nodes in the float16 part cast to FLOAT16."""
    for n in graph.node:
        if n.op_type == "Cast" and n.name in converted_casts:
            for a in n.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = FLOAT16


def _types(model: Any) -> dict[str, int]:
    """Element type of every tensor the graph names (inputs, initializers, inferred values)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def _drop_round_trips(model: Any) -> None:
    """Readers of ``Cast(to=FLOAT)(Cast(to=FLOAT16)(x))`` with float32 ``x`` read ``x``; then
    nodes nobody reads are removed."""
    graph = model.graph
    types = _types(model)
    producer = {o: n for n in graph.node for o in n.output}

    def cast_to(n: Any) -> int | None:
        return next((a.i for a in n.attribute if a.name == "to"), None) if n.op_type == "Cast" else None

    rename: dict[str, str] = {}
    for n in graph.node:
        if cast_to(n) != FLOAT:
            continue
        first = producer.get(n.input[0])
        if first is not None and cast_to(first) == FLOAT16 and types.get(first.input[0]) == FLOAT:
            rename[n.output[0]] = first.input[0]
    outputs = {o.name for o in graph.output}
    for n in graph.node:
        for k, name in enumerate(n.input):
            if name in rename:
                n.input[k] = rename[name]
    for name in outputs & set(rename):  # a graph output stays its own tensor
        for n in graph.node:
            if n.output and n.output[0] == name:
                n.op_type = "Identity"
                del n.attribute[:]
                n.input[0] = rename[name]
    _prune(graph)


def _outputs_fp32(model: Any, names: list[str]) -> None:
    """Graph outputs that were float32 are float32 again: a float16 cast of a float32 tensor in
    front of one is removed, any other float16 value gets a cast."""
    import onnx

    graph = model.graph
    types = _types(model)
    producer = {o: n for n in graph.node for o in n.output}
    for out in graph.output:
        if out.name not in names or out.type.tensor_type.elem_type == FLOAT:
            continue
        n = producer[out.name]
        if n.op_type == "Cast" and types.get(n.input[0]) == FLOAT:
            n.op_type = "Identity"
            del n.attribute[:]
        else:
            n.output[0] = f"{out.name}__fp16"
            graph.node.append(onnx.helper.make_node("Cast", [n.output[0]], [out.name], to=FLOAT,
                                                    name=f"{out.name}__to_fp32"))
        out.type.tensor_type.elem_type = FLOAT


def _prune(graph: Any) -> None:
    """Remove nodes whose outputs nothing reads (neither a node nor a graph output)."""
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)


def compile_bytes(fg: Any, tensors: Sequence[str], *, objective: str, guide: bool, precision: Precision,
                  ascent: bool = False) -> bytes:
    """The serialized dream step (``ascent``: the fused ascent graph) of ``fg`` for ``tensors``
    in ``precision``: float32 as the compiler writes it, or float16 with the loss scale and
    ``to_fp16``."""
    from dreamstate.models import compiler

    build = compiler.compile_ascent if ascent else compiler.compile_step
    if precision == "fp32":
        model, _ = build(fg, tensors, objective=objective, guide=guide)
    else:
        scaled, info = build(fg, tensors, objective=objective, guide=guide, grad_scale=GRAD_SCALE)
        model = to_fp16(scaled, info.fp32_nodes)
    data: bytes = model.SerializeToString()
    return data


def cache_variant(precision: Precision) -> str:
    """What the compile cache key adds for ``precision`` (nothing for float32, so the float32
    steps already cached stay valid)."""
    return "" if precision == "fp32" else f"|fp16x{GRAD_SCALE:g}"


def runnable_precision(precision: str, device: str, *, warn: bool = True) -> Precision:
    """The precision a dream step on ``device`` gets: float16 only where CUDA may run it. fp16
    with ``device = "cpu"`` (``run --device cpu``), or with ``auto`` where onnxruntime has no CUDA
    provider, logs one warning (unless ``warn`` is False: ``check``, whose show ``run`` loads next)
    and gives fp32; ``cuda`` keeps fp16 (the session refuses to start without CUDA)."""
    from dreamstate.models.session import CUDA, available_providers

    chosen = check_precision(precision)
    if chosen == "fp16" and (device == "cpu" or (device == "auto" and CUDA not in available_providers())):
        why = "the dream device is cpu" if device == "cpu" else "this onnxruntime has no CUDA provider"
        if warn:
            log.warning(f"precision fp16 needs CUDA and {why}: the dream runs in fp32 (fix: run on a CUDA GPU "
                        f"with pip install 'dreamstate[gpu]', or set [output] precision = \"fp32\")")
        return "fp32"
    return chosen
