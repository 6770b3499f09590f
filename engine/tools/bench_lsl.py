"""``dreamstate bench lsl``: latency from a reading entering dreamstate's LSL outlet to its arrival
at an MNE-LSL ``StreamLSL`` on loopback, p50 and p99 (target: p99 at most 2 ms; liblsl's own
validation reports under 1 ms locally).

Each round pushes one 16-sample ``RawChunk`` (what a headset delivers about 32 times a second)
through ``LslOutlets.push_readings`` (sample-index timestamps, metadata, the outlet) and times
until the ``StreamLSL`` in this process has the samples (its acquisition thread polls every
``--poll-ms``). The peer is a bare mne-lsl ``StreamOutlet`` with the same layout pushed the
same way (``push_chunk`` with liblsl's own timestamp), read by the same ``StreamLSL`` code; the
ratio ours / peer is printed.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chunks", type=int, default=200, help="chunks to time per side (200)")
    parser.add_argument("--rate", type=float, default=32.0, help="chunks per second (32: 512 Hz in 16s)")
    parser.add_argument("--poll-ms", type=float, default=0.5, help="StreamLSL acquisition delay in ms (0.5)")


def _measure(name: str, push: Callable[[int], None], chunks: int, rate: float,
             poll_s: float) -> tuple[list[float], list[float]]:
    """Latencies and push call times in seconds of ``chunks`` pushes of 16 samples, read by a
    StreamLSL on ``name``."""
    from mne_lsl.stream import StreamLSL

    stream = StreamLSL(bufsize=5.0, name=name)
    stream.connect(acquisition_delay=poll_s, processing_flags=None, timeout=10.0)
    try:
        time.sleep(0.3)
        out: list[float] = []
        calls: list[float] = []
        period = 1.0 / rate
        for k in range(chunks + 5):
            stream.get_data(winsize=0.01)  # n_new_samples back to 0
            t0 = time.perf_counter()
            push(k)
            t_pushed = time.perf_counter()
            deadline = t0 + 1.0
            while stream.n_new_samples < 16 and time.perf_counter() < deadline:
                time.sleep(0.00005)
            t1 = time.perf_counter()
            if k >= 5:  # the first few warm the connection up
                out.append(t1 - t0 if stream.n_new_samples >= 16 else float("inf"))
                calls.append(t_pushed - t0)
            time.sleep(max(0.0, period - (time.perf_counter() - t0)))
        return out, calls
    finally:
        stream.disconnect()


def _figures(measured: tuple[list[float], list[float]]) -> dict[str, float]:
    a = np.asarray(measured[0]) * 1000
    c = np.asarray(measured[1]) * 1e6
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
            "lost": float(np.isinf(a).sum()), "call_p50_us": float(np.percentile(c, 50)),
            "call_p99_us": float(np.percentile(c, 99))}


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dreamstate.devices.lsl import liblsl
    from dreamstate.devices.lsl_outlet import LslOutlets
    from dreamstate.engine.core.records import RawChunk

    console = Console()
    lsl = liblsl()
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 20, 16).astype(np.float32)
    poll = args.poll_ms / 1000.0

    ours = LslOutlets(prefix=f"bench{uuid.uuid4().hex[:6]}", source_id="bench", labels=["calm", "focused"])
    ours.open()
    t_start = time.monotonic()
    try:
        def push_ours(k: int) -> None:
            ours.push_readings([RawChunk(k * 16, samples, t_start + k / args.rate)])

        mine = _figures(_measure(ours.names["eeg"], push_ours, args.chunks, args.rate, poll))
    finally:
        ours.close()

    name = f"peer{uuid.uuid4().hex[:6]}"
    info = lsl.StreamInfo(name, "EEG", 1, 512.0, "float32", "bench-peer")
    peer_outlet: Any = lsl.StreamOutlet(info, chunk_size=16)
    block = samples.reshape(16, 1)
    try:
        peer = _figures(_measure(name, lambda _k: peer_outlet.push_chunk(block), args.chunks, args.rate, poll))
    finally:
        peer_outlet._del()

    console.print(f"LSL outlet -> StreamLSL on loopback, {args.chunks} chunks of 16 samples at {args.rate:g}/s, "
                  f"StreamLSL polling every {args.poll_ms:g} ms")
    for label, f in (("dreamstate outlet", mine), ("bare mne-lsl outlet (peer)", peer)):
        console.print(f"  {label}: p50 {f['p50']:.2f} ms, p99 {f['p99']:.2f} ms, max {f['max']:.2f} ms, "
                      f"not arrived within 1 s: {f['lost']:.0f}; the push call itself p50 {f['call_p50_us']:.0f} µs, "
                      f"p99 {f['call_p99_us']:.0f} µs")
    console.print(f"  ratio ours / peer: p50 {mine['p50'] / peer['p50']:.2f}, p99 {mine['p99'] / peer['p99']:.2f}")
    ok = mine["p99"] <= 2.0 and mine["lost"] == 0
    console.print(f"target p99 <= 2 ms: {'met' if ok else 'NOT met'}")
    return 0
