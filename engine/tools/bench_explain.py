"""``dreamstate bench explain``: milliseconds per attribution map, per method.

For ``--model`` (default: ``../shared/models/SqueezeNet_fp16.onnx`` beside the checkout when it
is there, else the bundled ``starter``) it compiles every method of :mod:`models.explain`
(SmoothGrad with ``--samples`` noisy copies, IG with ``--steps`` path points, each one batch;
PatternAttribution with patterns fitted on the sample photos first, not timed),
then times :meth:`Explainer.explain` (RGB in, map out; preprocessing included) at each
``--size`` (224x224 and 640x360) with ``--threads`` (2) onnxruntime threads, after one warm-up
map, and prints the median of ``--repeats`` in ms. The reference in the same run is one dream
step of the same model at the same size (the model's recommended layers), which is what the
live loop pays per frame, so ``x step`` says how many dream steps a map costs. The IG
completeness error and the LRP conservation error of the last map are printed beside them.

No torch peer here: zennit and captum need the ``export`` extra, which this benchmark does not
assume; the per-method ratio to a dream step is the figure the installation needs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from dreamstate.engine.core.params import size_arg

SHARED_SQUEEZENET = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "SqueezeNet_fp16.onnx"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dreamstate.models.explain import METHODS

    parser.add_argument("--model", default=None,
                        help="registry name or .onnx path (default: ../shared/models/SqueezeNet_fp16.onnx, "
                             "else starter)")
    parser.add_argument("--size", nargs="+", type=size_arg, default=[(224, 224), (640, 360)])
    parser.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--samples", type=int, default=16, help="SmoothGrad copies (16)")
    parser.add_argument("--steps", type=int, default=32, help="IG path steps (32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed maps per method and size (3)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (2)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")


def _time(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from dreamstate.models.dream import DreamModel
    from dreamstate.models.explain import Explainer

    console = Console()
    model: str | Path = args.model or (SHARED_SQUEEZENET if SHARED_SQUEEZENET.exists() else "starter")
    if isinstance(model, str) and model.endswith(".onnx"):
        model = Path(model)
    dream = DreamModel.load(model, device=args.device, threads=args.threads)
    table = Table(title=f"attribution maps, {Path(str(model)).name}, {args.device}, {args.threads} threads")
    for col in ("size", "method", "ms/map", "x step", "check"):
        table.add_column(col)
    rng = np.random.default_rng(0)
    explainers = {m: Explainer.load(model, m, device=args.device, threads=args.threads,
                                    samples=args.steps if m == "ig" else args.samples) for m in args.method}
    for w, h in args.size:
        img = rng.uniform(0, 1, size=(h, w, 3)).astype(np.float32)
        x = dream.to_model_space(img)
        step = _time(lambda x=x: dream.step(x), args.repeats)
        table.add_row(f"{w}x{h}", "dream step", f"{step * 1000:.0f}", "1.0", "")
        for m, e in explainers.items():
            s = _time(lambda e=e, img=img: e.explain(img), args.repeats)
            err = e.explain(img).completeness_error
            check = "" if err is None else f"{'completeness' if m == 'ig' else 'conservation'} {100 * err:.2g} %"
            table.add_row(f"{w}x{h}", m, f"{s * 1000:.0f}", f"{s / step:.1f}", check)
    console.print(table)
    return 0
