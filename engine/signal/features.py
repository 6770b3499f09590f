"""Window features: one Hann-tapered rFFT per window, everything else from that spectrum.

All per-window constants (taper, band masks, mel filterbank, DCT matrix) are built once in
``FeatureExtractor.__init__``; ``compute`` is a handful of small numpy operations (well under
0.1 ms for a 256-sample window). The naive peer used by the benchmark calls
``mne.time_frequency.psd_array_welch`` per window instead (``welch_band_powers``).

Groups and the names they add are in ``engine.signal.names.GROUP_NAMES``:

* ``log_band_power``: log10 of the mean PSD (µV²/Hz) in delta, theta, alpha, beta, gamma;
* ``relative_power``: each band's share of the 1..45 Hz power;
* ``spectral_entropy``: normalised Shannon entropy of the 1..45 Hz PSD (0..1);
* ``spectral_edge``: frequency below which 90 % of the 1..45 Hz power lies (Hz);
* ``hjorth``: log10 activity, mobility, complexity (time domain);
* ``esense``: the device's attention and meditation (0..100; 0 until the first value);
* ``mfcc``: 13 cepstral coefficients: DCT of the log energies of 20 mel-spaced triangular
  filters over 1..45 Hz (the ml4a audio t-SNE recipe, on EEG frequencies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.errors import SignalError
from dreamstate.engine.core.records import ESense, Features
from dreamstate.engine.signal.names import BANDS, GROUP_NAMES, N_MFCC, feature_names

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

N_MEL: Final = 20
EDGE_SHARE: Final = 0.90
_TINY: Final = 1e-12


def _mel(f: F64 | float) -> F64:
    return np.asarray(2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0))


def _mel_inv(m: F64) -> F64:
    return np.asarray(700.0 * (10.0 ** (m / 2595.0) - 1.0))


def mel_filterbank(freqs: F64, lo: float, hi: float, n: int = N_MEL) -> F64:
    """Triangular filters, equally spaced on the mel scale between ``lo`` and ``hi`` Hz."""
    edges = _mel_inv(np.linspace(float(_mel(lo)), float(_mel(hi)), n + 2))
    bank = np.zeros((n, freqs.size))
    for i in range(n):
        a, c, b = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - a) / max(c - a, _TINY)
        down = (b - freqs) / max(b - c, _TINY)
        bank[i] = np.clip(np.minimum(up, down), 0.0, None)
        if bank[i].sum() == 0:  # narrower than a bin: take the nearest bin
            bank[i, int(np.argmin(np.abs(freqs - c)))] = 1.0
    return bank


def dct_matrix(n_out: int, n_in: int) -> F64:
    """Orthonormal DCT-II as a matrix (``scipy.fft.dct(x, norm='ortho')[:n_out]``)."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    m[0] /= np.sqrt(2.0)
    out: F64 = m
    return out


