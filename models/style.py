"""Feed-forward style transfer: any image-to-image ONNX model made usable at any frame size.

The family is Johnson et al., "Perceptual Losses for Real-Time Style Transfer and
Super-Resolution" (ECCV 2016): a fully convolutional network (reflect pad, strided convs,
residual blocks with instance normalisation, transposed convs back up) that repaints a picture
in one forward pass. Exports of it (e.g. ``candy.onnx`` and ``mosaic.onnx`` from the
Windows-Machine-Learning samples, converted with OnnxMLTools at opset 7) declare a fixed
720x720 input and use experimental ops that later opsets removed. :func:`prepare_style_graph`
makes such a model usable at any size:

- initializers listed as graph inputs (old IR) become plain constants;
- the experimental ops are lowered to standard ones at the model's own opset, before the opset
  is bumped: ``ImageScaler`` (``y = scale * x + bias[c]``) -> ``Mul`` + ``Add``; ``Affine``
  (``y = alpha * x + beta``) -> ``Mul`` + ``Add``; ``Crop`` with ``border = [left, top, right,
  bottom]`` -> ``Slice`` on the spatial axes (a ``Crop`` with the fixed-size ``scale``
  attribute cannot be relaxed and raises :class:`ModelError`);
- the opset is converted to 18 (``onnx.version_converter``);
- a ``ConvTranspose`` whose ``output_shape`` was fixed for the declared size gets the explicit
  ``pads`` / ``output_padding`` that give the same output there (ONNX operator spec: total
  padding = ``s*(in-1) + output_padding + (k-1)*d + 1 - output_shape``, split begin/end by
  ``auto_pad``), so the output follows the input at every other size;
- batch, height and width of the input and output become symbolic.

Any other op from outside the standard opsets raises :class:`ModelError` naming it.

:class:`StyleModel` runs the prepared graph in onnxruntime. Pixel convention: RGB float32
(H, W, 3) in [0, 1] goes in and comes out. The model's own convention comes from the registry
(matched by SHA-256) or a sidecar ``<model>.json`` (``preprocessing``: ``bgr``, ``value_range``,
``mean``, ``std``; see :mod:`models.registry`); the output is read back with the same channel
order and value range (no mean/std: these networks output pixels), then clipped to [0, 1]
(the candy model's raw output spans about -37..271 for a 0..255 range).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dreamstate.engine.core.errors import ModelError
from dreamstate.models.graph import IR_VERSION, OPSET, read_model_bytes
from dreamstate.models.registry import ModelSpec, Preprocess

log = logging.getLogger("dreamstate.models")

# Ops of ONNX's experimental set (removed in opset 10) that this module lowers.
LOWERED_OPS = ("ImageScaler", "Affine", "Crop")
# Other experimental ops of that era: refused with their name rather than failing later.
EXPERIMENTAL_OPS = frozenset({"ATen", "ConstantFill", "GRUUnit", "GivenTensorFill", "ParametricSoftplus",
                              "Scale", "ScaledTanh", "ImageScaler", "Affine", "Crop", "DynamicSlice"})

_BIG = np.iinfo(np.int64).max


@dataclass(frozen=True)
class PreparedStyle:
    """A style graph ready for onnxruntime: its bytes and what was done to it."""

    model: Any  # onnx.ModelProto
    input: str
    output: str
    declared: tuple[int, int] | None  # the fixed (height, width) the file declared, if any
    lowered: dict[str, int]  # op -> how many nodes were lowered
    relaxed_conv_transpose: int  # ConvTranspose nodes whose fixed output_shape became pads


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _lower_experimental(graph: Any, opset: int) -> dict[str, int]:
    """Replace ImageScaler, Affine and Crop nodes of ``graph`` in place (see module docstring)."""
    from onnx import helper, numpy_helper

    counts: dict[str, int] = {}
    out_nodes: list[Any] = []
    new_inits: list[Any] = []
    for n in graph.node:
        op = n.op_type
        if n.domain not in ("", "ai.onnx") or op not in EXPERIMENTAL_OPS:
            out_nodes.append(n)
            continue
        name = n.name or n.output[0]
        if op not in LOWERED_OPS:
            raise ModelError(
                f"op {op} (node {name!r}) is one of ONNX's old experimental ops and has no lowering here",
                hint=f"re-export the model with standard ops; ops lowered automatically: {', '.join(LOWERED_OPS)}",
            )
        counts[op] = counts.get(op, 0) + 1
        x, y = n.input[0], n.output[0]
        if op in ("ImageScaler", "Affine"):
            if op == "ImageScaler":
                scale = np.asarray(float(_attr(n, "scale", 1.0)), np.float32)
                bias = np.asarray(list(_attr(n, "bias", [])), np.float32)
                bias = bias.reshape(1, -1, 1, 1) if bias.size else np.zeros((), np.float32)
            else:
                scale = np.asarray(float(_attr(n, "alpha", 1.0)), np.float32)
                bias = np.asarray(float(_attr(n, "beta", 0.0)), np.float32)
            s_name, b_name, mid = f"{name}__scale", f"{name}__bias", f"{name}__scaled"
            new_inits += [numpy_helper.from_array(scale, s_name), numpy_helper.from_array(bias, b_name)]
            out_nodes.append(helper.make_node("Mul", [x, s_name], [mid], name=f"{name}__mul"))
            out_nodes.append(helper.make_node("Add", [mid, b_name], [y], name=f"{name}__add"))
            continue
        # Crop: border = [left, top, right, bottom]; with "scale" = [height, width] the crop has a
        # fixed size, which would pin the model to one frame size again.
        if _attr(n, "scale", None):
            raise ModelError(
                f"Crop node {name!r} crops to a fixed size (scale={list(_attr(n, 'scale', []))}); "
                "such a model only works at the size it was exported for",
                hint="re-export the model without a fixed-size Crop, or feed it frames of its declared size",
            )
        border = [int(v) for v in _attr(n, "border", [0, 0, 0, 0])]
        if len(border) != 4 or min(border) < 0:
            raise ModelError(f"Crop node {name!r} has border {border}; expected 4 values >= 0",
                             hint="re-export the model")
        left, top, right, bottom = border
        starts, ends = [top, left], [-bottom if bottom else _BIG, -right if right else _BIG]
        if opset < 10:
            out_nodes.append(helper.make_node("Slice", [x], [y], name=f"{name}__slice", axes=[2, 3],
                                              starts=starts, ends=ends))
        else:  # a model at opset 10..17 that still carries Crop: Slice takes inputs
            names = [f"{name}__{k}" for k in ("starts", "ends", "axes")]
            for k, v in zip(names, (starts, ends, [2, 3]), strict=True):
                new_inits.append(numpy_helper.from_array(np.asarray(v, np.int64), k))
            out_nodes.append(helper.make_node("Slice", [x, *names], [y], name=f"{name}__slice"))
    del graph.node[:]
    graph.node.extend(out_nodes)
    graph.initializer.extend(new_inits)
    return counts


def _fixed_conv_transpose(model: Any) -> int:
    """Turn every ConvTranspose ``output_shape`` into explicit pads (see module docstring).
    Needs the declared input shape still in place (shape inference gives each node's input)."""
    from onnx import helper, shape_inference

    inferred = shape_inference.infer_shapes(model, strict_mode=False)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    changed = 0
    for n in model.graph.node:
        if n.op_type != "ConvTranspose":
            continue
        out_shape = [int(v) for v in _attr(n, "output_shape", [])]
        if not out_shape:
            continue
        name = n.name or n.output[0]
        ins = shapes.get(n.input[0])
        w = weights.get(n.input[1])
        if ins is None or w is None or len(ins) < 3 or min(ins[2:]) < 1:
            raise ModelError(
                f"ConvTranspose {name!r} has a fixed output_shape {out_shape} and the size of its input "
                "cannot be inferred, so it cannot be made to follow the frame size",
                hint="re-export the model with pads instead of output_shape, or with a static input shape",
            )
        sp = len(ins) - 2
        out_shape = out_shape[-sp:]
        k = [int(v) for v in _attr(n, "kernel_shape", w[2:])]
        s = [int(v) for v in _attr(n, "strides", [1] * sp)]
        d = [int(v) for v in _attr(n, "dilations", [1] * sp)]
        op_ = [int(v) for v in _attr(n, "output_padding", [0] * sp)]
        auto = _attr(n, "auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        begin, end, extra = [], [], []
        for i in range(sp):
            total = s[i] * (ins[2 + i] - 1) + op_[i] + (k[i] - 1) * d[i] + 1 - out_shape[i]
            if total < 0:  # the fixed output is larger than natural: grow it at the end
                begin.append(0)
                end.append(0)
                extra.append(op_[i] - total)
                continue
            b = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begin.append(b)
            end.append(total - b)
            extra.append(op_[i])
        keep = [a for a in n.attribute if a.name not in ("output_shape", "auto_pad", "pads", "output_padding")]
        del n.attribute[:]
        n.attribute.extend(keep)
        n.attribute.append(helper.make_attribute("pads", begin + end))
        if any(extra):
            n.attribute.append(helper.make_attribute("output_padding", extra))
        changed += 1
    return changed


def prepare_style_graph(source: Path | bytes, *, label: str | None = None) -> PreparedStyle:
    """Read an image-to-image ONNX model and make it run at any frame size (module docstring).

    Raises ModelError for a file that is not ONNX, a model without exactly one image input and
    one output of rank 4, an experimental op with no lowering, a fixed-size Crop, or a failed
    opset conversion; each message names the model and the thing, with the fix."""
    import onnx
    from onnx import helper, version_converter

    data = read_model_bytes(source) if isinstance(source, Path) else source
    where = label or (str(source) if isinstance(source, Path) else "<bytes>")
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise ModelError(f"style model {where} is not a valid ONNX file ({type(exc).__name__}: {exc})",
                         hint="the file is corrupt or truncated: fetch it again") from exc
    g = model.graph
    init_names = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in init_names]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ModelError(
            f"style model {where} has {len(inputs)} image inputs and {len(g.output)} outputs; "
            "a style model maps one (N, 3, H, W) image to one (N, 3, H, W) image",
            hint="export the network with one image input and one image output",
        )
    image, out = inputs[0], g.output[0]
    dims = image.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelError(f"style model {where}: input {image.name!r} has rank {len(dims)}, expected (N, C, H, W)",
                         hint="export the network with an NCHW image input")
    declared = (dims[2].dim_value, dims[3].dim_value) \
        if dims[2].HasField("dim_value") and dims[3].HasField("dim_value") else None
    # old IR: weights are also graph inputs; keep only the image
    keep_inputs = [image]
    del g.input[:]
    g.input.extend(keep_inputs)
    base = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] or [1])
    lowered = _lower_experimental(g, base)
    del g.value_info[:]
    # IR 4 or later: initializers need not be graph inputs (the converter insists on one or the other)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", base)], ir_version=IR_VERSION)
    if base < OPSET:
        try:
            model = version_converter.convert_version(model, OPSET)
        except Exception as exc:  # the converter raises plain RuntimeError/ValueError
            raise ModelError(f"style model {where} (opset {base}) could not be converted to opset {OPSET}: {exc}",
                             hint="re-export the model with opset 18 or later") from exc
    relaxed = _fixed_conv_transpose(model)
    # dynamic N, H, W on the image input and output
    for vi, (n_, h_, w_) in ((model.graph.input[0], ("N", "H", "W")), (model.graph.output[0], ("N", "Ho", "Wo"))):
        d = vi.type.tensor_type.shape.dim
        if len(d) == 4:
            for j, p in ((0, n_), (2, h_), (3, w_)):
                d[j].Clear()
                d[j].dim_param = p
    del model.graph.value_info[:]
    model.ir_version = IR_VERSION
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError: report with the model's name
        raise ModelError(f"style model {where} failed the ONNX checker after lowering: {exc}",
                         hint="report this model") from exc
    if lowered:
        log.info("style model lowered", extra={"model": where, "lowered": lowered, "conv_transpose": relaxed})
    return PreparedStyle(model, image.name, out.name, declared, lowered, relaxed)


