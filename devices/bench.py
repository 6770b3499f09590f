"""``dreamstate bench parser``: our ThinkGear parser against the PyPI ``thinkgear-py3`` parser.

Both parse the same streams in the same run: a clean ``--seconds`` long MindWave-like stream
(512 raw packets/s with realistic EEG values, one 36-byte packet per second, blinks now and
then) and a dirty copy with faults injected per packet (seeded): 2 % garbage bursts full of
``0xAA`` before a packet, 1 % bad checksums, 0.5 % truncations, 0.5 % ``AA AA AA`` prefixes.
Printed per parser and stream: MB/s (best of ``--repeat``), the share of intact raw packets
decoded, spurious raw values (decoded, never sent), the share of intact 1 Hz packets decoded
exactly, spurious other values, and the throughput ratio ours/theirs.

Raw values are matched in order against what was sent (greedy, preferring the intact packet
when the same value was sent nearby), so "intact decoded" and "spurious" are counts, not
estimates from totals.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from devices import thinkgear as tg
from engine.records import UV_PER_COUNT

FAULTS = (("garbage", 0.02), ("bad_checksum", 0.01), ("truncated", 0.005), ("aa_prefix", 0.005))


@dataclass
class Truth:
    """What was sent, in order, and whether each packet arrived intact."""

    raw: npt.NDArray[np.int64]
    raw_intact: npt.NDArray[np.bool_]
    status: list[tuple[int, int, int, tuple[int, ...]]] = field(default_factory=list)
    status_intact: list[bool] = field(default_factory=list)
    blinks: list[int] = field(default_factory=list)
    blinks_intact: list[bool] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)


@dataclass
class Decoded:
    raw: list[int] = field(default_factory=list)
    status: list[tuple[int, int, int, tuple[int, ...]]] = field(default_factory=list)
    blinks: list[int] = field(default_factory=list)
    other: int = 0
    errors: int = 0


def realistic_raw(seconds: float, rng: np.random.Generator,
                  blink_times: list[float]) -> npt.NDArray[np.int64]:
    """Single-channel EEG in ThinkGear counts: alpha and theta rhythms with drifting amplitude,
    1/f background, mains hum and blink artefacts."""
    n = round(seconds * 512)
    t = np.arange(n) / 512.0
    alpha_amp = 25 + 15 * np.sin(2 * np.pi * 0.05 * t + rng.uniform(0, 6))
    uv = alpha_amp * np.sin(2 * np.pi * 10.2 * t + rng.uniform(0, 6))
    uv += 12 * np.sin(2 * np.pi * 6.1 * t + rng.uniform(0, 6))
    white = rng.normal(0, 1, n)
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1 / 512.0)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    pink = np.fft.irfft(spec, n)
    uv += 15 * pink / (pink.std() + 1e-12)
    uv += 4 * np.sin(2 * np.pi * 50 * t)
    for bt in blink_times:
        uv += 350 * np.exp(-0.5 * ((t - bt) / 0.07) ** 2)
    return np.clip(np.rint(uv / UV_PER_COUNT), -32768, 32767).astype(np.int64)


def build_streams(seconds: float, seed: int = 0) -> tuple[bytes, Truth, bytes, Truth]:
    """The clean stream and its truth, the dirty stream and its truth."""
    rng = np.random.default_rng(seed)
    blink_times: list[float] = []
    tb = rng.uniform(2, 6)
    while tb < seconds - 0.5:
        blink_times.append(float(tb))
        tb += rng.uniform(3, 9)
    raw = realistic_raw(seconds, rng, blink_times)
    raw_bytes = tg.encode_raw_block(raw)
    # packets: (kind, bytes, index into its truth list)
    packets: list[tuple[str, bytes, int]] = []
    status: list[tuple[int, int, int, tuple[int, ...]]] = []
    blinks: list[int] = []
    blink_samples = {round(bt * 512) + 40 for bt in blink_times}
    for i in range(raw.shape[0]):
        packets.append(("raw", raw_bytes[8 * i:8 * i + 8], i))
        if i in blink_samples:
            strength = int(rng.integers(30, 256))
            packets.append(("blink", tg.encode_blink(strength), len(blinks)))
            blinks.append(strength)
        if i % 512 == 511:
            poor = int(rng.choice([0, 0, 0, 0, 26, 51]))
            att, med = int(rng.integers(1, 101)), int(rng.integers(1, 101))
            bands = tuple(int(v) for v in rng.integers(1_000, 2_000_000, 8))
            packets.append(("status", tg.encode_status_packet(poor, att, med, bands),
                            len(status)))
            status.append((poor, att, med, bands))
    clean = b"".join(p[1] for p in packets)
    clean_truth = Truth(raw, np.ones(raw.shape[0], dtype=bool), status, [True] * len(status),
                        blinks, [True] * len(blinks), {})
    # dirty copy
    dirty = bytearray()
    raw_intact = np.ones(raw.shape[0], dtype=bool)
    status_intact = [True] * len(status)
    blinks_intact = [True] * len(blinks)
    counts = dict.fromkeys((name for name, _ in FAULTS), 0)
    edges = np.cumsum([p for _, p in FAULTS])
    draws = rng.random(len(packets))
    for (kind, data, idx), u in zip(packets, draws, strict=True):
        fault = next((FAULTS[k][0] for k, e in enumerate(edges) if u < e), None)
        intact = True
        if fault == "garbage":
            n = int(rng.integers(1, 33))
            g = rng.integers(0, 256, n, dtype=np.uint8)
            g[rng.random(n) < 0.5] = 0xAA
            dirty += g.tobytes()
        elif fault == "bad_checksum":
            data = data[:-1] + bytes([data[-1] ^ int(rng.integers(1, 256))])
            intact = False
        elif fault == "truncated":
            data = data[:int(rng.integers(1, len(data)))]
            intact = False
        elif fault == "aa_prefix":
            dirty.append(0xAA)
        if fault is not None:
            counts[fault] += 1
        dirty += data
        if not intact:
            if kind == "raw":
                raw_intact[idx] = False
            elif kind == "status":
                status_intact[idx] = False
            else:
                blinks_intact[idx] = False
    dirty_truth = Truth(raw, raw_intact, status, status_intact, blinks, blinks_intact, counts)
    return clean, clean_truth, bytes(dirty), dirty_truth


# ----------------------------------------------------------------------------- parsers


def parse_ours(data: bytes, chunk: int) -> Decoded:
    parser = tg.ThinkGearParser()
    runs: list[npt.NDArray[np.int16]] = []
    out = Decoded()
    for start in range(0, len(data), chunk):
        for item in parser.feed(data[start:start + chunk]):
            if isinstance(item, tg.RawRun):
                runs.append(item.values)
            elif isinstance(item, tg.Packet):
                _ours_packet(item, runs, out)
    out.raw = np.concatenate(runs).astype(np.int64).tolist() if runs else []
    return out


def _ours_packet(item: tg.Packet, runs: list[npt.NDArray[np.int16]], out: Decoded) -> None:
    poor = att = med = None
    bands: tuple[int, ...] | None = None
    for row in item.rows:
        if isinstance(row, tg.RawValue):
            runs.append(np.array([row.value], dtype=np.int16))
        elif isinstance(row, tg.PoorSignal):
            poor = row.value
        elif isinstance(row, tg.Attention):
            att = row.value
        elif isinstance(row, tg.Meditation):
            med = row.value
        elif isinstance(row, tg.AsicPower):
            bands = row.values
        elif isinstance(row, tg.BlinkStrength):
            out.blinks.append(row.value)
        else:
            out.other += 1
    if poor is not None and att is not None and med is not None and bands is not None:
        out.status.append((poor, att, med, bands))
    elif poor is not None or att is not None or med is not None or bands is not None:
        out.other += 1


def parse_thinkgear_py3(data: bytes) -> Decoded:
    """The PyPI peer, fed through its own ``ThinkGearProtocol.read()`` with ``_recv`` reading
    from memory. An exception inside it is counted and parsing goes on after it."""
    from thinkgear.think_gear import ThinkGearProtocol

    class MemoryProtocol(ThinkGearProtocol):  # type: ignore[misc]
        def __init__(self, buf: bytes) -> None:
            super().__init__()
            self.f = io.BytesIO(buf)

        def _recv(self, size: int = 1) -> bytes:
            return self.f.read(size)

    proto = MemoryProtocol(data)
    out = Decoded()
    n = len(data)
    while proto.f.tell() < n:
        try:
            points = proto.read()
        except (IndexError, OSError, ValueError, TypeError):
            if proto.f.tell() >= n:
                break
            out.errors += 1
            continue
        _peer_points(points, out)
    return out


def _peer_points(points: list[Any], out: Decoded) -> None:
    poor = att = med = None
    bands: tuple[int, ...] | None = None
    for p in points:
        code = int(p.code)
        if code == 0x80 and p.level == 0:
            out.raw.append(int(p.value))
        elif code == 0x02:
            poor = int(p.value)
        elif code == 0x04:
            att = int(p.value)
        elif code == 0x05:
            med = int(p.value)
        elif code == 0x83:
            bands = (int(p.delta), int(p.theta), int(p.lowAlpha), int(p.highAlpha),
                     int(p.lowBeta), int(p.highBeta), int(p.lowGamma), int(p.midGamma))
        elif code == 0x16:
            out.blinks.append(int(p.value))
        else:
            out.other += 1
    if poor is not None and att is not None and med is not None and bands is not None:
        out.status.append((poor, att, med, bands))
    elif poor is not None or att is not None or med is not None or bands is not None:
        out.other += 1


# ----------------------------------------------------------------------------- scoring


@dataclass
class Score:
    raw_intact_sent: int
    raw_intact_decoded: int
    raw_spurious: int
    raw_recovered_damaged: int
    status_intact_sent: int
    status_intact_decoded: int
    other_spurious: int


def align(sent: list[Any] | npt.NDArray[Any], intact: list[bool] | npt.NDArray[np.bool_],
          decoded: list[Any], window: int = 64) -> tuple[int, int, int]:
    """Greedy in-order matching of ``decoded`` against ``sent``. Returns (intact matched,
    damaged matched, spurious)."""
    sent_l = list(sent.tolist() if isinstance(sent, np.ndarray) else sent)
    intact_l = [bool(x) for x in intact]
    ptr = 0
    got_intact = got_damaged = spurious = 0
    n = len(sent_l)
    for v in decoded:
        hit = -1
        fallback = -1
        for k in range(ptr, min(n, ptr + window)):
            if sent_l[k] == v:
                if intact_l[k]:
                    hit = k
                    break
                if fallback < 0:
                    fallback = k
        if hit < 0:
            hit = fallback
        if hit < 0:
            spurious += 1
            continue
        if intact_l[hit]:
            got_intact += 1
        else:
            got_damaged += 1
        ptr = hit + 1
    return got_intact, got_damaged, spurious


def score(truth: Truth, dec: Decoded) -> Score:
    if (len(dec.raw) == int(truth.raw_intact.sum())
            and np.array_equal(np.asarray(dec.raw), truth.raw[truth.raw_intact])):
        ri, rd, rs = len(dec.raw), 0, 0  # exactly the intact values, in order
    else:
        ri, rd, rs = align(truth.raw, truth.raw_intact, dec.raw)
    si, _, ss = align(truth.status, truth.status_intact, dec.status, window=8)
    bi, _, bs = align(truth.blinks, truth.blinks_intact, dec.blinks, window=8)
    return Score(int(truth.raw_intact.sum()), ri, rs, rd, sum(truth.status_intact), si,
                 ss + bs + dec.other)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="length of the generated stream (default 120 s)")
    parser.add_argument("--seed", type=int, default=0, help="fault injection seed")
    parser.add_argument("--chunk", type=int, default=4096,
                        help="bytes per feed() call for our parser (a serial read; default 4096)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timing repeats; the best is printed (default 3)")
    parser.add_argument("--no-peer", action="store_true", help="skip thinkgear-py3")


def _best(fn: Callable[[], Decoded], repeat: int) -> tuple[float, Decoded]:
    best = float("inf")
    result = Decoded()
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    clean, clean_truth, dirty, dirty_truth = build_streams(args.seconds, args.seed)
    faults = ", ".join(f"{k} {v}" for k, v in dirty_truth.faults.items())
    console.print(f"streams: {args.seconds:g} s, clean {len(clean):,} B, dirty {len(dirty):,} B "
                  f"(faults: {faults}); our chunk {args.chunk} B, best of {args.repeat}")
    table = Table(title="ThinkGear parser benchmark")
    for col in ("parser", "stream", "MB/s", "raw intact decoded", "raw spurious",
                "damaged raw recovered", "1 Hz packets decoded", "other spurious",
                "exceptions"):
        table.add_column(col, justify="left" if col in ("parser", "stream") else "right")
    speeds: dict[tuple[str, str], float] = {}
    results: dict[tuple[str, str], Score] = {}
    peers: list[tuple[str, Callable[[bytes], Decoded]]] = [
        ("dreamstate", lambda d: parse_ours(d, args.chunk))]
    if not args.no_peer:
        peers.append(("thinkgear-py3", parse_thinkgear_py3))
    for name, fn in peers:
        for label, data, truth in (("clean", clean, clean_truth), ("dirty", dirty, dirty_truth)):
            dt, dec = _best(lambda fn=fn, data=data: fn(data), args.repeat)  # type: ignore[misc]
            sc = score(truth, dec)
            speeds[(name, label)] = len(data) / dt / 1e6
            results[(name, label)] = sc
            table.add_row(
                name, label, f"{speeds[(name, label)]:.1f}",
                f"{sc.raw_intact_decoded:,}/{sc.raw_intact_sent:,} "
                f"({100 * sc.raw_intact_decoded / max(1, sc.raw_intact_sent):.2f} %)",
                f"{sc.raw_spurious:,}", f"{sc.raw_recovered_damaged:,}",
                f"{sc.status_intact_decoded}/{sc.status_intact_sent}",
                f"{sc.other_spurious:,}", f"{dec.errors:,}")
    console.print(table)
    if not args.no_peer:
        for label in ("clean", "dirty"):
            ratio = speeds[("dreamstate", label)] / speeds[("thinkgear-py3", label)]
            console.print(f"throughput ours/thinkgear-py3 on the {label} stream: {ratio:.1f}x")
    return 0
