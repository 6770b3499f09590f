"""Typed, immutable records that flow between stages (see docs/ARCHITECTURE.md).

Times are ``time.monotonic()`` seconds. Raw samples are float32 microvolts and carry the device
sample index of their first sample, so a reader can detect and count gaps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

SFREQ: Final = 512.0
"""ThinkGear raw sample rate in Hz."""

UV_PER_COUNT: Final = 1.8 / 4096 / 2000 * 1e6
"""Raw ThinkGear count to microvolts: ``raw * 1.8 / 4096 / 2000 * 1e6`` (about 0.2197)."""

BAND_NAMES: Final = (
    "delta",
    "theta",
    "low_alpha",
    "high_alpha",
    "low_beta",
    "high_beta",
    "low_gamma",
    "mid_gamma",
)
"""The eight ASIC EEG power bands, in the order the headset sends them."""

POOR_SIGNAL_OFF_HEAD: Final = 200

FloatArray = npt.NDArray[np.float32]


def raw_to_uv(raw: npt.ArrayLike) -> FloatArray:
    """Convert raw ThinkGear counts (int16) to microvolts as float32."""
    return (np.asarray(raw, dtype=np.float64) * UV_PER_COUNT).astype(np.float32)


@dataclass(frozen=True, slots=True)
class RawChunk:
    """Consecutive raw samples. ``first_index`` is the device sample index of ``samples[0]``."""

    first_index: int
    samples: FloatArray
    time: float
    sfreq: float = SFREQ

    @property
    def next_index(self) -> int:
        return self.first_index + len(self.samples)


@dataclass(frozen=True, slots=True)
class ESense:
    """eSense attention and meditation, 0..100 (the headset sends them at 1 Hz)."""

    attention: int
    meditation: int
    time: float


@dataclass(frozen=True, slots=True)
class BandPowers:
    """The eight ASIC band powers (unitless u24), in ``BAND_NAMES`` order."""

    values: tuple[int, int, int, int, int, int, int, int]
    time: float


@dataclass(frozen=True, slots=True)
class SignalQuality:
    """POOR_SIGNAL 0..200. 0 is good contact; 200 means the headset is off the head."""

    poor_signal: int
    time: float

    @property
    def off_head(self) -> bool:
        return self.poor_signal >= POOR_SIGNAL_OFF_HEAD


@dataclass(frozen=True, slots=True)
class Blink:
    """A blink event with its strength 1..255."""

    strength: int
    time: float


@dataclass(frozen=True, slots=True)
class HeartRate:
    """Heart rate (code 0x03) or an R-R interval in ms (code 0x86, ``rr_ms`` set)."""

    bpm: int | None
    time: float
    rr_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Marker:
    """A labelled moment, e.g. a calibration clip start ("fun") or stop (label "")."""

    label: str
    time: float
    duration: float = 0.0


class DeviceEventKind(enum.StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    DONGLE_CONNECTED = "dongle_connected"
    DONGLE_NOT_FOUND = "dongle_not_found"
    DONGLE_DISCONNECTED = "dongle_disconnected"
    DONGLE_DENIED = "dongle_denied"
    DONGLE_STANDBY = "dongle_standby"
    DONGLE_SCANNING = "dongle_scanning"
    END_OF_STREAM = "end_of_stream"
    NO_FRAMES = "no_frames"  # bytes arrive, but none of them are valid ThinkGear frames


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """Something happened to the link: connected, disconnected, stalled, dongle status, ..."""

    kind: DeviceEventKind
    time: float
    detail: str = ""
    headset_id: int | None = None


Reading = RawChunk | ESense | BandPowers | SignalQuality | Blink | HeartRate | Marker | DeviceEvent
"""Everything a device front end emits, in arrival order."""


@dataclass(frozen=True, slots=True)
class WindowFlags:
    """Why a window may not be used as data."""

    poor_signal: bool = False
    clipped: bool = False
    blink: bool = False
    gap: bool = False
    flat: bool = False
    nonfinite: bool = False

    @property
    def rejected(self) -> bool:
        return self.poor_signal or self.clipped or self.gap or self.flat or self.nonfinite

    def reasons(self) -> list[str]:
        return [name for name in ("poor_signal", "clipped", "blink", "gap", "flat", "nonfinite")
                if getattr(self, name)]


@dataclass(frozen=True, slots=True)
class Window:
    """A half-second slice of filtered raw EEG. ``index`` counts windows from 0."""

    index: int
    end_time: float
    end_sample: int
    samples: FloatArray
    flags: WindowFlags = field(default_factory=WindowFlags)
    esense: ESense | None = None


@dataclass(frozen=True, slots=True)
class Features:
    vector: FloatArray
    names: tuple[str, ...]
    window_index: int


@dataclass(frozen=True, slots=True)
class MapPoint:
    x: float
    y: float
    window_index: int


ABSENT: Final = "absent"
"""The state label used when nobody is wearing the headset."""


@dataclass(frozen=True, slots=True)
class EegState:
    """The state in force and why.

    ``label`` is the state in force (it changes only after a challenger has led for the dwell
    time); ``probabilities`` are the smoothed per-label probabilities (0..1) of the latest
    window and ``confidence`` is the one of ``label``. While another label leads (by the
    hysteresis margin) but has not yet held it for ``dwell_s``, ``leading`` names it and
    ``leading_s`` says for how long it has led (seconds of signal time); otherwise ``leading``
    is None. ``probabilities`` is empty before the first window was classified.
    """

    label: str
    probabilities: dict[str, float]
    confidence: float
    time: float
    index: int = 0
    leading: str | None = None
    leading_s: float = 0.0
    dwell_s: float = 0.0

    def ahead(self) -> str | None:
        """The most probable label when it is not ``label`` (a challenger still within the
        hysteresis margin or the dwell time), else None."""
        if not self.probabilities:
            return None
        top = max(self.probabilities, key=lambda k: self.probabilities[k])
        return top if top != self.label and self.probabilities[top] > self.confidence else None

    def describe(self) -> str:
        """One phrase that never contradicts the probabilities, e.g. ``calm 0.82``, ``neutral
        0.24; calm leads with 0.76 for 0.4 of 1.0 s`` or ``neutral (no windows yet)``."""
        if not self.probabilities:
            return self.label if self.label == ABSENT else f"{self.label} (no windows yet)"
        text = f"{self.label} {self.confidence:.2f}"
        top = self.ahead()
        if self.leading is not None:
            text += (f"; {self.leading} leads with {self.probabilities.get(self.leading, 0.0):.2f} "
                     f"for {self.leading_s:.1f} of {self.dwell_s:.1f} s")
        elif top is not None:
            text += f"; {top} is ahead with {self.probabilities[top]:.2f}, within the hysteresis margin"
        return text


@dataclass(frozen=True, slots=True)
class DreamRecipe:
    """Everything the dream worker needs to render; swapped whole, latest wins."""

    layer_weights: dict[str, float]
    channels: dict[str, tuple[int, ...]] = field(default_factory=dict)
    step: float = 1.5
    octaves: int = 4
    octave_scale: float = 1.4
    steps_per_octave: int = 10
    zoom: float = 1.0
    rotate_deg: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)
    mask: str | None = None
    guide: str | None = None
    source_image: str | None = None
    blend: float = 0.5
    generation: int = 0
    # stabilisers (engine.render.stabilise) and the displayed crossfade of discrete changes
    color_nudge: float = 0.02
    contrast: float = 0.85
    warp_px: float = 16.0
    crossfade_s: float = 2.0
    # scene mode (engine.render.modes): "dream", or a FrameMode: "style" (engine.render.style),
    # "drawing" (engine.render.drawmode)
    mode: str = "dream"
    style: str | None = None  # style model: registry name or show-relative .onnx
    style_mix: float = 0.0  # share of the styled frame in each new frame (0 = unstyled)
    # drawing mode: classes by name or index, taken in turn
    draw: tuple[str, ...] = ()
    draw_each_s: float = 90.0
    ellipses: int = 40
    optimizer: str = "random"
    # the "seeing" overlay (engine.render.seeing) on whatever the mode shows
    seeing: str = "off"  # attribution method, or "off"
    seeing_class: str | None = None  # class name or index; None = the top class
    seeing_opacity: float = 0.0  # 0..1 (0 = no overlay)
    seeing_colormap: str = "auto"
    seeing_smooth: float = 2.0  # Gaussian sigma in frame pixels
    seeing_every_s: float = 0.5  # recompute the map at most this often


@dataclass(frozen=True, slots=True)
class EegSnapshot:
    """The latest device values, as telemetry sends them: eSense, signal quality, band
    powers, the map point (each None until the first arrives) and the number of blinks so far
    (a telemetry loop sends one pulse per new blink)."""

    esense: ESense | None = None
    quality: SignalQuality | None = None
    bands: BandPowers | None = None
    point: MapPoint | None = None
    blinks: int = 0