class StyleModel:
    """A style network in an onnxruntime session (see the module docstring).

    ``stylize`` may be called from one thread at a time per instance; it returns a new array.
    ``provider`` says where it runs (CUDA when asked for and available, else CPU).
    """

    def __init__(self, prepared: PreparedStyle, spec: ModelSpec, session: Any, provider: str) -> None:
        self.prepared = prepared
        self.spec = spec
        self.name = spec.name
        self.provider = provider
        self._session = session
        pre: Preprocess = spec.preprocess
        self._pre = pre
        order = [2, 1, 0] if pre.bgr else [0, 1, 2]
        self._order = order
        self._mean = np.asarray(pre.mean, np.float32)[order].reshape(1, 3, 1, 1)
        self._std = np.asarray(pre.std, np.float32)[order].reshape(1, 3, 1, 1)
        self._warned_size = False

    @classmethod
    def load(cls, model: str | Path, *, device: Literal["auto", "cpu", "cuda"] = "auto",
             threads: int | None = None) -> StyleModel:
        """Resolve ``model`` (a registry name such as ``candy``, or a path to an .onnx file with
        an optional sidecar ``.json``), prepare its graph and open a session. Raises ModelError
        (missing file, unsupported op, onnxruntime refusal) naming the model and the fix."""
        from dreamstate.models import registry
        from dreamstate.models.session import make_session

        path, spec = registry.resolve(model)
        if spec.kind != "style":
            log.warning("model is not marked as a style model; treating it as image-to-image",
                        extra={"model": spec.name, "fix": "give its model.json \"kind\": \"style\""})
        prepared = prepare_style_graph(path, label=str(path))
        session, provider = make_session(prepared.model.SerializeToString(), device=device, threads=threads,
                                         what=f"{spec.name} style")
        return cls(prepared, spec, session, provider)

    def to_model(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) or (N, H, W, 3) RGB in [0, 1] -> (N, 3, H, W) float32 model input."""
        a = np.asarray(rgb, np.float32)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[3] != 3:
            raise ModelError(f"style input must be (H, W, 3) RGB, got shape {np.asarray(rgb).shape}",
                             hint="convert the frame to RGB")
        x = a[..., self._order].transpose(0, 3, 1, 2) * np.float32(self._pre.scale)
        return np.ascontiguousarray((x - self._mean) / self._std, dtype=np.float32)

    def from_model(self, y: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) model output -> (N, H, W, 3) RGB, clipped to [0, 1]."""
        v = np.asarray(y, np.float32).transpose(0, 2, 3, 1)[..., self._order] / np.float32(self._pre.scale)
        out: np.ndarray = np.clip(v, 0.0, 1.0)
        return out

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """The session on a model-space batch (N, 3, H, W); the unclipped output."""
        out: np.ndarray = self._session.run([self.prepared.output], {self.prepared.input: x})[0]
        return out

    def stylize(self, rgb: np.ndarray) -> np.ndarray:
        """Repaint an (H, W, 3) RGB [0, 1] frame; returns (H, W, 3) float32 RGB in [0, 1].
        An output a few pixels off the input size (sizes not divisible by the network's total
        stride) is resized back, logged once."""
        from dreamstate.engine.core.cvlib import cv

        h, w = np.asarray(rgb).shape[:2]
        out = self.from_model(self.run_raw(self.to_model(rgb)))[0]
        if out.shape[:2] != (h, w):
            if not self._warned_size:
                self._warned_size = True
                log.info("style output size differs from the frame; resizing",
                         extra={"model": self.name, "frame": [h, w], "output": list(out.shape[:2])})
            out = np.asarray(cv().resize(out, (w, h), interpolation=cv().INTER_LINEAR), np.float32)
        res: np.ndarray = np.ascontiguousarray(out, dtype=np.float32)
        return res


def style_names(names: Sequence[str]) -> list[str]:
    """The registry names among ``names`` that are style models."""
    from dreamstate.models import registry

    return [n for n in names if registry.get_spec(n).kind == "style"]