class FeatureExtractor:
    """Computes the configured feature vector of a window.

    Lifecycle: ``__init__`` precomputes everything for windows of ``n`` samples; after that
    ``compute`` is pure (same samples and eSense in, same vector out) and thread-safe.
    """

    def __init__(self, groups: Sequence[str], *, sfreq: float = 512.0, n: int = 256,
                 band_hz: tuple[float, float] = (1.0, 45.0), nfft: int | None = None) -> None:
        unknown = [g for g in groups if g not in GROUP_NAMES]
        if unknown:
            raise SignalError(f"unknown feature group(s) {unknown}",
                              hint=f"use some of {sorted(GROUP_NAMES)} in signal.features")
        if not groups:
            raise SignalError("no features configured", hint="list at least one in signal.features")
        self.groups = tuple(groups)
        self.names = feature_names(self.groups)
        self.sfreq = float(sfreq)
        self.n = int(n)
        self.nfft = int(nfft or max(512, 1 << (self.n - 1).bit_length()))
        from scipy.signal import get_window

        self.taper: F64 = np.asarray(get_window("hann", self.n), dtype=np.float64)  # as Welch uses
        self.freqs: F64 = np.fft.rfftfreq(self.nfft, 1.0 / self.sfreq).astype(np.float64)
        # one-sided PSD scaling (µV²/Hz), as scipy/MNE do for a single Hann segment
        self.scale = 1.0 / (self.sfreq * float((self.taper**2).sum()))
        lo, hi = band_hz
        self.analysis = (self.freqs >= lo) & (self.freqs <= hi)
        if self.analysis.sum() < 4:
            raise SignalError(f"band {band_hz} Hz holds fewer than 4 spectrum bins",
                              hint="widen signal.band_hz or lengthen signal.window_s")
        masks = []
        for i, (_name, b_lo, b_hi) in enumerate(BANDS):
            last = i == len(BANDS) - 1
            m = (self.freqs >= b_lo) & ((self.freqs <= b_hi) if last else (self.freqs < b_hi))
            masks.append(m / max(int(m.sum()), 1))
        self.band_avg: F64 = np.asarray(masks)                    # (5, nbins): mean PSD per band
        self.band_sum: F64 = (self.band_avg > 0).astype(np.float64)  # (5, nbins): band total
        self.mel: F64 = mel_filterbank(self.freqs, lo, hi)
        self.dct: F64 = dct_matrix(N_MFCC, N_MEL)

    def spectrum(self, x: F32 | F64) -> F64:
        """One-sided PSD (µV²/Hz) of one window, after removing its mean."""
        data = np.asarray(x, dtype=np.float64)
        data = (data - data.mean()) * self.taper
        spec = np.fft.rfft(data, self.nfft)
        psd: F64 = (spec.real**2 + spec.imag**2) * self.scale
        psd[1:-1] *= 2.0
        return psd

    def compute(self, samples: F32 | F64, esense: ESense | None = None,
                window_index: int = -1) -> Features:
        """Return the feature vector (float32, finite) of one window."""
        if samples.shape != (self.n,):
            raise SignalError(f"feature extractor expects {self.n} samples, got {samples.shape}",
                              hint="keep signal.window_s unchanged after start")
        return self.from_psd(self.spectrum(samples), samples, esense, window_index)

    def from_psd(self, psd: F64, samples: F32 | F64, esense: ESense | None = None,
                 window_index: int = -1) -> Features:
        """The feature vector from a PSD on ``self.freqs`` (any estimator) plus the samples."""
        parts: list[F64] = []
        band_total = None
        sel = psd[self.analysis]
        total = float(sel.sum()) + _TINY
        for g in self.groups:
            if g == "log_band_power":
                parts.append(np.log10(self.band_avg @ psd + _TINY))
            elif g == "relative_power":
                band_total = self.band_sum @ psd if band_total is None else band_total
                parts.append(band_total / total)
            elif g == "spectral_entropy":
                p = sel / total
                h = -float(np.sum(p * np.log(p + _TINY))) / np.log(sel.size)
                parts.append(np.array([h]))
            elif g == "spectral_edge":
                c = np.cumsum(sel)
                k = int(np.searchsorted(c, EDGE_SHARE * c[-1]))
                parts.append(np.array([self.freqs[self.analysis][min(k, sel.size - 1)]]))
            elif g == "hjorth":
                parts.append(hjorth(np.asarray(samples, dtype=np.float64)))
            elif g == "esense":
                a, m = (esense.attention, esense.meditation) if esense is not None else (0, 0)
                parts.append(np.array([float(a), float(m)]))
            elif g == "mfcc":
                parts.append(self.dct @ np.log10(self.mel @ psd + _TINY))
        vec = np.concatenate(parts).astype(np.float32)
        return Features(vector=vec, names=self.names, window_index=window_index)

    def band_values(self, features: Features) -> dict[str, float]:
        """Name -> value mapping of a feature vector (for rules and the monitor)."""
        return dict(zip(features.names, features.vector.tolist(), strict=True))


def hjorth(x: F64) -> F64:
    """log10 activity, mobility and complexity of ``x``."""
    dx = np.diff(x)
    ddx = np.diff(dx)
    v0 = float(x.var()) + _TINY
    v1 = float(dx.var()) + _TINY
    v2 = float(ddx.var()) + _TINY
    mob = np.sqrt(v1 / v0)
    comp = np.sqrt(v2 / v1) / mob
    return np.array([np.log10(v0), mob, comp])


def welch_psd(x: F32 | F64, sfreq: float, n: int) -> tuple[F64, F64]:
    """The naive peer: ``mne.time_frequency.psd_array_welch`` on one window (psd, freqs)."""
    from mne.time_frequency import psd_array_welch

    psd, freqs = psd_array_welch(np.asarray(x, dtype=np.float64)[None, :], sfreq, fmin=0.0,
                                 fmax=sfreq / 2, n_fft=n, n_per_seg=n, window="hann",
                                 verbose="error")
    return np.asarray(psd[0], dtype=np.float64), np.asarray(freqs, dtype=np.float64)


def welch_band_powers(x: F32 | F64, sfreq: float, n: int) -> F64:
    """Log band powers from ``welch_psd`` (a cross-check for ``FeatureExtractor``)."""
    psd, freqs = welch_psd(x, sfreq, n)
    out = []
    for i, (_name, lo, hi) in enumerate(BANDS):
        last = i == len(BANDS) - 1
        m = (freqs >= lo) & ((freqs <= hi) if last else (freqs < hi))
        out.append(np.log10(psd[m].mean() + _TINY))
    return np.asarray(out)
