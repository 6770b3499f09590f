"""The live renderer with the real SqueezeNet: decoupled loops, latest wins, restarts.

These are properties (frames keep coming, dream results are used when ready, stale recipes
are never worked on), not timing assertions.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamstate.engine.core.background import take_background_errors
from dreamstate.engine.core.records import DreamRecipe
from dreamstate.engine.output.base import U8, Output
from dreamstate.engine.render.renderer import Renderer
from dreamstate.models.dream import DreamModel

LAYERS = ["fire3/concat", "fire5/concat"]


@pytest.fixture(scope="module")
def squeezenet(shared_models: Path) -> DreamModel:
    return DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", LAYERS, device="cpu",
                           threads=1)


class Wrapped:
    """A real DreamModel whose steps are slowed on purpose, recorded, and can fail once."""

    def __init__(self, model: DreamModel, delay: float = 0.0, fail_at: int | None = None) -> None:
        self._m = model
        self.delay = delay
        self.fail_at = fail_at
        self.calls: list[dict[str, float]] = []
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)

    def step(self, x: np.ndarray, layer_weights: Mapping[str, float] | None = None,
             **kw: Any) -> tuple[np.ndarray, float]:
        with self.lock:
            self.calls.append(dict(layer_weights or {}))
            n = len(self.calls)
        if self.fail_at is not None and n == self.fail_at:
            raise RuntimeError("injected worker failure")
        if self.delay:
            time.sleep(self.delay)
        return self._m.step(x, layer_weights, **kw)


class Recording(Output):
    """A headless output that keeps a fingerprint of every presented frame."""

    name = "recording"

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(size)
        self.stamps: list[float] = []
        self.prints: list[float] = []
        self.opened = self.closed = False

    def open(self) -> tuple[int, int]:
        self.opened = True
        return self.size

    def present(self, frame: U8) -> None:
        assert frame.dtype == np.uint8 and frame.shape == (self.size[1], self.size[0], 3)
        self.stamps.append(time.monotonic())
        h, w = frame.shape[:2]
        self.prints.append(float(frame[::8, ::8].astype(np.float32).mean()
                                 + frame[h // 3:h // 3 + 8, w // 3:w // 3 + 8, 0].mean()))
        self.frames += 1

    def close(self) -> None:
        self.closed = True


def _recipe(**kw: Any) -> DreamRecipe:
    base: dict[str, Any] = {"layer_weights": {"fire3/concat": 1.0}, "zoom": 1.02,
                            "rotate_deg": 0.5, "steps_per_octave": 2, "octaves": 2, "blend": 0.0}
    base.update(kw)
    return DreamRecipe(**base)


async def _run_for(r: Renderer, seconds: float) -> None:
    task = asyncio.create_task(r.run())
    await asyncio.sleep(seconds)
    r.stop()
    await asyncio.wait_for(task, 10)


async def test_display_keeps_its_rate_while_the_worker_is_slow(squeezenet: DreamModel) -> None:
    slow = Wrapped(squeezenet, delay=0.3)
    out = Recording((320, 180))
    r = Renderer(slow, out, dream_size=(160, 90), output_size=(320, 180), fps=60)
    r.set_recipe(_recipe())
    await _run_for(r, 2.5)
    st = r.stats
    assert out.opened and out.closed
    steps = len(slow.calls)
    assert 2 <= steps <= 10
    # frames keep coming: many display frames per dream step
    assert st.displayed_frames >= 5 * steps and st.displayed_frames >= 40
    # dream results are used when ready: every published frame was picked up (a step that
    # finishes after the display stopped is not shown, hence the 2)
    assert st.dream_frames_shown >= st.dream_steps - 2 >= 1
    # the picture keeps moving between dream frames (continuous zoom), not frozen
    changes = np.count_nonzero(np.diff(out.prints))
    assert changes >= 0.8 * (len(out.prints) - 1)


async def test_latest_recipe_wins_and_shows_within_a_step(squeezenet: DreamModel) -> None:
    slow = Wrapped(squeezenet, delay=0.15)
    r = Renderer(slow, Recording((160, 90)), dream_size=(160, 90), output_size=(160, 90),
                 fps=60)
    r.set_recipe(_recipe(layer_weights={"fire5/concat": 1.0}))
    task = asyncio.create_task(r.run())
    t0 = time.monotonic()
    while len(slow.calls) < 2 and time.monotonic() - t0 < 20:
        await asyncio.sleep(0.02)
    at_set = len(slow.calls)
    for i in range(2, 7):  # a burst: only the last one may be worked on
        r.set_recipe(_recipe(layer_weights={"fire5/concat": float(i)}, generation=i))
    target = r.recipes.version
    shown = None
    t0 = time.monotonic()
    while shown is None and time.monotonic() - t0 < 10:
        f = r.frames.get()
        if f is not None and f.recipe_version >= target:
            shown = f
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    r.stop()
    await asyncio.wait_for(task, 10)
    assert shown is not None and shown.generation == 6
    used = [c["fire5/concat"] for c in slow.calls[at_set:]]
    assert set(used) <= {1.0, 6.0}, used          # never a stale recipe from the burst
    assert used.count(1.0) <= 1                   # at most the step already in flight
    # the frame of the first step under the new recipe is the one published
    assert shown.step <= at_set + 2
    assert r.stats.recipe_latency_s is not None


async def test_dead_worker_is_restarted_and_the_display_keeps_going(
        squeezenet: DreamModel) -> None:
    flaky = Wrapped(squeezenet, delay=0.02, fail_at=3)
    out = Recording((160, 90))
    r = Renderer(flaky, out, dream_size=(160, 90), output_size=(160, 90), fps=60,
                 max_backoff_s=1.0)
    r.set_recipe(_recipe())
    task = asyncio.create_task(r.run())
    t0 = time.monotonic()
    while r.tracker.worker_errors == 0 and time.monotonic() - t0 < 10:
        await asyncio.sleep(0.01)
    frames_at_death = out.frames
    steps_at_death = r.tracker.steps
    await asyncio.sleep(0.3)  # the restart waits 0.5 s: the display must keep presenting
    assert out.frames > frames_at_death + 5
    assert r.tracker.steps == steps_at_death
    while r.tracker.steps <= steps_at_death + 2 and time.monotonic() - t0 < 20:
        await asyncio.sleep(0.02)
    r.stop()
    await asyncio.wait_for(task, 10)
    st = r.stats
    assert st.worker_errors == 1 and st.worker_restarts == 1
    assert st.dream_steps > steps_at_death + 2
    assert r.counters.get("worker_died") == 1
    (what, exc), = take_background_errors()  # provoked on purpose: reported once, then restarted
    assert what == "dream worker" and "fail" in str(exc).lower()


async def test_bad_recipe_inputs_are_counted_and_skipped(squeezenet: DreamModel,
                                                        tmp_path: Path) -> None:
    w = Wrapped(squeezenet)
    r = Renderer(w, Recording((96, 64)), dream_size=(96, 64), output_size=(96, 64), fps=30,
                 resolve=lambda p: tmp_path / p)
    r.set_recipe(_recipe(layer_weights={"fire3/concat": 1.0, "fire99/concat": 1.0},
                         mask="missing.png", guide="nope.png", source_image="gone.jpg"))
    await _run_for(r, 1.0)
    c = r.counters.snapshot()
    assert c["unknown_layer"] >= 1 and c["bad_mask"] == 1 and c["bad_source_image"] == 1
    assert c["guide_unsupported"] == 1
    assert r.stats.dream_steps >= 2 and r.stats.worker_errors == 0
    assert all(set(call) == {"fire3/concat"} for call in w.calls)


async def test_event_loop_is_not_blocked(squeezenet: DreamModel) -> None:
    r = Renderer(Wrapped(squeezenet), Recording((320, 180)), dream_size=(160, 90),
                 output_size=(320, 180), fps=60)
    r.set_recipe(_recipe())
    task = asyncio.create_task(r.run())
    lags = []
    for _ in range(40):
        t = time.monotonic()
        await asyncio.sleep(0.01)
        lags.append(time.monotonic() - t - 0.01)
    r.stop()
    await asyncio.wait_for(task, 10)
    assert max(lags) < 0.5, max(lags)
    assert r.stats.displayed_frames > 0


async def test_circle_mask_in_the_live_worker(squeezenet: DreamModel) -> None:
    src = np.full((90, 160, 3), 0.5, np.float32)
    r = Renderer(Wrapped(squeezenet), Recording((160, 90)), dream_size=(160, 90),
                 output_size=(160, 90), source=src)
    r.set_recipe(_recipe(zoom=1.0, rotate_deg=0.0, mask="circle"))
    await _run_for(r, 1.0)
    f = r.frames.get()
    assert f is not None
    assert np.array_equal(f.pixels[0:5, 0:5], src[0:5, 0:5])
    assert np.abs(f.pixels[40:50, 75:85] - 0.5).mean() > 0.002


async def test_guide_switches_to_the_guide_compiled_model(shared_models: Path,
                                                         squeezenet: DreamModel,
                                                         tmp_path: Path) -> None:
    from dreamstate.engine.core.images import save_image

    guided = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", LAYERS, guide=True,
                             device="cpu", threads=1)
    plain, with_guide = Wrapped(squeezenet), Wrapped(guided)
    rng = np.random.default_rng(3)
    save_image(tmp_path / "g.png", rng.uniform(0, 1, (64, 96, 3)).astype(np.float32))
    r = Renderer(plain, Recording((96, 64)), dream_size=(96, 64), output_size=(96, 64),
                 guide_model=with_guide, resolve=lambda p: tmp_path / p)
    r.set_recipe(_recipe(guide="g.png"))
    await _run_for(r, 1.0)
    assert len(with_guide.calls) >= 2 and not plain.calls
    assert r.counters.snapshot() == {}


async def test_snapshot_writes_the_frame_on_screen(squeezenet: DreamModel,
                                                  tmp_path: Path) -> None:
    from dreamstate.engine.core.errors import RenderError
    from dreamstate.engine.core.images import load_image

    r = Renderer(Wrapped(squeezenet), Recording((96, 64)), dream_size=(48, 32),
                 output_size=(96, 64))
    with pytest.raises(RenderError, match="no frame"):
        r.snapshot(tmp_path / "x.png")
    r.set_recipe(_recipe())
    await _run_for(r, 0.5)
    shown = r.latest_frame
    assert shown is not None
    p = r.snapshot(tmp_path / "snap.png")
    got = (load_image(p) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(got, shown)


async def test_pause_freezes_and_blackout_blanks_the_picture(squeezenet: DreamModel) -> None:
    model = Wrapped(squeezenet)
    out = Recording((160, 90))
    r = Renderer(model, out, dream_size=(160, 90), output_size=(160, 90), fps=60)
    r.set_recipe(_recipe())
    task = asyncio.create_task(r.run())
    t0 = time.monotonic()
    while len(model.calls) < 2 and time.monotonic() - t0 < 20:
        await asyncio.sleep(0.02)
    r.set_paused(True)
    await asyncio.sleep(0.4)  # a step in flight may still land
    steps_paused = len(model.calls)
    n0 = len(out.prints)
    await asyncio.sleep(0.5)
    assert len(model.calls) == steps_paused, "no dream steps while paused"
    frozen = out.prints[n0:]
    assert len(frozen) >= 10, "the display keeps presenting while paused"
    assert max(frozen) - min(frozen) < 1e-6, "the picture holds still while paused"
    r.set_blackout(True)
    await asyncio.sleep(0.2)
    assert r.latest_frame is not None and not r.latest_frame.any()
    r.set_blackout(False)
    r.set_paused(False)
    t1 = time.monotonic()
    while len(model.calls) <= steps_paused and time.monotonic() - t1 < 10:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert len(model.calls) > steps_paused, "play resumes dreaming"
    assert r.latest_frame is not None and r.latest_frame.any()
    r.stop()
    await asyncio.wait_for(task, 10)


async def test_an_output_that_cannot_open_starts_no_dream_worker(squeezenet: DreamModel,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A kiosk before X is up: the window cannot open. No dream step may start then: each retry
    would cost a step, and a worker left inside onnxruntime when the process exits aborts it
    ("terminate called without an active exception", exit 134; found by the kiosk test)."""
    from dreamstate.engine.output.window import NoDisplayError, WindowOutput
    from dreamstate.engine.render.renderer import DreamWorker, finish_workers

    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    r = Renderer(squeezenet, WindowOutput((64, 48)), dream_size=(64, 48), output_size=(64, 48), fps=30)
    r.set_recipe(DreamRecipe(layer_weights={"fire5": 1.0}))
    with pytest.raises(NoDisplayError):
        await asyncio.wait_for(r.run(), 20)
    assert r._worker is None
    assert not any(isinstance(t, DreamWorker) for t in threading.enumerate())
    assert finish_workers(0.1)


