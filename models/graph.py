"""Reading a forward classifier ONNX model into a normalised, compiler-friendly form.

``load_forward`` is the single entry point. After it returns, a :class:`ForwardGraph`:

- has every initializer (and every ``Constant`` node) as a float32/int64 numpy constant, even
  in old models that also list initializers as graph inputs;
- has fp16/fp64 weights cast to float32 and the stale value_info dropped;
- is at opset 18 (version-converted) so the backward pass may use ScatterElements(reduction);
- has an image input whose batch, height and width are symbolic (``N``, ``H``, ``W``);
- knows the static shape (channels) of every tensor that ONNX shape inference can derive;
- has folded every node whose inputs are all constants.

It also computes per-tensor stride and receptive field for ``dreamstate models layers``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelError

log = logging.getLogger("dreamstate.models")

OPSET = 18
IR_VERSION = 10  # onnxruntime 1.31 accepts at most 13; 10 is what opset 18 needs

# Ops whose output carries no gradient (integer shape plumbing).
NON_DIFFERENTIABLE = frozenset({"Shape", "Size"})


@dataclass(frozen=True)
class Node:
    """One forward node with attributes decoded to Python values."""

    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(hash=False, compare=False)


@dataclass(frozen=True)
class LayerInfo:
    """A tensor a dream can target: name, producing op, channels, stride, receptive field."""

    name: str
    op: str
    node: str
    channels: int | None
    rank: int | None
    stride: int | None
    receptive_field: int | None  # None = global (after a global pool or a dense layer)
    alias: str | None = None


@dataclass
class ForwardGraph:
    """A normalised forward model (see module docstring for the invariants)."""

    source: str
    sha256: str
    image: str
    image_channels: int | None
    nodes: list[Node]
    consts: dict[str, np.ndarray]
    shapes: dict[str, list[int | str | None]]
    outputs: list[str]
    dtypes: dict[str, int]

    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs if out}

    def differentiable(self) -> set[str]:
        """Tensors that depend on the image through float ops (so they carry a gradient)."""
        diff = {self.image}
        for n in self.nodes:
            if n.op in NON_DIFFERENTIABLE:
                continue
            if any(i in diff for i in n.inputs if i):
                for o in n.outputs:
                    if o and self.dtypes.get(o, 1) in (1, 10, 11, 16, 0):
                        diff.add(o)
        return diff

    def aliases(self) -> dict[str, str]:
        """Friendly names -> tensor names (``fire2/concat`` for ``fire2/concat_1``, node names)."""
        out: dict[str, str] = {}
        tensor_names = {o for n in self.nodes for o in n.outputs}
        candidates: dict[str, list[str]] = {}
        for n in self.nodes:
            for o in n.outputs[:1]:
                if not o:
                    continue
                stem = o.rsplit("_", 1)[0] if "_" in o and o.rsplit("_", 1)[1].isdigit() else None
                if stem and stem not in tensor_names:
                    candidates.setdefault(stem, []).append(o)
                if n.name and n.name not in tensor_names:
                    candidates.setdefault(n.name, []).append(o)
        if "logits" not in tensor_names and self.outputs:
            candidates.setdefault("logits", []).append(default_class_layer(self))
        order = {o: i for i, n in enumerate(self.nodes) for o in n.outputs}
        for alias, targets in candidates.items():
            # fire9/concat_1 and fire9/concat_2 (its Dropout) share a stem: the first one wins
            out[alias] = min(set(targets), key=lambda t: order.get(t, 0))
        return out

    def display_names(self) -> dict[str, str]:
        """Tensor name -> the shortest friendly alias (or itself)."""
        best: dict[str, str] = {}
        for alias, tensor in self.aliases().items():
            if tensor not in best or len(alias) < len(best[tensor]):
                best[tensor] = alias
        return best

    def resolve_layer(self, name: str) -> str:
        """Tensor name for a layer name or alias; ModelError listing layers when unknown."""
        producers = self.producers()
        if name in producers and name in self.differentiable():
            return name
        alias = self.aliases().get(name)
        if alias is not None and alias in self.differentiable():
            return alias
        available = ", ".join(layer_display_names(self))
        raise ModelError(
            f"layer {name!r} not found in model {self.source}",
            hint=f"use one of the layers it has: {available} (see `dreamstate models layers`)",
        )

    def layers(self) -> list[LayerInfo]:
        return compute_layers(self)


def layer_display_names(g: ForwardGraph) -> list[str]:
    return [li.alias or li.name for li in g.layers()]


def _to_numpy(tensor: Any) -> np.ndarray:
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor)
    if arr.dtype in (np.float16, np.float64) or arr.dtype.kind == "V":
        arr = arr.astype(np.float32)
    return np.asarray(arr)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out: dict[str, Any] = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


def read_model_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(
            f"model file {path} does not exist",
            hint="check the path, or use a registry name (`dreamstate models list`)",
        ) from exc
    except OSError as exc:
        raise ModelError(f"model file {path} cannot be read: {exc}", hint="check permissions") from exc


def load_forward(source: Path | bytes, *, label: str | None = None) -> ForwardGraph:
    """Parse and normalise a forward ONNX model (file path or bytes)."""
    import onnx
    from onnx import shape_inference, version_converter

    data = read_model_bytes(source) if isinstance(source, Path) else source
    where = label or (str(source) if isinstance(source, Path) else "<bytes>")
    sha = hashlib.sha256(data).hexdigest()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise ModelError(
            f"model {where} is not a valid ONNX file ({type(exc).__name__}: {exc})",
            hint="the file is corrupt or truncated: download it again (`dreamstate models fetch`)",
        ) from exc
    if len(model.graph.node) == 0:
        raise ModelError(
            f"model {where} has no nodes (not an ONNX classifier, or a corrupt file)",
            hint="download it again or export the model to ONNX",
        )
    domains = {o.domain for o in model.opset_import}
    if any(d not in ("", "ai.onnx") for d in domains):
        log.info("model uses extra opset domains", extra={"model": where, "domains": sorted(domains)})

    g = model.graph
    init_names = {t.name for t in g.initializer}
    consts: dict[str, np.ndarray] = {t.name: _to_numpy(t) for t in g.initializer}
    image_inputs = [i for i in g.input if i.name not in init_names]
    if len(image_inputs) != 1:
        raise ModelError(
            f"model {where} has {len(image_inputs)} non-constant inputs "
            f"({[i.name for i in image_inputs]}); a dream model needs exactly one image input",
            hint="export the classifier with a single (N, C, H, W) image input",
        )
    image_vi = image_inputs[0]
    dims = image_vi.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelError(
            f"model {where} input {image_vi.name!r} has rank {len(dims)}, expected (N, C, H, W)",
            hint="use a convolutional image classifier",
        )
    image_channels = dims[1].dim_value if dims[1].HasField("dim_value") else None

    # Rebuild a clean fp32 model: constants as initializers only, dynamic N/H/W, no value_info.
    from onnx import helper, numpy_helper

    new_inits = [numpy_helper.from_array(a, name) for name, a in consts.items()]
    nodes = list(g.node)
    image_in = helper.make_tensor_value_info(
        image_vi.name, onnx.TensorProto.FLOAT, ["N", image_channels or "C", "H", "W"]
    )
    outputs = [helper.make_tensor_value_info(o.name, 0, None) for o in g.output]
    graph = helper.make_graph(nodes, g.name or "forward", [image_in], outputs, new_inits)
    opsets = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")]
    base_ver = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [1])
    clean = helper.make_model(graph, opset_imports=[helper.make_opsetid("", base_ver), *opsets], ir_version=IR_VERSION)
    # fp16 models: Cast nodes to fp16 and fp16 attributes would break fp32 weights; reject early.
    for n in clean.graph.node:
        for a in n.attribute:
            if a.name == "to" and n.op_type == "Cast" and a.i == onnx.TensorProto.FLOAT16:
                a.i = onnx.TensorProto.FLOAT
    if base_ver < OPSET:
        try:
            clean = version_converter.convert_version(clean, OPSET)
        except Exception as exc:  # the converter raises plain RuntimeError/ValueError
            raise ModelError(
                f"model {where} (opset {base_ver}) could not be converted to opset {OPSET}: {exc}",
                hint="re-export the model with opset 18 or later",
            ) from exc
    try:
        inferred = shape_inference.infer_shapes(clean, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 -- logged; the compiler then reports missing shapes by name
        log.warning("shape inference failed", extra={"model": where, "error": str(exc)})
        inferred = clean

    shapes: dict[str, list[int | str | None]] = {}
    dtypes: dict[str, int] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        tt = vi.type.tensor_type
        dtypes[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    consts = {t.name: _to_numpy(t) for t in inferred.graph.initializer}
    for name, arr in consts.items():
        shapes[name] = list(arr.shape)
        dtypes[name] = 1 if arr.dtype == np.float32 else 7 if arr.dtype == np.int64 else 0

    out_nodes: list[Node] = []
    for n in inferred.graph.node:
        node = Node(n.op_type, n.name, tuple(n.input), tuple(n.output), _attrs(n))
        if n.domain not in ("", "ai.onnx"):
            node = Node(f"{n.domain}.{n.op_type}", n.name, node.inputs, node.outputs, node.attrs)
        if node.op == "Constant":
            consts[node.outputs[0]] = _constant_value(node)
            continue
        if node.inputs and all((not i) or i in consts for i in node.inputs) and node.op != "Dropout":
            folded = _fold(node, consts)
            if folded is not None:
                for o, v in zip(node.outputs, folded, strict=False):
                    consts[o] = v
                    shapes[o] = list(v.shape)
                continue
        out_nodes.append(node)
    fg = ForwardGraph(
        source=where,
        sha256=sha,
        image=image_vi.name,
        image_channels=image_channels,
        nodes=out_nodes,
        consts=consts,
        shapes=shapes,
        outputs=[o.name for o in g.output],
        dtypes=dtypes,
    )
    log.debug("forward model loaded", extra={"model": where, "nodes": len(out_nodes)})
    return fg


def _constant_value(node: Node) -> np.ndarray:
    from onnx import numpy_helper

    a = node.attrs
    if "value" in a:
        arr = np.asarray(numpy_helper.to_array(a["value"]))
        return arr.astype(np.float32) if arr.dtype in (np.float16, np.float64) else arr
    for key, dt in (("value_float", np.float32), ("value_int", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dt)
    for key, dt in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(list(a[key]), dtype=dt)
    raise ModelError(f"Constant node {node.name!r} has an unsupported value attribute {list(a)}")


def _fold(node: Node, consts: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """Evaluate a node whose inputs are all constants with the ONNX reference evaluator."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    try:
        proto = helper.make_node(node.op, list(node.inputs), list(node.outputs), **node.attrs)
        ins = [i for i in node.inputs if i]
        model = helper.make_model(
            helper.make_graph(
                [proto],
                "fold",
                [helper.make_tensor_value_info(i, 0, None) for i in ins],
                [helper.make_tensor_value_info(o, 0, None) for o in node.outputs if o],
            ),
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
        )
        res = ReferenceEvaluator(model).run(None, {i: consts[i] for i in ins})
    except Exception as exc:  # noqa: BLE001 -- folding is an optimisation: logged, node kept
        log.debug("constant folding skipped", extra={"node": node.name, "error": str(exc)})
        return None
    return [np.asarray(r).astype(np.float32) if np.asarray(r).dtype == np.float64 else np.asarray(r) for r in res]


