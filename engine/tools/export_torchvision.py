"""``dreamstate models export-torchvision googlenet --weights FILE``: torchvision GoogLeNet -> ONNX.

An optional tool (the ``export`` extra: torch); never needed at run time. The weights file is a
torchvision state dict (``googlenet-1378be20.pth``) and is read with ``torch.load(...,
weights_only=True)``, so no pickled code runs. The network is defined here with torchvision's
module names, so the state dict loads without torchvision installed. ``transform_input`` is
folded into the preprocessing instead of the graph: torchvision's GoogLeNet maps
ImageNet-normalised input back to ``(rgb - 0.5) / 0.5``, so the exported graph takes that
directly (registry entry ``googlenet-torchvision``: mean 0.5, std 0.5 on RGB [0, 1]).
Inception block outputs are renamed ``inception3a`` ... ``inception5b``
so dream layers carry the names artists know.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

from dreamstate.engine.core.errors import ModelError

log = logging.getLogger("dreamstate.models")

BLOCKS = (
    "inception3a",
    "inception3b",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "inception5a",
    "inception5b",
)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            "exporting torchvision models needs PyTorch, which is not installed",
            hint="pip install 'dreamstate[export]' (torch is never needed to run a show)",
        ) from exc
    return torch


def build_googlenet(num_classes: int = 1000) -> Any:
    """torchvision's GoogLeNet (eval, no aux heads, transform_input folded out), same names."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class BasicConv2d(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, cin: int, cout: int, **kw: Any) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x: Any) -> Any:
            return F.relu(self.bn(self.conv(x)), inplace=True)

    class Inception(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, cin: int, *chans: int) -> None:
            c1, c3r, c3, c5r, c5, proj = chans
            super().__init__()
            self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
            self.branch2 = nn.Sequential(
                BasicConv2d(cin, c3r, kernel_size=1), BasicConv2d(c3r, c3, kernel_size=3, padding=1)
            )
            # torchvision uses 3x3 here as well (a historical quirk its weights were trained with)
            self.branch3 = nn.Sequential(
                BasicConv2d(cin, c5r, kernel_size=1), BasicConv2d(c5r, c5, kernel_size=3, padding=1)
            )
            self.branch4 = nn.Sequential(
                nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), BasicConv2d(cin, proj, kernel_size=1)
            )

        def forward(self, x: Any) -> Any:
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    class GoogLeNet(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.conv2 = BasicConv2d(64, 64, kernel_size=1)
            self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
            self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
            self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
            self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
            self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
            self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
            self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
            self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
            self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
            self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
            self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.dropout = nn.Dropout(0.2)
            self.fc = nn.Linear(1024, num_classes)

        def forward(self, x: Any) -> Any:
            x = self.maxpool1(self.conv1(x))
            x = self.maxpool2(self.conv3(self.conv2(x)))
            x = self.maxpool3(self.inception3b(self.inception3a(x)))
            for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
                x = getattr(self, name)(x)
            x = self.maxpool4(x)
            x = self.inception5b(self.inception5a(x))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(self.dropout(x))

    return GoogLeNet()


def load_weights(model: Any, weights: Path) -> None:
    torch = _torch()
    if not weights.exists():
        raise ModelError(
            f"weights file {weights} does not exist",
            hint="download https://download.pytorch.org/models/googlenet-1378be20.pth and pass its path",
        )
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError variants
        raise ModelError(
            f"{weights} is not a loadable torch state dict ({type(exc).__name__}: {exc})",
            hint="use torchvision's googlenet-1378be20.pth (weights only, no pickled code)",
        ) from exc
    if not isinstance(state, dict):
        raise ModelError(f"{weights} holds a {type(state).__name__}, not a state dict", hint="save model.state_dict()")
    state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
    expected = model.state_dict()
    wrong = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected or wrong:
        raise ModelError(
            f"{weights} does not match torchvision's GoogLeNet: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}",
            hint="pass torchvision's googlenet weights (googlenet-1378be20.pth)",
        )
    model.load_state_dict(state, strict=True)


def export_googlenet(weights: Path, out: Path, *, opset: int = 18) -> Path:
    """Export GoogLeNet with ``weights`` to ``out`` (dynamic N, H, W); returns ``out``."""
    import onnx

    torch = _torch()
    model = build_googlenet()
    load_weights(model, weights)
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, 224, 224)
    tmp = out.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            opset_version=opset,
            dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N"}},
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    rename_block_outputs(proto)
    proto.ir_version = min(proto.ir_version, 10)
    onnx.save(proto, str(out))
    tmp.unlink(missing_ok=True)
    log.info("torchvision googlenet exported", extra={"file": str(out)})
    return out


def rename_block_outputs(proto: Any) -> None:
    """Give each inception block's Concat output the block's name (``inception4c``)."""
    pattern = re.compile(r"^/?(inception\w+)/Concat$")
    renames: dict[str, str] = {}
    for node in proto.graph.node:
        m = pattern.match(node.name)
        if node.op_type == "Concat" and m and m.group(1) in BLOCKS:
            renames[node.output[0]] = m.group(1)
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
    for vi in proto.graph.value_info:
        if vi.name in renames:
            vi.name = renames[vi.name]
