"""``dreamstate bench render``: the live renderer's own figures, and the classic loop beside it.

For each ``--model`` (default: the starter model; add ``../shared/models/SqueezeNet_fp16.onnx``)
it runs the real ``Renderer`` for ``--seconds`` (default 60) at a 640x360 dream size and a
1280x720 output, with the dream worker saturating onnxruntime, and prints:

* dream steps/s, display fps, display frame-time p50 and p99, dropped frames;
* the latency from a recipe change (one every 5 s) to the first frame that shows it;
* RSS every second: after a 10 s warm-up, first/last/max and the drift (target: flat within 5 %);
* for comparison, the classic offline loop at the same size: 4 octaves x 10 steps per frame,
  in seconds per frame, and the ratio to the live display's frame time;
* flicker (``--flicker-seconds``, default 15; 0 skips it): the mean absolute change between
  consecutive displayed frames (0..255, at dream size), for the live renderer with the default
  blend, with no blend, and with DIS and Farneback optical flow, beside naive per-frame
  re-dreaming (one dream step per displayed frame, shown as it is) at the same zoom speed.
  Target: live <= 50 % of naive.

``--output-size`` takes several sizes (``1920x1080 3840x2160``); each is a run of its own.
``--load N`` starts N busy processes (one core each, :mod:`engine.tools.loadgen`) for the whole
bench, to stand in for a shared or thermally throttled machine; they end with the bench.

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
from typing import TYPE_CHECKING, Any

from dreamstate.engine.core.params import size_arg

if TYPE_CHECKING:
    from dreamstate.engine.render.feedback import FlowMethod


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs="+", default=["starter"],
                        help="registry names or .onnx paths (default: starter)")
    parser.add_argument("--layers", nargs="+", help="layers (default: the model's recommended)")
    parser.add_argument("--seconds", type=float, default=60.0, help="run length per model (60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before RSS/frames count")
    parser.add_argument("--dream-size", type=size_arg, default=(640, 360))
    parser.add_argument("--output-size", type=size_arg, nargs="+", default=[(1280, 720)],
                        help="display size(s); each is a run of its own (1280x720)")
    parser.add_argument("--fps", type=float, default=60.0)
    parser.add_argument("--output", choices=["none", "window"], default="none",
                        help="display sink: headless (none) or a real SDL window")
    parser.add_argument("--scale", choices=["gpu", "cpu"], default="gpu",
                        help="window: SDL renderer scales dream-size frames (gpu) or OpenCV upscales (cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime threads (default: CPU cores - 1, leaving one for the display)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                        help="dream step number format; fp16 needs CUDA (on the CPU: a warning, then fp32)")
    parser.add_argument("--classic-frames", type=int, default=1,
                        help="frames of the classic 4x10 loop to time (1)")
    parser.add_argument("--rt-priority", type=int, default=5,
                        help="display thread SCHED_RR priority, as [output] display_rt_priority (5; 0 = normal)")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="busy processes to run beside the bench (0..16), one core each (0)")
    parser.add_argument("--flicker-seconds", type=float, default=15.0,
                        help="seconds per flicker run (live variants and naive re-dreaming); 0 skips them (15)")
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


def _bench_one(name: str, output_size: tuple[int, int], args: argparse.Namespace, console: Any) -> dict[str, Any]:
    import numpy as np
    import psutil

    from dreamstate.engine.core.records import DreamRecipe
    from dreamstate.engine.output import NullOutput, Output, WindowOutput
    from dreamstate.engine.render.dream import DreamParams, dream_image
    from dreamstate.engine.render.renderer import Renderer, noise_source
    from dreamstate.models.dream import DreamModel

    threads = args.threads or max(1, (os.cpu_count() or 2) - 1)
    model = DreamModel.load(name, args.layers, device=args.device, threads=threads, precision=args.precision)
    layers = list(model.layers)
    out: Output = WindowOutput(output_size, vsync=True, scale=args.scale) if args.output == "window" \
        else NullOutput(output_size)
    ndi: Any = None
    if args.sink == "ndi":
        from dreamstate.engine.output import TeeOutput
        from dreamstate.engine.output.ndi import NdiOutput

        ndi = NdiOutput(output_size, source_name=f"dreamstate-bench-{os.getpid()}", fps=args.fps,
                        max_fps=args.ndi_fps)
        out = TeeOutput(out, ndi)
    r = Renderer(model, out, dream_size=args.dream_size, output_size=output_size,
                 fps=args.fps, seed=0, display_rt_priority=args.rt_priority)
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
        "model": model.name, "threads": threads, "sink": out.describe(), "precision": model.precision,
        "size": f"{output_size[0]}x{output_size[1]}", "realtime": r.display_realtime,
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


class _FlickerOutput:
    """A headless sink that keeps the mean absolute change between consecutive frames (0..255)."""

    def __init__(self, size: tuple[int, int]) -> None:
        from dreamstate.engine.output import NullOutput

        self.sink = NullOutput(size)
        self.changes: list[float] = []
        self._prev: Any = None
        self.record = False

    def present(self, frame: Any) -> None:
        import cv2

        if self.record and self._prev is not None and self._prev.shape == frame.shape:
            self.changes.append(cv2.norm(frame, self._prev, cv2.NORM_L1) / frame.size)
        self._prev = frame


def _live_flicker(model: Any, args: argparse.Namespace, *, blend: float,
                  flow: FlowMethod | None) -> dict[str, float]:
    """The live renderer at dream size on a recording headless sink: flicker, steps/s, fps."""
    from dreamstate.engine.core.records import DreamRecipe
    from dreamstate.engine.output import NullOutput
    from dreamstate.engine.render.renderer import Renderer

    rec = _FlickerOutput(args.dream_size)

    class Sink(NullOutput):
        def present(self, frame: Any) -> None:
            super().present(frame)
            rec.present(frame)

    r = Renderer(model, Sink(args.dream_size), dream_size=args.dream_size, output_size=args.dream_size,
                 fps=args.fps, seed=0, flow=flow, display_rt_priority=args.rt_priority)
    r.set_recipe(DreamRecipe(layer_weights={model.layers[0]: 1.0}, zoom=1.01, rotate_deg=0.3,
                             steps_per_octave=2, octaves=4, blend=blend))
    warm = min(5.0, args.flicker_seconds / 3)
    marks: dict[str, float] = {}

    def tick(rr: Renderer, t: float) -> None:
        if t >= warm and not rec.record:
            rec.record = True
            marks.update(t0=t, steps0=rr.tracker.steps, disp0=rr.tracker.displayed)

    t0 = time.monotonic()
    r.run_for(args.flicker_seconds, on_tick=tick, tick_s=0.25)
    dt = max(1e-9, time.monotonic() - t0 - marks.get("t0", 0.0))
    return {"flicker": statistics.fmean(rec.changes) if rec.changes else float("nan"),
            "steps_per_s": (r.tracker.steps - marks.get("steps0", 0)) / dt,
            "display_fps": (r.tracker.displayed - marks.get("disp0", 0)) / dt}


def _naive_flicker(model: Any, args: argparse.Namespace) -> dict[str, float]:
    """Naive re-dreaming: every displayed frame is one dream step on the previous frame moved by
    one display frame's worth of the same motion (zoom speed), shown as it is (no blend, no
    fade). Runs as fast as it can; the flicker is per displayed frame, as in the live runs."""
    import cv2

    from dreamstate.engine.core.images import to_uint8
    from dreamstate.engine.core.records import DreamRecipe
    from dreamstate.engine.render.renderer import DreamLoop, noise_source

    loop = DreamLoop(model, args.dream_size, source=noise_source(args.dream_size, 0), seed=0)
    loop.apply(DreamRecipe(layer_weights={model.layers[0]: 1.0}, zoom=1.01, rotate_deg=0.3,
                           steps_per_octave=2, octaves=4, blend=0.0, warp_px=0.0))
    ticks = 10.0 / args.fps  # the renderer's motion runs at 10 ticks a second
    prev = None
    changes: list[float] = []
    t_end = time.monotonic() + args.flicker_seconds
    n = 0
    t0 = time.monotonic()
    while time.monotonic() < t_end or n < 10:
        frame, _ = loop.step(ticks, n / args.fps)
        img = to_uint8(frame.pixels)
        if prev is not None and n > 8:  # past the first octave cycle
            changes.append(cv2.norm(img, prev, cv2.NORM_L1) / img.size)
        prev = img
        n += 1
    return {"flicker": statistics.fmean(changes), "steps_per_s": n / (time.monotonic() - t0),
            "display_fps": n / (time.monotonic() - t0)}


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


def _flicker(name: str, args: argparse.Namespace, console: Any) -> None:
    from rich.table import Table

    from dreamstate.models.dream import DreamModel

    threads = args.threads or max(1, (os.cpu_count() or 2) - 1)
    model = DreamModel.load(name, args.layers, device=args.device, threads=threads, precision=args.precision)
    console.print(f"flicker {model.name}: {args.flicker_seconds:g} s per run at {args.dream_size[0]}x"
                  f"{args.dream_size[1]}", markup=False)
    runs: list[tuple[str, dict[str, float]]] = [("naive re-dreaming (1 step per frame, no blend)",
                                                 _naive_flicker(model, args))]
    variants: list[tuple[str, float, FlowMethod | None]] = [
        ("live, default blend 0.5", 0.5, None), ("live, blend 0", 0.0, None),
        ("live, blend 0.5 + DIS flow", 0.5, "dis"), ("live, blend 0.5 + Farneback flow", 0.5, "farneback")]
    for label, blend, flow in variants:
        runs.append((label, _live_flicker(model, args, blend=blend, flow=flow)))
    naive = runs[0][1]["flicker"]
    table = Table(title=f"flicker: mean |frame(k+1) - frame(k)| (0..255), {model.name}")
    for col in ("run", "flicker", "of naive", "dream steps/s", "display fps"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for label, f in runs:
        table.add_row(label, f"{f['flicker']:.2f}", f"{100 * f['flicker'] / naive:.0f} %",
                      f"{f['steps_per_s']:.2f}", f"{f['display_fps']:.1f}")
    console.print(table)
    default = runs[1][1]["flicker"]
    console.print(f"{model.name}: live flicker with the default blend is {100 * default / naive:.0f} % of naive "
                  f"re-dreaming; target <= 50 % {'PASS' if default <= 0.5 * naive else 'MISS'}", markup=False)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dreamstate.engine.tools.loadgen import busy_load

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: full tables, not cut at 80 columns
        console.width = 200
    if args.sink == "ndi":
        _ndi_table(args, console)
    results = []
    try:
        load = busy_load(args.load, max_s=3600.0 + 4 * args.seconds * len(args.model) * len(args.output_size))
    except ValueError as exc:
        console.print(f"bench render: {exc}", markup=False)
        return 2
    with load as pids:
        if pids:
            console.print(f"--load {args.load}: busy processes {pids} run beside the bench", markup=False)
        for name in args.model:
            for output_size in args.output_size:
                console.print(f"render bench {name}: dream {args.dream_size[0]}x"
                              f"{args.dream_size[1]}, output {output_size[0]}x"
                              f"{output_size[1]} @ {args.fps:g} fps, {args.seconds:g} s, "
                              f"{os.cpu_count()} CPU cores, load {args.load}", markup=False)
                results.append(_bench_one(name, output_size, args, console))
        _report(results, args, console)
        if args.flicker_seconds > 0:
            for name in args.model:
                _flicker(name, args, console)
    return 0


def _report(results: list[dict[str, Any]], args: argparse.Namespace, console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"dreamstate bench render: live renderer, and the classic loop beside it (load {args.load})")
    table.add_column("figure")
    for r in results:
        table.add_column(f"{r['model']} {r['size']}", justify="right")
    rows: list[tuple[str, str]] = [
        ("onnxruntime threads", "{threads}"), ("dream precision", "{precision}"),
        ("display thread SCHED_RR", "{realtime}"),
        ("dream steps/s (live)", "{steps_per_s:.2f}"),
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
        ok_p99 = r["p99_ms"] <= 20.0
        ok_rss = abs(r["rss_drift_pct"]) <= 5.0
        console.print(
            f"{r['model']} at {r['size']}: display sink = {r['sink']}; targets: fps >= 55 "
            f"{'PASS' if ok_fps else 'MISS'}, p99 <= 20 ms {'PASS' if ok_p99 else 'MISS'}, "
            f"RSS flat within 5 % {'PASS' if ok_rss else 'MISS'}; worker restarts "
            f"{r['restarts']}. The classic loop makes one frame per "
            f"{r['classic_s_per_frame']:.2f} s ({r['classic_steps_per_s']:.1f} steps/s); the live "
            f"display shows {r['display_fps']:.1f} frames in each second meanwhile.{r['ndi']}",
            markup=False)
