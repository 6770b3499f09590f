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

from dreamstate.engine.core.errors import ModelError

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
            if len(alias) < len(best.get(tensor, tensor)):
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


def constant_pads(node: Node, consts: dict[str, np.ndarray], rank: int | None) -> list[int] | None:
    """A Pad node's pads as ``[b_0..b_{r-1}, e_0..e_{r-1}]`` over all axes, or None when they
    are not constant. Reads the ``pads`` input (opset >= 11, with the optional ``axes`` input of
    opset 18) or the ``pads`` attribute (opset < 11)."""
    if len(node.inputs) > 1 and node.inputs[1]:
        if node.inputs[1] not in consts:
            return None
        pads = [int(v) for v in np.asarray(consts[node.inputs[1]]).reshape(-1)]
    elif "pads" in node.attrs:
        pads = [int(v) for v in node.attrs["pads"]]
    else:
        return None
    if len(node.inputs) > 3 and node.inputs[3]:
        if node.inputs[3] not in consts or rank is None:
            return None
        axes = [int(a) % rank for a in np.asarray(consts[node.inputs[3]]).reshape(-1)]
        full = [0] * (2 * rank)
        for j, a in enumerate(axes):
            full[a], full[rank + a] = pads[j], pads[len(axes) + j]
        return full
    return pads


def pad_constant_value(node: Node, consts: dict[str, np.ndarray]) -> float | None:
    """The fill value of a constant-mode Pad (0 when absent), or None when not constant."""
    if len(node.inputs) > 2 and node.inputs[2]:
        if node.inputs[2] not in consts:
            return None
        return float(np.asarray(consts[node.inputs[2]]).reshape(-1)[0]) if consts[node.inputs[2]].size else 0.0
    return float(node.attrs.get("value", 0.0))


