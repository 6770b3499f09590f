"""Signal stages without hardware: ring buffer, causal filters, windows, features, rules, checks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamstate.engine.core.errors import ShowError, SignalError
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import RawChunk, SignalQuality, Window
from dreamstate.engine.core.show import (
    KNOWN_FEATURES,
    LoadedShow,
    MapConfig,
    SignalConfig,
    StatesConfig,
    validate_show_data,
)
from dreamstate.engine.signal.check import check_signal
from dreamstate.engine.signal.features import FeatureExtractor, welch_band_powers
from dreamstate.engine.signal.filters import CausalFilter, design_sos
from dreamstate.engine.signal.names import GROUP_NAMES, feature_names
from dreamstate.engine.signal.pipeline import SignalPipeline
from dreamstate.engine.signal.ring import SAMPLE_FILLED, SAMPLE_GAP, SAMPLE_NONFINITE, RingBuffer
from dreamstate.engine.signal.rules import RuleSyntaxError, names_in, parse_rule
from dreamstate.engine.signal.windows import WindowContext, Windower

SF = 512.0
ALL = list(KNOWN_FEATURES)


def noise(n: int, seed: int = 0, scale: float = 20.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def sine(freq: float, n: int, amp: float = 20.0, start: int = 0) -> np.ndarray:
    t = (start + np.arange(n)) / SF
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def random_cuts(n: int, seed: int, max_chunk: int = 300) -> list[int]:
    rng = np.random.default_rng(seed)
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + int(rng.integers(1, max_chunk))))
    return cuts


# ----------------------------------------------------------------------------- ring buffer
def test_ring_counts_gaps_bridges_short_ones_and_restarts_filter_on_long_ones() -> None:
    c = Counters()
    ring = RingBuffer(1024, counters=c, max_fill=16)
    ring.push(100, np.ones(10, np.float32))
    ring.push(110, np.ones(10, np.float32) * 2)        # contiguous
    assert c.get("gaps") == 0 and ring.total == 20
    ring.push(125, np.ones(5, np.float32) * 3)         # 5 lost: bridged by interpolation
    assert c.get("gaps") == 1 and c.get("lost_samples") == 5 and c.get("filled_samples") == 5
    span = ring.latest(10)
    assert list(span.index) == list(range(120, 130))
    assert (span.flags[:5] == SAMPLE_FILLED).all()
    assert np.allclose(span.raw[:5], np.linspace(2, 3, 7)[1:-1], atol=1e-6)
    ring.push(1000, np.ones(4, np.float32))           # long gap: not bridged, flagged
    assert c.get("gaps") == 2 and c.get("lost_samples") == 5 + 870
    last = ring.latest(4)
    assert last.flags[0] & SAMPLE_GAP and list(last.index) == [1000, 1001, 1002, 1003]
    ring.push(1002, np.arange(4, dtype=np.float32))    # 2 duplicates dropped, 2 new kept
    assert c.get("duplicate_samples") == 2 and ring.next_index == 1006
    ring.push(5000, np.ones(3, np.float32))            # another long gap
    ring.push(0, np.ones(3, np.float32))               # device restarted its counter
    assert c.get("index_resets") == 1 and ring.next_index == 3 and c.get("gaps") == 3


def test_ring_serves_latest_seconds_and_counts_overrun_with_fix(caplog: pytest.LogCaptureFixture) -> None:
    ring = RingBuffer(512, sfreq=SF)
    x = np.arange(1300, dtype=np.float32)
    for lo in range(0, 1300, 100):
        ring.push(lo, x[lo:lo + 100])
    assert ring.total == 1300 and ring.oldest == 1300 - 512
    span = ring.latest_seconds(0.5)
    assert len(span) == 256 and span.raw[-1] == 1299 and span.start == 1300 - 256
    assert np.array_equal(span.raw, x[-256:])
    got, cursor = ring.read_new(0, reader="slow-reader")
    assert cursor == 1300 and len(got) == 512 and got.raw[0] == 1300 - 512
    assert ring.counters.get("ring_overrun_samples") == 1300 - 512
    assert any("overrun" in r.getMessage() and getattr(r, "fix", "") for r in caplog.records)
    again, cursor2 = ring.read_new(cursor)
    assert len(again) == 0 and cursor2 == 1300
    big = RingBuffer(64)
    big.push(0, np.arange(200, dtype=np.float32))     # larger than the ring: keeps the newest
    assert big.total == 200 and big.latest(64).raw[0] == 136


def test_ring_nonfinite_samples_are_flagged_and_do_not_poison_the_filter() -> None:
    filt = CausalFilter(design_sos(SF, 50, (1.0, 45.0)))
    ring = RingBuffer(2048, filt=filt)
    x = noise(600)
    x[200:260] = np.nan
    x[300] = np.inf
    ring.push(0, x)
    span = ring.latest(600)
    assert np.isfinite(span.filtered).all()
    assert (span.flags[200:260] & SAMPLE_NONFINITE).all() and span.flags[300] & SAMPLE_NONFINITE
    assert ring.counters.get("nonfinite_samples") == 61


# ----------------------------------------------------------------------------- filters
def test_filter_design_comes_from_mne_and_has_the_right_response() -> None:
    from scipy import signal

    sos = design_sos(SF, 50, (1.0, 45.0))
    f = np.array([0.2, 10.0, 20.0, 50.0, 100.0])
    _, h = signal.sosfreqz(sos, worN=f, fs=SF)
    db = 20 * np.log10(np.abs(h))
    assert db[1] > -1 and db[2] > -1           # passband
    assert db[0] < -20 and db[4] < -20          # below 1 Hz, above 45 Hz
    assert db[3] < -40                          # mains notch
    sos60 = design_sos(SF, 60, (1.0, 45.0))
    _, h60 = signal.sosfreqz(sos60, worN=[60.0], fs=SF)
    assert 20 * np.log10(abs(h60[0])) < -40
    with pytest.raises(SignalError, match="band_hz"):
        design_sos(SF, None, (1.0, 300.0))


def test_filter_output_does_not_depend_on_chunking() -> None:
    sos = design_sos(SF, 50, (1.0, 45.0))
    x = noise(5000, seed=3) + sine(50, 5000, 40) + 300.0   # DC offset and hum
    whole = CausalFilter(sos).process(x)
    for seed in range(3):
        f = CausalFilter(sos)
        cuts = random_cuts(x.size, seed)
        parts = [f.process(x[a:b]) for a, b in itertools.pairwise(cuts)]
        assert np.allclose(np.concatenate(parts), whole, atol=1e-9)
    # a 20 Hz tone passes, the 50 Hz hum and the DC offset do not (after settling)
    y = CausalFilter(sos).process(sine(20, 4096) + sine(50, 4096, 40) + 300.0)
    spec = np.abs(np.fft.rfft(y[2048:] * np.hanning(2048)))
    freqs = np.fft.rfftfreq(2048, 1 / SF)
    assert spec[np.argmin(abs(freqs - 20))] > 50 * spec[np.argmin(abs(freqs - 50))]
    assert abs(y[2048:].mean()) < 1.0


# ----------------------------------------------------------------------------- windows
def _windows(x: np.ndarray, cuts: list[int], **kw: object) -> list[Window]:
    filt = CausalFilter(design_sos(SF, 50, (1.0, 45.0)))
    ring = RingBuffer(4096, filt=filt)
    wd = Windower(ring, win=256, hop=128, **kw)  # type: ignore[arg-type]
    out = []
    ctx = WindowContext()
    for a, b in itertools.pairwise(cuts):
        ring.push(a, x[a:b])
        out += [w for _, w in wd.poll(ctx)]
    return out


def test_windows_and_features_are_the_same_however_the_chunks_arrive() -> None:
    x = noise(512 * 6, seed=5) + sine(10, 512 * 6, 25)
    fe = FeatureExtractor(ALL)
    ref = _windows(x, [0, x.size])
    assert len(ref) == (x.size - 256) // 128 + 1
    ref_feats = np.array([fe.compute(w.samples).vector for w in ref])
    for seed in (1, 2, 7):
        got = _windows(x, random_cuts(x.size, seed))
        assert [w.end_sample for w in got] == [w.end_sample for w in ref]
        for a, b in zip(got, ref, strict=True):
            assert np.array_equal(a.samples, b.samples)
        feats = np.array([fe.compute(w.samples).vector for w in got])
        assert np.array_equal(feats, ref_feats)
    # one sample at a time, too
    got1 = _windows(x[:1024], list(range(0, 1025)))
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(got1, ref, strict=False))


def test_bad_windows_are_rejected_with_a_reason_and_never_crash() -> None:
    sig = SignalConfig(hop_s=0.25)
    pipe = SignalPipeline(sig, MapConfig(reference_size=20), StatesConfig(rules=[]))
    n = 512
    segments = {
        "good": noise(n, 1),
        "nan": np.full(n, np.nan, np.float32),
        "good2": noise(n, 2),
        "zeros": np.zeros(n, np.float32),
        "good3": noise(n, 3),
        "clipped": np.full(n, 7199.0, np.float32),
        "good4": noise(n, 4),
    }
    idx = 0
    reasons: dict[str, set[str]] = {}
    for name, seg in segments.items():
        for res in pipe.feed(RawChunk(idx, seg, idx / SF)):
            w = res.window
            inside = idx <= w.end_sample - 255 and w.end_sample < idx + n
            if inside:
                reasons.setdefault(name, set()).update(w.flags.reasons())
                if w.flags.rejected:
                    assert res.features is None and res.point is None
        idx += n
    assert "nonfinite" in reasons["nan"]
    assert "flat" in reasons["zeros"]
    assert "clipped" in reasons["clipped"]
    assert not (reasons["good"] - {"blink"})
    c = pipe.counters
    assert c.get("rejected_nonfinite") >= 1 and c.get("rejected_flat") >= 1
    assert c.get("rejected_clipped") >= 1
    assert c.get("windows_rejected") < c.get("windows")
    # a gap of more than a few samples rejects the windows across it
    pipe.feed(RawChunk(idx + 500, noise(1024, 9), 99.0))
    assert c.get("rejected_gap") >= 1 and c.get("gaps") == 1


def test_poor_signal_flags_windows() -> None:
    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=20), StatesConfig(rules=[]))
    pipe.feed(SignalQuality(80, 0.0))
    res = pipe.feed(RawChunk(0, noise(512), 1.0))
    assert res and all(r.window.flags.poor_signal and r.features is None for r in res)
    pipe.feed(SignalQuality(0, 1.0))
    res = pipe.feed(RawChunk(512, noise(512, 1), 2.0))
    assert res and not any(r.window.flags.poor_signal for r in res)


# ----------------------------------------------------------------------------- features
@pytest.mark.parametrize("freq,band", [(10.0, "alpha"), (2.5, "delta"), (6.0, "theta"),
                                       (20.0, "beta"), (38.0, "gamma")])
def test_a_pure_sinusoid_lands_in_its_band(freq: float, band: str) -> None:
    fe = FeatureExtractor(["log_band_power", "relative_power", "spectral_edge"])
    f = fe.compute(sine(freq, 256))
    vals = dict(zip(f.names, f.vector.tolist(), strict=True))
    rel = {b: vals[f"{b}_rel"] for b in ("delta", "theta", "alpha", "beta", "gamma")}
    assert max(rel, key=lambda b: rel[b]) == band
    assert rel[band] > 0.8
    logs = {b: vals[f"{b}_log"] for b in rel}
    assert max(logs, key=lambda b: logs[b]) == band


def test_spectrum_features_agree_with_mne_welch_and_time_domain() -> None:
    fe = FeatureExtractor(["log_band_power", "hjorth", "spectral_entropy", "mfcc"], nfft=256)
    x = sine(10.0, 256) + noise(256, seed=1, scale=2.0)
    f = fe.compute(x)
    ours = f.vector[:5]
    theirs = welch_band_powers(x, SF, 256)
    assert np.allclose(ours, theirs, atol=1e-3)  # same PSD (one Hann segment), same bands
    vals = dict(zip(f.names, f.vector.tolist(), strict=True))
    assert math.isclose(vals["hjorth_activity"], math.log10(float(np.var(x))), rel_tol=1e-4)
    # mobility of a pure sinusoid is about 2*pi*f/sfreq, its complexity about 1
    pure = dict(zip(f.names, fe.compute(sine(10.0, 256)).vector.tolist(), strict=True))
    assert math.isclose(pure["hjorth_mobility"], 2 * math.pi * 10 / SF, rel_tol=0.05)
    assert math.isclose(pure["hjorth_complexity"], 1.0, rel_tol=0.05)
    assert 0 < vals["spectral_entropy"] < 0.7
    white = dict(zip(f.names, fe.compute(noise(256, 4)).vector.tolist(), strict=True))
    assert white["spectral_entropy"] > vals["spectral_entropy"]
    assert len([n for n in f.names if n.startswith("mfcc_")]) == 13


def test_feature_names_cover_known_features_exactly() -> None:
    assert set(GROUP_NAMES) == set(KNOWN_FEATURES)
    fe = FeatureExtractor(ALL)
    f = fe.compute(noise(256))
    assert f.vector.shape == (len(feature_names(ALL)),) and np.isfinite(f.vector).all()
    with pytest.raises(SignalError, match="unknown feature"):
        FeatureExtractor(["alpha_power"])


# ----------------------------------------------------------------------------- rules and checks
def test_rule_parser_handles_and_or_parentheses_and_refuses_code() -> None:
    e = parse_rule("beta_rel > 0.3 and attention > 50 or (alpha_rel >= .4 and signal < 20)")
    assert names_in(e) == {"beta_rel", "attention", "alpha_rel", "signal"}
    assert e.evaluate({"beta_rel": 0.4, "attention": 60})
    assert not e.evaluate({"beta_rel": 0.4, "attention": 40})
    assert e.evaluate({"alpha_rel": 0.5, "signal": 0})
    assert not e.evaluate({"alpha_rel": 0.5})             # unknown value (NaN) is never true
    assert parse_rule("alpha_rel > 0.30").evaluate({"alpha_rel": 0.28}, relax=0.15)
    assert not parse_rule("alpha_rel > 0.30").evaluate({"alpha_rel": 0.28})
    for bad in ("", "alpha_rel >", "alpha_rel > x", "__import__('os')", "a > 1 and", "(a > 1",
                "a = 1", "a > 1 b > 2"):
        with pytest.raises(RuleSyntaxError):
            parse_rule(bad)


def _show(tmp_path: Path, states: dict[str, Any], signal: dict[str, Any] | None = None) -> LoadedShow:
    scenes = {"calm": {"layers": {"block10": 1.0}}, "attract": {"layers": {"block9": 1.0}}}
    data = {"states": states, "signal": signal or {}, "scenes": scenes}
    return validate_show_data(data, tmp_path, "test.toml", checks=[check_signal])


def test_show_check_rejects_unknown_rule_names_and_features(tmp_path: Path) -> None:
    ok = _show(tmp_path, {"mode": "rules", "labels": ["calm", "neutral"],
                          "rules": [{"state": "calm", "when": "alpha_rel > 0.3 and attention > 40"}]})
    assert ok.show.states.mode == "rules"
    with pytest.raises(ShowError) as err:
        _show(tmp_path, {"labels": ["calm", "neutral"],
                         "rules": [{"state": "calm", "when": "mfcc_3 > 0.3"},
                                   {"state": "calmm", "when": "alpha_rel > 0.3"},
                                   {"state": "calm", "when": "alpha_rel >> 3"}]})
    text = str(err.value)
    assert "states.rules[0].when" in text and "mfcc_3" in text and "signal.features" in text
    assert "states.rules[1].state" in text and "calmm" in text
    assert "states.rules[2].when" in text
    with pytest.raises(ShowError, match="unknown feature"):
        _show(tmp_path, {"rules": [{"state": "calm", "when": "alpha_rel > 0.3"}]},
              {"features": ["alpha_power"]})
    # with the mfcc group configured the same rule is fine
    _show(tmp_path, {"labels": ["calm", "neutral"], "rules": [{"state": "calm", "when": "mfcc_3 > 0.3"}]},
          {"features": ["mfcc", "relative_power"]})