async def test_frames_are_composed_ahead_for_the_moment_they_are_presented(squeezenet: DreamModel) -> None:
    """The display composes each frame for its deadline and then presents it on time, so a
    compose that takes a while (a loaded machine; 4 ms here on purpose) does not push the
    present late: the picture's time is the present's, to within wake-up latency."""
    out = Recording((320, 180))

    composed_for: list[float] = []

    class SlowCompose(Renderer):
        def _compose(self, now: float, cur: Any, alpha: float) -> U8:
            composed_for.append(now)
            time.sleep(0.004)
            return super()._compose(now, cur, alpha)

    r = SlowCompose(squeezenet, out, dream_size=(160, 90), output_size=(320, 180), fps=30)
    r.set_recipe(_recipe())
    await _run_for(r, 2.0)
    n = min(len(out.stamps), len(composed_for))
    assert n >= 30
    late = [out.stamps[i] - composed_for[i] for i in range(1, n)]
    assert min(late) >= 0.0  # never shown before its time
    assert float(np.median(late)) < 0.003, late  # composing before the deadline: the present is on time


async def test_the_display_thread_asks_for_round_robin_priority(squeezenet: DreamModel) -> None:
    """Where Linux grants it (root here, CAP_SYS_NICE or an rtprio limit) the display thread runs
    under SCHED_RR at display_rt_priority; 0 leaves it at normal scheduling."""
    import os

    seen: dict[int, tuple[int, int]] = {}

    class Spy(Recording):
        def present(self, frame: U8) -> None:
            tid = threading.get_native_id()
            seen[tid] = (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)
            super().present(frame)

    for prio in (7, 0):
        seen.clear()
        r = Renderer(squeezenet, Spy((160, 90)), dream_size=(160, 90), output_size=(160, 90), fps=30,
                     display_rt_priority=prio)
        r.set_recipe(_recipe())
        await _run_for(r, 0.5)
        (policy, got), = seen.values()
        if prio and os.geteuid() == 0:  # unprivileged: the next test covers the refusal
            assert r.display_realtime and (policy, got) == (os.SCHED_RR, 7)
        if not prio:
            assert not r.display_realtime and policy == os.SCHED_OTHER


