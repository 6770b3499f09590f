"""``dreamstate bench osc-flood``: valid OSC control under a flood of malformed datagrams.

A flooder process sends malformed datagrams (garbage, truncated messages, unknown type tags,
bad bundle sizes, arrays 2,000 deep, invalid UTF-8 addresses, 60 KB strings, and the bundle
with an element size of -4) at ``--rate`` per second over loopback UDP, while this process
sends ``--valid`` real control messages (``/dreamstate/zoom``, each carrying its sequence
number) spread over the same time. The receiver is the show's own ``OscControlServer`` on a
real socket. It prints:

* valid commands applied, out of those sent (target: at least 199 of 200);
* the apply latency (send to the command in the show's control queue), p50 and p99 (target
  p99 under 50 ms);
* log lines written per 1,000 malformed datagrams;
* the event-loop lag p99 during the flood (``engine.runtime.watch.LoopLagMonitor``).

With ``--peer`` it runs python-osc's own asyncio server (the peer) beside it under the same
flood minus the -4 bundle, which would hang it for good, and prints its figures too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import socket
import struct
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=1000.0, help="malformed datagrams per second (1000)")
    parser.add_argument("--valid", type=int, default=200, help="valid control messages to send (200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="flood length (10)")
    parser.add_argument("--peer", action="store_true", help="also measure python-osc's server under the flood")


def _s(b: bytes) -> bytes:
    b += b"\x00"
    return b + b"\x00" * (-len(b) % 4)


def junk_datagrams(poison: bool = True) -> list[bytes]:
    """The malformed mix the flooder cycles through."""
    zoom = _s(b"/dreamstate/zoom")
    out = [
        b"\x00\x01\x02\x03not osc at all!!",
        zoom + _s(b",f"),  # truncated: no float
        zoom + _s(b"," + b"q" * 1000) + b"\x00" * 4,  # 1,000 unknown type tags
        _s(b"/dream\xffstate/zoom") + _s(b",f") + struct.pack(">f", 1.0),  # invalid UTF-8 address
        zoom + _s(b"," + b"[" * 2000 + b"]" * 2000),  # arrays 2,000 deep
        _s(b"/dreamstate/scene") + _s(b",s") + _s(b"x" * 60_000),  # a 60 KB string
        b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 1 << 20),  # element larger than the datagram
        b"#bundle\x00" + b"\x00" * 8,  # an empty bundle
    ]
    if poison:
        out.append(b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", -4))  # hangs python-osc
    return out


def _flooder(port: int, rate: float, seconds: float, poison: bool, ready: Any) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    junk = junk_datagrams(poison)
    ready.set()
    t0 = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * rate)
        while sent < due:
            with contextlib.suppress(OSError):
                sock.sendto(junk[sent % len(junk)], ("127.0.0.1", port))
            sent += 1
        time.sleep(0.001)
    sock.close()


class _CountLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1 + record.getMessage().count("\n")


def _zoom(seq: int) -> bytes:
    return _s(b"/dreamstate/zoom") + _s(b",f") + struct.pack(">f", 1.0 + seq * 1e-4)


async def _ours(args: argparse.Namespace) -> dict[str, float]:
    from dreamstate.engine.control.commands import SetZoom
    from dreamstate.engine.control.osc import OscControlServer
    from dreamstate.engine.runtime.watch import LoopLagMonitor

    counter = _CountLines()
    root = logging.getLogger()
    root.addHandler(counter)
    server = OscControlServer("127.0.0.1", 0, queue_size=1024)
    await server.start()
    lag = LoopLagMonitor(asyncio.get_running_loop(), interval_s=0.01)
    lag.start()
    port = int(server.address[1])
    sent_at: dict[int, float] = {}
    got: dict[int, float] = {}

    async def consume() -> None:
        while True:
            cmd = await server.commands.get()
            now = time.monotonic()
            if isinstance(cmd, SetZoom):
                got[round((cmd.value - 1.0) * 1e4)] = now

    task = asyncio.create_task(consume())
    try:
        figures = await _drive(port, args, poison=True, sent_at=sent_at)
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        lag.stop()
        server.close()
        root.removeHandler(counter)
    lat = sorted(got[k] - sent_at[k] for k in got if k in sent_at)
    snap = lag.snapshot()
    return {**figures, "applied": len(got), "p50_ms": _pct(lat, 50) * 1e3, "p99_ms": _pct(lat, 99) * 1e3,
            "log_lines": counter.lines, "malformed_counted": server.counters.total("malformed.")
            + server.counters.get("empty_bundle") + server.counters.total("rejected."),
            "lag_p99_ms": snap["p99_s"] * 1e3, "lag_max_ms": snap["max_s"] * 1e3}


async def _peer(args: argparse.Namespace) -> dict[str, float]:
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import AsyncIOOSCUDPServer

    from dreamstate.engine.runtime.watch import LoopLagMonitor

    counter = _CountLines()
    root = logging.getLogger()
    root.addHandler(counter)
    got: dict[int, float] = {}
    sent_at: dict[int, float] = {}
    disp = Dispatcher()
    def on_zoom(_address: str, *values: Any) -> None:
        if len(values) == 1 and isinstance(values[0], float):
            got[round((values[0] - 1.0) * 1e4)] = time.monotonic()

    disp.map("/dreamstate/zoom", on_zoom)
    port = _free_port()
    server = AsyncIOOSCUDPServer(("127.0.0.1", port), disp, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport, _ = await server.create_serve_endpoint()
    lag = LoopLagMonitor(asyncio.get_running_loop(), interval_s=0.01)
    lag.start()
    try:
        figures = await _drive(port, args, poison=False, sent_at=sent_at)
        await asyncio.sleep(0.5)
    finally:
        lag.stop()
        transport.close()
        root.removeHandler(counter)
    lat = sorted(got[k] - sent_at[k] for k in got if k in sent_at)
    snap = lag.snapshot()
    return {**figures, "applied": len(got), "p50_ms": _pct(lat, 50) * 1e3, "p99_ms": _pct(lat, 99) * 1e3,
            "log_lines": counter.lines, "lag_p99_ms": snap["p99_s"] * 1e3, "lag_max_ms": snap["max_s"] * 1e3}


async def _drive(port: int, args: argparse.Namespace, *, poison: bool, sent_at: dict[int, float]) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_flooder, args=(port, args.rate, args.seconds, poison, ready), daemon=True)
    proc.start()
    await asyncio.get_running_loop().run_in_executor(None, ready.wait, 30)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gap = args.seconds / max(1, args.valid)
    t0 = time.monotonic()
    for seq in range(args.valid):
        await asyncio.sleep(max(0.0, t0 + seq * gap - time.monotonic()))
        sent_at[seq] = time.monotonic()
        sock.sendto(_zoom(seq), ("127.0.0.1", port))
    sock.close()
    await asyncio.get_running_loop().run_in_executor(None, proc.join, args.seconds + 10)
    return {"sent": args.valid, "malformed_sent": args.rate * args.seconds}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q / 100.0 * len(values)))]


def _free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=160)
    rows = [("dreamstate OscControlServer", asyncio.run(_ours(args)))]
    if args.peer:
        rows.append(("python-osc AsyncIOOSCUDPServer (no -4 bundle)", asyncio.run(_peer(args))))
    console.print(f"OSC flood: {args.rate:.0f} malformed datagrams/s for {args.seconds:.0f} s, "
                  f"{args.valid} valid commands spread over it, loopback UDP", highlight=False)
    for name, r in rows:
        per_k = r["log_lines"] / max(1.0, r["malformed_sent"] / 1000.0)
        console.print(f"{name}: applied {r['applied']:.0f} of {r['sent']:.0f} valid commands; latency p50 "
                      f"{r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms; {per_k:.1f} log lines per 1,000 malformed "
                      f"datagrams; loop lag p99 {r['lag_p99_ms']:.2f} ms (max {r['lag_max_ms']:.1f} ms)",
                      highlight=False)
    ours = rows[0][1]
    console.print(f"target: >= {0.995 * ours['sent']:.0f} applied, p99 < 50 ms: "
                  f"{'met' if ours['applied'] >= 0.995 * ours['sent'] and ours['p99_ms'] < 50 else 'NOT met'}",
                  highlight=False)
    return 0
