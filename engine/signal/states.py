"""From features / map position to a state label that does not flicker.

Three models give per-label probabilities for each accepted window:

* ``RulesModel`` (``states.mode = "rules"``): the first rule whose ``when`` holds names the
  state (probability 1); the rule of the current state is evaluated with its thresholds
  relaxed by ``hysteresis`` (threshold hysteresis). No match: the fallback label.
* ``ClusterModel`` (``"clusters"``): k-means on the map reference, then sequential (online)
  k-means on each placed point. After a refit the new centres are matched to the old ones
  (Hungarian assignment), so a cluster keeps its label.
* ``CalibratedModel`` (``"calibrated"``, in ``engine.signal.calibration``): a scikit-learn
  classifier fitted on labelled calibration windows.

``StateTracker`` turns probabilities into the state. Each window's probabilities are first
smoothed over time (exponential moving average, time constant ``smooth_s``; per-window votes
are noisy: a simulated "focused" stretch has beta above the rule's threshold in only about
three windows of four); then a challenger must beat the current label by ``hysteresis`` and
stay ahead for ``dwell_s`` before it takes over. The state's probabilities and confidence are
the smoothed ones, so what is reported agrees with what was decided. ``absent`` is
entered at once when the headset is off the head or the link is lost, and after
``absent_after_s`` of poor signal; it is left at the first good window.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.records import ABSENT, EegState
from dreamstate.engine.core.show import Rule
from dreamstate.engine.signal.rules import Expr, parse_rule

F64 = npt.NDArray[np.float64]


def fallback_label(labels: Sequence[str]) -> str:
    """The label used when nothing else applies: "neutral" if listed, else the first."""
    return "neutral" if "neutral" in labels else labels[0]


class StateTracker:
    """Hysteresis, minimum dwell and absence on top of per-label probabilities.

    Lifecycle: after ``__init__`` ``state`` is None. ``update(probs, t)`` returns the state
    after one accepted window: the first call adopts the most probable label; later a
    different label takes over only after its smoothed probability leads by ``hysteresis``
    for ``dwell_s`` seconds (``smooth_s = 0``: no smoothing). ``set_absent(t)`` makes the
    state ``absent`` at once; the next ``update`` leaves it and starts the smoothing afresh.
    """

    def __init__(self, labels: Sequence[str], *, dwell_s: float = 3.0, hysteresis: float = 0.15,
                 smooth_s: float = 0.0) -> None:
        self.labels = list(labels)
        self.dwell_s = float(dwell_s)
        self.hysteresis = float(hysteresis)
        self.smooth_s = float(smooth_s)
        self._smoothed: dict[str, float] = {}
        self._t_last: float | None = None
        self.state: EegState | None = None
        self.current: str | None = None
        self._since = 0.0
        self._pending: str | None = None
        self._pending_since = 0.0
        self._t_now = 0.0
        self.switches = 0

    def _make(self, label: str, probs: Mapping[str, float], t: float) -> EegState:
        conf = 1.0 if label == ABSENT else float(probs.get(label, 0.0))
        idx = self.labels.index(label) if label in self.labels else -1
        leading = self._pending if self._pending is not None and self._pending != label else None
        st = EegState(label=label, probabilities=dict(probs), confidence=conf, time=t, index=idx,
                      leading=leading, leading_s=max(0.0, self._t_now - self._pending_since) if leading else 0.0,
                      dwell_s=self.dwell_s)
        self.state = st
        return st

    def _switch(self, label: str, t: float) -> None:
        if label != self.current:
            self.switches += 1
        self.current = label
        self._since = t
        self._pending = None

    def _smooth(self, probs: Mapping[str, float], t: float) -> dict[str, float]:
        if self.smooth_s <= 0 or self._t_last is None or not self._smoothed:
            out = dict(probs)
        else:
            k = 1.0 - math.exp(-max(0.0, t - self._t_last) / self.smooth_s)
            names = dict.fromkeys([*self._smoothed, *probs])
            out = {n: (1.0 - k) * self._smoothed.get(n, 0.0) + k * probs.get(n, 0.0) for n in names}
        self._smoothed, self._t_last = out, t
        return out

    def update(self, probs: Mapping[str, float], t: float, *, stamp: float | None = None) -> EegState:
        """One window's probabilities at time ``t`` (the clock the dwell and smoothing use:
        the signal's own, in seconds); the state is stamped ``stamp`` (default ``t``)."""
        probs = self._smooth(probs, t)
        self._t_now = t
        candidate = max(probs, key=lambda k: probs[k]) if probs else fallback_label(self.labels)
        if self.current is None or self.current == ABSENT:
            self._switch(candidate, t)
        elif candidate != self.current:
            margin = probs.get(candidate, 0.0) - probs.get(self.current, 0.0)
            if margin >= self.hysteresis:
                # the clock runs while *some* challenger leads by the margin: two challengers
                # taking turns (calm and neutral after focused) must not restart it
                if self._pending is None:
                    self._pending_since = t
                self._pending = candidate
                if t - self._pending_since >= self.dwell_s and t - self._since >= self.dwell_s:
                    self._switch(candidate, t)
            else:
                self._pending = None
        else:
            self._pending = None
        assert self.current is not None
        return self._make(self.current, probs, t if stamp is None else stamp)

    def set_absent(self, t: float) -> EegState:
        if self.current != ABSENT:
            self._switch(ABSENT, t)
        self._smoothed, self._t_last = {}, None
        return self._make(ABSENT, {}, t)

    def neutral(self, t: float) -> EegState:
        """The state before any window was classified: the fallback label, confidence 0."""
        label = fallback_label(self.labels)
        return EegState(label=label, probabilities={}, confidence=0.0, time=t,
                        index=self.labels.index(label) if label in self.labels else -1)


