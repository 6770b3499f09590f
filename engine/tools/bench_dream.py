"""``dreamstate bench dream``: one dream step in onnxruntime vs PyTorch eager, side by side.

For each model (SqueezeNet, the starter model and EfficientNet-Lite0) and each size, it times
the compiled dream step in onnxruntime (CPU, N threads) and the same step in PyTorch eager
(forward + autograd on the same weights, :mod:`engine.tools.torch_ref`) running in a separate
process. The two are timed *alternately*, one step each, so a shared, noisy machine loads both
alike; the reported ratio is the median of the per-pair ratios ORT/torch (lower is better). It
also prints how far apart the two gradients are (relative L2), a cross-check that both compute the
same thing. Both runtimes get the same input: seeded noise mapped into the model's own range.
Without torch installed, that table times onnxruntime only (as ``--no-torch``).

A second table times the numpy step loop (``engine.render.dream.ascent_step``: one step-graph
run per step, the frame to the host and back each time, the update in numpy) against the fused
ascent (``DreamModel.ascend``: the whole update in the graph, the steps chained with IOBinding,
one frame back per run of ``--ascent-steps`` steps), on ``--device`` (default auto: CUDA when it
loads). Both run the same jittered steps from the same frame, alternately; it needs no torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamstate.engine.core.params import count_arg, positive_int, sizes_arg

REPO = Path(__file__).resolve().parents[2]  # engine/tools/ -> the checkout
SHARED_SQUEEZENET = REPO.parent / "shared" / "models" / "SqueezeNet_fp16.onnx"
DEFAULT_SIZES = "224x224,448x448,640x360"
REPLY_TIMEOUT_S = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=sizes_arg, default=sizes_arg(DEFAULT_SIZES),
                        help=f"WxH list (default: {DEFAULT_SIZES})")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU threads for both runtimes (default 2)")
    parser.add_argument("--repeat", type=positive_int, default=9, help="timed step pairs per size (default 9)")
    parser.add_argument(
        "--model", action="append",
        help="model name or .onnx path (repeatable); default: squeezenet, starter and efficientnet-lite0"
    )
    parser.add_argument("--layers", help="comma-separated layers (default: the registry's recommended layers)")
    parser.add_argument("--no-torch", action="store_true", help="time onnxruntime only")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                        help="the onnxruntime step's number format; fp16 needs CUDA (on the CPU: a warning, then fp32)")
    parser.add_argument("--ascent-steps", type=count_arg, default=10,
                        help="steps per timed run in the numpy-loop vs fused-ascent table (0: no table; default 10)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the numpy-loop vs fused-ascent table runs (default auto: CUDA when it loads)")


def _default_models() -> list[str]:
    from dreamstate.engine.core.errors import ModelError
    from dreamstate.models import registry

    out: list[str] = []
    try:
        out.append(str(registry.resolve("squeezenet1.0")[0]))
    except ModelError as exc:
        if SHARED_SQUEEZENET.exists():
            out.append(str(SHARED_SQUEEZENET))
        else:
            print(f"squeezenet1.0: not benchmarked ({exc})")  # noqa: T201 -- benchmark output
    for name in ("starter", "efficientnet-lite0"):
        try:
            out.append(str(registry.resolve(name)[0]))
        except ModelError as exc:
            print(f"{name}: not benchmarked ({exc})")  # noqa: T201 -- benchmark output
    return out


class TorchPeer:
    """The torch child process (``python -m dreamstate.engine.tools.torch_ref``), driven line by line."""

    def __init__(self, model: str, layers: list[str], threads: int, grad_dir: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "dreamstate.engine.tools.torch_ref",
            "--model",
            model,
            "--layers",
            ",".join(layers),
            "--threads",
            str(threads),
            "--grad-out",
            str(grad_dir),
        ]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": "PASSIVE",  # no spinning while the other runtime has its turn
        }
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, cwd=REPO)
        self._read()

    def _read(self) -> dict[str, Any]:
        """The child's next JSON line; its own error message at once if it dies, or a timeout."""
        out = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([out], [], [], 0.2)
            if ready:
                line = out.readline()
                break
            if self.proc.poll() is not None:
                break
        if not line:
            if ready:  # end of file: the child closed its stdout, so it is exiting; let it finish
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
            died = self.proc.poll() is not None
            err = self.proc.stderr.read() if (died and self.proc.stderr is not None) else ""
            self.close()
            if died:
                last = "\n".join(err.strip().splitlines()[-6:]) or f"exit code {self.proc.returncode}"
                raise RuntimeError(f"the torch reference process failed:\n{last}")
            raise RuntimeError(f"torch reference process gave no answer within {REPLY_TIMEOUT_S:.0f} s")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@dataclass
