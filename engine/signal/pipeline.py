"""The signal pipeline: readings in, windows / features / map point / state out.

``SignalPipeline.feed(reading)`` is synchronous and cheap; call it for every reading a device
emits. Raw chunks go through the ring buffer (gap detection, causal notch + band-pass), are cut
into windows, and each accepted window gets features, a map position and a state. The only
slow work, refitting the map, runs in a background thread between ``start()`` and ``close()``;
without ``start()`` the first map fit runs inline (offline tools and tests).

Everything that goes wrong with the data (NaN, flat or clipped windows, gaps, duplicates,
unknown readings) is counted in ``counters`` and never raises out of ``feed``.

Public API (used by the show runtime and the monitor)::

    pipe = SignalPipeline(show.signal, show.map, show.states)   # sfreq=512, clock=time.monotonic
    pipe.start()                       # background map refits; pipe.close() joins them
    results = pipe.feed(reading)       # list[WindowResult(window, features, point, state, label)]
    pipe.latest_state / pipe.latest_point / pipe.counters / pipe.reference_points()
    pipe.begin_label("fun"); pipe.end_label()      # calibration labels (OSC, MQTT, Marker)
    pipe.start_schedule()              # or run states.calibration.schedule by the clock;
                                       # pipe.on_schedule_end() is called once when it ends
    report = pipe.fit_calibration()    # CalibrationError with per-label counts if short
    pipe.save_calibration(path); pipe.load_calibration(path)   # JSON, never pickle
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import (
    ABSENT,
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    EegState,
    ESense,
    Features,
    HeartRate,
    MapPoint,
    Marker,
    RawChunk,
    Reading,
    SignalQuality,
    Window,
)
from dreamstate.engine.core.show import MapConfig, SignalConfig, StatesConfig
from dreamstate.engine.signal.calibration import CalibrationReport, CalibrationSchedule, Calibrator
from dreamstate.engine.signal.embedding import IncrementalMap
from dreamstate.engine.signal.features import FeatureExtractor
from dreamstate.engine.signal.filters import CausalFilter, design_sos
from dreamstate.engine.signal.ring import RingBuffer
from dreamstate.engine.signal.states import (
    ClusterModel,
    RulesModel,
    StateTracker,
    fallback_label,
    rule_values,
)
from dreamstate.engine.signal.windows import WindowContext, Windower

log = logging.getLogger("dreamstate.signal")

F64 = npt.NDArray[np.float64]

ABSENT_EVENTS = frozenset({DeviceEventKind.DISCONNECTED, DeviceEventKind.STALLED,
                           DeviceEventKind.END_OF_STREAM, DeviceEventKind.DONGLE_DISCONNECTED,
                           DeviceEventKind.DONGLE_NOT_FOUND, DeviceEventKind.NO_FRAMES})


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One window and what became of it (``features``/``point`` None when rejected/unmapped).

    ``label`` is the calibration label the window was recorded under (None outside labels).
    """

    window: Window
    features: Features | None
    point: MapPoint | None
    state: EegState
    label: str | None = None


@dataclass(slots=True)
class _LabelSpan:
    label: str
    start: int
    until: int | None