def fold_pads(nodes: Sequence[Node], consts: dict[str, np.ndarray], *, keep: Iterable[str] = ()) -> list[Node]:
    """Fold zero ``Pad`` nodes into the ``Conv`` nodes that read them (exact).

    A Pad is folded when its mode is ``constant`` with fill 0, its pads are constant and
    non-negative and touch only the spatial axes, its output is not in ``keep`` (graph outputs),
    and every reader is a ``Conv`` with explicit padding (``auto_pad`` NOTSET or VALID) reading
    it as the data input. Each reader's ``pads`` grows by the Pad's spatial pads and reads the
    Pad's input instead; the Pad node disappears. TensorFlow-style "same" padding exports this
    way (EfficientNet-Lite0 has 17 such Pads). Everything else is left as it is.
    """
    keep = set(keep)
    readers: dict[str, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                readers.setdefault(i, []).append(n)
    replace: dict[str, Node] = {}  # conv output -> rewritten conv
    drop: set[str] = set()
    for n in nodes:
        if n.op != "Pad" or str(n.attrs.get("mode", "constant")) != "constant" or n.outputs[0] in keep:
            continue
        users = readers.get(n.outputs[0], [])
        if not users or any(
            u.op != "Conv"
            or u.inputs[0] != n.outputs[0]
            or n.outputs[0] in u.inputs[1:]
            or str(u.attrs.get("auto_pad", "NOTSET") or "NOTSET") not in ("NOTSET", "VALID")
            for u in users
        ):
            continue
        rank = None
        w = users[0].inputs[1] if len(users[0].inputs) > 1 else ""
        if w in consts:
            rank = consts[w].ndim
        pads = constant_pads(n, consts, rank)
        if pads is None or rank is None or len(pads) != 2 * rank or pad_constant_value(n, consts) != 0.0:
            continue
        sp = rank - 2
        if any(p < 0 for p in pads) or pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
            continue
        extra = pads[2:rank] + pads[rank + 2 :]
        for u in users:
            cur = replace.get(u.outputs[0], u)
            if str(cur.attrs.get("auto_pad", "NOTSET") or "NOTSET") == "VALID":
                old = [0] * (2 * sp)
            else:
                old = [int(v) for v in cur.attrs.get("pads", [0] * (2 * sp))]
            attrs = {k: v for k, v in cur.attrs.items() if k != "auto_pad"}
            attrs["pads"] = [a + b for a, b in zip(old, extra, strict=True)]
            replace[u.outputs[0]] = Node(cur.op, cur.name, (n.inputs[0], *cur.inputs[1:]), cur.outputs, attrs)
        drop.add(n.outputs[0])
    return [replace.get(n.outputs[0], n) for n in nodes if n.outputs[0] not in drop]


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


def layer_depths(g: ForwardGraph) -> dict[str, float]:
    """Each dreamable tensor's depth: its position among the layers (topological order) as a
    fraction, 0.0 = the first layer after the image, 1.0 = the last. Keys are tensor names."""
    infos = g.layers()
    n = max(1, len(infos) - 1)
    return {li.name: i / n for i, li in enumerate(infos)}


def depth_warning(g: ForwardGraph, layer: str, recommended: Sequence[str], *, model: str,
                  tolerance: float = 0.2) -> str | None:
    """A warning when ``layer`` is far (more than ``tolerance`` in :func:`layer_depths`) from
    every recommended layer of the model, or None. Both model families may name layers alike
    (``block2``): after a model swap, old names can silently dream at a shallow layer."""
    depths = layer_depths(g)
    tensor = g.resolve_layer(layer)
    rec = []
    for name in recommended:
        try:
            rec.append((name, depths[g.resolve_layer(name)]))
        except (ModelError, KeyError):
            continue
    if not rec or tensor not in depths:
        return None
    d = depths[tensor]
    nearest = min(rec, key=lambda r: abs(r[1] - d))
    if abs(nearest[1] - d) <= tolerance:
        return None
    where = "shallower" if d < nearest[1] else "deeper"
    listed = ", ".join(f"{n} ({v:.2f})" for n, v in rec)
    return (
        f"layer {layer!r} sits at depth {d:.2f} of {model}, {where} than its recommended layers {listed}: "
        f"it will dream {'fine strokes and textures' if where == 'shallower' else 'whole objects or noise'} "
        f"rather than the motifs the model is known for; use a recommended layer, or ignore this if intended"
    )


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


_WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})
_FLAT_OPS = frozenset({"Flatten", "Reshape", "Gemm", "MatMul", "Squeeze"})
_GLOBAL_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
_SEARCH_LIMIT = 8192