def compute_layers(g: ForwardGraph) -> list[LayerInfo]:
    """Every differentiable node output, with channels, stride and receptive field."""
    diff = g.differentiable()
    jump: dict[str, int | None] = {g.image: 1}
    rf: dict[str, int | None] = {g.image: 1}
    infos: list[LayerInfo] = []
    rev_alias = g.display_names()
    for n in g.nodes:
        d_in = [i for i in n.inputs if i in diff]
        if not d_in:
            continue
        j_in = [jump.get(i) for i in d_in]
        r_in = [rf.get(i) for i in d_in]
        j: int | None
        r: int | None
        if any(x is None for x in j_in) or any(x is None for x in r_in):
            j, r = None, None
        else:
            j = max(int(x) for x in j_in if x is not None)
            r = max(int(x) for x in r_in if x is not None)
        if n.op in ("Conv", "MaxPool", "AveragePool", "LpPool", "ConvTranspose") and j is not None:
            ks = n.attrs.get("kernel_shape")
            if ks is None and n.op == "Conv" and len(n.inputs) > 1 and n.inputs[1] in g.consts:
                ks = list(g.consts[n.inputs[1]].shape[2:])
            k = int(max(ks)) if ks else 1
            s = int(max(n.attrs.get("strides", [1]) or [1]))
            dil = int(max(n.attrs.get("dilations", [1]) or [1]))
            assert r is not None
            r = r + dil * (k - 1) * j
            j = j * s
        elif n.op in ("GlobalAveragePool", "GlobalMaxPool", "Gemm", "MatMul", "Flatten", "Reshape"):
            r = None
            j = None
        for o in n.outputs:
            if not o or o not in diff:
                continue
            jump[o], rf[o] = j, r
            shape = g.shapes.get(o)
            ch = shape[1] if shape and len(shape) > 1 and isinstance(shape[1], int) else None
            infos.append(
                LayerInfo(
                    name=o,
                    op=n.op,
                    node=n.name,
                    channels=ch,
                    rank=len(shape) if shape else None,
                    stride=j,
                    receptive_field=r,
                    alias=rev_alias.get(o),
                )
            )
    return infos


