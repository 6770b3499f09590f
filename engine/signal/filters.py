"""Causal, incremental preprocessing: a mains notch and a band-pass, designed with MNE.

Both filters are IIR Butterworth sections from ``mne.filter.create_filter(method="iir",
phase="forward")`` (the causal, single-pass option; MNE's FIR ``phase="minimum"`` is causal
too but costs a long convolution per sample). They are cascaded into one SOS matrix and run
with ``scipy.signal.sosfilt`` carrying the filter state across calls, so the output does not
depend on how the input was chunked.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.errors import SignalError

F64 = npt.NDArray[np.float64]


def design_sos(sfreq: float, notch_hz: float | None, band_hz: tuple[float, float],
               *, order: int = 4, notch_width_hz: float = 4.0) -> F64:
    """Return the cascaded SOS (notch then band-pass) for these settings.

    Raises ``SignalError`` naming the setting when MNE refuses the design (e.g. a band edge
    above Nyquist).
    """
    import mne

    lo, hi = band_hz
    iir = {"order": order, "ftype": "butter", "output": "sos"}
    try:
        parts: list[F64] = []
        if notch_hz is not None:
            half = notch_width_hz / 2
            notch = mne.filter.create_filter(None, sfreq, notch_hz + half, notch_hz - half,
                                             method="iir", phase="forward", verbose="error",
                                             iir_params={**iir, "order": 2})
            parts.append(np.asarray(notch["sos"], dtype=np.float64))
        band = mne.filter.create_filter(None, sfreq, lo, hi, method="iir", phase="forward",
                                        iir_params=iir, verbose="error")
        parts.append(np.asarray(band["sos"], dtype=np.float64))
    except ValueError as exc:
        raise SignalError(f"filter design failed for sfreq={sfreq}, notch_hz={notch_hz}, "
                          f"band_hz={band_hz}: {exc}",
                          hint="check signal.notch_hz and signal.band_hz in the show") from exc
    return np.vstack(parts)


class CausalFilter:
    """An SOS filter that keeps its state between calls.

    Lifecycle: after ``__init__`` the state is unset; the first ``process`` (or ``reset(x0)``)
    starts it at the steady state for a constant input ``x0`` (no start-up step). After
    ``process(x)`` the state is that after the last sample of ``x``, so feeding a signal in any
    chunking gives the same output sample for sample. ``reset()`` forgets the state (used after
    a gap in the sample counter).
    """

    def __init__(self, sos: F64) -> None:
        from scipy import signal

        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        self._zi_unit: F64 = np.asarray(signal.sosfilt_zi(self.sos), dtype=np.float64)
        self._zi: F64 | None = None
        self._sosfilt = signal.sosfilt

    def reset(self, x0: float | None = None) -> None:
        """Forget the state; with ``x0``, start at the steady state for a constant ``x0``."""
        self._zi = None if x0 is None else self._zi_unit * float(x0)

    def process(self, x: npt.ArrayLike) -> F64:
        """Filter the next samples (finite values only) and return the same number of samples."""
        data = np.asarray(x, dtype=np.float64)
        if data.size == 0:
            return data
        if self._zi is None:
            self._zi = self._zi_unit * float(data[0])
        y, self._zi = self._sosfilt(self.sos, data, zi=self._zi)
        out: F64 = y
        return out
