"""``dreamstate bench longrun``: the demo show, headless, for as long as an opening day.

It runs the real show runtime (simulated headset, signal, scenes, renderer) with the headless
``none`` output at the show's real sizes (640x360 dream, 1280x720 out), and once a minute it
measures the displayed frame (``engine.render.health``: luminance, contrast, colourfulness,
detail, clipping, hue entropy, motion over one second), checks it against the bounds of the
source image, and prints one row with the state, display fps, dream steps/s and reseeds so far.
A contact sheet of one displayed frame per minute is saved as PNG.

Then, in the same process, it measures what the stabilisers cost: alternating segments with
the stabilisers on (the scenes' own ``color_nudge`` and ``warp_px``) and off (both 0, through
the same live edits OSC uses), printing display fps and dream steps/s for each and the ratio.

``--model`` swaps the show's model; the scenes then dream on that model's recommended layers
(:func:`show_for_model`), as the long-run tests do. Targets: every minute in bounds, at most one
reseed per 10 minutes, display rate unchanged within noise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.params import size_arg
from dreamstate.engine.core.show import Show
from dreamstate.engine.runtime.showfile import load_show


def show_on_layers(show: Show, layers: list[str], model: str | None = None) -> Show:
    """``show`` with each scene dreaming on ``layers`` (scene i takes the i-th, cycling), and
    ``model`` as its model when given; everything else about the scenes is kept."""
    scenes = {
        name: scene.model_copy(update={"layers": {layers[i % len(layers)]: 1.0}, "channels": {}})
        for i, (name, scene) in enumerate(show.scenes.items())
    }
    meta = show.show if model is None else show.show.model_copy(update={"model": model})
    return show.model_copy(update={"show": meta, "scenes": scenes})


def show_for_model(show: Show, model: str) -> Show:
    """``show`` with another model, its scenes on that model's recommended layers (unless the
    show already names that model)."""
    from dreamstate.engine.core.errors import ModelError
    from dreamstate.models import registry

    if model == show.show.model:
        return show
    _path, spec = registry.resolve(model)
    if not spec.layers:
        raise ModelError(f"model {model!r} recommends no layers", hint="write a model.json with recommended_layers")
    return show_on_layers(show, list(spec.layers), model)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to run the show (60)")
    parser.add_argument("--model", help="registry name or .onnx path (default: the show's model)")
    parser.add_argument("--show", help="show file (default: the embedded demo show)")
    parser.add_argument("--sheet", type=Path, help="contact sheet PNG (default: longrun-<model>.png here)")
    parser.add_argument("--ab-seconds", type=float, default=30.0,
                        help="length of each stabilisers-on / -off segment for the cost figure (30)")
    parser.add_argument("--ab-pairs", type=int, default=2, help="on/off segment pairs (2)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between rows and sheet frames (60)")
    parser.add_argument("--dream-size", type=size_arg, help="override the show's dream size, e.g. 160x90")
    parser.add_argument("--first-frame-timeout", type=float, default=180.0,
                        help="give up when no frame is shown this many seconds after the start (180)")
    parser.add_argument("--output-size", type=size_arg, help="override the show's output size")


def _thumb(frame: Any, label: str) -> Any:
    import cv2

    small = cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA)
    out = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    cv2.putText(out, label, (6, 172), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
    cv2.putText(out, label, (6, 172), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return out


def save_sheet(thumbs: list[Any], path: Path, per_row: int = 6) -> Path:
    import cv2
    import numpy as np

    if not thumbs:
        raise ValueError("no frames to put on the contact sheet")
    blank = np.zeros_like(thumbs[0])
    cells = thumbs + [blank] * (-len(thumbs) % per_row)
    rows = [np.hstack(cells[i:i + per_row]) for i in range(0, len(cells), per_row)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows))
    return path


async def _observe(runtime: Any, args: argparse.Namespace, console: Any, thumbs: list[Any],
                   summary: dict[str, Any]) -> None:
    import numpy as np

    from dreamstate.engine.core.images import resize
    from dreamstate.engine.render.health import Bounds, measure

    waited = time.monotonic()
    while runtime.renderer is None or runtime.renderer.latest_frame is None:
        if time.monotonic() - waited > args.first_frame_timeout:
            errors = "; ".join(f"{k}: {v}" for k, v in runtime.supervisor.last_error.items()) or "no stage error"
            raise RenderError(f"no frame within {args.first_frame_timeout:g} s of the start ({errors})",
                             hint="run `dreamstate check` on the show, or pass a model that exists")
        await asyncio.sleep(0.2)
    r = runtime.renderer
    bounds = Bounds.around(measure(resize(r.source, r.output_size)))
    t0 = time.monotonic()
    rows = max(1, round(args.minutes * 60.0 / args.interval))
    out_minutes = 0
    for row in range(1, rows + 1):
        minute = row * args.interval / 60.0
        await asyncio.sleep(max(0.0, t0 + args.interval * row - 1.0 - time.monotonic()))
        earlier = np.asarray(r.latest_frame, dtype=np.float32) / 255.0
        await asyncio.sleep(1.0)
        frame = np.array(r.latest_frame)
        m = measure(frame.astype(np.float32) / 255.0, earlier)
        bad = bounds.check(m)
        out_minutes += bool(bad)
        s = r.stats
        state = runtime.latest_state.label if runtime.latest_state is not None else "-"
        console.print(
            f"{minute:6.2f} min  lum {m.luminance:.3f}  contrast {m.contrast:.3f}  colour {m.colourfulness:.3f}  "
            f"detail {m.detail:.4f}  clipped {m.clipped:.3f}  hue {m.hue_entropy:.2f}  "
            f"motion {255 * (m.motion or 0):.1f}/255  {'ok ' if not bad else 'OUT'}  reseeds {s.reseeds}  "
            f"fps {s.display_fps:.1f}  steps/s {s.dream_steps_per_s:.1f}  scene {runtime.director.scene_name} "
            f"({state})" + (f"  out: {', '.join(bad)}" if bad else ""),
            highlight=False,
        )
        thumbs.append(_thumb(frame, f"{minute:g} min {runtime.director.scene_name}{' OUT' if bad else ''}"))
        summary.update(minutes=row * args.interval / 60.0, rows=row, out_minutes=out_minutes, reseeds=r.stats.reseeds)


async def _ab(runtime: Any, args: argparse.Namespace, console: Any, summary: dict[str, Any]) -> None:
    r = runtime.renderer
    scene = runtime.show.show.default_scene
    runtime.director.set_scene(scene)  # one scene throughout: layers differ in cost
    figures: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(max(1, args.ab_pairs)):
        for on in (False, True):
            if on:
                runtime.edits.fields.pop("color_nudge", None)
                runtime.edits.fields.pop("warp_px", None)
            else:
                runtime.edits.fields.update(color_nudge=0.0, warp_px=0.0)
            await asyncio.sleep(3.0)  # the recipe reaches the worker; a step in flight ends
            a, t_a = r.stats, time.monotonic()
            await asyncio.sleep(args.ab_seconds)
            b, t_b = r.stats, time.monotonic()
            dt = t_b - t_a
            figures[on].append(((b.displayed_frames - a.displayed_frames) / dt, (b.dream_steps - a.dream_steps) / dt))
    for on in (True, False):
        fps = sum(f for f, _ in figures[on]) / len(figures[on])
        steps = sum(s for _, s in figures[on]) / len(figures[on])
        summary[f"fps_{'on' if on else 'off'}"], summary[f"steps_{'on' if on else 'off'}"] = fps, steps
        console.print(f"stabilisers {'on ' if on else 'off'}: display {fps:.2f} fps, dream {steps:.2f} steps/s "
                      f"({len(figures[on])} x {args.ab_seconds:.0f} s)", highlight=False)
    console.print(f"cost of the stabilisers (scene {scene}): display fps ratio on/off "
                  f"{summary['fps_on'] / summary['fps_off']:.3f}, dream steps/s ratio on/off "
                  f"{summary['steps_on'] / max(1e-9, summary['steps_off']):.3f}", highlight=False)
    console.print(f"colour nudge alone: {_nudge_ms(r):.2f} ms per step at {r.dream_size[0]}x{r.dream_size[1]}",
                  highlight=False)
    runtime.director.set_scene(None)


def _nudge_ms(r: Any, repeat: int = 50) -> float:
    import numpy as np

    from dreamstate.engine.core.images import resize
    from dreamstate.engine.render.stabilise import ColourTarget, nudge_colour

    frame = np.clip(resize(r.source, r.dream_size) * 1.1, 0.0, 1.0).astype(np.float32)
    target = ColourTarget.of(resize(r.source, r.dream_size))
    t = time.perf_counter()
    for _ in range(repeat):
        nudge_colour(frame, target, 0.02)
    return (time.perf_counter() - t) / repeat * 1000.0


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dreamstate.engine.runtime.app import ShowRuntime

    console = Console(width=240)
    loaded = load_show(args.show)
    show = loaded.show
    if args.model:
        show = show_for_model(show, args.model)
    out: dict[str, Any] = {"kind": "none"}
    if args.dream_size:
        out["dream_size"] = args.dream_size
    if args.output_size:
        out["size"] = args.output_size
    show = show.model_copy(update={"output": show.output.model_copy(update=out)})
    loaded = loaded.with_show(show)
    if args.model and args.model.endswith(".onnx"):
        # named on the command line by the operator: trusted, unlike a show file's path
        loaded.operator_model = Path(args.model).resolve()
    runtime = ShowRuntime(loaded)
    thumbs: list[Any] = []
    summary: dict[str, Any] = {}
    model = Path(show.show.model).stem if show.show.model.endswith(".onnx") else show.show.model
    console.print(f"long run: {show.show.name} with {model}, {args.minutes:g} min, dream {show.output.dream_size}, "
                  f"output {show.output.size} (headless)", highlight=False)

    async def measure() -> None:
        await _observe(runtime, args, console, thumbs, summary)
        await _ab(runtime, args, console, summary)

    async def go() -> str | None:
        """Measure while the show runs; the show ending first (SIGINT/SIGTERM, a critical
        stage) ends the measuring too. Returns why the show ended early, or None."""
        show_task = asyncio.create_task(runtime.run(), name="show")
        bench_task = asyncio.create_task(measure(), name="measure")
        try:
            await asyncio.wait({show_task, bench_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            runtime.supervisor.request_stop("benchmark finished")
            if not bench_task.done():
                bench_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bench_task
            await show_task
        if not bench_task.cancelled():
            bench_task.result()  # a measuring error is the bench's error
        return None if summary.get("fps_on") is not None else (runtime.supervisor.stop_reason or "stopped")

    early = asyncio.run(go())
    if early is not None:
        console.print(f"the show stopped before the run was complete ({early}); "
                      f"{len(thumbs)} row(s) measured", highlight=False)
        if not thumbs:
            return 1
    sheet = save_sheet(thumbs, args.sheet or Path(f"longrun-{model}.png"))
    console.print(f"rows out of bounds: {summary['out_minutes']} of {summary['rows']}; reseeds: "
                  f"{summary['reseeds']} ({summary['reseeds'] / max(1e-9, summary['minutes'] / 10):.2f} per 10 min; "
                  f"target <= 1); contact sheet: {sheet}", highlight=False)
    return 0
