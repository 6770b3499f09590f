"""``dreamstate bench parser``: our ThinkGear parser against the PyPI ``thinkgear-py3`` parser.

Both parse the same streams in the same run: a clean ``--seconds`` long MindWave-like stream
(512 raw packets/s with realistic EEG values, one 36-byte packet per second, blinks now and
then) and a dirty copy with faults injected per packet (seeded): 2 % garbage bursts full of
``0xAA`` before a packet, 1 % bad checksums, 0.5 % truncations, 0.5 % ``AA AA AA`` prefixes.
Printed per parser and stream: MB/s (best of ``--repeat``, interleaved, with the garbage
collector off while timing, as ``timeit`` does; the time from bytes to the parser's own output:
our items with numpy raw runs, the peer's lists of data points), the share of intact raw
packets decoded, spurious raw values (decoded, never sent), raw values decoded from damaged
packets (sent, so not spurious), intact 1 Hz packets and blinks decoded exactly, spurious
other values, exceptions, and the throughput ratio ours/theirs.

Raw values are matched in order against what was sent (greedy, preferring the intact packet
when the same value was sent nearby), so "intact decoded" and "spurious" are counts, not
estimates from totals.
"""

from __future__ import annotations

import argparse
import gc
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dreamstate.devices import thinkgear as tg
from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.records import UV_PER_COUNT

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
    for (kind, sent_pkt, idx), u in zip(packets, draws, strict=True):
        pkt = sent_pkt
        fault = next((FAULTS[k][0] for k, e in enumerate(edges) if u < e), None)
        intact = True
        if fault == "garbage":
            n = int(rng.integers(1, 33))
            g = rng.integers(0, 256, n, dtype=np.uint8)
            g[rng.random(n) < 0.5] = 0xAA
            dirty += g.tobytes()
        elif fault == "bad_checksum":
            pkt = pkt[:-1] + bytes([pkt[-1] ^ int(rng.integers(1, 256))])
            intact = False
        elif fault == "truncated":
            pkt = pkt[:int(rng.integers(1, len(pkt)))]
            intact = False
        elif fault == "aa_prefix":
            dirty.append(0xAA)
        if fault is not None:
            counts[fault] += 1
        dirty += pkt
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


def run_ours(data: bytes, chunk: int) -> list[tg.ParseItem]:
    """Timed: our parser over ``data`` fed ``chunk`` bytes at a time."""
    parser = tg.ThinkGearParser()
    items: list[tg.ParseItem] = []
    for start in range(0, len(data), chunk):
        items.extend(parser.feed(data[start:start + chunk]))
    items.extend(parser.flush())  # the stream ends here
    return items


def decode_ours(items: list[tg.ParseItem]) -> Decoded:
    out = Decoded()
    runs: list[npt.NDArray[np.int16]] = []
    for item in items:
        if isinstance(item, tg.RawRun):
            runs.append(item.values)
        elif isinstance(item, tg.Packet):
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
            _status(out, poor, att, med, bands)
    out.raw = np.concatenate(runs).astype(np.int64).tolist() if runs else []
    return out


def _status(out: Decoded, poor: int | None, att: int | None, med: int | None,
            bands: tuple[int, ...] | None) -> None:
    if poor is not None and att is not None and med is not None and bands is not None:
        out.status.append((poor, att, med, bands))
    elif poor is not None or att is not None or med is not None or bands is not None:
        out.other += 1  # a partial 1 Hz packet was never sent


def run_thinkgear_py3(data: bytes) -> tuple[list[list[Any]], int]:
    """Timed: the PyPI peer through its own ``ThinkGearProtocol.read()``, with ``_recv``
    reading from memory. An exception inside it is counted and parsing goes on after it."""
    from thinkgear.think_gear import ThinkGearProtocol

    class MemoryProtocol(ThinkGearProtocol):  # type: ignore[misc]
        def __init__(self, buf: bytes) -> None:
            super().__init__()
            self.f = io.BytesIO(buf)

        def _recv(self, size: int = 1) -> bytes:
            return self.f.read(size)

    proto = MemoryProtocol(data)
    packets: list[list[Any]] = []
    errors = 0
    n = len(data)
    while proto.f.tell() < n:
        try:
            packets.append(proto.read())
        except (IndexError, OSError, ValueError, TypeError):
            if proto.f.tell() >= n:
                break  # its way of meeting the end of the stream
            errors += 1
    return packets, errors


def decode_thinkgear_py3(packets: list[list[Any]], errors: int) -> Decoded:
    out = Decoded(errors=errors)
    for points in packets:
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
        _status(out, poor, att, med, bands)
    return out


# ----------------------------------------------------------------------------- scoring


@dataclass
class Score:
    raw_intact_sent: int
    raw_intact_decoded: int
    raw_spurious: int
    raw_recovered_damaged: int
    status_intact_sent: int
    status_intact_decoded: int
    blinks_intact_sent: int
    blinks_intact_decoded: int
    other_spurious: int