def test_a_refused_priority_is_said_once_and_the_show_goes_on() -> None:
    """As an unprivileged user (setpriv to nobody) SCHED_RR is refused: the display runs at normal
    priority, frames keep coming, and the log says how to grant it."""
    import os
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop to an unprivileged user")
    code = (
        "import logging, asyncio\n"
        "from dreamstate.engine.output.base import NullOutput\n"
        "from dreamstate.engine.render.renderer import Renderer, noise_source\n"
        "from dreamstate.engine.core.records import DreamRecipe\n"
        "from dreamstate.models.dream import DreamModel\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "m = DreamModel.load('starter', device='cpu', threads=1)\n"
        "r = Renderer(m, NullOutput((96, 64)), dream_size=(96, 64), output_size=(96, 64), fps=30)\n"
        "r.set_recipe(DreamRecipe(layer_weights={m.layers[0]: 1.0}))\n"
        "st = r.run_for(1.0)\n"
        "print('REALTIME', r.display_realtime, 'FRAMES', st.displayed_frames)\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dreamstate-nobody-") as home:  # /tmp: nobody can enter it
        os.chmod(home, 0o777)
        env = {**os.environ, "DREAMSTATE_CACHE": str(Path(home) / "cache"), "HOME": home}
        done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                               sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env=env, cwd=home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REALTIME False" in done.stdout
    frames = int(done.stdout.split("FRAMES")[1])
    assert frames >= 10
    assert done.stderr.count("real-time priority 5 refused") == 1 and "LimitRTPRIO=5" in done.stderr


async def test_a_show_cancelled_while_its_output_opens_ends_the_display_thread(squeezenet: DreamModel) -> None:
    """SIGTERM can land while the output is still opening (a window waiting for its display):
    the cancelled run must still stop the display thread, not leave it presenting forever."""

    class SlowOpen(Recording):
        def open(self) -> tuple[int, int]:
            time.sleep(0.5)
            return super().open()

    out = SlowOpen((64, 48))
    r = Renderer(squeezenet, out, dream_size=(64, 48), output_size=(64, 48), fps=30)
    r.set_recipe(_recipe())
    task = asyncio.create_task(r.run())
    await asyncio.sleep(0.1)  # the display thread is inside open()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.0)
    assert not any(t.name == "display" and t.is_alive() for t in threading.enumerate())
    assert out.closed and r.worker is None