def _window_out(n: Node, g: ForwardGraph, size: int, axis: int) -> int:
    """Output length along spatial ``axis`` (0 = height, 1 = width) of a Conv or pool for an
    input of ``size``; 0 or less means the input is too small. ONNX operator formulas:
    ``floor((in + pb + pe - d*(k-1) - 1) / s) + 1`` (ceil with ``ceil_mode``); SAME_* auto_pad
    gives ``ceil(in / s)``. This is the ONNX specification; onnxruntime accepts a pool window
    that overhangs by less than a stride, so a model may run a few pixels below this bound."""
    ks = n.attrs.get("kernel_shape")
    if ks is None and n.op == "Conv" and len(n.inputs) > 1 and n.inputs[1] in g.consts:
        ks = list(g.consts[n.inputs[1]].shape[2:])
    ks = [int(v) for v in ks] if ks else [1, 1]
    if len(ks) != 2:
        return size
    k = int(ks[axis])
    s = int((n.attrs.get("strides") or [1, 1])[axis])
    d = int((n.attrs.get("dilations") or [1, 1])[axis])
    auto = str(n.attrs.get("auto_pad", "NOTSET") or "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return -(-size // s)
    pads = [int(v) for v in (n.attrs.get("pads") or [0, 0, 0, 0])] if auto != "VALID" else [0, 0, 0, 0]
    span = size + pads[axis] + pads[2 + axis] - d * (k - 1) - 1
    if span < 0:
        return 0
    return (-(-span // s) if int(n.attrs.get("ceil_mode", 0)) else span // s) + 1


def spatial_fits(g: ForwardGraph, height: int, width: int, targets: Iterable[str] | None = None) -> bool:
    """Whether an image of ``height`` x ``width`` pixels leaves every spatial tensor needed for
    ``targets`` (default: the model outputs) at least 1 x 1. Sizes are propagated through
    Conv/pool windows, constant Pads, SpaceToDepth/DepthToSpace and constant-scale Resize;
    other ops pass the smallest spatial input through; dense/flatten ops end the spatial part."""
    sizes: dict[str, tuple[int, int] | None] = {g.image: (height, width)}
    for n in needed_nodes(g, list(targets) if targets is not None else g.outputs):
        ins = [sizes[i] for i in n.inputs if i in sizes]
        spatial = [v for v in ins if v is not None]
        out: tuple[int, int] | None
        if not spatial or n.op in _FLAT_OPS:
            out = None
        else:
            h, w = min(v[0] for v in spatial), min(v[1] for v in spatial)
            if n.op in _WINDOW_OPS:
                out = (_window_out(n, g, h, 0), _window_out(n, g, w, 1))
            elif n.op in _GLOBAL_OPS:
                out = (1, 1)
            elif n.op == "Pad":
                pads = constant_pads(n, g.consts, 4)
                out = (h + pads[2] + pads[6], w + pads[3] + pads[7]) if pads and len(pads) == 8 else (h, w)
            elif n.op == "SpaceToDepth":
                b = int(n.attrs.get("blocksize", 1))
                out = (h // b, w // b)
            elif n.op == "DepthToSpace":
                b = int(n.attrs.get("blocksize", 1))
                out = (h * b, w * b)
            elif n.op in ("Resize", "Upsample"):
                sc = next((g.consts[i] for i in n.inputs[1:] if i in g.consts and g.consts[i].dtype.kind == "f"
                           and g.consts[i].size == 4), None)
                flat = sc.reshape(-1) if sc is not None else None
                out = (int(h * float(flat[2])), int(w * float(flat[3]))) if flat is not None else (h, w)
            else:
                out = (h, w)
        if out is not None and min(out) < 1:
            return False
        for o in n.outputs:
            if o:
                sizes[o] = out
    return True


def min_input_size(g: ForwardGraph, targets: Iterable[str] | None = None) -> tuple[int, int]:
    """The smallest (height, width) in pixels an image may have so that every tensor needed for
    ``targets`` (default: the model outputs) keeps at least one pixel; found by binary search
    on :func:`spatial_fits` (output sizes only grow with the input). Measured: EfficientNet-Lite0
    (16, 16) for its recommended layers, exactly where onnxruntime stops; the shared SqueezeNet
    (31, 31), where onnxruntime still runs down to 23; the starter model (8, 8), though
    onnxruntime's truncating 2x2/2 pools let its step run at any size (a pooled 1-px map stays 1 px).
    Raises ``ModelError`` when even 8192 px do not fit."""
    want = list(targets) if targets is not None else None
    if not spatial_fits(g, _SEARCH_LIMIT, _SEARCH_LIMIT, want):
        raise ModelError(
            f"model {g.source}: no image up to {_SEARCH_LIMIT} px fits its layers",
            hint="the model's spatial layers could not be followed; report the model",
        )
    result = []
    for axis in (0, 1):
        lo, hi = 1, _SEARCH_LIMIT
        while lo < hi:
            mid = (lo + hi) // 2
            ok = spatial_fits(g, mid, _SEARCH_LIMIT, want) if axis == 0 else spatial_fits(g, _SEARCH_LIMIT, mid, want)
            if ok:
                hi = mid
            else:
                lo = mid + 1
        result.append(lo)
    return result[0], result[1]


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
