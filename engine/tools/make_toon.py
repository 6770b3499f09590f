"""Build the bundled ``toon`` style model: an image-to-image ONNX graph with hand-set weights.

Why it exists: the demo show has a style scene, and a fresh, offline machine has no learned
style network. No well-kept PyPI package bundles permissively licensed style models (checked:
``faststyle`` 0.0.4 and ``bgral`` 0.2.0 ship code only), and training a fast-neural-style
network (Johnson et al. 2016) needs torch, which CI never installs, plus hours of GPU time on
a photo corpus. So the default is a cartoon filter written directly as a network, which runs
through exactly the loader and the style mode the learned models use (``models.style``):

1. two passes of a separable 5x5 Gaussian blur (sigma 1.2), depthwise Conv with reflect Pad:
   flat regions;
2. soft colour quantisation to ``LEVELS`` levels per channel:
   ``q = (floor(L x) + sigmoid(k (frac(L x) - 1/2))) / L`` (posterised bands, smooth edges);
3. saturation boost: a 1x1 Conv ``(1 + s) I - s * luma`` (Rec. 601 luma weights);
4. ink lines: Sobel on the blurred luma, ``ink = clip(g (|grad| - t), 0, 1)``, and
   ``out = q * (1 - 0.85 ink)``.

Input and output: RGB float32 (N, 3, H, W) in [0, 1], any size; ``model.json`` says so
(``kind = "style"``). The graph is deterministic, so ``python -m dreamstate.engine.tools.make_toon``
rewrites the same bytes (a test checks the shipped file against a rebuild).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

LEVELS = 5
SHARPNESS = 14.0
SATURATION = 0.0
EDGE_GAIN = 9.0
EDGE_THRESHOLD = 0.16
INK = 0.6
OUT_DIR = Path(__file__).resolve().parents[2] / "models" / "toon"


def _gauss(sigma: float, k: int = 5) -> np.ndarray:
    x = np.arange(k, dtype=np.float64) - (k - 1) / 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    out: np.ndarray = (g / g.sum()).astype(np.float32)
    return out


def build() -> Any:
    """The toon ModelProto (opset 18, IR 10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from dreamstate.models.graph import IR_VERSION, OPSET

    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    g = _gauss(1.2)
    wh = const("blur_h", np.tile(g.reshape(1, 1, 1, 5), (3, 1, 1, 1)))
    wv = const("blur_v", np.tile(g.reshape(1, 1, 5, 1), (3, 1, 1, 1)))
    pad2 = const("pad2", np.asarray([0, 0, 2, 2, 0, 0, 2, 2], np.int64))
    pad1 = const("pad1", np.asarray([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
    x = "image"
    for i in range(2):
        nodes.append(helper.make_node("Pad", [x, pad2], [f"p{i}"], mode="reflect"))
        nodes.append(helper.make_node("Conv", [f"p{i}", wh], [f"h{i}"], group=3, pads=[0, 2, 0, 2]))
        nodes.append(helper.make_node("Conv", [f"h{i}", wv], [f"b{i}"], group=3, pads=[0, 0, 0, 0]))
        # the horizontal pass padded W by 2 + 2 and the vertical pass reads the padded H: crop W back
        nodes.append(helper.make_node("Slice", [f"b{i}", const(f"s{i}a", np.asarray([2], np.int64)),
                                                const(f"s{i}b", np.asarray([-2], np.int64)),
                                                const(f"s{i}c", np.asarray([3], np.int64))], [f"c{i}"]))
        x = f"c{i}"
    smooth = x
    # soft quantisation
    lv = const("levels", np.asarray(LEVELS, np.float32))
    nodes += [helper.make_node("Mul", [smooth, lv], ["t"]),
              helper.make_node("Floor", ["t"], ["tf"]),
              helper.make_node("Sub", ["t", "tf"], ["fr"]),
              helper.make_node("Sub", ["fr", const("half", np.asarray(0.5, np.float32))], ["frc"]),
              helper.make_node("Mul", ["frc", const("sharp", np.asarray(SHARPNESS, np.float32))], ["frk"]),
              helper.make_node("Sigmoid", ["frk"], ["step"]),
              helper.make_node("Add", ["tf", "step"], ["qt"]),
              helper.make_node("Div", ["qt", lv], ["q"])]
    # saturation boost
    luma = np.asarray([0.299, 0.587, 0.114], np.float32)
    sat = (1 + SATURATION) * np.eye(3, dtype=np.float32) - SATURATION * np.tile(luma, (3, 1))
    nodes.append(helper.make_node("Conv", ["q", const("sat", sat.reshape(3, 3, 1, 1))], ["qs"]))
    # ink lines from the blurred luma
    nodes.append(helper.make_node("Conv", [smooth, const("luma", luma.reshape(1, 3, 1, 1))], ["y"]))
    nodes.append(helper.make_node("Pad", ["y", pad1], ["yp"], mode="reflect"))
    sx = np.asarray([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 4.0
    sob = np.stack([sx, sx.T]).reshape(2, 1, 3, 3)
    nodes += [helper.make_node("Conv", ["yp", const("sobel", sob)], ["gxy"]),
              helper.make_node("Mul", ["gxy", "gxy"], ["g2"]),
              helper.make_node("ReduceSum", ["g2", const("ax1", np.asarray([1], np.int64))], ["m2"], keepdims=1),
              helper.make_node("Sqrt", ["m2"], ["mag"]),
              helper.make_node("Sub", ["mag", const("thr", np.asarray(EDGE_THRESHOLD / 4, np.float32))], ["me"]),
              helper.make_node("Mul", ["me", const("gain", np.asarray(EDGE_GAIN * 4, np.float32))], ["mg"]),
              helper.make_node("Clip", ["mg", const("zero", np.asarray(0.0, np.float32)),
                                        const("one", np.asarray(1.0, np.float32))], ["ink"]),
              helper.make_node("Mul", ["ink", const("inkw", np.asarray(-INK, np.float32))], ["inkn"]),
              helper.make_node("Add", ["inkn", "one"], ["keep"]),
              helper.make_node("Mul", ["qs", "keep"], ["styled"])]
    graph = helper.make_graph(
        nodes, "toon",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("styled", TensorProto.FLOAT, ["N", 3, "H", "W"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="dreamstate make_toon")
    onnx.checker.check_model(model)
    return model


def model_json(data: bytes) -> dict[str, Any]:
    return {
        "name": "toon",
        "kind": "style",
        "title": "Toon (a hand-built cartoon filter as an ONNX network; no learned weights)",
        "file": "toon.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "preprocessing": {"bgr": False, "value_range": [0, 1], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
        "notes": "flat colour bands and ink lines; built by engine/tools/make_toon.py (MIT, dreamstate)",
        "licence": "MIT (dreamstate); every weight is set by hand in make_toon.py",
    }


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:] or [str(OUT_DIR)])[0])
    out.mkdir(parents=True, exist_ok=True)
    data = build().SerializeToString()
    (out / "toon.onnx").write_bytes(data)
    (out / "model.json").write_text(json.dumps(model_json(data), indent=2) + "\n")
    sys.stdout.write(f"wrote {out / 'toon.onnx'} ({len(data)} bytes)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
