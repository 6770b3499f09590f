"""The thread contract: state shared between the event loop and a worker thread is handed over
as a copy or guarded by a lock. Each test drives both sides at once, the way the show does
(the loop adds windows and predicts while a worker thread fits), with the interpreter switching
threads as often as it can so that an unguarded read-modify-write shows up."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from dreamstate.engine.signal.calibration import Calibrator
from dreamstate.engine.signal.embedding import IncrementalMap
from dreamstate.engine.signal.states import ClusterModel


@pytest.fixture(autouse=True)
def eager_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _in_thread(fn: Callable[[threading.Event], None]) -> tuple[threading.Thread, threading.Event, list[BaseException]]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fn(stop)
        except Exception as exc:  # noqa: BLE001 -- reported by the test, not lost with the thread
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, stop, errors


def test_calibrator_rows_and_labels_pair_up_while_windows_arrive() -> None:
    """``add`` on the loop, ``data``/``fit`` in a thread (as ``asyncio.to_thread`` runs it):
    every copy the fit sees has one label per row."""
    rng = np.random.default_rng(0)
    cal = Calibrator(["a", "b", "c"], min_windows_per_label=5)
    for i in range(400):
        cal.add(rng.normal(size=3) + (i % 2), "calm" if i % 2 else "focused")
    seen: list[tuple[int, int]] = []

    def reader(stop: threading.Event) -> None:
        while not stop.is_set():
            x, y = cal.data
            seen.append((x.shape[0], len(y)))
            if len(seen) == 20:
                cal.fit()  # the show's fit reads the same copy

    thread, stop, errors = _in_thread(reader)
    t_end = time.monotonic() + 8.0
    i = 0
    while time.monotonic() < t_end and len(seen) < 150 and thread.is_alive():
        if i < 4000:
            cal.add(rng.normal(size=3) + (i % 2), "calm" if i % 2 else "focused")
            i += 1
        else:
            time.sleep(0.001)
    stop.set()
    thread.join(10)
    assert not errors, errors
    assert len(seen) > 20
    bad = [(rows, labels) for rows, labels in seen if rows != labels]
    assert not bad, f"{len(bad)} of {len(seen)} copies had rows != labels, e.g. {bad[:3]}"


def test_cluster_refit_keeps_the_drift_predict_made_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fit`` on the refit thread, ``predict`` on the loop: the drift that predictions make
    while a fit is matching its centres lands on the new centres instead of on an array the fit
    is about to throw away. The matching is slowed down so that the predictions fall inside it."""
    import scipy.optimize

    rng = np.random.default_rng(1)
    points = np.concatenate([rng.normal((0.2, 0.2), 0.02, (60, 2)), rng.normal((0.8, 0.8), 0.02, (60, 2))])
    model = ClusterModel(2, ["calm", "focused"], rate=0.2)
    model.fit(points)
    real = scipy.optimize.linear_sum_assignment
    matching = threading.Event()

    def slow_matching(cost: Any) -> Any:
        matching.set()
        time.sleep(0.3)
        return real(cost)

    monkeypatch.setattr(scipy.optimize, "linear_sum_assignment", slow_matching)
    thread, _stop, errors = _in_thread(lambda _s: model.fit(points, 2))
    assert matching.wait(10)
    target = (0.2, 0.6)  # pulls the calm centre upward, a long way from where k-means puts it
    for _ in range(20):  # the first ones arrive while the fit is matching
        model.predict(target)
    thread.join(10)
    assert not errors, errors
    assert model.fitted_version == 2
    assert model.centres is not None
    calm = model.centres[0]
    # 20 steps of rate 0.2 toward y=0.6 from y~0.2 move the centre above 0.5; lost drift leaves ~0.2
    assert calm[1] > 0.45, f"the predictions' drift was lost: calm centre at {calm}"


def test_cluster_centres_a_reader_holds_stay_put() -> None:
    """A reader (the monitor, telemetry) that took ``centres`` keeps a consistent copy: predict
    replaces the array instead of editing it in place."""
    model = ClusterModel(2, ["calm", "focused"], rate=0.5)
    model.fit(np.array([[0.1, 0.1], [0.12, 0.1], [0.9, 0.9], [0.88, 0.9]]))
    held = model.centres
    assert held is not None
    before = held.copy()
    model.predict((0.5, 0.5))
    assert np.array_equal(held, before)
    assert model.centres is not None and not np.array_equal(model.centres, before)


def test_map_refit_in_a_thread_never_loses_its_cross_fade() -> None:
    """The refit thread swaps in a new reference and starts a cross-fade while the loop places
    windows and advances the running cross-fade. Whenever no swap is in progress, the running
    cross-fade leads to the map in use (a lost one makes the points jump instead of glide)."""
    import contextlib

    class SlowReads(IncrementalMap):
        """Reading the cross-fade takes a while, which widens the window between the loop's
        read and its write of it: a refit that lands in it must wait, not be overwritten."""

        @property
        def _blend(self) -> Any:
            value = self.__dict__["_blend_value"]
            time.sleep(0.002)
            return value

        @_blend.setter
        def _blend(self, value: Any) -> None:
            self.__dict__["_blend_value"] = value

    rng = np.random.default_rng(2)
    m = SlowReads(dim=4, method="pca", reference_size=40, blend_s=1e9)
    for i, row in enumerate(rng.normal(size=(60, 4))):
        m.add(row, float(i))
    assert m.reference is not None
    data = rng.normal(size=(40, 4))
    in_fit = threading.Event()
    fits = 0

    def refitter(stop: threading.Event) -> None:
        nonlocal fits
        while not stop.is_set() and fits < 400:
            in_fit.set()
            m.fit_now(data)
            in_fit.clear()
            fits += 1
            time.sleep(0)

    thread, stop, errors = _in_thread(refitter)
    lock = getattr(m, "_ref_lock", None)
    t, positions, lost = 100.0, 0, 0
    t_end = time.monotonic() + 3.0
    while time.monotonic() < t_end and thread.is_alive():
        p = m.add(rng.normal(size=4), t)
        assert p is not None and 0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0
        positions += 1
        t += 0.25
        if not in_fit.is_set():
            with lock if lock is not None else contextlib.nullcontext():
                blend, ref = m._blend, m.reference
            lost += blend is None or blend[1] is not ref
    stop.set()
    thread.join(10)
    assert not errors, errors
    assert fits > 5 and positions > 50
    assert lost == 0, f"{lost} of {positions} windows found the cross-fade lost or pointing at an old map"
