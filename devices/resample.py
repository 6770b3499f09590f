"""A streaming polyphase resampler: any regular source rate to the pipeline's 512 Hz, chunk by chunk.

``StreamResampler(src_hz, dst_hz)`` approximates ``dst/src`` by a fraction ``up/down`` (denominator
at most 1000, so 250 Hz becomes 256/125 exactly) and applies a Kaiser-windowed low-pass FIR, the
same design as ``scipy.signal.resample_poly`` (``firwin(2 * 10 * max(up, down) + 1, 1 / max(up,
down), window=("kaiser", 5.0))``), in polyphase form: each output sample is one dot product of
about 20 taps with the most recent input samples, so a 250 Hz stream costs about 10 000
multiply-adds a second. The filter is causal and keeps its history across chunks, so any split
of the input gives the same output; the price is a delay of ``delay_s`` (10 input samples,
about 40 ms at 250 Hz, under one window hop). ``reset()`` forgets the history (after a gap); a
new stretch starts as if its first sample had always been there, so it begins without a step
from zero.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

MAX_DENOMINATOR = 1000
"""The largest ``down`` (and so the finest rate step) the rational approximation may use."""


class StreamResampler:
    """Resamples a stream from ``src_hz`` to ``dst_hz`` (both > 0, finite; raises ``ValueError``
    otherwise). ``process(x)`` takes a 1-D chunk (any length, float) and returns the output
    samples that chunk completes (about ``len(x) * dst/src`` of them, float64). With equal
    rates it passes samples through unchanged."""

    def __init__(self, src_hz: float, dst_hz: float, *, half_len_factor: int = 10) -> None:
        if not (math.isfinite(src_hz) and math.isfinite(dst_hz) and src_hz > 0 and dst_hz > 0):
            raise ValueError(f"resampling needs finite rates > 0, got {src_hz} Hz -> {dst_hz} Hz")
        ratio = Fraction(dst_hz / src_hz).limit_denominator(MAX_DENOMINATOR)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.src_hz, self.dst_hz = float(src_hz), float(dst_hz)
        self.identity = self.up == self.down == 1
        if self.identity:
            self.taps_per_phase = 0
            self._poly = np.zeros((1, 0))
            self.delay_s = 0.0
        else:
            from scipy.signal import firwin

            m = max(self.up, self.down)
            half_len = half_len_factor * m
            h = firwin(2 * half_len + 1, 1.0 / m, window=("kaiser", 5.0)) * self.up
            k = math.ceil(len(h) / self.up)
            h = np.concatenate([h, np.zeros(k * self.up - len(h))])
            # phase p uses taps h[p], h[p + up], h[p + 2 up], ...: row p of the polyphase matrix
            self._poly = h.reshape(k, self.up).T.copy()
            # each phase sums to exactly 1, so a constant stays that constant (the window design
            # alone is off by up to 0.1 %)
            self._poly /= self._poly.sum(axis=1, keepdims=True)
            self.taps_per_phase = k
        self.delay_s = half_len / self.up / self.src_hz if not self.identity else 0.0
        """The filter's group delay in seconds (0 when the rates are equal)."""
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next chunk starts a new, independent stretch."""
        k = self.taps_per_phase
        self._hist = np.zeros(max(0, k - 1))  # the last k-1 input samples
        self._primed = False  # before the first sample, the history holds copies of it (no step from 0)
        self._n_in = 0  # input samples consumed since reset
        self._t = 0  # next output sample's position on the upsampled grid (units of 1/up input samples)

    def process(self, x: npt.ArrayLike) -> F64:
        """The output samples the input ``x`` completes (see the class docstring)."""
        data = np.asarray(x, dtype=np.float64).ravel()
        if self.identity:
            return data.copy()
        if len(data) == 0:
            return np.zeros(0)
        k = self.taps_per_phase
        if not self._primed:
            self._hist[:] = data[0]
            self._primed = True
        buf = np.concatenate([self._hist, data])  # buf[j] is input sample n_in - (k - 1) + j
        end = self._n_in + len(data)  # input samples available: 0 .. end - 1
        # output m sits at upsampled position t = m * down: it needs input n = t // up (the newest)
        last_t = (end - 1) * self.up + (self.up - 1)
        n_out = 0 if self._t > last_t else (last_t - self._t) // self.down + 1
        t = self._t + self.down * np.arange(n_out, dtype=np.int64)
        n = t // self.up
        phase = t % self.up
        rel = n - (self._n_in - (k - 1))  # index of input n in buf
        idx = rel[:, None] - np.arange(k)[None, :]  # newest first, k taps back
        y = np.einsum("ij,ij->i", buf[idx], self._poly[phase])
        self._t += self.down * n_out
        self._n_in = end
        self._hist = buf[len(buf) - (k - 1):] if k > 1 else np.zeros(0)
        return np.asarray(y, dtype=np.float64)
