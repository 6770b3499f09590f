"""The incremental 2D map: a t-SNE reference, new windows placed on it as they arrive.

* A *reference* is fitted (openTSNE, or PCA) on ``reference_size`` accepted windows: the first
  ones, or calibration windows passed to ``fit_now``.
* Each new window is placed on the reference by a k-nearest-neighbour out-of-sample step: the
  inverse-distance-weighted mean of the map positions of its ``k`` nearest reference windows in
  standardised feature space (numpy brute force over a few hundred points). openTSNE's
  ``transform`` is available too (``map.placement = "transform"``), but it optimises per call
  and costs tens of milliseconds; ``dreamstate bench signal`` measures both, and the tests
  check that kNN placements keep the neighbourhoods (trustworthiness).
* The reference refits in the background every ``refit_every_s`` on a spread of the windows
  seen so far. The new layout is aligned to the old one by Procrustes (rotation/reflection,
  scale, shift) against where the old map places the same windows, so the map does not jump.
* Map coordinates are scaled into 0..1 by the first reference's extent (with a margin) and
  clipped; later references live in the same frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.background import report_background_error
from dreamstate.engine.core.errors import SignalError
from dreamstate.engine.core.metrics import Counters

log = logging.getLogger("dreamstate.signal")

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Alignment:
    """Maps raw layout coordinates into the map frame: ``s * (y - a_mean) @ r + b_mean``."""

    r: F64
    s: float
    a_mean: F64
    b_mean: F64

    def apply(self, y: F64) -> F64:
        out: F64 = self.s * (y - self.a_mean) @ self.r + self.b_mean
        return out

    @staticmethod
    def identity() -> Alignment:
        return Alignment(np.eye(2), 1.0, np.zeros(2), np.zeros(2))


def procrustes_align(a: F64, b: F64) -> Alignment:
    """The similarity transform (rotation or reflection, scale, shift) taking ``a`` onto ``b``."""
    from scipy.linalg import orthogonal_procrustes

    a_mean, b_mean = a.mean(axis=0), b.mean(axis=0)
    a0, b0 = a - a_mean, b - b_mean
    r, _ = orthogonal_procrustes(a0, b0)
    denom = float((a0 * a0).sum())
    s = float(((a0 @ r) * b0).sum()) / denom if denom > 0 else 1.0
    return Alignment(np.asarray(r, dtype=np.float64), s, a_mean, b_mean)


@dataclass(frozen=True, slots=True)
class Reference:
    """One fitted map. Immutable: a refit builds a new one and swaps it in whole."""

    features: F64      # (n, d) standardised reference windows
    coords: F64        # (n, 2) their positions in the map frame
    mean: F64          # (d,) standardisation
    scale: F64         # (d,)
    version: int
    alignment: Alignment
    tsne: Any = None   # openTSNE TSNEEmbedding (for placement = "transform")

    def standardise(self, x: F64) -> F64:
        out: F64 = (x - self.mean) / self.scale
        return out

    def place_knn(self, x: F64, k: int) -> F64:
        """Map-frame position of one raw feature vector ``x`` (kNN, inverse distance)."""
        z = (x - self.mean) / self.scale
        d2 = np.einsum("ij,ij->i", self.features - z, self.features - z)
        k = min(k, d2.size)
        nn = np.argpartition(d2, k - 1)[:k]
        w = 1.0 / (np.sqrt(d2[nn]) + 1e-6)
        out: F64 = (w @ self.coords[nn]) / w.sum()
        return out

    def place_knn_many(self, x: F64, k: int) -> F64:
        z = (x - self.mean) / self.scale
        d2 = (np.einsum("ij,ij->i", z, z)[:, None] - 2 * z @ self.features.T
              + np.einsum("ij,ij->i", self.features, self.features)[None, :])
        d2 = np.maximum(d2, 0.0)
        k = min(k, self.features.shape[0])
        nn = np.argpartition(d2, k - 1, axis=1)[:, :k]
        w = 1.0 / (np.sqrt(np.take_along_axis(d2, nn, axis=1)) + 1e-6)
        out: F64 = np.einsum("ij,ijk->ik", w, self.coords[nn]) / w.sum(axis=1, keepdims=True)
        return out

    def place_transform(self, x: F64) -> F64:
        """Map-frame position via openTSNE ``transform`` (slow: optimises per call)."""
        if self.tsne is None:
            raise SignalError("map placement 'transform' needs map.method = 'tsne'",
                              hint="set map.placement = 'knn' or map.method = 'tsne'")
        z = ((x - self.mean) / self.scale)[None, :]
        y = np.asarray(self.tsne.transform(z), dtype=np.float64)  # openTSNE defaults
        out: F64 = self.alignment.apply(y)[0]
        return out


INIT_SD = 1e-4
"""openTSNE's scale for an initial layout (it rescales PCA/spectral inits to this std too)."""