def needed_nodes(g: ForwardGraph, targets: Iterable[str]) -> list[Node]:
    """The forward nodes needed to compute ``targets`` (in topological order)."""
    producers = g.producers()
    need: set[str] = set()
    stack = list(targets)
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        n = producers.get(t)
        if n is None:
            continue
        need.add(n.outputs[0])
        stack.extend(i for i in n.inputs if i)
    return [n for n in g.nodes if n.outputs[0] in need]


def default_class_layer(g: ForwardGraph) -> str:
    """The logits tensor: the input of a final Softmax, or else the first graph output."""
    producers = g.producers()
    out = g.outputs[0]
    seen = 0
    n = producers.get(out)
    while n is not None and seen < 8:
        if n.op in ("Softmax", "LogSoftmax"):
            return n.inputs[0]
        if n.op in ("Reshape", "Flatten", "Identity", "Squeeze") and n.inputs[0] in producers:
            # look through a reshape around the softmax
            nxt = producers[n.inputs[0]]
            if nxt.op in ("Softmax", "LogSoftmax"):
                return nxt.inputs[0]
        break
    return out


def format_layers(infos: Sequence[LayerInfo]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for li in infos:
        rows.append(
            (
                li.alias or li.name,
                li.op,
                "?" if li.channels is None else str(li.channels),
                "-" if li.stride is None else str(li.stride),
                "global" if li.receptive_field is None else str(li.receptive_field),
            )
        )
    return rows