class Row:
    model: str
    size: tuple[int, int]
    ort_s: list[float]
    torch_s: list[float]
    grad_diff: float | None


def run_model(
    model: str, layers: list[str] | None, sizes: list[tuple[int, int]], args: argparse.Namespace
) -> list[Row]:
    import time

    import numpy as np

    from dreamstate.engine.tools.torch_ref import bench_image
    from dreamstate.models import registry
    from dreamstate.models.dream import DreamModel

    path, _spec = registry.resolve(model)  # the torch child gets the file, whatever the user named
    dm = DreamModel.load(model, layers, device="cpu", threads=args.threads,
                         precision=args.precision)  # fp16 needs CUDA: on the CPU it warns and runs fp32
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        peer = None if args.no_torch else TorchPeer(str(path), list(dm.tensors), args.threads, Path(tmp))
        try:
            for w, h in sizes:
                x = dm.to_model_space(bench_image(w, h))  # a picture in the model's own input range
                np.save(Path(tmp) / f"input_{w}x{h}.npy", x)
                dm.step(x)
                grad, _ = dm.step(x)
                diff = None
                if peer is not None:
                    peer.ask(f"warm {w} {h}")
                    ref = np.load(Path(tmp) / f"grad_{w}x{h}.npy")
                    # relative L2: one ReLU or pool tie that flips between the runtimes moves a few
                    # pixels a lot (the max-norm), while the gradient as a whole agrees
                    diff = float(np.linalg.norm(grad - ref) / max(1e-12, float(np.linalg.norm(ref))))
                ort_s: list[float] = []
                torch_s: list[float] = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    dm.step(x)
                    ort_s.append(time.perf_counter() - t0)
                    if peer is not None:
                        torch_s.append(float(peer.ask(f"step {w} {h}")["s"]))
                name = dm.name if dm.precision == "fp32" else f"{dm.name} {dm.precision}"
                rows.append(Row(name, (w, h), ort_s, torch_s, diff))
        finally:
            if peer is not None:
                peer.close()
    return rows


@dataclass
class AscentRow:
    model: str
    size: tuple[int, int]
    provider: str
    numpy_s: list[float]  # per step
    fused_s: list[float]  # per step
    rel_diff: float  # mean |fused - numpy| / mean |numpy - start| after one run


def run_ascent(model: str, layers: list[str] | None, sizes: list[tuple[int, int]],
               args: argparse.Namespace) -> list[AscentRow]:
    """The numpy step loop against the fused ascent, ``args.ascent_steps`` steps a run, timed
    alternately ``args.repeat`` times per size after one warm-up run each."""
    import numpy as np

    from dreamstate.engine.render.dream import DreamParams, ascent_step, jitter_shift
    from dreamstate.engine.tools.torch_ref import bench_image  # numpy only; torch is imported lazily there
    from dreamstate.models.dream import DreamModel

    dm = DreamModel.load(model, layers, device=args.device, threads=args.threads, precision=args.precision)
    if not dm.fused:
        print(f"{dm.name}: no fused ascent graph (the log says why); not timed")  # noqa: T201 -- benchmark output
        return []
    params = DreamParams(jitter=32, tile=0)  # one tile: the case the renderer fuses
    n = args.ascent_steps
    rows: list[AscentRow] = []
    for w, h in sizes:
        x0 = dm.to_model_space(bench_image(w, h))
        rng = np.random.default_rng(0)
        shifts = [jitter_shift(rng, h, w, params.jitter) for _ in range(n)]

        def numpy_loop(x: np.ndarray) -> np.ndarray:
            rng = np.random.default_rng(0)  # the same shifts as the fused run
            for _ in range(n):
                x, _loss = ascent_step(dm, x, params, rng=rng)
            return x

        ref, out = numpy_loop(x0), dm.ascend(x0, shifts, step=params.step)[0]  # warm-up, and the check
        moved = float(np.abs(ref - x0).mean())
        rel = float(np.abs(out - ref).mean()) / moved if moved > 0 else float("nan")
        numpy_s: list[float] = []
        fused_s: list[float] = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            numpy_loop(x0)
            numpy_s.append((time.perf_counter() - t0) / n)
            t0 = time.perf_counter()
            dm.ascend(x0, shifts, step=params.step)
            fused_s.append((time.perf_counter() - t0) / n)
        rows.append(AscentRow(dm.name, (w, h), dm.provider, numpy_s, fused_s, rel))
    return rows


