"""Frame statistics: dream steps/s, display fps, frame-time p50/p99, dropped frames, latency,
and the picture's health (measures, in-bounds flag, reseeds)."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import numpy as np

from dreamstate.engine.render.health import HealthReport


@dataclass(frozen=True, slots=True)
class FrameStats:
    """A snapshot of the renderer's figures (rates over the last ``window_s`` seconds)."""

    dream_steps_per_s: float
    display_fps: float
    frame_time_p50_ms: float
    frame_time_p99_ms: float
    dropped_frames: int
    displayed_frames: int
    dream_steps: int
    dream_frames_shown: int
    worker_restarts: int
    worker_errors: int
    recipe_latency_s: float | None
    reseeds: int = 0
    health: HealthReport | None = None  # the latest picture check (engine.render.health)

    def line(self) -> str:
        lat = "-" if self.recipe_latency_s is None else f"{self.recipe_latency_s * 1000:.0f} ms"
        return (f"dream {self.dream_steps_per_s:.2f} steps/s | display {self.display_fps:.1f} fps"
                f" | frame p50 {self.frame_time_p50_ms:.1f} ms p99 {self.frame_time_p99_ms:.1f} ms"
                f" | dropped {self.dropped_frames} | recipe latency {lat}"
                f" | restarts {self.worker_restarts}"
                + ("" if self.health is None else
                   f" | picture {'ok' if self.health.in_bounds else 'OUT: ' + ', '.join(self.health.out_of_bounds)}"
                   f" | reseeds {self.reseeds}"))


class StatsTracker:
    """Thread-safe counters behind ``FrameStats``; the display and worker threads both write."""

    def __init__(self, fps: float, window_s: float = 5.0, keep: int = 4096) -> None:
        self.period = 1.0 / fps
        self.window_s = window_s
        self._lock = threading.Lock()
        self._frame_times: collections.deque[float] = collections.deque(maxlen=keep)
        self._frame_stamps: collections.deque[float] = collections.deque(maxlen=keep)
        self._step_stamps: collections.deque[float] = collections.deque(maxlen=keep)
        self.all_frame_times: list[float] = []
        self.record_all = False
        self.dropped = 0
        self.displayed = 0
        self.steps = 0
        self.dream_frames_shown = 0
        self.worker_restarts = 0
        self.worker_errors = 0
        self.latencies: list[float] = []
        self.reseeds = 0
        self.last_health: HealthReport | None = None

    def frame(self, interval: float, now: float) -> None:
        with self._lock:
            self.displayed += 1
            self._frame_times.append(interval)
            self._frame_stamps.append(now)
            if self.record_all:
                self.all_frame_times.append(interval)
            missed = round(interval / self.period) - 1
            if missed > 0:
                self.dropped += missed

    def step(self, now: float) -> None:
        with self._lock:
            self.steps += 1
            self._step_stamps.append(now)

    def shown(self) -> None:
        with self._lock:
            self.dream_frames_shown += 1

    def latency(self, seconds: float) -> None:
        with self._lock:
            self.latencies.append(seconds)

    def restarted(self) -> None:
        with self._lock:
            self.worker_restarts += 1

    def error(self) -> None:
        with self._lock:
            self.worker_errors += 1

    def reseeded(self) -> None:
        with self._lock:
            self.reseeds += 1

    def health(self, report: HealthReport) -> None:
        with self._lock:
            self.last_health = report

    @staticmethod
    def _rate(stamps: collections.deque[float], now: float, window: float) -> float:
        recent = [t for t in stamps if t >= now - window]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], recent[-1] - recent[0], 1e-9)
        return (len(recent) - 1) / span if span > 0 else 0.0

    def snapshot(self) -> FrameStats:
        now = time.monotonic()
        with self._lock:
            times = np.array(self._frame_times, dtype=np.float64) * 1000.0
            p50 = float(np.percentile(times, 50)) if times.size else 0.0
            p99 = float(np.percentile(times, 99)) if times.size else 0.0
            return FrameStats(
                dream_steps_per_s=self._rate(self._step_stamps, now, self.window_s),
                display_fps=self._rate(self._frame_stamps, now, self.window_s),
                frame_time_p50_ms=p50, frame_time_p99_ms=p99,
                dropped_frames=self.dropped, displayed_frames=self.displayed,
                dream_steps=self.steps, dream_frames_shown=self.dream_frames_shown,
                worker_restarts=self.worker_restarts, worker_errors=self.worker_errors,
                recipe_latency_s=self.latencies[-1] if self.latencies else None,
                reseeds=self.reseeds, health=self.last_health)
