"""Calibration: labelled windows in, a scikit-learn classifier with per-state probabilities out.

While a label is active (``begin_label`` / ``end_label``, from OSC, MQTT, a ``Marker`` reading
or the show's schedule) every accepted window's feature vector is stored with that label.
``fit`` checks there are at least ``min_windows_per_label`` windows for each of at least two
labels, estimates held-out accuracy with stratified cross-validation, and fits the
classifier on everything.

Saved calibrations are JSON: the feature names, the classifier kind and the labelled feature
vectors. Loading refits the classifier from them (milliseconds), so no pickle is ever read.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter as TallyCounter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.errors import CalibrationError

log = logging.getLogger("dreamstate.signal")

F64 = npt.NDArray[np.float64]
ClassifierKind = Literal["logistic", "lda", "knn"]
FORMAT = "dreamstate-calibration/1"


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """What a fit found. ``accuracy`` is the mean held-out (cross-validated) accuracy."""

    counts: dict[str, int]
    accuracy: float
    chance: float
    folds: int
    classifier: str
    feature_names: tuple[str, ...]
    confusion: list[list[int]] = field(default_factory=list)

    def summary(self) -> str:
        per = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))
        return (f"{self.classifier} on {sum(self.counts.values())} windows ({per}); held-out "
                f"accuracy {self.accuracy:.1%} over {self.folds} folds (chance {self.chance:.1%})")


def make_classifier(kind: ClassifierKind, seed: int = 0) -> Any:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        clf: Any = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    elif kind == "lda":
        clf = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    elif kind == "knn":
        clf = KNeighborsClassifier(n_neighbors=7, weights="distance")
    else:
        raise CalibrationError(f"unknown classifier {kind!r}",
                               hint="use states.calibration.classifier = 'logistic', 'lda' or 'knn'")
    return make_pipeline(StandardScaler(), clf)


class Calibrator:
    """Collects labelled windows and fits the classifier.

    Lifecycle: after ``__init__`` nothing is recorded. ``add(vector, label)`` stores one
    labelled window (the pipeline decides which label a window has). ``fit()`` returns a
    report and leaves ``model`` fitted; it raises ``CalibrationError`` with the per-label
    counts when data is short. ``save``/``load`` use JSON only.

    Threads: ``add`` runs on the event loop while ``fit`` may run in a worker thread
    (``asyncio.to_thread``). The windows are guarded by a lock and ``fit``/``save`` work on a
    copy taken under it, so rows and labels always pair up; a window added during a fit counts
    in the next one.
    """

    def __init__(self, feature_names: Sequence[str], *, classifier: ClassifierKind = "logistic",
                 min_windows_per_label: int = 20, seed: int = 0) -> None:
        self.feature_names = tuple(feature_names)
        self.classifier: ClassifierKind = classifier
        self.min_windows_per_label = min_windows_per_label
        self.seed = seed
        self._lock = threading.Lock()
        self._x: list[F64] = []  # guarded by _lock
        self._y: list[str] = []  # guarded by _lock
        self.model: Any = None
        self.report: CalibrationReport | None = None

    def add(self, vector: npt.NDArray[np.floating[Any]], label: str) -> None:
        """Record one accepted window's feature vector under ``label``."""
        row = np.asarray(vector, dtype=np.float64).copy()
        with self._lock:
            self._x.append(row)
            self._y.append(label)

    def counts(self) -> dict[str, int]:
        """Accepted windows per label so far."""
        with self._lock:
            return dict(TallyCounter(self._y))

    @property
    def data(self) -> tuple[F64, list[str]]:
        """A copy of the windows, shape (n, n_features), and their n labels, taken together."""
        with self._lock:
            rows, labels = list(self._x), list(self._y)
        x = np.vstack(rows) if rows else np.zeros((0, len(self.feature_names)))
        return x, labels

    def fit(self) -> CalibrationReport:
        from sklearn.metrics import confusion_matrix
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        x, y = self.data  # one consistent copy: adds during the fit wait for the next one
        counts = dict(TallyCounter(y))
        need = self.min_windows_per_label
        short = {k: v for k, v in counts.items() if v < need}
        if len(counts) < 2 or short:
            have = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
            raise CalibrationError(
                f"calibration needs at least {need} accepted windows for each of at least two "
                f"labels; have {have}" + (f" (short: {sorted(short)})" if short else ""),
                hint=f"record longer clips (each window is one hop; {need} windows at hop 0.25 s "
                     f"is about {need * 0.25 + 0.25:.0f} s of good signal per label) or lower "
                     "states.calibration.min_windows_per_label")
        labels = sorted(counts)
        folds = int(min(5, *counts.values()))
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
        pred = cross_val_predict(make_classifier(self.classifier, self.seed), x, np.asarray(y), cv=cv)
        accuracy = float(np.mean(pred == np.asarray(y)))
        chance = max(counts.values()) / len(y)
        conf = confusion_matrix(y, pred, labels=labels).tolist()
        self.model = make_classifier(self.classifier, self.seed).fit(x, np.asarray(y))
        self.report = CalibrationReport(counts=counts, accuracy=accuracy, chance=chance,
                                        folds=folds, classifier=self.classifier,
                                        feature_names=self.feature_names, confusion=conf)
        log.info("calibration fitted", extra={"summary": self.report.summary()})
        return self.report

    def predict_proba(self, vector: npt.NDArray[np.floating[Any]]) -> dict[str, float]:
        if self.model is None:
            return {}
        p = self.model.predict_proba(np.asarray(vector, dtype=np.float64)[None, :])[0]
        return {str(c): float(v) for c, v in zip(self.model.classes_, p, strict=True)}

    def predict_many(self, x: F64) -> list[str]:
        if self.model is None:
            raise CalibrationError("no calibration fitted", hint="run fit() or load a calibration")
        return [str(v) for v in self.model.predict(x)]

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the labelled windows and settings as JSON (no pickle)."""
        x, y = self.data
        doc = {"format": FORMAT, "feature_names": list(self.feature_names),
               "classifier": self.classifier, "min_windows_per_label": self.min_windows_per_label,
               "labels": y, "vectors": [[round(float(v), 7) for v in row] for row in x]}
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        tmp.replace(p)
        return p

    def load(self, path: str | Path) -> CalibrationReport:
        """Read a saved calibration and refit; the feature names must match the show's."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CalibrationError(f"cannot read calibration {p}: {exc.strerror}",
                                   hint="run `dreamstate calibrate` first or fix the path") from None
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"calibration {p} is not valid JSON: {exc}",
                                   hint="re-run `dreamstate calibrate`") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CalibrationError(f"{p} is not a dreamstate calibration (format {FORMAT})",
                                   hint="re-run `dreamstate calibrate`")
        names = tuple(doc.get("feature_names", ()))
        if names != self.feature_names:
            raise CalibrationError(
                f"calibration {p} was made with features {list(names)}, the show uses "
                f"{list(self.feature_names)}",
                hint="use the same signal.features as when calibrating, or calibrate again")
        try:
            x = np.asarray(doc["vectors"], dtype=np.float64).reshape(-1, len(names))
            y = [str(v) for v in doc["labels"]]
        except (KeyError, ValueError, TypeError) as exc:
            raise CalibrationError(f"calibration {p} is damaged: {exc}",
                                   hint="re-run `dreamstate calibrate`") from None
        if x.shape[0] != len(y) or not np.isfinite(x).all():
            raise CalibrationError(f"calibration {p} is damaged (rows/labels mismatch or NaN)",
                                   hint="re-run `dreamstate calibrate`")
        with self._lock:
            self._x = list(x)
            self._y = y
        kind = doc.get("classifier", self.classifier)
        if kind in ("logistic", "lda", "knn"):
            self.classifier = kind
        return self.fit()


@dataclass(slots=True)
class ScheduleStep:
    label: str
    start: float
    stop: float


class CalibrationSchedule:
    """The show's ``states.calibration.schedule``: clips in order, each ``[label, seconds]``.

    ``label_at(elapsed)`` is the label active ``elapsed`` seconds after the start (None between
    or after clips; an empty label is a pause).
    """

    def __init__(self, steps: Sequence[tuple[str, float]]) -> None:
        self.steps: list[ScheduleStep] = []
        t = 0.0
        for label, secs in steps:
            if secs <= 0:
                raise CalibrationError(f"schedule step {label!r} has {secs} s",
                                       hint="give each clip a positive duration")
            self.steps.append(ScheduleStep(label, t, t + secs))
            t += secs
        self.duration = t

    def label_at(self, elapsed: float) -> str | None:
        for s in self.steps:
            if s.start <= elapsed < s.stop:
                return s.label or None
        return None