class RulesModel:
    """Threshold rules on feature values, eSense and signal; see module docstring."""

    def __init__(self, rules: Sequence[Rule], labels: Sequence[str], *, hysteresis: float = 0.15) -> None:
        self.rules: list[tuple[str, Expr]] = [(r.state, parse_rule(r.when)) for r in rules]
        self.labels = list(labels)
        self.fallback = fallback_label(self.labels)
        self.hysteresis = hysteresis

    def predict(self, values: Mapping[str, float], current: str | None) -> dict[str, float]:
        chosen = self.fallback
        for state, expr in self.rules:
            relax = self.hysteresis if state == current else 0.0
            if expr.evaluate(values, relax):
                chosen = state
                break
        return {label: 1.0 if label == chosen else 0.0 for label in self.labels}


class ClusterModel:
    """Online k-means on map points with labels that survive refits (see module docstring).

    Lifecycle: after ``__init__`` there are no centres and ``predict`` returns {} (caller uses
    the fallback). ``fit(points)`` (map reference positions, 0..1) sets or re-matches the
    centres; each ``predict(p)`` returns probabilities and moves the nearest centre toward
    ``p`` by ``rate``.
    """

    def __init__(self, n: int, labels: Sequence[str], *, seed: int = 0, rate: float = 0.02,
                 width: float = 0.08) -> None:
        self.n = n
        names = list(labels)[:n]
        names += [f"cluster_{i}" for i in range(len(names), n)]
        self.labels = names
        self.seed = seed
        self.rate = rate
        self.width = width
        self._lock = threading.Lock()
        self.centres: F64 | None = None  # replaced whole under _lock, never edited in place
        self.fitted_version = 0

    def fit(self, points: F64, version: int = 0) -> None:
        """Fit k-means on ``points`` (n, 2) in 0..1 and match the new centres to the old ones
        (Hungarian assignment on squared distance) so each label keeps its region.

        Runs on the map's refit thread while ``predict`` runs on the event loop: the k-means
        fit runs outside the lock; matching and the swap run under it, against the centres as
        ``predict`` left them, so no drift is lost and ``predict`` never sees a half-swap."""
        from scipy.optimize import linear_sum_assignment
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=self.n, n_init=4, random_state=self.seed).fit(points)
        new = np.asarray(km.cluster_centers_, dtype=np.float64)
        with self._lock:
            if self.centres is None:
                new = new[np.argsort(new[:, 0])]
            else:
                cost = ((self.centres[:, None, :] - new[None, :, :]) ** 2).sum(axis=2)
                rows, cols = linear_sum_assignment(cost)
                ordered = np.empty_like(new)
                ordered[rows] = new[cols]
                new = ordered
            self.centres = new
            self.fitted_version = version

    def predict(self, p: tuple[float, float]) -> dict[str, float]:
        """Label -> probability (Gaussian of the distance to each centre, width ``width``) for
        the map point ``p`` in 0..1; moves the nearest centre toward ``p`` by ``rate``. {}
        before the first fit. The centres are replaced, never changed in place, so a reader
        holding ``centres`` keeps a consistent copy."""
        x = np.asarray(p, dtype=np.float64)
        with self._lock:
            if self.centres is None:
                return {}
            centres = self.centres.copy()
            d2 = ((centres - x) ** 2).sum(axis=1)
            j = int(np.argmin(d2))
            centres[j] += self.rate * (x - centres[j])
            self.centres = centres
        logits = -d2 / (2 * self.width**2)
        logits -= logits.max()
        w = np.exp(logits)
        probs = w / w.sum()
        return {label: float(v) for label, v in zip(self.labels, probs, strict=True)}


def rule_values(names: Sequence[str], vector: npt.NDArray[np.floating[Any]] | None,
                attention: float | None, meditation: float | None,
                poor_signal: int | None) -> dict[str, float]:
    """Name -> value for rules: the feature vector plus eSense and signal (NaN if unknown)."""
    values: dict[str, float] = {}
    if vector is not None:
        values.update(zip(names, (float(v) for v in vector), strict=True))
    values["attention"] = math.nan if attention is None else float(attention)
    values["meditation"] = math.nan if meditation is None else float(meditation)
    values["signal"] = math.nan if poor_signal is None else float(poor_signal)
    return values
