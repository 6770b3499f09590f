"""A PyTorch eager peer of the dream step, for the benchmark (``dreamstate bench dream``).

``TorchDream`` interprets a normalised :class:`~models.graph.ForwardGraph` with torch functional
ops, using the same weights (the ONNX initializers), and computes the same objective's gradient
with autograd. torch is a benchmark-only extra: it is imported lazily, and this module is run
as a separate process by the benchmark (``python -m dreamstate.engine.tools.torch_ref ...``) so the two runtimes
never share threads or allocators.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamstate.engine.core.errors import ModelError
from dreamstate.models.graph import ForwardGraph, Node, load_forward, needed_nodes


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ModelError(
            "PyTorch is not installed; the torch side of the dream benchmark needs it",
            hint="pip install 'dreamstate[bench]'",
        ) from exc
    return torch


def _sym_pads(n: Node, sp: int) -> tuple[list[int], list[int] | None]:
    """(symmetric padding, or explicit F.pad list when asymmetric)."""
    pads = [int(p) for p in n.attrs.get("pads", [0] * (2 * sp))]
    auto = str(n.attrs.get("auto_pad", "NOTSET") or "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise ModelError(f"torch reference: {n.op} auto_pad {auto} not supported", hint="benchmark another model")
    if auto == "VALID":
        pads = [0] * (2 * sp)
    begin, end = pads[:sp], pads[sp:]
    if begin == end:
        return begin, None
    flat: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        flat += [b, e]
    return [0] * sp, flat


def _pad(F: Any, n: Node, ins: list[Any], consts: dict[str, np.ndarray]) -> Any:
    """ONNX Pad (constant, reflect, edge; non-negative constant pads) as torch's F.pad."""
    from dreamstate.models.graph import constant_pads, pad_constant_value

    x = ins[0]
    r = x.dim()
    pads = constant_pads(n, consts, r)
    if pads is None or any(p < 0 for p in pads):
        raise ModelError(f"torch reference: Pad {n.name!r} with runtime or negative pads", hint="another model")
    flat: list[int] = []
    for a in reversed(range(r)):
        flat += [pads[a], pads[r + a]]
    while len(flat) > 2 and flat[-2:] == [0, 0]:
        flat = flat[:-2]  # torch pads the last axes first; leading untouched axes may go
    mode = str(n.attrs.get("mode", "constant"))
    if mode == "constant":
        return F.pad(x, flat, value=pad_constant_value(n, consts) or 0.0)
    return F.pad(x, flat, mode={"reflect": "reflect", "edge": "replicate"}[mode])