def align(sent: list[Any] | npt.NDArray[Any], intact: list[bool] | npt.NDArray[np.bool_],
          decoded: list[Any], window: int = 64, anchor: int = 4) -> tuple[int, int, int]:
    """Match ``decoded`` in order against ``sent``. Returns (intact matched, damaged matched,
    spurious).

    Each decoded value is matched to the nearest following sent value equal to it within
    ``window`` (an intact packet preferred); when there is none, the next ``anchor`` decoded
    values are looked up as a contiguous sequence anywhere ahead (a parser that lost many
    packets in a row), and only a value that fits neither is spurious.
    """
    sent_l = [x if not isinstance(x, list) else tuple(x) for x in
              (sent.tolist() if isinstance(sent, np.ndarray) else sent)]
    intact_l = [bool(x) for x in intact]
    n = len(sent_l)
    grams: dict[tuple[Any, ...], list[int]] = {}
    for k in range(n - anchor + 1):
        grams.setdefault(tuple(sent_l[k:k + anchor]), []).append(k)
    ptr = 0
    got_intact = got_damaged = spurious = 0
    for i, v in enumerate(decoded):
        hit = fallback = -1
        for k in range(ptr, min(n, ptr + window)):
            if sent_l[k] == v:
                if intact_l[k]:
                    hit = k
                    break
                if fallback < 0:
                    fallback = k
        if hit < 0:
            hit = fallback
        if hit < 0 and i + anchor <= len(decoded):
            where = grams.get(tuple(decoded[i:i + anchor]), [])
            later = [k for k in where if k >= ptr]
            hit = later[0] if later else -1
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
    si, _, ss = align(truth.status, truth.status_intact, dec.status, window=8, anchor=2)
    bi, _, bs = align(truth.blinks, truth.blinks_intact, dec.blinks, window=8, anchor=2)
    return Score(int(truth.raw_intact.sum()), ri, rs, rd, sum(truth.status_intact), si,
                 sum(truth.blinks_intact), bi, ss + bs + dec.other)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="length of the generated stream (default 120 s)")
    parser.add_argument("--seed", type=int, default=0, help="fault injection seed")
    parser.add_argument("--chunks", type=int, nargs="+", default=[4096, 65536],
                        help="bytes per feed() call for our parser (default: 4096, a serial "
                             "read, and 65536, a file)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timing repeats, interleaved; the best is printed (default 3)")
    parser.add_argument("--no-peer", action="store_true", help="skip thinkgear-py3")


def _ours_with(chunk: int) -> Callable[[bytes], list[tg.ParseItem]]:
    return lambda data: run_ours(data, chunk)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if not args.no_peer:
        import importlib.util

        if importlib.util.find_spec("thinkgear") is None:
            raise DreamstateError("the peer parser thinkgear-py3 is not installed",
                                  hint="pip install 'dreamstate[bench]', or pass --no-peer")
    console = Console(width=max(Console().width, 150))
    clean, clean_truth, dirty, dirty_truth = build_streams(args.seconds, args.seed)
    faults = ", ".join(f"{k} {v}" for k, v in dirty_truth.faults.items())
    console.print(f"streams: {args.seconds:g} s; clean {len(clean):,} B; dirty {len(dirty):,} B "
                  f"with faults per packet (seed {args.seed}): {faults}")
    streams = (("clean", clean, clean_truth), ("dirty", dirty, dirty_truth))
    # (name, timed parse to the parser's own output, untimed turning it into values)
    contenders: list[tuple[str, Callable[[bytes], Any], Callable[[Any], Decoded]]] = [
        (f"ours, {chunk} B feeds", _ours_with(chunk), decode_ours) for chunk in args.chunks]
    if not args.no_peer:
        contenders.append(("thinkgear-py3 2.3", run_thinkgear_py3,
                           lambda out: decode_thinkgear_py3(*out)))
    timed: dict[tuple[str, str], float] = {}
    outputs: dict[tuple[str, str], Any] = {}
    for _ in range(max(1, args.repeat)):
        for name, run, _decode in contenders:
            for label, data, _truth in streams:
                outputs.pop((name, label), None)
                gc.collect()
                gc.disable()  # as timeit does: no collector pauses inside the timing
                try:
                    t0 = time.perf_counter()
                    result = run(data)
                    dt = time.perf_counter() - t0
                finally:
                    gc.enable()
                key = (name, label)
                timed[key] = min(dt, timed.get(key, float("inf")))
                outputs[key] = result
    table = Table(title=f"ThinkGear parser benchmark (best of {args.repeat})")
    for col in ("parser", "stream", "MB/s", "intact raw decoded", "spurious raw",
                "damaged raw decoded", "1 Hz packets", "blinks", "other spurious",
                "exceptions"):
        table.add_column(col, justify="left" if col in ("parser", "stream") else "right",
                         no_wrap=col != "parser")
    speeds: dict[tuple[str, str], float] = {}
    for name, _run, decode in contenders:
        for label, data, truth in streams:
            key = (name, label)
            dec = decode(outputs[key])
            sc = score(truth, dec)
            speeds[key] = len(data) / timed[key] / 1e6
            table.add_row(
                name, label, f"{speeds[key]:.1f}",
                f"{sc.raw_intact_decoded:,}/{sc.raw_intact_sent:,} "
                f"({100 * sc.raw_intact_decoded / max(1, sc.raw_intact_sent):.2f} %)",
                f"{sc.raw_spurious:,}", f"{sc.raw_recovered_damaged:,}",
                f"{sc.status_intact_decoded}/{sc.status_intact_sent}",
                f"{sc.blinks_intact_decoded}/{sc.blinks_intact_sent}",
                f"{sc.other_spurious:,}", f"{dec.errors:,}")
    console.print(table)
    if not args.no_peer:
        peer = contenders[-1][0]
        for name, _, _ in contenders[:-1]:
            for label, _, _ in streams:
                ratio = speeds[(name, label)] / speeds[(peer, label)]
                console.print(f"throughput {name} / {peer}, {label} stream: {ratio:.1f}x")
    return 0