def fit_layout(z: F64, method: Literal["tsne", "pca"], *, perplexity: float, seed: int,
               n_jobs: int = 1, init: F64 | None = None) -> tuple[F64, Any]:
    """2D layout of standardised windows ``z``; returns (coords, openTSNE embedding or None).

    ``init`` (n, 2) starts t-SNE from given positions (the old map's placements on a refit),
    which keeps most of the arrangement of clusters; what still moves is aligned by
    Procrustes and cross-faded by ``IncrementalMap``.
    """
    n = z.shape[0]
    if method == "pca":
        from sklearn.decomposition import PCA

        coords = np.asarray(PCA(n_components=2, random_state=seed).fit_transform(z), np.float64)
        return coords, None
    from openTSNE import TSNE

    perp = float(min(perplexity, max(2.0, (n - 1) / 3.0)))
    initialization: Any = "pca"
    extra: dict[str, Any] = {}
    if init is not None:
        centred = init - init.mean(axis=0)
        sd = float(centred[:, 0].std()) or 1.0
        initialization = np.ascontiguousarray(centred / sd * INIT_SD)
        # starting from a laid-out map: skip the early exaggeration that reshuffles clusters
        # (measured: smaller cluster shifts than with it)
        extra = {"early_exaggeration_iter": 0}
    emb = TSNE(n_components=2, perplexity=perp, n_jobs=n_jobs, random_state=seed, **extra,
               initialization=initialization, neighbors="exact" if n < 1000 else "auto",
               negative_gradient_method="bh", verbose=False).fit(z)
    return np.asarray(emb, dtype=np.float64), emb


def build_reference(x: F64, *, method: Literal["tsne", "pca"], perplexity: float, seed: int,
                    previous: Reference | None, n_jobs: int = 1, k: int = 10) -> Reference:
    """Fit a reference on raw feature vectors ``x`` (n, d), aligned to ``previous`` if any."""
    if x.shape[0] < 10:
        raise SignalError(f"map reference needs at least 10 accepted windows, got {x.shape[0]}",
                          hint="wait for more data or lower map.reference_size")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    target = previous.place_knn_many(x, k) if previous is not None else None
    raw, emb = fit_layout(z, method, perplexity=perplexity, seed=seed, n_jobs=n_jobs, init=target)
    align = Alignment.identity() if target is None else procrustes_align(raw, target)
    coords = align.apply(raw)
    return Reference(features=z, coords=coords, mean=mean, scale=scale,
                     version=(previous.version + 1) if previous else 1,
                     alignment=align, tsne=emb)


