"""A preallocated ring buffer of raw EEG with device sample indices, gap detection and filtering.

Every sample that enters gets a *stream position* (0, 1, 2, ... with no holes) and keeps its
device sample index. Per sample the ring stores: raw µV (as received, NaN included), the
causally filtered µV, the device index, and flag bits (clipped, non-finite, after-gap, filled).

Gaps in the device counter are detected and counted. A short gap (``max_fill`` samples or
fewer, typical of a serial checksum error) is bridged by linear interpolation so one lost
packet does not throw away three windows; a longer gap restarts the filter and flags the first
sample after it. A counter that jumps backwards by a lot (device restarted) is a gap too; small
backwards steps are duplicates and dropped.

Readers ask for the latest N seconds, or for everything since their cursor. A reader that
falls more than ``capacity`` samples behind loses the oldest samples: that is counted
(``ring_overrun_samples``) and logged with the fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.signal.filters import CausalFilter

log = logging.getLogger("dreamstate.signal")

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]

SAMPLE_CLIPPED: Final = 1
SAMPLE_NONFINITE: Final = 2
SAMPLE_GAP: Final = 4
SAMPLE_FILLED: Final = 8


@dataclass(frozen=True, slots=True)
class Span:
    """Copies of a contiguous run of the ring. ``start`` is the stream position of item 0."""

    start: int
    raw: F32
    filtered: F32
    flags: U8
    index: I64

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def stop(self) -> int:
        return self.start + len(self.raw)


class RingBuffer:
    """Fixed-capacity store of the latest ``capacity`` samples.

    Lifecycle: after ``__init__`` it is empty (``total == 0``) and allocates nothing more later.
    After ``push(first_index, samples)`` the samples (plus any bridged gap) are appended at
    stream positions ``total_before .. total-1``, filtered with the carried filter state, and
    ``next_index`` is the device index expected next. ``read``/``latest`` never change the ring.
    """

    def __init__(self, capacity: int, *, sfreq: float = 512.0, clip_uv: float = 7000.0,
                 filt: CausalFilter | None = None, max_fill: int = 16,
                 counters: Counters | None = None) -> None:
        if capacity < 2:
            raise ValueError(f"ring capacity must be >= 2 samples, got {capacity}")
        self.capacity = int(capacity)
        self.sfreq = float(sfreq)
        self.clip_uv = float(clip_uv)
        self.filt = filt
        self.max_fill = int(max_fill)
        self.counters = counters if counters is not None else Counters()
        self._raw = np.zeros(self.capacity, np.float32)
        self._filt = np.zeros(self.capacity, np.float32)
        self._flags = np.zeros(self.capacity, np.uint8)
        self._index = np.zeros(self.capacity, np.int64)
        self.total = 0
        self.next_index: int | None = None
        self._last_finite = 0.0

    # ------------------------------------------------------------------ writing
    def push(self, first_index: int, samples: npt.ArrayLike) -> int:
        """Append samples whose first device index is ``first_index``; return how many were
        appended (bridged gap samples included, dropped duplicates excluded)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size == 0:
            return 0
        reset = False
        fill: F32 | None = None
        if self.next_index is not None and first_index != self.next_index:
            delta = first_index - self.next_index
            if delta > 0:
                self.counters.inc("gaps")
                self.counters.inc("lost_samples", delta)
                if delta <= self.max_fill:
                    fill = self._bridge(delta, x[0])
                    self.counters.inc("filled_samples", delta)
                else:
                    reset = True
                    log.info("gap in the sample counter", extra={"lost": delta, "at": first_index})
            elif -delta > 2 * self.sfreq:
                self.counters.inc("index_resets")
                reset = True
                log.info("sample counter jumped back; treating it as a restart",
                         extra={"expected": self.next_index, "got": first_index})
            else:
                dup = min(-delta, x.size)
                self.counters.inc("duplicate_samples", dup)
                x = x[dup:]
                first_index += dup
                if x.size == 0:
                    return 0
        appended = 0
        if fill is not None:
            idx = np.arange(first_index - fill.size, first_index, dtype=np.int64)
            self._append(fill, idx, np.full(fill.size, SAMPLE_FILLED, np.uint8), reset=False)
            appended += fill.size
        idx = np.arange(first_index, first_index + x.size, dtype=np.int64)
        flags = np.zeros(x.size, np.uint8)
        if reset:
            flags[0] |= SAMPLE_GAP
        self._append(x, idx, flags, reset=reset)
        appended += x.size
        self.next_index = first_index + x.size
        return appended

    def _bridge(self, n: int, nxt: float) -> F32:
        a = self._last_finite
        b = float(nxt) if np.isfinite(nxt) else a
        t = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
        out: F32 = (a + (b - a) * t).astype(np.float32)
        return out

    def _append(self, x: F32, idx: I64, flags: U8, *, reset: bool) -> None:
        finite = np.isfinite(x)
        clean = x.astype(np.float64)
        if not finite.all():
            flags = flags | np.where(finite, 0, SAMPLE_NONFINITE).astype(np.uint8)
            self.counters.inc("nonfinite_samples", int((~finite).sum()))
            # hold the last finite value through NaN/inf so the filter state stays finite
            last = self._last_finite
            for i in np.flatnonzero(~finite):
                j = i - 1
                clean[i] = clean[j] if j >= 0 else last
        with np.errstate(invalid="ignore"):
            clipped = np.abs(x) >= self.clip_uv
        if clipped.any():
            flags = flags | np.where(clipped, SAMPLE_CLIPPED, 0).astype(np.uint8)
            self.counters.inc("clipped_samples", int(clipped.sum()))
        self._last_finite = float(clean[-1])
        if self.filt is not None:
            if reset:
                self.filt.reset(float(clean[0]))
            y = self.filt.process(clean).astype(np.float32)
        else:
            y = clean.astype(np.float32)
        n = x.size
        if n > self.capacity:  # keep only what fits; the filter has seen everything
            x, y, flags, idx = x[-self.capacity:], y[-self.capacity:], flags[-self.capacity:], idx[-self.capacity:]
            self.total += n - self.capacity
            n = self.capacity
        pos = self.total % self.capacity
        first = min(n, self.capacity - pos)
        for dst, src in ((self._raw, x), (self._filt, y), (self._flags, flags), (self._index, idx)):
            dst[pos:pos + first] = src[:first]
            if first < n:
                dst[:n - first] = src[first:]
        self.total += n

    # ------------------------------------------------------------------ reading
    @property
    def oldest(self) -> int:
        """Stream position of the oldest sample still held."""
        return max(0, self.total - self.capacity)

    def read(self, start: int, stop: int | None = None, *, reader: str = "reader") -> Span:
        """Copy stream positions ``start .. stop-1`` (``stop`` defaults to ``total``).

        If ``start`` was already overwritten, the span starts at ``oldest`` instead; the lost
        samples are counted in ``ring_overrun_samples`` and logged with the fix.
        """
        stop = self.total if stop is None else min(stop, self.total)
        if start < self.oldest:
            lost = self.oldest - start
            self.counters.inc("ring_overrun_samples", lost)
            log.warning("ring buffer overrun: a reader fell behind and lost the oldest samples",
                        extra={"reader": reader, "lost": lost,
                               "fix": "read more often, or raise the ring capacity"})
            start = self.oldest
        start = min(start, stop)
        n = stop - start
        pos = start % self.capacity
        first = min(n, self.capacity - pos)

        def take(a: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
            if first == n:
                return a[pos:pos + n].copy()
            return np.concatenate((a[pos:], a[:n - first]))

        return Span(start, take(self._raw), take(self._filt),  # type: ignore[arg-type]
                    take(self._flags), take(self._index))  # type: ignore[arg-type]

    def latest(self, n: int) -> Span:
        """The newest ``n`` samples (fewer if fewer were ever pushed)."""
        n = max(0, min(n, self.capacity, self.total))
        return self.read(self.total - n)

    def latest_seconds(self, seconds: float) -> Span:
        """The newest ``seconds`` of samples."""
        return self.latest(round(seconds * self.sfreq))

    def read_new(self, cursor: int, *, reader: str = "reader") -> tuple[Span, int]:
        """Everything after ``cursor``; returns the span and the new cursor (``total``).
        ``len(span)`` is how many samples are new (fewer than ``total - cursor`` on overrun)."""
        span = self.read(cursor, reader=reader)
        return span, self.total