class SignalPipeline:
    """Readings -> windows -> features -> map point -> state (see module docstring).

    Lifecycle: after ``__init__`` nothing has been seen, ``latest_state`` and ``latest_point``
    are None (``live_map=False`` skips map placement: offline tools that fit their own map).
    After each ``feed`` every window completed by that reading has been processed (returned
    in order) and ``latest_state``/``latest_point`` are the newest. ``start()`` runs the map
    refit thread; ``close()`` stops it (joined with a timeout) and may be called twice.
    """

    def __init__(self, signal: SignalConfig, map: MapConfig, states: StatesConfig, *,
                 sfreq: float = 512.0, clock: Callable[[], float] = time.monotonic,
                 ring_seconds: float = 30.0, absent_after_s: float = 2.0,
                 n_jobs: int = 1, live_map: bool = True) -> None:
        self.signal_cfg = signal
        self.map_cfg = map
        self.states_cfg = states
        self.sfreq = float(sfreq)
        self.clock = clock
        self.absent_after_s = absent_after_s
        self.live_map = live_map
        self.counters = Counters()
        self.win = round(signal.window_s * sfreq)
        self.hop = max(1, round(signal.hop_s * sfreq))
        self.filter = CausalFilter(design_sos(sfreq, signal.notch_hz, signal.band_hz))
        capacity = max(round(ring_seconds * sfreq), 4 * self.win)
        self.ring = RingBuffer(capacity, sfreq=sfreq, clip_uv=signal.clip_uv, filt=self.filter,
                               counters=self.counters)
        self.windower = Windower(self.ring, win=self.win, hop=self.hop,
                                 poor_threshold=signal.poor_signal_threshold,
                                 settle=min(self.win, round(0.25 * sfreq)), counters=self.counters)
        self.extractor = FeatureExtractor(signal.features, sfreq=sfreq, n=self.win,
                                          band_hz=signal.band_hz)
        self.names = self.extractor.names
        self.map = IncrementalMap(dim=len(self.names), method=map.method, placement=map.placement,
                                  reference_size=map.reference_size,
                                  refit_every_s=map.refit_every_s, perplexity=map.perplexity,
                                  seed=map.seed, n_jobs=n_jobs, counters=self.counters)
        self.labels = list(states.labels)
        self.tracker = StateTracker(self.labels, dwell_s=states.dwell_s, hysteresis=states.hysteresis,
                                    smooth_s=states.smooth_s)
        self.rules = RulesModel(states.rules, self.labels, hysteresis=states.hysteresis)
        if states.mode == "rules" and not states.rules:
            log.info("states.mode = 'rules' without rules: the state stays %r",
                     fallback_label(self.labels))
        self.clusters = ClusterModel(states.clusters, self.labels, seed=map.seed)
        if states.mode == "clusters":
            self.tracker.labels = list(self.clusters.labels)
            self.map.on_fit = lambda ref, pts: self.clusters.fit(pts, ref.version)
        cal = states.calibration
        self.calibrator = Calibrator(self.names, classifier=cal.classifier,
                                     min_windows_per_label=cal.min_windows_per_label, seed=map.seed)
        self.schedule = CalibrationSchedule(cal.schedule) if cal.schedule else None
        self._schedule_t0: float | None = None
        self._spans: list[_LabelSpan] = []
        self.on_schedule_end: Callable[[], None] | None = None
        self.latest_state: EegState | None = None
        self.latest_point: MapPoint | None = None
        self.latest_features: Features | None = None
        self._ctx = WindowContext()
        self._poor_since: float | None = None
        self._bad_since: float | None = None
        self._poor: int | None = None
        self._esense: ESense | None = None
        self.profile: dict[str, list[float]] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the background map refit thread."""
        self.map.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the refit thread (joined with ``timeout``). Idempotent."""
        self.map.close(timeout)

    def __enter__(self) -> SignalPipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ labels
    def begin_label(self, label: str, duration_s: float = 0.0) -> None:
        """Label the windows that start from now on (``""`` ends the current label).

        A window gets the label only if it lies wholly inside the labelled stretch of samples,
        so windows straddling a clip's start or stop are not used. With ``duration_s`` > 0 the
        label ends by itself after that much signal (annotations with a duration).
        """
        if not label:
            self.end_label()
            return
        self.end_label()
        start = self.ring.total
        until = start + round(duration_s * self.sfreq) if duration_s > 0 else None
        self._spans.append(_LabelSpan(label, start, until))
        self.counters.inc("calibration_labels")
        log.info("calibration label started", extra={"label": label, "at_sample": start})

    def end_label(self) -> None:
        """Stop labelling at the current sample (no-op when no label is open)."""
        if self._spans and self._spans[-1].until is None:
            span = self._spans[-1]
            span.until = self.ring.total
            log.info("calibration label stopped", extra={"label": span.label,
                                                         "samples": span.until - span.start})

    @property
    def active_label(self) -> str | None:
        """The calibration label being recorded now, if any."""
        if self._spans:
            span = self._spans[-1]
            if span.until is None or span.until > self.ring.total:
                return span.label
        return None

    def _label_for(self, start: int, end: int) -> str | None:
        while self._spans and self._spans[0].until is not None and self._spans[0].until < start:
            self._spans.pop(0)  # finished stretches the windows have moved past
        for span in self._spans:
            if span.start <= start and (span.until is None or end <= span.until):
                return span.label
        return None

    def start_schedule(self, t0: float | None = None) -> None:
        """Run the show's calibration schedule from ``t0`` (default: now, by ``clock``)."""
        if self.schedule is None:
            from dreamstate.engine.core.errors import CalibrationError

            raise CalibrationError("the show has no calibration schedule",
                                   hint="add states.calibration.schedule = [[label, seconds], ...]")
        self._schedule_t0 = self.clock() if t0 is None else t0

    def _tick_schedule(self) -> None:
        if self.schedule is None or self._schedule_t0 is None:
            return
        elapsed = self.clock() - self._schedule_t0
        label = self.schedule.label_at(elapsed)
        if label != self.active_label:
            if label is None:
                self.end_label()
            else:
                self.begin_label(label)
        if elapsed >= self.schedule.duration:
            self._schedule_t0 = None
            self.end_label()
            self.counters.inc("calibration_schedules_done")
            if self.on_schedule_end is not None:  # e.g. fit the calibration off the loop
                self.on_schedule_end()

    def fit_calibration(self) -> CalibrationReport:
        """Fit the classifier on the labelled windows (raises CalibrationError with counts)."""
        return self.calibrator.fit()

    def save_calibration(self, path: str | Path) -> Path:
        return self.calibrator.save(path)

    def load_calibration(self, path: str | Path) -> CalibrationReport:
        """Load a saved calibration (JSON) and refit it; warns about labels the show lacks."""
        report = self.calibrator.load(path)
        extra = sorted(set(report.counts) - set(self.labels))
        if extra and self.states_cfg.mode == "calibrated":
            log.warning("calibration labels missing from states.labels",
                        extra={"file": str(path), "labels": extra,
                               "fix": "add them to states.labels (and give them scenes)"})
        return report

    # ------------------------------------------------------------------ feeding
    def feed(self, reading: Reading) -> list[WindowResult]:
        """Take one reading; return the results of the windows it completed (often none)."""
        self._tick_schedule()
        if isinstance(reading, RawChunk):
            return self._feed_raw(reading)
        if isinstance(reading, SignalQuality):
            self._on_quality(reading)
        elif isinstance(reading, ESense):
            self._esense = reading
            self._ctx.esense = reading
        elif isinstance(reading, Blink):
            self._ctx.blink_pos = self.ring.total
            self.counters.inc("blinks")
        elif isinstance(reading, Marker):
            self.counters.inc("markers")
            self.begin_label(reading.label, reading.duration)
        elif isinstance(reading, DeviceEvent):
            if reading.kind in ABSENT_EVENTS:
                self._set_absent(reading.time, f"device {reading.kind.value}")
        elif isinstance(reading, BandPowers | HeartRate):
            pass
        else:
            self.counters.inc("unknown_readings")
        return []

    def _feed_raw(self, chunk: RawChunk) -> list[WindowResult]:
        if abs(chunk.sfreq - self.sfreq) > 1e-6:
            self.counters.inc("wrong_sfreq_chunks")
            log.warning("raw chunk at the wrong sample rate ignored",
                        extra={"got": chunk.sfreq, "want": self.sfreq,
                               "fix": "resample the recording to 512 Hz"})
            return []
        out: list[WindowResult] = []
        n = len(chunk.samples)
        piece = max(self.hop, self.ring.capacity // 4)
        prof = self.profile
        for lo in range(0, n, piece):
            hi = min(n, lo + piece)
            t0 = time.perf_counter()
            self.ring.push(chunk.first_index + lo, chunk.samples[lo:hi])
            self._ctx.anchor_pos = self.ring.total
            self._ctx.anchor_time = chunk.time - (n - hi) / self.sfreq
            self._ctx.poor_signal = self._poor or 0
            windows = self.windower.poll(self._ctx)
            if prof is not None:
                prof.setdefault("filter", []).append(time.perf_counter() - t0)
            for end, w in windows:
                out.append(self._process(w, self._label_for(end - self.win, end)))
        return out

    def _on_quality(self, q: SignalQuality) -> None:
        self._poor = q.poor_signal
        if q.off_head:
            self._set_absent(q.time, "headset off the head (POOR_SIGNAL 200)")
        elif q.poor_signal >= self.signal_cfg.poor_signal_threshold:
            if self._poor_since is None:
                self._poor_since = q.time
            elif q.time - self._poor_since >= self.absent_after_s:
                self._set_absent(q.time, f"poor signal {q.poor_signal} for {self.absent_after_s} s")
        else:
            self._poor_since = None

    def _set_absent(self, t: float, why: str) -> None:
        if self.tracker.current != ABSENT:
            self.counters.inc("absent_entered")
            log.info("state absent", extra={"reason": why})
        self.latest_state = self.tracker.set_absent(t)

    def _process(self, w: Window, label: str | None) -> WindowResult:
        if w.flags.rejected:
            if self._bad_since is None:
                self._bad_since = w.end_time
            elif w.end_time - self._bad_since >= self.absent_after_s:
                self._set_absent(w.end_time, f"only rejected windows for {self.absent_after_s} s "
                                 f"({', '.join(w.flags.reasons())})")
            state = self.latest_state or self.tracker.neutral(w.end_time)
            return WindowResult(w, None, None, state, label)
        self._bad_since = None
        prof = self.profile
        t0 = time.perf_counter()
        feats = self.extractor.compute(w.samples, w.esense, w.index)
        vec = feats.vector
        if not np.isfinite(vec).all():  # cannot happen for finite input; guard the map anyway
            self.counters.inc("rejected_nonfinite_features")
            state = self.latest_state or self.tracker.neutral(w.end_time)
            return WindowResult(w, None, None, state, label)
        self.latest_features = feats
        if label is not None:
            self.calibrator.add(vec, label)
            self.counters.inc("calibration_windows")
        t1 = time.perf_counter()
        xy = self.map.add(vec, w.end_time) if self.live_map else None
        point = MapPoint(xy[0], xy[1], w.index) if xy is not None else None
        if point is not None:
            self.latest_point = point
        t2 = time.perf_counter()
        probs = self._probabilities(vec, point)
        if not probs:
            probs = {fallback_label(self.tracker.labels): 0.0}
        # the tracker's dwell and smoothing run on the signal's own clock (sample index), so a
        # replay at any speed decides as a live headset would; the state is stamped with end_time
        state = self.tracker.update(probs, w.end_sample / self.sfreq, stamp=w.end_time)
        self.latest_state = state
        if prof is not None:
            t3 = time.perf_counter()
            prof.setdefault("features", []).append(t1 - t0)
            prof.setdefault("map", []).append(t2 - t1)
            prof.setdefault("state", []).append(t3 - t2)
        return WindowResult(w, feats, point, state, label)

    def _probabilities(self, vec: npt.NDArray[np.float32], point: MapPoint | None) -> dict[str, float]:
        mode = self.states_cfg.mode
        if mode == "rules":
            att = None if self._esense is None else self._esense.attention
            med = None if self._esense is None else self._esense.meditation
            values = rule_values(self.names, vec, att, med, self._poor)
            return self.rules.predict(values, self.tracker.current)
        if mode == "clusters":
            if point is None:
                return {}
            return self.clusters.predict((point.x, point.y))
        return self.calibrator.predict_proba(vec)

    # ------------------------------------------------------------------ views
    def reference_points(self) -> F64 | None:
        """The map reference positions in 0..1 (for drawing the map), or None before a fit."""
        ref = self.map.reference
        return None if ref is None else self.map.normalise_many(ref.coords)

    def feature_values(self) -> dict[str, float]:
        """Name -> value of the latest accepted window's features ({} before one)."""
        f = self.latest_features
        if f is None:
            return {}
        return {n: (float(v) if math.isfinite(float(v)) else math.nan)
                for n, v in zip(f.names, f.vector.tolist(), strict=True)}