class IncrementalMap:
    """Places windows on a 2D map that refits itself without jumping.

    Lifecycle: after ``__init__`` there is no reference and ``place`` returns None. ``add(x,
    t)`` stores an accepted window and returns its 0..1 position once a reference exists.
    A reference appears when ``reference_size`` windows have been added: fitted in the
    background thread if ``start()`` was called, otherwise synchronously inside that ``add``
    (offline tools, tests). With the thread running, a refit is requested every
    ``refit_every_s`` (window time) and swapped in whole when done; for ``blend_s`` seconds
    after a swap ``add`` cross-fades each position from the old map to the new one, so even
    what Procrustes cannot align moves smoothly. ``close()`` stops the thread (join with
    timeout). ``fit_now(x)`` fits a reference from given windows at once.
    """

    def __init__(self, *, dim: int, method: Literal["tsne", "pca"] = "tsne",
                 placement: Literal["knn", "transform"] = "knn", reference_size: int = 240,
                 refit_every_s: float = 60.0, perplexity: float = 30.0, seed: int = 0,
                 k: int = 10, history: int | None = None, n_jobs: int = 1,
                 counters: Counters | None = None,
                 on_fit: Callable[[Reference, F64], None] | None = None,
                 blend_s: float = 5.0) -> None:
        self.dim = dim
        self.method: Literal["tsne", "pca"] = method
        self.placement: Literal["knn", "transform"] = placement
        self.reference_size = reference_size
        self.refit_every_s = refit_every_s
        self.perplexity = perplexity
        self.seed = seed
        self.k = k
        self.n_jobs = n_jobs
        self.counters = counters if counters is not None else Counters()
        self._hist = np.zeros((history or 4 * reference_size, dim), np.float64)
        self._hist_n = 0
        self._lock = threading.Lock()  # guards the history ring
        # The refit thread swaps in (reference, _norm, _blend) together under _ref_lock; the loop
        # reads them together under it and advances the cross-fade under it.
        self._ref_lock = threading.Lock()
        self.reference: Reference | None = None
        self._norm: tuple[F64, F64] | None = None
        self._last_fit_t: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fit_pending = False
        self._retry_at = 0
        self.last_fit_s = 0.0
        self.on_fit = on_fit
        self.blend_s = blend_s
        # (old reference, new reference, window time the cross-fade started or None)
        self._blend: tuple[Reference, Reference, float | None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the background refit thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dreamstate-map-refit", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the refit thread; a fit in progress is abandoned after ``timeout`` s."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("map refit thread still busy at close; leaving it (daemon)",
                            extra={"timeout_s": timeout})
            self._thread = None

    @property
    def background(self) -> bool:
        return self._thread is not None

    # ------------------------------------------------------------------ data
    @property
    def history_size(self) -> int:
        return min(self._hist_n, self._hist.shape[0])

    def history(self) -> F64:
        """Copy of the stored windows, oldest first."""
        with self._lock:
            cap = self._hist.shape[0]
            if self._hist_n <= cap:
                return self._hist[:self._hist_n].copy()
            pos = self._hist_n % cap
            return np.concatenate((self._hist[pos:], self._hist[:pos]))

    def _training_set(self) -> F64:
        h = self.history()
        if h.shape[0] <= self.reference_size:
            return h
        pick = np.linspace(0, h.shape[0] - 1, self.reference_size).round().astype(int)
        out: F64 = h[pick]
        return out

    def add(self, x: npt.NDArray[np.floating[Any]], t: float) -> tuple[float, float] | None:
        """Store one accepted window's features; return its map position (0..1) or None."""
        v = np.asarray(x, dtype=np.float64)
        with self._lock:
            self._hist[self._hist_n % self._hist.shape[0]] = v
            self._hist_n += 1
        ref = self.reference
        if ref is None:
            if self._hist_n >= max(self.reference_size, self._retry_at) and not self._fit_pending:
                if self.background:
                    self._fit_pending = True
                    self._wake.set()
                else:
                    try:
                        self.fit_now(self._training_set())
                        self._last_fit_t = t
                    except (SignalError, ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
                        self._retry_at = self._hist_n + max(1, self.reference_size // 4)
                        self.counters.inc("map_fit_errors")
                        log.warning("map fit failed; retrying after more windows",
                                    extra={"error": str(exc), "retry_at": self._retry_at})
            ref = self.reference
        elif self.background and not self._fit_pending:
            if self._last_fit_t is None:
                self._last_fit_t = t
            elif t - self._last_fit_t >= self.refit_every_s:
                self._last_fit_t = t
                self._fit_pending = True
                self._wake.set()
        if ref is None:
            return None
        with self._ref_lock:  # one consistent view of the map, and the cross-fade advanced
            ref, norm, blend = self.reference, self._norm, self._blend
            old: Reference | None = None
            a = 1.0
            if ref is not None and blend is not None and blend[1] is ref:
                old, _, t0 = blend
                if t0 is None:
                    t0 = t
                    self._blend = (old, ref, t0)
                a = (t - t0) / self.blend_s if self.blend_s > 0 else 1.0
                if a >= 1.0:
                    self._blend = None
        assert ref is not None and norm is not None
        p = self._place_raw(v, ref)
        if old is not None and a < 1.0:  # cross-fade from where the old map puts this window
            p = (1.0 - a) * self._place_raw(v, old) + a * p
        return self._normalise(p, norm)

    def _place_raw(self, x: F64, ref: Reference) -> F64:
        return ref.place_knn(x, self.k) if self.placement == "knn" else ref.place_transform(x)

    def place(self, x: F64, ref: Reference | None = None) -> tuple[float, float] | None:
        """0..1 map position of raw features ``x`` on the current reference (None if none;
        no cross-fade: ``add`` applies that)."""
        with self._ref_lock:
            ref, norm = ref or self.reference, self._norm
        if ref is None or norm is None:
            return None
        return self._normalise(self._place_raw(x, ref), norm)

    @staticmethod
    def _normalise(p: F64, norm: tuple[F64, F64]) -> tuple[float, float]:
        lo, span = norm
        q = np.clip((p - lo) / span, 0.0, 1.0)
        return float(q[0]), float(q[1])

    def normalise_many(self, p: F64) -> F64:
        """Map-frame positions (n, 2) to 0..1. Raises ``SignalError`` before the first fit."""
        norm = self._norm
        if norm is None:
            raise SignalError("the map has no reference yet", hint="add more windows first")
        lo, span = norm
        out: F64 = np.clip((p - lo) / span, 0.0, 1.0)
        return out

    # ------------------------------------------------------------------ fitting
    def fit_now(self, x: F64) -> Reference:
        """Fit (or refit, aligned) a reference on raw feature vectors ``x`` and swap it in."""
        t0 = time.perf_counter()
        ref = build_reference(np.asarray(x, np.float64), method=self.method,
                              perplexity=self.perplexity, seed=self.seed,
                              previous=self.reference, n_jobs=self.n_jobs, k=self.k)
        with self._ref_lock:
            if self._norm is None:  # set once, by the first fit; never changed after
                lo = ref.coords.min(axis=0)
                span = np.maximum(ref.coords.max(axis=0) - lo, 1e-9)
                self._norm = (lo - 0.05 * span, span * 1.1)
        if self.on_fit is not None:  # e.g. re-cluster, before the new map is used
            self.on_fit(ref, self.normalise_many(ref.coords))
        with self._ref_lock:  # reference and cross-fade change together
            old = self.reference
            self._blend = (old, ref, None) if old is not None else None
            self.reference = ref
        self.last_fit_s = time.perf_counter() - t0
        self.counters.inc("map_fits")
        log.info("map reference fitted", extra={"version": ref.version, "windows": x.shape[0],
                                                "seconds": round(self.last_fit_s, 3)})
        return ref

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self._fit_pending:
                continue
            try:
                self.fit_now(self._training_set())
            except (SignalError, ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
                self.counters.inc("map_fit_errors")
                log.warning("map refit failed; keeping the previous map",
                            extra={"error": str(exc), "fix": "check the feature values; "
                                   "the refit retries at the next period"})
            except Exception as exc:  # noqa: BLE001 -- a bug: reported; the thread keeps the old map
                report_background_error("map refit", exc, log, counters=self.counters, counter="map_fit_errors")
            finally:
                self._fit_pending = False
