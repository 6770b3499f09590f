"""The signal pipeline end to end on the real simulator (devices.simulator): states, map, calibration."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dreamstate.devices.simulator import EegSimulator
from dreamstate.engine.core.errors import CalibrationError
from dreamstate.engine.core.records import ABSENT, DeviceEvent, DeviceEventKind, Marker, RawChunk
from dreamstate.engine.core.show import CalibrationConfig, MapConfig, Rule, SignalConfig, StatesConfig
from dreamstate.engine.signal.embedding import IncrementalMap, procrustes_align
from dreamstate.engine.signal.pipeline import SignalPipeline, WindowResult
from dreamstate.engine.signal.states import StateTracker

SF = 512.0
RULES = [Rule(state="calm", when="alpha_rel > 0.30"), Rule(state="focused", when="beta_rel > 0.30")]


def simulate(pipe: SignalPipeline, script: list[tuple[str, float]], seed: int, *,
             markers: bool = False, block: int = 64) -> list[tuple[str, WindowResult]]:
    """Feed a scripted simulator run through ``pipe``; return (scripted state, result) per window.

    With ``markers`` a Marker reading announces each scripted state as a calibration label.
    Reading times are data time (sample index / 512), so dwell times are in signal seconds.
    """
    sim = EegSimulator(script, seed=seed, loop=False)
    out: list[tuple[str, WindowResult]] = []
    current = None
    while not sim.finished:
        blk = sim.advance(block)
        state = sim.state_at(blk.first_index)
        if markers and state != current:
            pipe.feed(Marker(state, blk.first_index / SF))
            current = state
        for reading in sim.readings(blk, blk.first_index / SF, 1.0):
            for res in pipe.feed(reading):
                out.append((sim.state_at(res.window.end_sample), res))
    return out


def test_simulator_with_scripted_states_drives_rule_states_without_flicker() -> None:
    states = StatesConfig(mode="rules", labels=["calm", "focused", "neutral"], rules=RULES,
                          dwell_s=2.0, hysteresis=0.15)
    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=80), states)
    script = [("relaxed", 25.0), ("focused", 25.0), ("off_head", 8.0), ("relaxed", 12.0)]
    results = simulate(pipe, script, seed=3)
    assert len(results) == pytest.approx((70 * SF - 256) / 128 + 1, abs=2)

    segments: list[list[WindowResult]] = []
    truths: list[str] = []
    for truth, r in results:
        if not truths or truths[-1] != truth:
            truths.append(truth)
            segments.append([])
        segments[-1].append(r)
    assert truths == ["relaxed", "focused", "off_head", "relaxed"]

    def share(k: int, label: str, skip_s: float = 4.0) -> float:
        rows = segments[k]
        t0 = rows[0].window.end_time + skip_s  # allow for the crossfade and the dwell time
        later = [r for r in rows if r.window.end_time >= t0]
        return sum(r.state.label == label for r in later) / len(later)

    assert share(0, "calm") > 0.9
    assert share(1, "focused", skip_s=6.0) > 0.9  # crossfade + dwell + the calm rule relaxed
    assert share(2, ABSENT, skip_s=3.0) > 0.9
    assert share(3, "calm", skip_s=6.0) > 0.8  # contact comes back over ~2 s
    # no flicker: every state lasts at least the dwell time (absent may cut in at once)
    labels = [(r.window.end_time, r.state.label) for _, r in results]
    runs: list[tuple[str, float, float]] = []
    for t, label in labels:
        if runs and runs[-1][0] == label:
            runs[-1] = (label, runs[-1][1], t)
        else:
            runs.append((label, t, t))
    for (label, start, _), nxt in itertools.pairwise(runs):
        if nxt[0] != ABSENT and label != ABSENT:
            assert nxt[1] - start >= 2.0, f"{label} lasted only {nxt[1] - start:.2f} s"
    assert pipe.tracker.switches <= 6
    # map points arrive once the reference is fitted, and live in 0..1
    pts = [r.point for _, r in results if r.point is not None]
    assert len(pts) > 100 and all(0 <= p.x <= 1 and 0 <= p.y <= 1 for p in pts)
    assert pipe.latest_point is not None and pipe.latest_state is not None
    c = pipe.counters
    assert c.get("rejected_poor_signal") + c.get("rejected_clipped") > 0  # off-head windows


def test_state_tracker_hysteresis_and_dwell() -> None:
    tr = StateTracker(["a", "b"], dwell_s=1.0, hysteresis=0.2)
    assert tr.update({"a": 0.6, "b": 0.4}, 0.0).label == "a"
    # b leads, but not by the hysteresis margin: stays a
    for t in np.arange(0.25, 5, 0.25):
        assert tr.update({"a": 0.45, "b": 0.55}, float(t)).label == "a"
    # b leads by more than the margin: takes over only after the dwell time
    got = [tr.update({"a": 0.2, "b": 0.8}, 5.0 + k * 0.25).label for k in range(6)]
    assert got == ["a", "a", "a", "a", "b", "b"]
    # a blip back to a shorter than the dwell does not switch
    for k in range(3):
        assert tr.update({"a": 0.9, "b": 0.1}, 6.5 + k * 0.25).label == "b"
    assert tr.update({"a": 0.2, "b": 0.8}, 7.25).label == "b"
    st = tr.set_absent(8.0)
    assert st.label == ABSENT and st.index == -1
    assert tr.update({"a": 0.9, "b": 0.1}, 8.25).label == "a"  # leaves absent at once


def test_absent_on_disconnect_and_recovery() -> None:
    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=40),
                          StatesConfig(rules=RULES, dwell_s=0.5))
    simulate(pipe, [("relaxed", 6.0)], seed=2)
    assert pipe.latest_state is not None and pipe.latest_state.label == "calm"
    pipe.feed(DeviceEvent(DeviceEventKind.DISCONNECTED, 6.0))
    assert pipe.latest_state.label == ABSENT
    assert pipe.counters.get("absent_entered") == 1


def _calibrate(shuffle: bool) -> tuple[SignalPipeline, float, float]:
    states = StatesConfig(mode="calibrated", labels=["relaxed", "focused"], dwell_s=0.0,
                          hysteresis=0.0, calibration=CalibrationConfig(min_windows_per_label=20))
    train = SignalPipeline(SignalConfig(), MapConfig(reference_size=20000), states)
    simulate(train, [("relaxed", 15.0), ("focused", 15.0), ("relaxed", 15.0), ("focused", 15.0)],
             seed=11, markers=True)
    if shuffle:
        rng = np.random.default_rng(0)
        rng.shuffle(train.calibrator._y)
    report = train.fit_calibration()
    test = SignalPipeline(SignalConfig(), MapConfig(reference_size=20000), states)
    test.calibrator = train.calibrator
    results = simulate(test, [("focused", 15.0), ("relaxed", 15.0)], seed=12, markers=True)
    scored = [(r.label, r.state.label) for _, r in results if r.label and r.features is not None]
    held_out = float(np.mean([a == b for a, b in scored]))
    return train, report.accuracy, held_out


def test_calibrated_classifier_generalises_and_fails_on_shuffled_labels() -> None:
    train, cv_acc, held_out = _calibrate(shuffle=False)
    counts = train.calibrator.counts()
    assert set(counts) == {"relaxed", "focused"} and min(counts.values()) >= 100
    assert cv_acc >= 0.9
    assert held_out >= 0.9, f"held-out accuracy {held_out:.2f}"
    _, cv_shuf, held_shuf = _calibrate(shuffle=True)
    assert cv_shuf < 0.65 and held_shuf < 0.7, (cv_shuf, held_shuf)


def test_too_few_calibration_windows_says_how_many_are_needed(tmp_path: Path) -> None:
    states = StatesConfig(mode="calibrated", labels=["relaxed", "focused"],
                          calibration=CalibrationConfig(min_windows_per_label=30))
    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=20000), states)
    simulate(pipe, [("relaxed", 10.0), ("focused", 3.0)], seed=4, markers=True)
    with pytest.raises(CalibrationError) as err:
        pipe.fit_calibration()
    msg = str(err.value)
    assert "at least 30" in msg and "focused:" in msg and "short: ['focused']" in msg
    one = SignalPipeline(SignalConfig(), MapConfig(reference_size=20000), states)
    with pytest.raises(CalibrationError, match="two labels"):
        one.fit_calibration()


def test_calibration_saves_json_and_loads_without_pickle(tmp_path: Path) -> None:
    train, _, _ = _calibrate(shuffle=False)
    path = train.save_calibration(tmp_path / "calib.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "dreamstate-calibration/1" and len(doc["labels"]) == len(doc["vectors"])
    states = StatesConfig(mode="calibrated", labels=["relaxed", "focused"], dwell_s=0.0)
    fresh = SignalPipeline(SignalConfig(), MapConfig(reference_size=20000), states)
    report = fresh.load_calibration(path)
    assert report.accuracy >= 0.9
    x, _ = train.calibrator.data
    assert fresh.calibrator.predict_many(x[:50]) == train.calibrator.predict_many(x[:50])
    other = SignalPipeline(SignalConfig(features=["mfcc"]), MapConfig(), states)
    with pytest.raises(CalibrationError, match="features"):
        other.load_calibration(path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        fresh.load_calibration(tmp_path / "bad.json")


def test_calibration_schedule_labels_windows_by_the_clock() -> None:
    now = [0.0]
    states = StatesConfig(mode="calibrated", labels=["relaxed", "focused"],
                          calibration=CalibrationConfig(schedule=[("relaxed", 10.0), ("", 2.0),
                                                                  ("focused", 10.0)]))
    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=20000), states,
                          clock=lambda: now[0])
    ended: list[float] = []
    pipe.on_schedule_end = lambda: ended.append(now[0])
    pipe.start_schedule()
    sim = EegSimulator([("relaxed", 11.0), ("focused", 12.0)], seed=5, loop=False)
    labelled: list[tuple[str, str]] = []
    while not sim.finished:
        blk = sim.advance(64)
        now[0] = blk.first_index / SF
        for r in sim.readings(blk, now[0], 1.0):
            for res in pipe.feed(r):
                if res.label:
                    labelled.append((res.label, sim.state_at(res.window.end_sample)))
    tally = Counter(labelled)
    assert tally[("relaxed", "relaxed")] > 30 and tally[("focused", "focused")] > 30
    assert tally[("relaxed", "focused")] + tally[("focused", "relaxed")] == 0
    assert pipe.active_label is None  # the schedule ended
    assert len(ended) == 1 and 22.0 <= ended[0] < 22.5
    assert pipe.fit_calibration().accuracy > 0.9


def test_incremental_map_keeps_the_neighbourhoods_of_a_batch_tsne() -> None:
    """Reference on the first cycle of states (as a calibration run would give), every later
    window placed live by kNN; compare with a batch t-SNE of the same placed windows."""
    from openTSNE import TSNE
    from sklearn.manifold import trustworthiness

    states = StatesConfig(rules=RULES)
    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=144, seed=0), states)
    cycle = [("relaxed", 12.0), ("focused", 12.0), ("neutral", 12.0)]
    results = simulate(pipe, cycle * 3, seed=7)
    placed = [(r.features.vector, r.point) for _, r in results
              if r.features is not None and r.point is not None]
    assert len(placed) > 250
    x = np.array([v for v, _ in placed], dtype=np.float64)
    p = np.array([[pt.x, pt.y] for _, pt in placed])
    z = (x - x.mean(0)) / x.std(0)
    batch = np.asarray(TSNE(perplexity=30, n_jobs=1, random_state=0).fit(z))
    tw_batch = trustworthiness(batch, p, n_neighbors=10)
    tw_features = trustworthiness(z, p, n_neighbors=10)
    assert tw_batch >= 0.90, tw_batch
    assert tw_features >= 0.90, tw_features
    # the check can fail: a shuffled placement is far from trustworthy
    shuffled = p[np.random.default_rng(0).permutation(len(p))]
    assert trustworthiness(batch, shuffled, n_neighbors=10) < 0.7


def _blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 6)) * 3
    labels = np.repeat(np.arange(4), 150)
    data = np.vstack([c + rng.normal(size=(150, 6)) for c in centres])
    order = rng.permutation(len(data))
    return data[order], labels[order]


def test_refit_is_aligned_to_the_old_map() -> None:
    from dreamstate.engine.signal.embedding import build_reference

    data, labels = _blobs()
    probe, probe_labels = data[400:], labels[400:]
    m = IncrementalMap(dim=6, reference_size=120, seed=0)
    for x in data[:120]:
        m.add(x, 0.0)
    before = np.array([m.place(x) for x in probe])
    for x in data[120:400]:
        m.add(x, 0.0)
    old = m.reference
    assert old is not None
    new = m.fit_now(m._training_set())
    assert new.version == 2
    after = np.array([m.place(x) for x in probe])
    shift = np.linalg.norm(before - after, axis=1)
    centroid = [np.linalg.norm(before[probe_labels == c].mean(0) - after[probe_labels == c].mean(0))
                for c in range(4)]
    # the same refit without alignment (fresh layout) moves points much further
    free = build_reference(m._training_set(), method="tsne", perplexity=30, seed=3, previous=None)
    m.reference = free
    unaligned = np.array([m.place(x) for x in probe])
    free_shift = np.linalg.norm(before - unaligned, axis=1)
    assert np.median(shift) < 0.15 and max(centroid) < 0.25, (np.median(shift), centroid)
    assert np.median(free_shift) > 1.5 * np.median(shift)


def test_background_refit_cross_fades_instead_of_jumping() -> None:
    data, _ = _blobs()
    m = IncrementalMap(dim=6, reference_size=120, refit_every_s=5.0, seed=0, blend_s=5.0)
    m.start()
    try:
        t = 0.0
        for x in data[:120]:
            m.add(x, t)
            t += 0.25
        deadline = time.monotonic() + 60
        while m.reference is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert m.reference is not None and m.reference.version == 1
        k = 120
        while m.reference.version < 2 and time.monotonic() < deadline:  # refit every 5 s of data
            m.add(data[k % 400], t)
            k += 1
            t += 0.25
            if k % 40 == 0:
                time.sleep(0.2)
        assert m.reference.version >= 2
    finally:
        m.close(timeout=30)
    assert m._thread is None and m.counters.get("map_fits") >= 2
    # the fade: a fixed window moves from its old to its new place in steps, not at once
    probe = data[450]
    old_ref, new_ref, _ = m._blend or (None, None, None)
    assert old_ref is not None and new_ref is m.reference
    start = np.array(m.place(probe, old_ref))
    end = np.array(m.place(probe, new_ref))
    path = np.array([m.add(probe, t + 0.25 * i) for i in range(25)])
    steps = np.linalg.norm(np.diff(np.vstack([start, path]), axis=0), axis=1)
    total = float(np.linalg.norm(end - start))
    assert steps.max() <= total * 0.25 / 5.0 + 1e-9
    assert np.allclose(path[-1], end) and m._blend is None


def test_transform_placement_lands_new_points_by_their_cluster() -> None:
    rng = np.random.default_rng(2)
    centres = np.array([[0.0] * 5, [6.0] * 5, [-6.0, 6.0, -6.0, 6.0, -6.0]])
    data = np.vstack([c + rng.normal(size=(40, 5)) for c in centres])
    order = rng.permutation(len(data))
    data, which = data[order], np.repeat(np.arange(3), 40)[order]
    for placement in ("knn", "transform"):
        m = IncrementalMap(dim=5, reference_size=90, seed=0, placement=placement)
        for x in data[:90]:
            m.add(x, 0.0)
        ref = m.reference
        assert ref is not None
        ref_pts = m.normalise_many(ref.coords)
        ref_centres = np.array([ref_pts[which[:90] == c].mean(0) for c in range(3)])
        for x, c in zip(data[90:], which[90:], strict=True):
            xy = np.array(m.place(x))
            assert int(np.argmin(((ref_centres - xy) ** 2).sum(1))) == c


def test_procrustes_undoes_rotation_reflection_scale_and_shift() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 2))
    theta = 0.7
    r = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1, -1])
    b = 2.5 * a @ r + np.array([3.0, -1.0])
    al = procrustes_align(a, b)
    assert np.allclose(al.apply(a), b, atol=1e-9)


def test_clusters_mode_gives_stable_labels() -> None:
    states = StatesConfig(mode="clusters", clusters=2, labels=["calm", "focused"],
                          dwell_s=1.0, hysteresis=0.1)
    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=120, seed=0), states)
    results = simulate(pipe, [("relaxed", 20.0), ("focused", 20.0), ("relaxed", 20.0),
                              ("focused", 20.0)], seed=9)
    got = [(s, r.state.label) for s, r in results if r.point is not None]
    # each scripted state maps mostly onto one cluster, and the two states onto different ones
    major = {}
    for truth in ("relaxed", "focused"):
        labels = Counter(label for s, label in got if s == truth)
        label, n = labels.most_common(1)[0]
        assert n / sum(labels.values()) > 0.75, labels
        major[truth] = label
    assert major["relaxed"] != major["focused"]


def test_blinks_flag_windows_without_rejecting_them() -> None:
    from dreamstate.engine.core.records import Blink

    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=20000), StatesConfig(rules=RULES))
    rng = np.random.default_rng(3)
    first = pipe.feed(RawChunk(0, rng.standard_normal(1024).astype(np.float32) * 10, 2.0))
    assert first and not any(r.window.flags.blink for r in first)
    pipe.feed(Blink(120, 2.0))
    after = pipe.feed(RawChunk(1024, rng.standard_normal(512).astype(np.float32) * 10, 3.0))
    flagged = [r for r in after if r.window.flags.blink]
    assert flagged and all(r.features is not None for r in flagged)
    assert pipe.counters.get("windows_blink") == len(flagged)


def test_feed_survives_garbage_and_wrong_rates() -> None:
    pipe = SignalPipeline(SignalConfig(), MapConfig(reference_size=20), StatesConfig(rules=RULES))
    assert pipe.feed(RawChunk(0, np.zeros(0, np.float32), 0.0)) == []
    assert pipe.feed(RawChunk(0, np.ones(100, np.float32), 0.0, sfreq=256.0)) == []
    assert pipe.counters.get("wrong_sfreq_chunks") == 1
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32) * 1e6
    x[::7] = np.nan
    res = pipe.feed(RawChunk(0, x, 1.0))
    assert res and all(r.features is None for r in res)


def test_demo_show_states_appear_in_proportion_to_the_simulator_script() -> None:
    """Three cycles of the demo's simulator script through the demo show's own signal and state
    settings: every scripted stretch is mostly its state, and each state's share of the time
    is near the script's (relaxed 20 s, focused 20 s, neutral 10 s, off the head 8 s)."""
    from dreamstate.engine.runtime.showfile import load_show

    show = load_show(None, deep=False).show
    script = [(s.state, s.seconds) for s in show.device.script]
    pipe = SignalPipeline(show.signal, show.map, show.states)
    expected = {"relaxed": "calm", "focused": "focused", "neutral": "neutral", "off_head": ABSENT}
    results = simulate(pipe, script * 3, seed=0)
    by_section: dict[str, Counter[str]] = {}
    for scripted, res in results:
        by_section.setdefault(scripted, Counter())[res.state.label] += 1
    for scripted, counts in by_section.items():
        share = counts[expected[scripted]] / sum(counts.values())
        assert share >= 0.5, f"{scripted}: {dict(counts)}"
    total = Counter(res.state.label for _, res in results)
    n = sum(total.values())
    cycle = sum(s for _, s in script)
    for scripted, seconds in script:
        got = total[expected[scripted]] / n
        want = seconds / cycle
        assert abs(got - want) < 0.12, f"{expected[scripted]}: {got:.2f} of the time, script {want:.2f}"


