"""``dreamstate simulate | record | recover | monitor``: the headset session commands.

Heavy imports (numpy, scipy, mne, rich) happen inside the handlers so ``dreamstate --help``
stays fast. Every long-running command stops cleanly on SIGINT / SIGTERM and on ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamstate.engine.core.aio import wait_for
from dreamstate.engine.core.errors import DeviceError

if TYPE_CHECKING:
    from dreamstate.devices.base import Device

log = logging.getLogger("dreamstate.devices.cli")


def register(sub: Any) -> None:
    """Add ``simulate``, ``record``, ``recover`` and ``monitor`` to the ``dreamstate`` CLI."""
    names = getattr(sub, "choices", {}) or {}
    if "simulate" not in names:
        p = sub.add_parser("simulate", help="a simulated headset on a pseudo-terminal "
                                            "(the real serial path without hardware)")
        p.add_argument("--pty", action="store_true",
                       help="serve the ThinkGear byte stream on a new pseudo-terminal; prints its path")
        p.add_argument("--link", metavar="PATH", help="also make PATH a symlink to the pty")
        p.add_argument("--out", metavar="FILE",
                       help="instead of a pty, write --seconds of the byte stream to FILE")
        _add_sim_args(p)
        p.add_argument("--speed", type=float, default=1.0, help="1 = real time (default)")
        p.add_argument("--seconds", type=float, help="stop after this many seconds")
        p.set_defaults(func=_simulate)
    else:
        log.warning("`simulate` is already registered by another module; not adding ours")

    p = sub.add_parser("record", help="record a session (crash-safe journal, then FIF)")
    _add_source_args(p)
    p.add_argument("--out", required=True, metavar="FILE.fif",
                   help="FIF output; saved as NAME_raw.fif (MNE's naming); journal NAME_raw.dsj")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--keep-journal", action="store_true", help="keep the journal after saving")
    p.set_defaults(func=_record)

    p = sub.add_parser("recover", help="rebuild a FIF from the journal of a recording that died")
    p.add_argument("journal", help="the .dsj journal left next to the recording")
    p.add_argument("--out", metavar="FILE.fif", help="FIF output (default: beside the journal)")
    p.set_defaults(func=_recover)

    p = sub.add_parser("monitor", help="live terminal view of the headset: quality, eSense, "
                                       "bands, raw, link counters, state")
    _add_source_args(p)
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    p.add_argument("--show", metavar="SHOW.toml",
                   help="use this show's [signal]/[map]/[states] for the state panel")
    p.add_argument("--no-state", action="store_true", help="hide the EEG state/map panel")
    p.add_argument("--plain", action="store_true",
                   help="one status line per second instead of a live view")
    p.set_defaults(func=_monitor)


def _add_sim_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--script", metavar="STATE:S,...",
                   help="simulator script, e.g. relaxed:20,focused:20 (states: relaxed, focused, "
                        "neutral, blinking, off_head); default: the demo cycle")
    p.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    p.add_argument("--once", action="store_true",
                   help="play the script once, then end (default: loop it)")


def _add_source_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="serial port of the headset or dongle, or 'auto'")
    src.add_argument("--simulate", action="store_true", help="use the simulated headset")
    src.add_argument("--replay", metavar="FILE", help="play back a recording (FIF, EDF, ...)")
    p.add_argument("--baud", type=int, choices=[1200, 9600, 57600, 115200],
                   help="serial rate (default: probe 57600, 115200, 9600)")
    p.add_argument("--headset-id", type=lambda s: int(s, 0),
                   help="dongle: connect to this headset id (e.g. 0x1234)")
    _add_sim_args(p)
    p.add_argument("--speed", type=float, default=1.0,
                   help="simulate/replay speed (1 = real time; 0 = as fast as possible)")
    p.add_argument("--loop", action="store_true", help="replay: start again at the end")


def device_from_args(args: argparse.Namespace) -> Device:
    """The device the source arguments name (not opened)."""
    if getattr(args, "port", None):
        from dreamstate.devices.serial_port import ThinkGearSerialDevice

        return ThinkGearSerialDevice(port=args.port, baud=args.baud, headset_id=args.headset_id)
    if getattr(args, "replay", None):
        from dreamstate.devices.replay import ReplayDevice

        return ReplayDevice(Path(args.replay), speed=args.speed, loop=args.loop)
    from dreamstate.devices.simulator import SimulatedDevice, parse_script

    script = parse_script(args.script) if args.script else None
    return SimulatedDevice(script, seed=args.seed, loop=not args.once, speed=args.speed)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Any:
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            log.debug("cannot install handler for %s", sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _out(line: str) -> None:
    """CLI output on stdout, flushed at once (tests and pipes read it line by line)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _wait_stop(stop: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await wait_for(stop.wait(), max(0.0, timeout))


# --------------------------------------------------------------------------- simulate


def _simulate(args: argparse.Namespace) -> int:
    from dreamstate.devices.simulator import EegSimulator, parse_script

    script = parse_script(args.script) if args.script else None
    sim = EegSimulator(script, seed=args.seed, loop=not args.once)
    if args.pty:
        return asyncio.run(_serve_pty(sim, args))
    if args.out:
        seconds = args.seconds if args.seconds else 60.0
        n = round(seconds * sim.sfreq)
        with open(args.out, "wb") as fh:
            while n > 0 and not sim.finished:
                block = sim.advance(min(n, 4096))
                fh.write(sim.encode(block))
                n -= len(block.raw)
        _out(f"wrote {sim.position / sim.sfreq:.1f} s of ThinkGear bytes to {args.out}")
        return 0
    raise DeviceError("simulate needs --pty (serve a pseudo-terminal) or --out FILE",
                      hint="e.g. `dreamstate simulate --pty --script relaxed:20,focused:20`")


async def _serve_pty(sim: Any, args: argparse.Namespace) -> int:
    from dreamstate.devices.pty_server import PtyServer

    stop = asyncio.Event()
    server = PtyServer(sim, speed=args.speed, link=args.link)
    with _stop_on_signals(stop):
        path = await server.start()
        try:
            link = f" (link {args.link})" if args.link else ""
            _out(f"simulated ThinkGear headset on {path}{link}")
            _out(f"read it with: dreamstate monitor --port {args.link or path}")
            waiter = asyncio.create_task(server.wait())
            deadline = None if args.seconds is None else time.monotonic() + args.seconds
            while not stop.is_set() and not waiter.done():
                left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if left <= 0:
                    break
                await _wait_stop(stop, left)
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        finally:
            await server.stop()
    snap = server.counters.snapshot()
    _out(f"stopped: {snap.get('bytes_written', 0)} bytes written, "
          f"{snap.get('bytes_dropped', 0)} dropped")
    return 0


# --------------------------------------------------------------------------- record


def _record(args: argparse.Namespace) -> int:
    return asyncio.run(_record_async(args))


async def _record_async(args: argparse.Namespace) -> int:
    from dreamstate.devices.recording import Recorder, fif_path, journal_path_for, unrecovered_journals
    from dreamstate.engine.core.records import DeviceEvent, DeviceEventKind

    out = fif_path(args.out)
    journal = journal_path_for(out)
    for old in unrecovered_journals(out.parent, exclude=journal):
        log.warning("an earlier recording did not finish: its journal %s is still there; "
                    "recover it with `dreamstate recover %s`", old, old)
    device = device_from_args(args)
    recorder = Recorder(journal, device=device.describe())
    stop = asyncio.Event()
    ended = False

    async def consume() -> None:
        nonlocal ended
        async for reading in device.readings():
            recorder.add(reading)
            if isinstance(reading, DeviceEvent) and reading.kind == DeviceEventKind.END_OF_STREAM:
                ended = True
                break
        stop.set()

    with _stop_on_signals(stop):
        await recorder.start()
        _out(f"recording {device.describe()} -> {out} (journal {journal}); "
              "Ctrl-C stops and saves")
        task: asyncio.Task[None] | None = None
        try:
            async with device:
                task = asyncio.create_task(consume(), name="record-readings")
                task.add_done_callback(lambda _t: stop.set())
                started = time.monotonic()
                deadline = None if args.seconds is None else started + args.seconds
                while not stop.is_set():
                    left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                    if left <= 0:
                        break
                    await _wait_stop(stop, left)
                    c = recorder.counters.snapshot()
                    st = recorder.status()
                    disk = "" if st["state"] == "ok" else \
                        f"  recording: {st['state'].replace('_', ' ')}, {st['buffered_s']:.1f} s buffered"
                    _out(f"recording {time.monotonic() - started:7.1f} s  "
                          f"samples={c.get('samples', 0)} flushed={recorder.flushed_samples} "
                          f"gaps={c.get('gaps', 0)} events={c.get('events', 0)}{disk}")
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                elif not task.cancelled() and task.exception() is not None:
                    log.error("device failed while recording: %s", task.exception())
        finally:
            if recorder.counters.get("samples") == 0:
                await recorder.close()
                journal.unlink(missing_ok=True)
                log.error("nothing was recorded (no raw samples arrived); no file written",
                          extra={"device": device.describe()})
                return 1  # noqa: B012 - an exception in flight is logged above by the CLI
            result = await recorder.finalise(out, keep_journal=args.keep_journal)
    _out(f"saved {result.fif}: {result.seconds:.1f} s, {result.samples} samples, "
          f"{result.gaps} gap(s) ({result.lost_samples} samples lost), {result.events} events"
          + (" (stream ended)" if ended else ""))
    return 0


def _recover(args: argparse.Namespace) -> int:
    from dreamstate.devices.recording import recover

    result = recover(args.journal, args.out)
    notes = []
    if result.torn_tail_bytes:
        notes.append(f"torn last record ({result.torn_tail_bytes} bytes) ignored")
    if result.corrupt_records:
        notes.append(f"{result.corrupt_records} corrupt record(s) skipped")
    if not result.clean_end:
        notes.append("the recording process did not finish (crash or kill)")
    _out(f"recovered {result.fif}: {result.seconds:.1f} s, {result.samples} samples, "
          f"{result.gaps} gap(s), {result.events} events" + ("; " + "; ".join(notes) if notes
                                                            else ""))
    return 0


# --------------------------------------------------------------------------- monitor


def _monitor(args: argparse.Namespace) -> int:
    return asyncio.run(_monitor_async(args))


async def _monitor_async(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dreamstate.engine.tools.monitor import MonitorPanel, make_pipeline_panel, run_monitor

    show = None
    if args.show:
        from dreamstate.engine.runtime.showfile import load_show

        show = load_show(args.show, deep=False).show
    device = device_from_args(args)
    panels: list[MonitorPanel] = []
    pipeline_panel = None if args.no_state else make_pipeline_panel(show)
    if pipeline_panel is not None:
        panels.append(pipeline_panel)
    stop = asyncio.Event()
    console = Console(file=sys.stdout)
    try:
        with _stop_on_signals(stop):
            await run_monitor(device, seconds=args.seconds, console=console, panels=panels,
                              plain=True if args.plain else None, stop=stop)
    finally:
        close = getattr(getattr(pipeline_panel, "pipeline", None), "close", None)
        if callable(close):
            close()
    return 0