def ascent_table(models: list[str], layers: list[str] | None, sizes: list[tuple[int, int]],
                 args: argparse.Namespace) -> Any:
    import numpy as np
    import onnxruntime as ort
    from rich.table import Table

    table = Table(title=f"numpy step loop vs fused ascent (IOBinding), {args.ascent_steps} steps a run, "
                        f"{args.repeat} alternating runs, device {args.device}, {args.threads} CPU threads "
                        f"(onnxruntime {ort.__version__})")
    for col in ("model", "size", "provider", "numpy loop ms/step", "fused ms/step", "ratio fused/numpy",
                "numpy min", "fused min", "rel. diff after a run"):
        table.add_column(col)
    for model in models:
        for row in run_ascent(model, layers, sizes, args):
            a, b = np.asarray(row.numpy_s), np.asarray(row.fused_s)
            table.add_row(row.model, f"{row.size[0]}x{row.size[1]}", row.provider.replace("ExecutionProvider", ""),
                          f"{np.median(a) * 1e3:.1f}", f"{np.median(b) * 1e3:.1f}", f"{float(np.median(b / a)):.2f}",
                          f"{a.min() * 1e3:.1f}", f"{b.min() * 1e3:.1f}", f"{row.rel_diff:.1e}")
    return table


def main(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    sizes: list[tuple[int, int]] = args.sizes
    if args.device == "cuda" and args.ascent_steps > 0:  # refuse before the first table, not after it
        from dreamstate.models.session import cuda_missing

        if (missing := cuda_missing()) is not None:
            raise missing
    models = args.model or _default_models()
    layers = [s.strip() for s in args.layers.split(",")] if args.layers else None
    console = Console(width=160)
    if not args.no_torch and importlib.util.find_spec("torch") is None:
        console.print("torch is not installed: the first table times onnxruntime only "
                      "(pip install 'dreamstate[export]' for the torch peer)", markup=False)
        args.no_torch = True
    title = (
        f"dream step, CPU, {args.threads} threads, {args.repeat} alternating step pairs (onnxruntime {ort.__version__})"
    )
    table = Table(title=title)
    for col in (
        "model",
        "size",
        "ORT median ms",
        "torch median ms",
        "ratio ORT/torch",
        "ORT min ms",
        "torch min ms",
        "grad rel. L2 diff",
    ):
        table.add_column(col)
    ratios: list[float] = []
    for model in models:
        for row in run_model(model, layers, sizes, args):
            o = np.asarray(row.ort_s)
            cells = [
                row.model,
                f"{row.size[0]}x{row.size[1]}",
                f"{np.median(o) * 1e3:.1f}",
                "-",
                "-",
                f"{o.min() * 1e3:.1f}",
                "-",
                "-",
            ]
            if row.torch_s:
                t = np.asarray(row.torch_s)
                ratio = float(np.median(o / t))
                ratios.append(ratio)
                cells[3], cells[4], cells[6] = f"{np.median(t) * 1e3:.1f}", f"{ratio:.2f}", f"{t.min() * 1e3:.1f}"
                cells[7] = f"{row.grad_diff:.1e}"
            table.add_row(*cells)
    console.print(table)
    if ratios:
        console.print(
            f"ratio ORT/torch (median of per-pair ratios): {', '.join(f'{r:.2f}' for r in ratios)} (target <= 0.60)"
        )
    if args.ascent_steps > 0:
        console.print(ascent_table(models, layers, sizes, args))
    return 0