def test_state_tracker_smooths_noisy_votes_and_any_challenger_runs_the_clock() -> None:
    """Per-window votes are noisy; the smoothed state follows them, and when two challengers
    take turns in the lead over a beaten state, the dwell clock keeps running."""

    def run(tr: StateTracker, votes: list[str]) -> list[str]:
        tr.update({"a": 1.0, "b": 0.0, "c": 0.0}, 0.0)
        return [tr.update({x: float(x == v) for x in "abc"}, 0.25 * (k + 1)).label for k, v in enumerate(votes)]

    labels = run(StateTracker(["a", "b", "c"], dwell_s=1.0, hysteresis=0.15, smooth_s=1.0), ["b", "b", "c", "b"] * 8)
    assert "b" in labels[:12] and labels[-1] == "b", labels  # b, 3 votes in 4, within 3 s
    labels = run(StateTracker(["a", "b", "c"], dwell_s=1.0, hysteresis=0.15, smooth_s=1.0), ["b", "b", "c", "c"] * 8)
    assert labels[11] != "a", labels  # b and c take turns: a is still replaced within 3 s
    tr = StateTracker(["a", "b", "c"], dwell_s=1.0, hysteresis=0.15, smooth_s=1.0)
    run(tr, ["b"] * 8)
    state = tr.state
    assert state is not None and state.confidence == pytest.approx(state.probabilities[state.label])
    # without smoothing, votes that are right 2 in 3 never hold still long enough to switch
    assert set(run(StateTracker(["a", "b", "c"], dwell_s=1.0, hysteresis=0.15), ["b", "b", "a"] * 16)) == {"a"}
