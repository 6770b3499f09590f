"""Lab Streaming Layer out: dreamstate's EEG, bands, state and markers as four LSL streams.

``LslOutlets`` publishes (names with the configured prefix, ``dreamstate`` by default):

* ``dreamstate-eeg`` (type ``EEG``): the raw EEG, 1 channel, 512 Hz, float32 µV. Timestamps come
  from the device sample indices through ``SampleClock``, so a lost packet leaves its gap in
  time instead of squeezing the samples after it together.
* ``dreamstate-bands`` (type ``EEGFeatures``, irregular): attention and meditation (0..100),
  poor signal (0..200) and the eight ASIC band powers, one sample per status report, each
  channel holding its latest value (NaN before the first).
* ``dreamstate-state`` (type ``BrainState``, irregular): the state's index into the show's
  labels (-1 for ``absent`` or another label), its confidence, one probability per label and
  the map point (x, y in 0..1; NaN before the first), one sample per classified window.
* ``dreamstate-markers`` (type ``Markers``, irregular, string): ``state:<label>`` on each change,
  ``blink:<strength>``, ``device:<event>``, ``marker:<label>`` and ``calibration:<label>`` /
  ``calibration:end``.

Each stream carries XDF-style metadata (``desc/channels/channel`` with label, unit and type;
``desc/acquisition``; the state stream lists its labels in ``desc/states``) and a stable
``source_id`` (``<source_id>-eeg`` ...), so LabRecorder and other consumers reconnect after a
restart. Non-EEG readings are stamped by mapping their ``time.monotonic()`` onto the LSL clock
(``local_clock() - monotonic()``, measured at open).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from dreamstate.devices.lsl import liblsl
from dreamstate.engine.core.errors import DeviceError
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import (
    ABSENT,
    BAND_NAMES,
    SFREQ,
    BandPowers,
    Blink,
    DeviceEvent,
    EegState,
    ESense,
    MapPoint,
    Marker,
    RawChunk,
    Reading,
    SignalQuality,
)

log = logging.getLogger("dreamstate.devices.lsl_outlet")

F64 = npt.NDArray[np.float64]

BAND_CHANNELS: Final = (("attention", "percent", "eSense"), ("meditation", "percent", "eSense"),
                        ("poor_signal", "0-200", "SignalQuality"),
                        *((name, "ASIC units", "BandPower") for name in BAND_NAMES))
"""(label, unit, type) of each channel of the bands stream, in order."""


class SampleClock:
    """Maps device sample indices to LSL timestamps (seconds).

    ``stamps(first_index, n, arrival)`` gives the timestamps of samples ``first_index ..
    first_index + n - 1`` that arrived at ``arrival`` (LSL clock). The map is
    ``base + index / sfreq``: sample spacing comes from the index, so a gap of k lost samples is
    a gap of k / sfreq seconds. ``base`` starts so that the first chunk's last sample is
    stamped at its arrival, then follows the arrivals through a low-pass with time constant
    ``tau_s``, moving at most ``max_slew`` seconds per second of signal (far above a crystal's
    drift of 1e-4, far below a sample per chunk), so the headset's clock and the host's cannot
    drift apart. An index that goes backwards (a new device) or a map more than ``reanchor_s``
    away from the arrivals starts a new anchor (counted ``reanchors``); stamps never go
    backwards: each is at least one sample period after the previous.
    """

    def __init__(self, sfreq: float = SFREQ, *, tau_s: float = 10.0, max_slew: float = 1e-3,
                 reanchor_s: float = 1.0) -> None:
        if not (sfreq > 0 and tau_s > 0 and max_slew >= 0 and reanchor_s > 0):
            raise ValueError("SampleClock needs sfreq > 0, tau_s > 0, max_slew >= 0 and reanchor_s > 0")
        self.sfreq = float(sfreq)
        self.tau_s = tau_s
        self.max_slew = max_slew
        self.reanchor_s = reanchor_s
        self.base: float | None = None
        self._next_index: int | None = None
        self._last_stamp = -math.inf
        self.counters = Counters()

    def stamps(self, first_index: int, n: int, arrival: float) -> F64:
        period = 1.0 / self.sfreq
        last = first_index + n - 1
        if self.base is None or self._next_index is None or first_index < self._next_index:
            if self.base is not None:
                self.counters.inc("reanchors")
            self.base = arrival - last * period
        else:
            err = arrival - (self.base + last * period)
            if abs(err) > self.reanchor_s:
                self.counters.inc("reanchors")
                self.base = arrival - last * period
            else:
                elapsed = (last - (self._next_index - 1)) * period  # signal time since the last chunk
                step = err * min(1.0, elapsed / self.tau_s)
                bound = self.max_slew * elapsed
                self.base += max(-bound, min(bound, step))
        out = self.base + (first_index + np.arange(n, dtype=np.float64)) * period
        if n and out[0] <= self._last_stamp:  # a re-anchor must not step back in time
            out += self._last_stamp + period - out[0]
        if n:
            self._last_stamp = float(out[-1])
        self._next_index = first_index + n
        return out


def _channels(desc: Any, channels: Iterable[tuple[str, str, str]]) -> None:
    node = desc.append_child("channels")
    for label, unit, kind in channels:
        ch = node.append_child("channel")
        ch.append_child_value("label", label)
        ch.append_child_value("unit", unit)
        ch.append_child_value("type", kind)


class LslOutlets:
    """The four dreamstate outlets (see the module docstring).

    ``prefix``: stream name prefix; ``source_id``: the stable id each stream's id starts with;
    ``labels``: the show's state labels (the state stream's probability channels);
    ``eeg_label``: the EEG channel's name (``Fp1`` for a NeuroSky headset); ``device``: a
    description for the metadata. Lifecycle: ``open()`` creates the outlets (blocking, a few
    ms); ``push_*`` publish (cheap, never block: liblsl buffers up to 6 minutes per stream for
    slow consumers); ``close()`` destroys them (consumers see the streams go). Counters:
    ``eeg_samples``, ``bands``, ``states``, ``markers``, ``skipped.<why>``.
    """

    def __init__(self, *, prefix: str = "dreamstate", source_id: str, labels: Sequence[str],
                 eeg_label: str = "Fp1", device: str = "") -> None:
        self.prefix = prefix
        self.source_id = source_id
        self.labels = list(labels)
        self.eeg_label = eeg_label
        self.device = device
        self.counters = Counters()
        self.clock = SampleClock(SFREQ)
        self.offset = 0.0
        """LSL clock minus ``time.monotonic()``, measured at open."""
        self._outlets: dict[str, Any] = {}
        self._bands = np.full(len(BAND_CHANNELS), np.nan, dtype=np.float32)
        self._state_channels = 2 + len(self.labels) + 2
        self._last_label: str | None = None

    @property
    def names(self) -> dict[str, str]:
        """Stream kind -> LSL stream name."""
        return {k: f"{self.prefix}-{k}" for k in ("eeg", "bands", "state", "markers")}

    def open(self) -> None:
        """Create the four outlets (after it, consumers can resolve them)."""
        lsl = liblsl()
        a = time.monotonic()
        clk = lsl.local_clock()
        b = time.monotonic()
        self.offset = clk - (a + b) / 2
        names = self.names
        acquisition = (("manufacturer", "NeuroSky"), ("model", self.device or "ThinkGear"),
                       ("software", "dreamstate"))

        def make(kind: str, stype: str, n: int, sfreq: float, dtype: str) -> tuple[Any, Any]:
            info = lsl.StreamInfo(names[kind], stype, n, sfreq, dtype, f"{self.source_id}-{kind}")
            acq = info.desc.append_child("acquisition")
            for key, value in acquisition:
                acq.append_child_value(key, value)
            return info, acq

        eeg, _ = make("eeg", "EEG", 1, SFREQ, "float32")
        _channels(eeg.desc, [(self.eeg_label, "microvolts", "EEG")])
        eeg.desc.append_child_value("reference", "left earlobe (ear clip)")
        bands, _ = make("bands", "EEGFeatures", len(BAND_CHANNELS), 0.0, "float32")
        _channels(bands.desc, BAND_CHANNELS)
        state, _ = make("state", "BrainState", self._state_channels, 0.0, "float32")
        _channels(state.desc, [("state_index", "index", "StateIndex"), ("confidence", "0-1", "Probability"),
                               *((f"p_{lab}", "0-1", "Probability") for lab in self.labels),
                               ("map_x", "0-1", "MapPosition"), ("map_y", "0-1", "MapPosition")])
        st = state.desc.append_child("states")
        for lab in self.labels:
            st.append_child_value("state", lab)
        st.append_child_value("absent", ABSENT)
        markers, _ = make("markers", "Markers", 1, 0.0, "string")
        _channels(markers.desc, [("marker", "text", "Marker")])
        try:
            self._outlets = {
                "eeg": lsl.StreamOutlet(eeg, chunk_size=16),
                "bands": lsl.StreamOutlet(bands),
                "state": lsl.StreamOutlet(state),
                "markers": lsl.StreamOutlet(markers),
            }
        except Exception as exc:
            raise DeviceError(f"cannot create the LSL outlets {sorted(names.values())}: {exc}",
                              hint="check the network interfaces liblsl may bind (lsl_api.cfg)") from exc
        log.info("LSL outlets open", extra={"streams": list(names.values()), "source_id": self.source_id})

    def close(self) -> None:
        """Destroy the outlets. Idempotent."""
        outlets, self._outlets = self._outlets, {}
        for outlet in outlets.values():
            outlet._del()  # destroy now, not whenever the garbage collector gets to it

    def lsl_time(self, monotonic_s: float) -> float:
        """A ``time.monotonic()`` reading on the LSL clock."""
        return monotonic_s + self.offset

    # --- publishing -------------------------------------------------------------------------------
    def push_readings(self, readings: Iterable[Reading]) -> None:
        """Publish a batch of readings: raw EEG, one bands sample for the status reports in the
        batch, markers for blinks, device events and markers. Bad samples (non-finite) are
        skipped and counted, never raised."""
        if not self._outlets:
            return
        band_time: float | None = None
        for r in readings:
            if isinstance(r, RawChunk):
                self._push_eeg(r)
            elif isinstance(r, ESense):
                self._bands[0], self._bands[1] = r.attention, r.meditation
                band_time = r.time
            elif isinstance(r, SignalQuality):
                self._bands[2] = r.poor_signal
                band_time = r.time
            elif isinstance(r, BandPowers):
                self._bands[3:] = r.values
                band_time = r.time
            elif isinstance(r, Blink):
                self.push_marker(f"blink:{r.strength}", r.time)
            elif isinstance(r, DeviceEvent):
                self.push_marker(f"device:{r.kind.value}", r.time)
            elif isinstance(r, Marker):
                self.push_marker(f"marker:{r.label}", r.time)
        if band_time is not None:
            self._outlets["bands"].push_sample(self._bands, timestamp=self.lsl_time(band_time))
            self.counters.inc("bands")

    def _push_eeg(self, chunk: RawChunk) -> None:
        n = len(chunk.samples)
        if n == 0:
            return
        if chunk.sfreq != SFREQ:
            self.counters.inc("skipped.rate")
            return
        samples = np.asarray(chunk.samples, dtype=np.float32)
        if not np.isfinite(samples).all():
            self.counters.inc("skipped.nonfinite")
            samples = np.where(np.isfinite(samples), samples, np.float32(np.nan))
        stamps = self.clock.stamps(chunk.first_index, n, self.lsl_time(chunk.time))
        # the last sample's stamp is enough: liblsl stamps the chunk's first sample at
        # last - (n - 1) / 512 and the rest one period apart, exactly the index map within a chunk,
        # and sends no per-sample stamps (mne-lsl's per-sample path converts in Python: 2-3x slower)
        self._outlets["eeg"].push_chunk(samples.reshape(n, 1), timestamp=float(stamps[-1]))
        self.counters.inc("eeg_samples", n)

    def push_state(self, state: EegState, point: MapPoint | None) -> None:
        """Publish one state (and the map point, when known); a marker when the label changed."""
        if not self._outlets:
            return
        row = np.full(self._state_channels, np.nan, dtype=np.float32)
        row[0] = self.labels.index(state.label) if state.label in self.labels else -1
        row[1] = state.confidence
        for i, lab in enumerate(self.labels):
            row[2 + i] = state.probabilities.get(lab, 0.0)
        if point is not None:
            row[-2], row[-1] = point.x, point.y
        self._outlets["state"].push_sample(row, timestamp=self.lsl_time(state.time))
        self.counters.inc("states")
        if state.label != self._last_label:
            self._last_label = state.label
            self.push_marker(f"state:{state.label}", state.time)

    def push_marker(self, text: str, t: float) -> None:
        """Publish one marker string stamped at monotonic time ``t``."""
        if not self._outlets:
            return
        self._outlets["markers"].push_sample([text], timestamp=self.lsl_time(t))
        self.counters.inc("markers")
