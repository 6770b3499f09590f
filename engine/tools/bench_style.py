"""``dreamstate bench style``: frames per second of a feed-forward style model.

For each ``--model`` (default: ``../shared/models/candy.onnx`` beside the checkout when it is
there, and the bundled ``toon``) it loads the model through :class:`models.style.StyleModel`
(shape relaxed, old ops lowered), then times ``stylize`` (RGB in, RGB out, conversions
included) at each ``--size`` (640x360 and 1280x720) with ``--threads`` (2) onnxruntime threads
on ``--device`` (cpu; cuda where a GPU is lent), after one warm-up frame, and prints ms per
frame (median of ``--frames``) and frames per second.

Peer, side by side in the same run: the original file in a plain onnxruntime session at the
only size it accepts (its declared 720x720, experimental ops and all), against the prepared
graph at the same size; the ratio shows what the lowering costs (1.0 = nothing).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamstate.engine.core.params import size_arg

SHARED_CANDY = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "candy.onnx"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs="+", default=None,
                        help="registry names or .onnx paths (default: ../shared/models/candy.onnx and toon)")
    parser.add_argument("--size", nargs="+", type=size_arg, default=[(640, 360), (1280, 720)])
    parser.add_argument("--frames", type=int, default=3, help="timed frames per size (3)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (2)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--no-peer", action="store_true", help="skip the original graph at its declared size")


def _time(fn: Any, repeats: int) -> float:
    from dreamstate.engine.tools.loadgen import median_seconds

    return median_seconds(fn, repeats)


def main(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from dreamstate.models.session import make_session
    from dreamstate.models.style import StyleModel

    console = Console()
    models = args.model or ([str(SHARED_CANDY)] if SHARED_CANDY.exists() else []) + ["toon"]
    table = Table(title=f"style models, {args.device}, {args.threads} threads")
    for col in ("model", "provider", "size", "ms/frame", "fps"):
        table.add_column(col)
    rng = np.random.default_rng(0)
    notes: list[str] = []
    for name in models:
        m = StyleModel.load(Path(name) if name.endswith(".onnx") else name, device=args.device, threads=args.threads)
        for w, h in args.size:
            frame = rng.uniform(0, 1, size=(h, w, 3)).astype(np.float32)
            s = _time(lambda f=frame, m=m: m.stylize(f), args.frames)
            table.add_row(m.name, m.provider, f"{w}x{h}", f"{s * 1000:.0f}", f"{1 / s:.2f}")
        declared = m.prepared.declared
        if not args.no_peer and declared is not None and name.endswith(".onnx"):
            h, w = declared
            x = m.to_model(rng.uniform(0, 1, size=(h, w, 3)).astype(np.float32))
            peer, _ = make_session(Path(name).read_bytes(), device=args.device, threads=args.threads,
                                   what=f"{m.name} original")
            ours = _time(lambda m=m, x=x: m.run_raw(x), args.frames)
            theirs = _time(lambda m=m, x=x, peer=peer: peer.run(None, {m.prepared.input: x}), args.frames)
            notes.append(f"{m.name} at its declared {w}x{h}: prepared graph {ours * 1000:.0f} ms, original graph "
                         f"{theirs * 1000:.0f} ms in plain onnxruntime; ratio original/prepared {theirs / ours:.2f}")
    console.print(table)
    for line in notes:
        console.print(line)
    return 0
