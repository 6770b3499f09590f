"""Cut the ring's filtered samples into windows (0.5 s, hop 0.25 s by default) with quality flags.

Windows end at fixed stream positions (``win``, ``win + hop``, ``win + 2*hop``, ...), so which
windows exist, and what they hold, does not depend on how the samples arrived in chunks.

Flags (``engine.core.records.WindowFlags``):

* ``poor_signal``: the latest POOR_SIGNAL value is at or above the show's threshold;
* ``clipped``: a raw sample at or beyond ``clip_uv`` (saturated ADC) in the window or in the
  filter settling time before it;
* ``nonfinite``: NaN/inf in the same span; ``gap``: a lost stretch or counter restart there;
* ``flat``: the raw samples barely move (all zeros, a stuck amplifier, a disconnected lead);
* ``blink``: the device reported a blink near the window, or a deflection over ``blink_uv``.

A window with any flag but ``blink`` is rejected: it is counted with its reasons and never fed
on as data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import ESense, Window, WindowFlags
from dreamstate.engine.signal.ring import (
    SAMPLE_CLIPPED,
    SAMPLE_GAP,
    SAMPLE_NONFINITE,
    RingBuffer,
)


@dataclass(slots=True)
class WindowContext:
    """What the windower needs to know besides samples (kept current by the pipeline)."""

    poor_signal: int = 0
    esense: ESense | None = None
    anchor_pos: int = 0
    anchor_time: float = 0.0
    blink_pos: int | None = None


class Windower:
    """Produces ``Window`` records from a ``RingBuffer``.

    Lifecycle: after ``__init__`` no window exists and ``next_end == win``. Each ``poll(ctx)``
    returns (with its end stream position) every window whose end position the ring has reached since the last poll, in
    order, and advances ``next_end`` by ``hop`` per window; rejected windows are counted in
    ``windows_rejected`` and ``rejected_<reason>``.
    """

    def __init__(self, ring: RingBuffer, *, win: int, hop: int, poor_threshold: int = 50,
                 settle: int = 128, flat_uv: float = 0.5, blink_uv: float = 200.0,
                 counters: Counters | None = None) -> None:
        if not 0 < hop <= win:
            raise ValueError(f"hop must be in 1..win ({win}), got {hop}")
        if win > ring.capacity // 2:
            raise ValueError(f"window of {win} samples needs a ring of at least {2 * win}")
        self.ring = ring
        self.win = int(win)
        self.hop = int(hop)
        self.poor_threshold = int(poor_threshold)
        self.settle = int(settle)
        self.flat_uv = float(flat_uv)
        self.blink_uv = float(blink_uv)
        self.counters = counters if counters is not None else Counters()
        self.next_end = self.win
        self.count = 0

    def poll(self, ctx: WindowContext) -> list[tuple[int, Window]]:
        """New windows as ``(end stream position, window)``, oldest first."""
        out: list[tuple[int, Window]] = []
        ring = self.ring
        while ring.total >= self.next_end:
            end = self.next_end
            if max(0, end - self.win - self.settle) < ring.oldest:
                # the ring moved past this window (only if a caller pushed > capacity at once)
                skip = (ring.oldest + self.win + self.settle - end + self.hop - 1) // self.hop

                self.next_end += max(1, skip) * self.hop
                self.counters.inc("windows_skipped", max(1, skip))
                continue
            out.append((end, self._make(end, ctx)))
            self.next_end += self.hop
        return out

    def _make(self, end: int, ctx: WindowContext) -> Window:
        start = end - self.win
        span = self.ring.read(max(0, start - self.settle), end, reader="windower")
        body = slice(len(span) - self.win, len(span))
        bits = int(np.bitwise_or.reduce(span.flags)) if len(span) else 0
        raw = span.raw[body]
        samples = span.filtered[body].copy()
        finite = raw[np.isfinite(raw)]
        flat = finite.size == 0 or float(finite.max() - finite.min()) < self.flat_uv
        blink_near = ctx.blink_pos is not None and start - self.win <= ctx.blink_pos <= end + self.win
        big = bool(np.abs(samples).max() > self.blink_uv) if samples.size else False
        flags = WindowFlags(
            poor_signal=ctx.poor_signal >= self.poor_threshold,
            clipped=bool(bits & SAMPLE_CLIPPED),
            blink=blink_near or (big and not bits),
            gap=bool(bits & SAMPLE_GAP),
            flat=flat,
            nonfinite=bool(bits & SAMPLE_NONFINITE),
        )
        end_time = ctx.anchor_time - (ctx.anchor_pos - end) / self.ring.sfreq
        window = Window(index=self.count, end_time=end_time, end_sample=int(span.index[-1]),
                        samples=samples, flags=flags, esense=ctx.esense)
        self.count += 1
        self.counters.inc("windows")
        if flags.rejected:
            self.counters.inc("windows_rejected")
            for reason in flags.reasons():
                if reason != "blink":
                    self.counters.inc(f"rejected_{reason}")
        elif flags.blink:
            self.counters.inc("windows_blink")
        return window
