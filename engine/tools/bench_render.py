"""``dreamstate bench render``: the live renderer's own figures, and the classic loop beside it.

For each ``--model`` (default: the starter model; add ``../shared/models/SqueezeNet_fp16.onnx``)
it runs the real ``Renderer`` for ``--seconds`` (default 60) at a 640x360 dream size and a
1280x720 output, with the dream worker saturating onnxruntime, and prints:

* dream steps/s, display fps, display frame-time p50 and p99, dropped frames;
* the latency from a recipe change (one every 5 s) to the first frame that shows it;
* RSS every second: after a 10 s warm-up, first/last/max and the drift (target: flat within 5 %);
* for comparison, the classic offline loop at the same size: 4 octaves x 10 steps per frame,
  in seconds per frame, and the ratio to the live display's frame time.

The display loop renders to the headless ``none`` sink by default (it does the full per-frame
work: fused upscale+zoom warp at output size, crossfade, uint8 frame; only the present is a
no-op), or to a real SDL window with ``--output window`` (needs a display).

``--sink ndi`` (needs the ``ndi`` extra) adds an NDI source beside that sink, as
``[output] ndi`` does in a show, so the figures above say whether the display rate holds
while NDI sends; first it times the NDI sink alone at each ``--ndi-sizes`` (default 1280x720
and 1920x1080): a 60 Hz loop presents for ``--ndi-seconds`` (3) and the table gives the send
time per frame (median, p99, on the sink's own thread), what ``present`` costs the display
thread (median, p99), the loop's rate, and frames sent and dropped (replaced before the
sender took them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from dreamstate.engine.core.params import size_arg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs="+", default=["starter"],
                        help="registry names or .onnx paths (default: starter)")
    parser.add_argument("--layers", nargs="+", help="layers (default: the model's recommended)")
    parser.add_argument("--seconds", type=float, default=60.0, help="run length per model (60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before RSS/frames count")
    parser.add_argument("--dream-size", type=size_arg, default=(640, 360))
    parser.add_argument("--output-size", type=size_arg, default=(1280, 720))
    parser.add_argument("--fps", type=float, default=60.0)
    parser.add_argument("--output", choices=["none", "window"], default="none",
                        help="display sink: headless (none) or a real SDL window")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime threads (default: CPU cores - 1, leaving one for the display)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--classic-frames", type=int, default=1,
                        help="frames of the classic 4x10 loop to time (1)")
    parser.add_argument("--sink", choices=["none", "ndi"], default="none",
                        help="ndi: time the NDI sink and add it beside the display sink (needs the ndi extra)")
    parser.add_argument("--ndi-sizes", type=size_arg, nargs="+", default=[(1280, 720), (1920, 1080)],
                        help="frame sizes the NDI sink is timed at (1280x720 1920x1080)")
    parser.add_argument("--ndi-seconds", type=float, default=3.0, help="seconds per NDI size (3)")
    parser.add_argument("--ndi-fps", type=float, default=None,
                        help="most frames a second sent over NDI, as [output] ndi_fps (default: every frame)")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return s[k]


def _bench_one(name: str, args: argparse.Namespace, console: Any) -> dict[str, Any]:
    import numpy as np
    import psutil

    from dreamstate.engine.core.records import DreamRecipe
    from dreamstate.engine.output import NullOutput, Output, WindowOutput
    from dreamstate.engine.render.dream import DreamParams, dream_image
    from dreamstate.engine.render.renderer import Renderer, noise_source
    from dreamstate.models.dream import DreamModel

    threads = args.threads or max(1, (os.cpu_count() or 2) - 1)
    model = DreamModel.load(name, args.layers, device=args.device, threads=threads)
    layers = list(model.layers)
    out: Output = WindowOutput(args.output_size, vsync=True) if args.output == "window" \
        else NullOutput(args.output_size)
    ndi: Any = None
    if args.sink == "ndi":
        from dreamstate.engine.output import TeeOutput
        from dreamstate.engine.output.ndi import NdiOutput

        ndi = NdiOutput(args.output_size, source_name=f"dreamstate-bench-{os.getpid()}", fps=args.fps,
                        max_fps=args.ndi_fps)
        out = TeeOutput(out, ndi)
    r = Renderer(model, out, dream_size=args.dream_size, output_size=args.output_size,
                 fps=args.fps, seed=0)
    recipes = [DreamRecipe(layer_weights={layers[i % len(layers)]: 1.0}, zoom=1.01,
                           rotate_deg=0.3, steps_per_octave=2, octaves=4, blend=0.0,
                           generation=i) for i in range(1000)]
    r.set_recipe(recipes[0])
    proc = psutil.Process()
    rss: list[tuple[float, float]] = []
    state = {"next_change": 5.0, "i": 0, "warm": False, "steps0": 0, "t0": 0.0}

    def tick(rr: Renderer, t: float) -> None:
        rss.append((t, proc.memory_info().rss / 2**20))
        if t >= args.warmup and not state["warm"]:
            state["warm"] = True
            rr.tracker.record_all = True
            state["steps0"], state["t0"] = rr.tracker.steps, t
            state["disp0"] = rr.tracker.displayed
            state["drop0"] = rr.tracker.dropped
        if t >= state["next_change"]:
            state["i"] = int(state["i"]) + 1
            rr.set_recipe(recipes[int(state["i"])])
            state["next_change"] = float(state["next_change"]) + 5.0
        if int(t) % 10 == 0 and t - int(t) < 0.99:
            console.print(f"  {name} {t:5.1f} s  {rr.stats.line()}", markup=False)

    t_start = time.monotonic()
    r.run_for(args.seconds, on_tick=tick, tick_s=1.0)
    elapsed = time.monotonic() - t_start
    tr = r.tracker
    warm_s = max(1e-9, elapsed - float(state["t0"])) if state["warm"] else elapsed
    steps = tr.steps - int(state["steps0"])
    frames = tr.all_frame_times if tr.all_frame_times else list(tr._frame_times)
    disp = tr.displayed - int(state.get("disp0", 0))
    dropped = tr.dropped - int(state.get("drop0", 0))
    warm_rss = [m for t, m in rss if t >= args.warmup] or [m for _, m in rss]
    first, last = warm_rss[0], warm_rss[-1]
    res: dict[str, Any] = {
        "model": model.name, "threads": threads, "sink": out.describe(),
        "steps_per_s": steps / warm_s, "display_fps": disp / warm_s,
        "p50_ms": _percentile(frames, 50) * 1000, "p99_ms": _percentile(frames, 99) * 1000,
        "dropped": dropped, "frames": disp,
        "latency_med_ms": statistics.median(tr.latencies[1:] or tr.latencies or [float("nan")])
        * 1000,
        "latency_max_ms": max(tr.latencies[1:] or tr.latencies or [float("nan")]) * 1000,
        "changes": max(0, len(tr.latencies) - 1),
        "rss_first": first, "rss_last": last, "rss_max": max(warm_rss),
        "rss_drift_pct": (last - first) / first * 100.0,
        "restarts": tr.worker_restarts,
        "ndi": "" if ndi is None else (
            f" NDI beside it: {ndi.sent} frames sent, {ndi.dropped} dropped, "
            f"{1e3 * ndi.send_s / max(1, ndi.sent):.1f} ms a send on its own thread."),
    }
    src = noise_source(args.dream_size, 1)
    params = DreamParams(layer_weights=None, octaves=4, steps_per_octave=10)
    times = []
    for _ in range(max(1, args.classic_frames)):
        t0 = time.perf_counter()
        dream_image(model, src, params, seed=0)
        times.append(time.perf_counter() - t0)
    res["classic_s_per_frame"] = statistics.median(times)
    res["classic_steps_per_s"] = 40 / res["classic_s_per_frame"]
    del np
    return res


def ndi_send_figures(size: tuple[int, int], seconds: float, fps: float = 60.0,
                     max_fps: float | None = None) -> dict[str, float]:
    """The NDI sink alone at ``size`` (width, height), sending at most ``max_fps`` frames a second
    (None: all it can): a loop paced at ``fps`` presents moving frames for ``seconds``. Returns
    send times on the sink's thread (``send_p50_ms``, ``send_p99_ms``), present times on the
    caller's (``present_p50_ms``, ``present_p99_ms``), the loop's rate (``loop_fps``) and
    ``presented``, ``sent``, ``dropped``. Raises ``RenderError`` without the ndi extra."""
    import numpy as np

    from dreamstate.engine.output.ndi import NdiOutput

    w, h = size
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = (np.arange(w) * 255 // max(1, w - 1))[None, :]
    base[..., 1] = (np.arange(h) * 255 // max(1, h - 1))[:, None]
    frames = [np.roll(base, 8 * i, axis=1) for i in range(8)]
    out = NdiOutput(size, source_name=f"dreamstate-bench-{os.getpid()}-{w}x{h}", fps=fps, max_fps=max_fps)
    out.open()
    presents: list[float] = []
    try:
        period = 1.0 / fps
        start = deadline = time.monotonic()
        while time.monotonic() - start < seconds:
            t0 = time.perf_counter()
            out.present(frames[len(presents) % len(frames)])
            presents.append(time.perf_counter() - t0)
            deadline += period
            time.sleep(max(0.0, deadline - time.monotonic()))
        elapsed = time.monotonic() - start
    finally:
        out.close()
    sends = list(out.send_times)
    return {"send_p50_ms": _percentile(sends, 50) * 1e3, "send_p99_ms": _percentile(sends, 99) * 1e3,
            "present_p50_ms": _percentile(presents, 50) * 1e3, "present_p99_ms": _percentile(presents, 99) * 1e3,
            "loop_fps": len(presents) / elapsed, "presented": float(out.frames), "sent": float(out.sent),
            "dropped": float(out.dropped)}


def _ndi_table(args: argparse.Namespace, console: Any) -> None:
    from rich.table import Table

    budget = 1e3 / args.fps
    cap = f", sending at most {args.ndi_fps:g} frames/s" if args.ndi_fps else ""
    table = Table(title=f"NDI sink alone, loop paced at {args.fps:g} Hz (frame budget {budget:.1f} ms){cap}, "
                        f"{args.ndi_seconds:g} s per size, {os.cpu_count()} CPU cores")
    for col in ("size", "send p50 (ms)", "send p99 (ms)", "present p50 (ms)", "present p99 (ms)",
                "loop fps", "sent / presented", "dropped"):
        table.add_column(col, justify="right", no_wrap=col == "size")
    for size in args.ndi_sizes:
        f = ndi_send_figures(size, args.ndi_seconds, args.fps, args.ndi_fps)
        table.add_row(f"{size[0]}x{size[1]}", f"{f['send_p50_ms']:.1f}", f"{f['send_p99_ms']:.1f}",
                      f"{f['present_p50_ms']:.2f}", f"{f['present_p99_ms']:.2f}", f"{f['loop_fps']:.1f}",
                      f"{f['sent']:.0f} / {f['presented']:.0f}", f"{f['dropped']:.0f}")
    console.print(table)
    console.print("NDI sends run on the sink's own thread; the display thread pays only `present` (one copy). "
                  "A send longer than the frame budget means NDI receivers get fewer frames (dropped, counted), "
                  "not a slower projector.", markup=False)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if args.sink == "ndi":
        _ndi_table(args, console)
    results = []
    for name in args.model:
        console.print(f"render bench {name}: dream {args.dream_size[0]}x"
                      f"{args.dream_size[1]}, output {args.output_size[0]}x"
                      f"{args.output_size[1]} @ {args.fps:g} fps, {args.seconds:g} s, "
                      f"{os.cpu_count()} CPU cores", markup=False)
        results.append(_bench_one(name, args, console))
    table = Table(title="dreamstate bench render: live renderer, and the classic loop beside it")
    table.add_column("figure")
    for r in results:
        table.add_column(r["model"], justify="right")
    rows: list[tuple[str, str]] = [
        ("onnxruntime threads", "{threads}"), ("dream steps/s (live)", "{steps_per_s:.2f}"),
        ("display fps", "{display_fps:.1f}"), ("display frame time p50 (ms)", "{p50_ms:.1f}"),
        ("display frame time p99 (ms)", "{p99_ms:.1f}"), ("dropped display frames", "{dropped}"),
        ("recipe change -> shown, median (ms)", "{latency_med_ms:.0f}"),
        ("recipe change -> shown, max (ms)", "{latency_max_ms:.0f}"),
        ("recipe changes measured", "{changes}"),
        ("RSS after warm-up first / last / max (MiB)", "{rss_first:.0f} / {rss_last:.0f} / {rss_max:.0f}"),
        ("RSS drift after warm-up", "{rss_drift_pct:+.1f} %"),
        ("classic 4 octaves x 10 steps (s/frame)", "{classic_s_per_frame:.2f}"),
        ("classic loop steps/s", "{classic_steps_per_s:.2f}"),
        ("display frames per classic frame", "{ratio:.0f}"),
    ]
    for r in results:
        r["ratio"] = r["classic_s_per_frame"] * r["display_fps"]
    for label, fmt in rows:
        table.add_row(label, *(fmt.format(**r) for r in results))
    console.print(table)
    for r in results:
        ok_fps = r["display_fps"] >= 55.0
        ok_p99 = r["p99_ms"] <= 25.0
        ok_rss = abs(r["rss_drift_pct"]) <= 5.0
        console.print(
            f"{r['model']}: display sink = {r['sink']}; targets: fps >= 55 "
            f"{'PASS' if ok_fps else 'MISS'}, p99 <= 25 ms {'PASS' if ok_p99 else 'MISS'}, "
            f"RSS flat within 5 % {'PASS' if ok_rss else 'MISS'}; worker restarts "
            f"{r['restarts']}. The classic loop makes one frame per "
            f"{r['classic_s_per_frame']:.2f} s ({r['classic_steps_per_s']:.1f} steps/s); the live "
            f"display shows {r['display_fps']:.1f} frames in each second meanwhile.{r['ndi']}",
            markup=False)
    return 0