class TorchDream:
    """Forward to the dream layers and autograd back to the image, in torch eager."""

    def __init__(self, fg: ForwardGraph, layers: Sequence[str]) -> None:
        torch = _torch()
        self.torch = torch
        self.fg = fg
        self.tensors = [fg.resolve_layer(n) for n in layers]
        self.nodes = needed_nodes(fg, self.tensors)
        self.consts = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in fg.consts.items()}

    def forward(self, x: Any) -> list[Any]:
        torch = self.torch
        F = torch.nn.functional
        env: dict[str, Any] = {self.fg.image: x, **self.consts}
        for n in self.nodes:
            a = n.attrs
            ins: list[Any] = [env[i] if i else None for i in n.inputs]
            op = n.op
            if op == "Conv":
                sp = ins[1].dim() - 2
                pad, extra = _sym_pads(n, sp)
                inp = F.pad(ins[0], extra) if extra else ins[0]
                conv = (F.conv1d, F.conv2d, F.conv3d)[sp - 1]
                out = conv(
                    inp,
                    ins[1],
                    ins[2] if len(ins) > 2 else None,
                    stride=list(a.get("strides", [1] * sp)),
                    padding=pad,
                    dilation=list(a.get("dilations", [1] * sp)),
                    groups=int(a.get("group", 1)),
                )
            elif op == "Relu":
                out = F.relu(ins[0])
            elif op == "LeakyRelu":
                out = F.leaky_relu(ins[0], float(a.get("alpha", 0.01)))
            elif op == "Sigmoid":
                out = torch.sigmoid(ins[0])
            elif op == "HardSigmoid":
                out = torch.clamp(ins[0] * float(a.get("alpha", 0.2)) + float(a.get("beta", 0.5)), 0, 1)
            elif op == "HardSwish":
                out = F.hardswish(ins[0])
            elif op == "Clip":
                lo = ins[1] if len(ins) > 1 and ins[1] is not None else None
                hi = ins[2] if len(ins) > 2 and ins[2] is not None else None
                out = torch.clamp(ins[0], lo, hi)
            elif op in ("MaxPool", "AveragePool"):
                sp = ins[0].dim() - 2
                pad, extra = _sym_pads(n, sp)
                if extra:
                    raise ModelError(f"torch reference: asymmetric {op} pads", hint="benchmark another model")
                k = list(a["kernel_shape"])
                s = list(a.get("strides", [1] * sp))
                ceil = bool(a.get("ceil_mode", 0))
                if op == "MaxPool":
                    out = F.max_pool2d(ins[0], k, s, pad, ceil_mode=ceil)
                else:
                    out = F.avg_pool2d(
                        ins[0], k, s, pad, ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0))
                    )
            elif op == "GlobalAveragePool":
                out = ins[0].mean(dim=tuple(range(2, ins[0].dim())), keepdim=True)
            elif op == "LRN":
                out = F.local_response_norm(
                    ins[0],
                    int(a["size"]),
                    float(a.get("alpha", 1e-4)),
                    float(a.get("beta", 0.75)),
                    float(a.get("bias", 1.0)),
                )
            elif op == "BatchNormalization":
                out = F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], False, 0.0, float(a.get("epsilon", 1e-5)))
            elif op == "Concat":
                out = torch.cat(ins, dim=int(a["axis"]))
            elif op == "Add":
                out = ins[0] + ins[1]
            elif op == "Sub":
                out = ins[0] - ins[1]
            elif op == "Mul":
                out = ins[0] * ins[1]
            elif op == "Div":
                out = ins[0] / ins[1]
            elif op == "Reshape":
                shape = [int(v) for v in ins[1].tolist()]
                shape = [ins[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
                out = ins[0].reshape(shape)
            elif op == "Flatten":
                ax = int(a.get("axis", 1))
                out = ins[0].reshape(int(np.prod(ins[0].shape[:ax])), -1)
            elif op == "Transpose":
                out = ins[0].permute(*[int(p) for p in a["perm"]])
            elif op == "Gemm":
                A = ins[0].t() if a.get("transA") else ins[0]
                B = ins[1].t() if a.get("transB") else ins[1]
                out = float(a.get("alpha", 1.0)) * (A @ B)
                if len(ins) > 2 and ins[2] is not None:
                    out = out + float(a.get("beta", 1.0)) * ins[2]
            elif op == "MatMul":
                out = ins[0] @ ins[1]
            elif op in ("Dropout", "Identity"):
                out = ins[0]
            elif op == "Softmax":
                out = torch.softmax(ins[0], dim=int(a.get("axis", -1)))
            elif op == "Pad":
                out = _pad(F, n, ins, self.fg.consts)
            else:
                raise ModelError(
                    f"torch reference: op {op} (node {n.name!r}) not implemented", hint="benchmark another model"
                )
            env[n.outputs[0]] = out
        return [env[t] for t in self.tensors]

    def step(self, x: np.ndarray, weights: Sequence[float]) -> tuple[np.ndarray, float]:
        torch = self.torch
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).requires_grad_(True)
        acts = self.forward(xt)
        loss = sum(w * (act * act).mean() / 2 for w, act in zip(weights, acts, strict=True))
        (grad,) = torch.autograd.grad(loss, xt)
        return grad.numpy(), float(loss.detach())


def time_steps(run: Any, x: np.ndarray, repeat: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    """Child process of the benchmark.

    Reads commands from stdin, one per line, and answers each with one JSON line:
    ``warm W H`` (read ``input_WxH.npy`` from the grad directory when the parent wrote one, else
    make :func:`bench_input`; run two steps, save the gradient), ``step W H`` (one timed
    step: ``{"s": seconds}``), ``quit``. The parent alternates its own onnxruntime steps with
    these, so both runtimes are timed under the same machine load.
    """
    p = argparse.ArgumentParser(prog="python -m dreamstate.engine.tools.torch_ref")
    p.add_argument("--model", required=True)
    p.add_argument("--layers", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grad-out", required=True, help="directory for grad_WxH.npy (accuracy cross-check)")
    args = p.parse_args(argv)
    torch = _torch()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    fg = load_forward(Path(args.model))
    layers = args.layers.split(",")
    dream = TorchDream(fg, layers)
    weights = [1.0] * len(layers)
    inputs: dict[tuple[int, int], np.ndarray] = {}

    def reply(doc: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()

    reply({"ready": True})
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "quit":
            break
        w, h = int(parts[1]), int(parts[2])
        if parts[0] == "warm":
            given = Path(args.grad_out) / f"input_{w}x{h}.npy"
            x = np.load(given) if given.exists() else bench_input(fg.image_channels or 3, w, h)
            inputs[(w, h)] = x
            dream.step(x, weights)
            grad, loss = dream.step(x, weights)
            np.save(Path(args.grad_out) / f"grad_{w}x{h}.npy", grad)
            reply({"loss": loss})
        elif parts[0] == "step":
            t0 = time.perf_counter()
            dream.step(inputs[(w, h)], weights)
            reply({"s": time.perf_counter() - t0})
    return 0


def bench_image(w: int, h: int) -> np.ndarray:
    """The benchmark's picture: seeded uniform RGB noise in [0, 1], (H, W, 3) float32."""
    return np.random.default_rng(0).uniform(0.0, 1.0, (h, w, 3)).astype(np.float32)


def bench_input(channels: int, w: int, h: int) -> np.ndarray:
    """The benchmark's input image (same for both runtimes): uniform noise in 0..255 - mean."""
    return np.random.default_rng(0).uniform(-100, 130, (1, channels, h, w)).astype(np.float32)


if __name__ == "__main__":
    sys.exit(main())
