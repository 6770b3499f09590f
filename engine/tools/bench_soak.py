"""``dreamstate bench soak``: does a show leak when it runs for hours?

It records a simulated session to FIF, then runs the demo show headless (``output.kind =
none``) with that recording replayed at ``--speed`` (4x: every part of the pipeline works
four times as hard as with a headset, and the replay loops), and samples the process every
``--interval`` seconds: resident memory (RSS), threads, asyncio tasks and open file
descriptors. After ``--warmup`` seconds (model load, first map fits, caches) it compares the
samples with the first one after the warm-up.

Targets: RSS within 5 % of the post-warm-up figure (largest sample and last sample), and no
growth in threads, tasks or file descriptors. The figures are printed; the command exits 1
when a target is missed, so a test can run a short version.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from dreamstate.engine.core.params import size_arg
from dreamstate.engine.core.show import LoadedShow
from dreamstate.engine.runtime.showfile import load_show


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run the show (10)")
    parser.add_argument("--speed", type=float, default=4.0, help="replay speed (4)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline sample (60)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (10)")
    parser.add_argument("--record-s", type=float, default=120.0,
                        help="length of the recorded session that is replayed in a loop (120)")
    parser.add_argument("--dream-size", type=size_arg, default=(320, 180), help="dream size (320x180)")


async def _record(folder: Path, seconds: float) -> Path:
    from dreamstate.devices.recording import Recorder
    from dreamstate.devices.simulator import SimulatedDevice

    script = [("relaxed", seconds * 0.35), ("focused", seconds * 0.35), ("off_head", seconds * 0.1),
              ("neutral", seconds * 0.2)]
    rec = Recorder(folder / "session.dsj")
    await rec.start()
    async with SimulatedDevice(script, seed=7, loop=False, speed=0) as dev:
        async for reading in dev.readings():
            rec.add(reading)
    result = await rec.finalise(folder / "session.fif")
    return result.fif


def _sample(t0: float) -> dict[str, float]:
    import psutil

    proc = psutil.Process()
    return {"t": time.monotonic() - t0, "rss_mb": proc.memory_info().rss / 2**20,
            "threads": float(threading.active_count()), "tasks": float(len(asyncio.all_tasks())),
            "fds": float(proc.num_fds()) if hasattr(proc, "num_fds") else float("nan")}


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=160)
    folder = Path(tempfile.mkdtemp(prefix="dreamstate-soak-"))
    try:
        return asyncio.run(_soak(args, folder, console))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _soak(args: argparse.Namespace, folder: Path, console: Any) -> int:
    from dreamstate.engine.runtime.app import ShowRuntime

    fif = await _record(folder, args.record_s)
    demo = load_show(None, deep=False)
    show = demo.show.model_copy(update={
        "device": demo.show.device.model_copy(update={"kind": "replay", "file": fif.name, "speed": args.speed,
                                                      "loop": True}),
        "output": demo.show.output.model_copy(update={"kind": "none", "dream_size": args.dream_size}),
    })
    loaded = LoadedShow(show, folder, "<soak>")
    seconds = args.minutes * 60.0
    runtime = ShowRuntime(loaded, seconds=seconds)
    console.print(f"soak: demo show, {fif.name} ({args.record_s:g} s) replayed at {args.speed:g}x in a loop, "
                  f"{args.minutes:g} min, dream {args.dream_size[0]}x{args.dream_size[1]}, warm-up {args.warmup:g} s",
                  highlight=False)
    t0 = time.monotonic()
    samples: list[dict[str, float]] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(args.interval)
            s = _sample(t0)
            samples.append(s)
            r = runtime.renderer
            steps = r.stats.dream_steps if r is not None else 0
            console.print(f"{s['t']:7.0f} s  RSS {s['rss_mb']:7.1f} MiB  threads {s['threads']:3.0f}  "
                          f"tasks {s['tasks']:3.0f}  fds {s['fds']:4.0f}  dream steps {steps}  "
                          f"state {runtime.latest_state.label if runtime.latest_state else '-'}", highlight=False)

    watcher = asyncio.create_task(watch())
    try:
        await runtime.run(handle_signals=True)
    finally:
        watcher.cancel()
    after = [s for s in samples if s["t"] >= args.warmup]
    if len(after) < 2:
        console.print("too few samples after the warm-up: run longer or lower --warmup", highlight=False)
        return 1
    base = after[0]
    peak = max(s["rss_mb"] for s in after)
    last = after[-1]
    drift_peak = (peak - base["rss_mb"]) / base["rss_mb"] * 100.0
    drift_last = (last["rss_mb"] - base["rss_mb"]) / base["rss_mb"] * 100.0
    grew = {k: last[k] - base[k] for k in ("threads", "tasks", "fds") if last[k] > base[k]}
    crashes = {k: v for k, v in runtime.supervisor.counters.snapshot().items() if k.endswith(".crashes") and v}
    console.print(f"RSS after warm-up {base['rss_mb']:.1f} MiB, peak {peak:.1f} MiB ({drift_peak:+.1f} %), "
                  f"last {last['rss_mb']:.1f} MiB ({drift_last:+.1f} %); threads {base['threads']:.0f} -> "
                  f"{last['threads']:.0f}, tasks {base['tasks']:.0f} -> {last['tasks']:.0f}, fds {base['fds']:.0f} -> "
                  f"{last['fds']:.0f}; stage crashes {crashes or 'none'}", highlight=False)
    ok = drift_peak <= 5.0 and not grew and not crashes
    console.print(f"targets: RSS within 5 % {'met' if drift_peak <= 5.0 else 'MISSED'}, threads/tasks/fds flat "
                  f"{'met' if not grew else 'MISSED ' + str(grew)}, no stage crashes "
                  f"{'met' if not crashes else 'MISSED'}", highlight=False)
    return 0 if ok else 1
