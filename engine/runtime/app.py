"""The show runtime: the composition root that wires the stages of a show under one supervisor.

``ShowRuntime(loaded)`` builds these stages; each acquires what it needs in ``start()``,
releases it in ``stop()`` and talks to the others only through typed channels or the calls
the runtime wires (see ``engine.runtime.supervisor`` for the lifecycle):

* ``device`` (:class:`DeviceStage`): opens the show's headset backend and publishes every
  reading on a ``Broadcast[Reading]`` (each consumer has its own bounded, counted queue); when
  it stops, a crash included, it publishes ``DISCONNECTED`` so the state turns ``absent``;
* ``signal`` (:class:`SignalStage`): windows, features, map point and state
  (``engine.signal.pipeline``); publishes ``states: LatestSlot[EegState]`` and
  ``eeg: LatestSlot[EegSnapshot]`` (latest wins);
* ``scenes`` (:class:`ScenesStage`): reads the newest state, runs the ``SceneDirector`` and
  hands the current ``DreamRecipe`` (scene plus live edits) to the render stage about 20 times
  a second;
* ``render`` (:class:`RenderStage`): builds the renderer (model, output) in ``start()``; the
  dream worker and the display loop (``engine.render.renderer``); critical, so closing the
  window ends the show;
* ``osc`` / ``mqtt`` (:class:`ControlStage`, when enabled): one ``ControlTransport`` each;
  control in, applied by ``ShowRuntime.apply_command``; telemetry out from one
  :class:`Telemetry` snapshot;
* ``record`` (:class:`RecordStage`, when enabled): the crash-safe journal, finalised to FIF
  when the stage stops;
* ``lsl`` (``engine.runtime.lsl_stage.LslStage``, when ``[lsl] enabled``): the readings and
  states as Lab Streaming Layer streams;
* ``status``: one log line every 10 s with fps, state and error counters;
* ``timer`` (``--seconds``): ends the show.

The device, the dream model and the output are made by factories the caller may replace
(``open_device``, ``load_model``, ``open_output``), so tests run a show on a small model or a
scripted device. A stage that crashes is restarted with backoff while the others carry on with
the last good state and frame.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import logging
import os
import time
import typing
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamstate.engine.control.commands import (
    Blackout,
    CalibrateStart,
    CalibrateStop,
    Command,
    OverrideState,
    Pause,
    Play,
    SetGuide,
    SetImage,
    SetLayer,
    SetMask,
    SetOctaves,
    SetParam,
    SetRotate,
    SetScene,
    SetStep,
    SetTranslate,
    SetZoom,
)
from dreamstate.engine.control.transport import ControlTransport
from dreamstate.engine.core.background import watch_task
from dreamstate.engine.core.channels import BoundedQueue, Broadcast, LatestSlot
from dreamstate.engine.core.errors import CalibrationError, DreamstateError, ShowError
from dreamstate.engine.core.logs import LogLimiter, truncate
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import (
    ABSENT,
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    DreamRecipe,
    EegSnapshot,
    EegState,
    ESense,
    Reading,
    SignalQuality,
)
from dreamstate.engine.core.show import LoadedShow, Show
from dreamstate.engine.render.modes import FrameMode
from dreamstate.engine.render.style import StyleMode
from dreamstate.engine.runtime import FunctionStage, Stage, Supervisor
from dreamstate.engine.runtime.showfile import load_show
from dreamstate.engine.scenes import SceneDirector

if TYPE_CHECKING:
    from dreamstate.devices.base import Device
    from dreamstate.devices.recording import Recorder
    from dreamstate.engine.control.mqtt import MqttLink
    from dreamstate.engine.control.osc import OscControlServer, OscTelemetry
    from dreamstate.engine.output.base import Output
    from dreamstate.engine.render.drawmode import DrawingStatus
    from dreamstate.engine.render.renderer import Renderer
    from dreamstate.engine.render.seeing import Seeing, SeeingStatus
    from dreamstate.engine.render.stats import FrameStats
    from dreamstate.engine.runtime.hours import HoursStage
    from dreamstate.engine.runtime.lsl_stage import LslStage
    from dreamstate.engine.signal.pipeline import SignalPipeline
    from dreamstate.models.classify import ClassifierModel
    from dreamstate.models.dream import DreamModel

log = logging.getLogger("dreamstate.app")

DeviceFactory = Callable[[LoadedShow], "Device"]
"""Makes the (unopened) headset backend for a show; default ``devices.factory.open_device``."""
ModelLoader = Callable[[LoadedShow, "list[str] | None", bool], "DreamModel"]
"""Loads the dream model for a show's layers (``guide`` True for the guide-image model);
default :func:`load_show_model`."""
ClassifierLoader = Callable[[LoadedShow], "ClassifierModel"]
"""Loads the show's model as a classifier for drawing scenes; default :func:`load_show_classifier`."""
OutputFactory = Callable[[LoadedShow], "Output"]
"""Makes the (unopened) output for a show; default ``engine.output.factory.open_output``."""


def default_source_path() -> Path | None:
    """A photo that ships inside a dependency, for shows that name no image."""
    try:
        import sklearn.datasets

        p = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    except ImportError:  # pragma: no cover - sklearn is a dependency
        return None
    return p if p.is_file() else None


def default_device(loaded: LoadedShow) -> Device:
    from dreamstate.devices.factory import open_device

    return open_device(loaded.show.device, loaded)


def default_output(loaded: LoadedShow) -> Output:
    from dreamstate.engine.output.factory import open_output

    return open_output(loaded.show.output, loaded)


def load_show_model(loaded: LoadedShow, layers: list[str] | None, guide: bool) -> DreamModel:
    """The show's model (``show.model``, or the operator's) compiled for ``layers``, on the
    show's ``output.device``, leaving a core to the display thread and the event loop."""
    from dreamstate.engine.render.checks import model_source
    from dreamstate.models.dream import DreamModel

    threads = max(1, (os.cpu_count() or 2) - 1)
    return DreamModel.load(model_source(loaded), layers, guide=guide, device=loaded.show.output.device,
                           threads=threads, conv_algo_search=loaded.show.output.cudnn_conv_algo_search,
                           precision=loaded.show.output.precision)


def load_show_classifier(loaded: LoadedShow) -> ClassifierModel:
    """The show's model as a plain classifier for the drawing scenes (``mode = "drawing"``), on
    the show's ``output.device`` with the dream's thread count."""
    from dreamstate.engine.render.checks import model_source
    from dreamstate.models.classify import ClassifierModel

    threads = max(1, (os.cpu_count() or 2) - 1)
    return ClassifierModel.load(model_source(loaded), device=loaded.show.output.device, threads=threads)


RECIPE_FIELDS: dict[str, str] = {"rotate": "rotate_deg", "steps": "steps_per_octave"}
"""Show-file scene field -> ``DreamRecipe`` field, where the names differ."""


class LiveEdits:
    """Manual recipe changes from OSC/MQTT, applied on top of the scene's recipe."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.layers: dict[str, float] = {}

    def apply(self, recipe: DreamRecipe) -> DreamRecipe:
        if not self.fields and not self.layers:
            return recipe
        weights = {**recipe.layer_weights, **self.layers}
        return dataclasses.replace(recipe, layer_weights=weights, **self.fields)

    def clear(self) -> None:
        self.fields.clear()
        self.layers.clear()


@dataclasses.dataclass(frozen=True, slots=True)
class Telemetry:
    """One snapshot of the show for telemetry (OSC and MQTT read the same one): the latest
    device values, the state, the scene, the renderer's figures (None before it runs), the
    recording's status (None when not recording) and the input counters."""

    eeg: EegSnapshot
    state: EegState | None
    scene: str
    stats: FrameStats | None
    recording: dict[str, Any] | None
    counters: dict[str, int | float]
    drawing: DrawingStatus | None = None
    seeing: SeeingStatus | None = None

    def doc(self) -> dict[str, Any]:
        """JSON-able: eSense and signal 0..1, map x y, state, fps, picture health (MQTT)."""
        out: dict[str, Any] = {"scene": self.scene}
        e, q, p = self.eeg.esense, self.eeg.quality, self.eeg.point
        if e is not None:
            out.update(attention=e.attention / 100.0, meditation=e.meditation / 100.0)
        if q is not None:
            out["signal"] = round(1.0 - min(q.poor_signal, 200) / 200.0, 3)
        if p is not None:
            out["map"] = [round(p.x, 4), round(p.y, 4)]
        if self.state is not None:
            out.update(state=self.state.label, confidence=round(self.state.confidence, 3))
        if self.recording is not None:
            out["recording"] = self.recording
        out["counters"] = self.counters
        if self.stats is not None:
            out["fps"] = round(self.stats.display_fps, 1)
            if self.stats.health is not None:
                out["picture"] = {**self.stats.health.as_dict(), "reseeds": self.stats.reseeds}
        if self.drawing is not None:
            d = self.drawing
            out["drawing"] = {"class": d.label, "index": d.index, "score": round(d.score, 4),
                              "probability": round(d.probability, 4), "evaluations": d.evaluations}
        if self.seeing is not None:
            v = self.seeing
            out["seeing"] = {"method": v.method, "class": v.label, "index": v.index, "score": round(v.score, 4)}
        return out


class DeviceStage(Stage):
    """Opens the headset backend in ``start()``; ``run()`` publishes every reading; ``stop()``
    closes it and publishes ``DISCONNECTED`` (so the state becomes ``absent`` and the attract
    scene plays while the supervisor retries)."""

    name = "device"

    def __init__(self, loaded: LoadedShow, readings: Broadcast[Reading], factory: DeviceFactory) -> None:
        self.loaded = loaded
        self.readings = readings
        self.factory = factory
        self.device: Device | None = None

    async def start(self) -> None:
        self.device = self.factory(self.loaded)
        await self.device.open()
        log.info("device open", extra={"device": self.device.describe()})

    async def run(self) -> None:
        assert self.device is not None
        async for reading in self.device.readings():
            self.readings.publish(reading)

    async def stop(self) -> None:
        if self.device is not None:
            await self.device.close()
            self.device = None
        self.readings.publish(DeviceEvent(DeviceEventKind.DISCONNECTED, time.monotonic(),
                                          detail="device stage stopped"))


class SignalStage(Stage):
    """Readings in, states out. After ``__init__`` it is subscribed to the readings and has
    loaded a saved calibration (or started the show's schedule); ``start()`` starts the map's
    refit thread; ``run()`` publishes ``states`` (every window's state, and ``absent`` on a
    device event) and ``eeg`` (the latest device values); ``stop()`` joins the refit thread."""

    name = "signal"

    def __init__(self, loaded: LoadedShow, readings: Broadcast[Reading], counters: Counters) -> None:
        from dreamstate.engine.signal.pipeline import SignalPipeline

        self.loaded = loaded
        show = loaded.show
        self.counters = counters
        self.states: LatestSlot[EegState] = LatestSlot()
        self.eeg: LatestSlot[EegSnapshot] = LatestSlot(EegSnapshot())
        self.queue: BoundedQueue[Reading] = readings.subscribe(16384, name="signal")
        self.pipeline: SignalPipeline = SignalPipeline(show.signal, show.map, show.states)
        self.pipeline.on_schedule_end = self.fit_soon
        self._fits: set[asyncio.Task[None]] = set()
        cal = show.states.calibration
        if show.states.mode == "calibrated" and cal.save:
            path = loaded.path(cal.save, what="states.calibration.save")
            if path.is_file():
                report = self.pipeline.load_calibration(path)
                log.info("calibration loaded", extra={"file": str(path), "counts": report.counts})
            elif cal.schedule:
                self.pipeline.start_schedule()
                log.info("calibration schedule started", extra={"seconds": self.pipeline.schedule.duration
                                                                if self.pipeline.schedule else 0})
        elif cal.schedule:
            self.pipeline.start_schedule()

    async def start(self) -> None:
        self.pipeline.start()

    async def run(self) -> None:
        latest: EegState | None = None
        while True:
            reading = await self.queue.get()
            self._note(reading)
            for result in self.pipeline.feed(reading):
                latest = result.state
                self.states.put(result.state)
                if result.point is not None:
                    self._update(point=result.point)
            state = self.pipeline.latest_state
            if state is not None and state is not latest:  # e.g. absent on a device event
                latest = state
                self.states.put(state)

    def _note(self, reading: Reading) -> None:
        if isinstance(reading, ESense):
            self._update(esense=reading)
        elif isinstance(reading, SignalQuality):
            self._update(quality=reading)
        elif isinstance(reading, BandPowers):
            self._update(bands=reading)
        elif isinstance(reading, Blink):
            snap = self.eeg.get() or EegSnapshot()
            self._update(blinks=snap.blinks + 1)

    def _update(self, **changes: Any) -> None:
        self.eeg.put(dataclasses.replace(self.eeg.get() or EegSnapshot(), **changes))

    async def stop(self) -> None:
        await asyncio.to_thread(self.pipeline.close, 1.0)

    def calibrate(self, label: str | None) -> None:
        """Start labelling windows with ``label``; None ends the label and refits off the loop."""
        if label:
            self.pipeline.begin_label(label)
            return
        self.pipeline.end_label()
        self.fit_soon()

    def fit_soon(self) -> None:
        """Fit the calibration in a worker thread (about 100 ms of scikit-learn)."""
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._fit_and_save), name="calibration-fit")
        watch_task(task, log, counters=self.counters)  # an unexpected error is logged, not lost
        self._fits.add(task)
        task.add_done_callback(self._fits.discard)

    def _fit_and_save(self) -> None:
        try:
            report = self.pipeline.fit_calibration()
        except CalibrationError as exc:
            log.warning("calibration not fitted yet: %s", exc)
            return
        log.info("calibration fitted", extra={"counts": report.counts, "accuracy": round(report.accuracy, 3)})
        cal = self.loaded.show.states.calibration
        if cal.save:
            saved = self.pipeline.save_calibration(self.loaded.path(cal.save, what="states.calibration.save"))
            log.info("calibration saved", extra={"file": str(saved)})


class RenderStage(Stage):
    """``start()`` builds the renderer (loading or compiling the model, opening the output
    happens in ``Renderer.run``) off the event loop; ``run()`` runs it until it stops or the
    viewer closes the window; ``stop()`` stops it. ``set_recipe`` may be called at any time;
    the latest recipe is handed to each renderer this stage builds."""

    name = "render"
    critical = True
    start_timeout = 300.0  # compiling a large model's dream step the first time

    def __init__(self, build: Callable[[], Renderer]) -> None:
        self.build = build
        self.renderer: Renderer | None = None
        self._recipe: DreamRecipe | None = None

    def set_recipe(self, recipe: DreamRecipe) -> None:
        self._recipe = recipe
        if self.renderer is not None:
            self.renderer.set_recipe(recipe)

    async def start(self) -> None:
        renderer = await asyncio.to_thread(self.build)
        if self._recipe is not None:
            renderer.set_recipe(self._recipe)
        self.renderer = renderer

    async def run(self) -> None:
        assert self.renderer is not None
        await self.renderer.run()
        if self.renderer.quit_requested:
            log.info("window closed by the viewer")

    async def stop(self) -> None:
        if self.renderer is not None:
            self.renderer.stop()


class ScenesStage(Stage):
    """Every ``period_s``: the newest state to the ``SceneDirector``, then the current recipe
    (the scene's, with the live edits on top) to the render stage when it changed."""

    name = "scenes"

    def __init__(self, director: SceneDirector, states: LatestSlot[EegState], edits: LiveEdits,
                 render: RenderStage, *, period_s: float = 0.05) -> None:
        self.director = director
        self.states = states
        self.edits = edits
        self.render = render
        self.period_s = period_s
        self._version = 0
        self._last: DreamRecipe | None = None

    def recipe(self) -> DreamRecipe:
        return self.edits.apply(self.director.recipe())

    def tick(self) -> None:
        state, self._version = self.states.get_if_newer(self._version)
        if state is not None:
            self.director.on_state(state)
        self.director.tick()
        recipe = self.recipe()
        if recipe != self._last:
            self.render.set_recipe(recipe)
            self._last = recipe

    async def run(self) -> None:
        while True:
            self.tick()
            due = self.director.next_change_at()  # wake for a pending change on time, not up to a period late
            wait = self.period_s if due is None else min(self.period_s, max(0.0, due - self.director.clock()))
            await asyncio.sleep(wait)


class ControlStage(Stage):
    """One control transport (OSC or MQTT). ``start()`` makes and starts it (binding its
    socket, reading its credentials); ``run()`` serves it beside its companion loops
    (telemetry) while handing every command to ``apply``; ``stop()`` closes it."""

    def __init__(self, name: str, make: Callable[[], ControlTransport], apply: Callable[[Command], None],
                 companions: Callable[[ControlTransport], Sequence[tuple[str, Coroutine[Any, Any, None]]]]
                 = lambda _t: ()) -> None:
        self.name = name
        self.make = make
        self.apply = apply
        self.companions = companions
        self.transport: ControlTransport | None = None

    async def start(self) -> None:
        transport = self.make()
        await transport.start()
        self.transport = transport

    async def run(self) -> None:
        transport = self.transport
        assert transport is not None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(transport.run(), name=f"{self.name}.run")
            for name, coro in self.companions(transport):
                tg.create_task(coro, name=f"{self.name}.{name}")
            while True:
                self.apply(await transport.commands.get())

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RecordStage(Stage):
    """``start()`` opens a new journal beside ``record.path`` (and names journals that earlier
    runs left behind); ``run()`` journals every reading; ``stop()`` writes the FIF, or keeps
    the journal and says how to recover it."""

    name = "record"

    def __init__(self, loaded: LoadedShow, readings: Broadcast[Reading]) -> None:
        self.loaded = loaded
        self.queue: BoundedQueue[Reading] = readings.subscribe(65536, name="record")
        self.recorder: Recorder | None = None
        self._fif: Path | None = None

    async def start(self) -> None:
        from dreamstate.devices.recording import Recorder, journal_path_for, unrecovered_journals

        show = self.loaded.show
        out = self.loaded.path(show.record.path, what="record.path")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = out.name.removesuffix(".gz").removesuffix(".fif").removesuffix("_raw")
        fif = out.with_name(f"{name}-{stamp}_raw.fif")
        journal = journal_path_for(fif)
        for old in unrecovered_journals(out.parent, exclude=journal):
            log.warning("an earlier recording did not finish: its journal %s is still there; "
                        "recover it with `dreamstate recover %s`", old, old, extra={"journal": str(old)})
        recorder = Recorder(journal, device=show.device.kind)
        self.queue.drain()  # readings from before this recording belong to no file
        await recorder.start()
        self.recorder, self._fif = recorder, fif

    async def run(self) -> None:
        assert self.recorder is not None
        while True:
            self.recorder.add(await self.queue.get())

    async def stop(self) -> None:
        recorder, fif = self.recorder, self._fif
        self.recorder = None
        if recorder is not None and fif is not None:
            await asyncio.shield(self._finish(recorder, fif))

    @staticmethod
    async def _finish(recorder: Recorder, fif: Path) -> None:
        """Write the FIF, or, with nothing recorded, remove the empty journal; say which."""
        if recorder.counters.get("samples") == 0:
            await recorder.close()
            recorder.journal.unlink(missing_ok=True)
            log.info("nothing recorded (no EEG arrived); no file written", extra={"file": str(fif)})
            return
        try:
            result = await recorder.finalise(fif)
        except DreamstateError as exc:
            log.error("recording not saved: %s; the journal %s is kept: run `dreamstate recover %s`",
                      exc, recorder.journal, recorder.journal, extra={"journal": str(recorder.journal)})
            return
        log.info("recording saved", extra={"file": str(result.fif), "seconds": round(result.seconds, 1)})


class ShowRuntime:
    """Builds the stages of a show and runs them; see the module docstring.

    ``open_device``, ``load_model`` and ``open_output`` replace the factories for the headset,
    the dream model and the output (tests use a small model; a kiosk could pass its own
    output)."""

    def __init__(self, loaded: LoadedShow, *, seconds: float | None = None,
                 open_device: DeviceFactory | None = None, load_model: ModelLoader | None = None,
                 open_output: OutputFactory | None = None, wall_clock: Callable[[], float] = time.time,
                 load_classifier: ClassifierLoader | None = None) -> None:
        self.loaded = loaded
        self.wall_clock = wall_clock
        """Unix seconds for the MQTT state schedule (stamping, arrival, the moment to apply);
        injectable so a test can skew one node's clock. Durations use ``time.monotonic``."""
        self.show: Show = loaded.show
        self.seconds = seconds if seconds is not None else loaded.show.output.seconds
        self.counters = Counters()
        self._rejections = LogLimiter(log)  # one line per kind of rejected command per 10 s
        self._tele: OscTelemetry | None = None  # while OSC telemetry runs: refusals are echoed on it
        self._started = time.monotonic()
        self.readings: Broadcast[Reading] = Broadcast("readings")
        self.director = SceneDirector(self.show)
        self.edits = LiveEdits()
        self.last_counters: dict[str, int | float] = {}
        self._load_model = load_model or load_show_model
        self._load_classifier = load_classifier or load_show_classifier
        self._open_output = open_output or default_output
        self.role = self.show.mqtt.role if self.show.mqtt.enabled else "all"
        self.device_stage = DeviceStage(loaded, self.readings, open_device or default_device)
        self.signal_stage = SignalStage(loaded, self.readings, self.counters)
        self.render_stage = RenderStage(self.build_renderer)
        # the state the scenes follow: this node's own (all, eeg) or the eeg node's over MQTT (render)
        self.states: LatestSlot[EegState] = self.signal_stage.states if self.role != "render" else LatestSlot()
        self.scenes_stage = ScenesStage(self.director, self.states, self.edits, self.render_stage)
        self.clock_offset_ms: float | None = None
        """role render: median (arrival - sent) of the followed states, in ms: clock offset plus latency"""
        self.follow_lateness: collections.deque[float] = collections.deque(maxlen=200)
        self.followed: collections.deque[tuple[str, float, float]] = collections.deque(maxlen=200)
        """role render: (label, scheduled ``at``, applied) wall-clock times of the followed states"""
        self.hours_stage: HoursStage | None = None
        self.osc_stage: ControlStage | None = None
        self.mqtt_stage: ControlStage | None = None
        self.record_stage: RecordStage | None = None
        self.lsl_stage: LslStage | None = None
        self.supervisor = Supervisor(self._stages())

    # --- wiring ---------------------------------------------------------------------------------
    def _stages(self) -> list[Stage]:
        show = self.show
        stages: list[Stage] = [FunctionStage("status", self._status_loop)]
        if self.role != "render":  # this node reads the headset
            stages += [self.device_stage, self.signal_stage]
        if self.role != "eeg":  # this node shows the picture
            stages += [self.render_stage, self.scenes_stage]
        if show.osc.enabled:
            self.osc_stage = ControlStage("osc", self._make_osc, self.apply_command, self._osc_companions)
            stages.append(self.osc_stage)
        if show.mqtt.enabled:
            self.mqtt_stage = ControlStage("mqtt", self._make_mqtt, self.apply_command, self._mqtt_companions)
            stages.append(self.mqtt_stage)
        if show.record.enabled:
            self.record_stage = RecordStage(self.loaded, self.readings)
            stages.append(self.record_stage)
        if show.lsl.enabled:  # LSL streams out: EEG, bands, state, markers
            from dreamstate.engine.runtime.lsl_stage import LslStage

            self.lsl_stage = LslStage(self.loaded, self.readings, self.states, self.signal_stage.eeg,
                                      lambda: self.signal_stage.pipeline.active_label)
            stages.append(self.lsl_stage)
        if show.hours.enabled and self.role != "eeg":
            from dreamstate.engine.runtime.hours import HoursStage

            self.hours_stage = HoursStage(show.hours, lambda: self.renderer)
            stages.append(self.hours_stage)
        if show.status.file is not None:
            path = self.loaded.path(show.status.file, what="status.file")
            every = show.status.every_s
            stages.append(FunctionStage("status-file", lambda: self._status_file_loop(path, every)))
        if self.seconds is not None:
            seconds = self.seconds

            async def timer() -> None:
                await asyncio.sleep(seconds)

            stages.append(FunctionStage("timer", timer, critical=True, restart=False))
        return stages

    # --- what the stages hold, for tools and tests ------------------------------------------------
    @property
    def renderer(self) -> Renderer | None:
        return self.render_stage.renderer

    @property
    def latest_state(self) -> EegState | None:
        return self.states.get()

    @property
    def osc_server(self) -> OscControlServer | None:
        from dreamstate.engine.control.osc import OscControlServer

        t = self.osc_stage.transport if self.osc_stage is not None else None
        return t if isinstance(t, OscControlServer) else None

    @property
    def mqtt(self) -> MqttLink | None:
        from dreamstate.engine.control.mqtt import MqttLink

        t = self.mqtt_stage.transport if self.mqtt_stage is not None else None
        return t if isinstance(t, MqttLink) else None

    @property
    def recorder(self) -> Recorder | None:
        return self.record_stage.recorder if self.record_stage is not None else None

    def scene_layers(self) -> list[str]:
        names: dict[str, None] = {}
        for scene in self.show.scenes.values():
            names.update(dict.fromkeys(scene.layers))
        return list(names)

    def current_recipe(self) -> DreamRecipe:
        return self.scenes_stage.recipe()

    def build_renderer(self) -> Renderer:
        """Load the model (compiling or reusing its cached dream step) and make the renderer
        with the show's images and output (blocking: the render stage calls it in a thread)."""
        from dreamstate.engine.core.images import load_image
        from dreamstate.engine.render.health import HealthSettings
        from dreamstate.engine.render.renderer import Renderer

        show = self.show
        out_cfg = show.output
        layers = self.scene_layers() or None
        model = self._load_model(self.loaded, layers, False)
        log.info("dream model ready", extra={"model": model.name, "layers": list(model.layers),
                                             "provider": model.provider})
        guide_model = self._load_model(self.loaded, layers, True) if any(s.guide for s in show.scenes.values()) \
            else None
        paths = [self.loaded.path(img, what=f"show.images[{i}]") for i, img in enumerate(show.show.images)]
        if not paths and default_source_path() is not None:
            paths = [p for p in [default_source_path()] if p is not None]
        sources = [load_image(p, what="source image") for p in paths]
        hc = show.health
        health = HealthSettings(enabled=hc.enabled, watchdog_s=hc.watchdog_s, limits=hc.limits())
        classifier = self._load_classifier(self.loaded) if any(s.mode == "drawing" for s in show.scenes.values()) \
            else None
        renderer = Renderer(model, self._open_output(self.loaded), dream_size=out_cfg.dream_size,
                            output_size=out_cfg.size, fps=out_cfg.fps, source=sources[0] if sources else None,
                            sources=sources, resolve=lambda p: self.loaded.path(p, what="recipe path"),
                            guide_model=guide_model, health=health, modes=self.scene_modes(),
                            classifier=classifier, seeing=self.seeing(),
                            display_rt_priority=out_cfg.display_rt_priority)
        for mode in renderer.modes.values():
            if isinstance(mode, StyleMode):
                mode.counters = renderer.counters
        return renderer

    def seeing(self) -> Seeing | None:
        """The seeing overlay when a scene of the show uses it: explainers of the show's model,
        compiled on first use in the dream worker (None when no scene sees)."""
        from dreamstate.engine.render.checks import model_source
        from dreamstate.engine.render.seeing import Seeing
        from dreamstate.models.explain import Explainer

        if all(s.seeing == "off" for s in self.show.scenes.values()):
            return None
        device = self.show.output.device
        threads = max(1, (os.cpu_count() or 2) - 1)

        def load(method: str) -> Explainer:
            return Explainer.load(model_source(self.loaded), method, device=device, threads=threads)

        return Seeing(load)

    def scene_modes(self) -> dict[str, FrameMode]:
        """The scene modes other than ``dream`` that the show's scenes use (the style mode loads
        its models on first use, in the dream worker)."""
        from dreamstate.engine.render.checks import style_source
        from dreamstate.models.style import StyleModel

        modes: dict[str, FrameMode] = {}
        if any(s.mode == "style" for s in self.show.scenes.values()):
            device = self.show.output.device

            def load_style(spec: str) -> StyleModel:
                return StyleModel.load(style_source(self.loaded, spec), device=device)

            modes["style"] = StyleMode(load_style)
        return modes

    # --- control ----------------------------------------------------------------------------------
    def public_text(self, text: str) -> str:
        """``text`` for a control surface, which may be another machine: the show folder written
        as ``<show>`` and the home folder as ``~``, so replies do not reveal this machine's layout
        (the log keeps the full paths)."""
        folder = str(self.loaded.folder.resolve())
        text = text.replace(folder + os.sep, "<show>/").replace(folder, "<show>")
        home = os.path.expanduser("~")
        return text.replace(home + os.sep, "~/") if home not in ("", "/") else text

    def apply_command(self, cmd: Command) -> None:
        """One control command from OSC or MQTT. Bad values are logged, counted and reported on
        ``/dreamstate/error``, never raised; values the decoder clamped into range are applied,
        counted (``commands_clamped``) and reported on ``/dreamstate/clamped``."""
        address = "/dreamstate/" + cmd.ADDRESS + (cmd.layer if isinstance(cmd, SetLayer) else
                                                  cmd.name if isinstance(cmd, SetParam) else "")
        try:
            self._apply(cmd)
            self.counters.inc("commands")
        except DreamstateError as exc:
            self.counters.inc("commands_rejected")
            if self._tele is not None:
                self._tele.error(address, self.public_text(str(exc)))
            self._rejections.report(f"rejected {type(cmd).__name__} commands",
                                    f"control command rejected: {truncate(str(exc), 300)}",
                                    command=type(cmd).__name__)
            return
        for arg, requested, applied in getattr(cmd, "clamped", ()):
            self.counters.inc("commands_clamped")
            if self._tele is not None:
                self._tele.clamped(address, arg, requested, applied)
            self._rejections.report(f"clamped {type(cmd).__name__} values",
                                    f"{address} {arg} {requested:g} is out of range; applied {applied:g}",
                                    command=type(cmd).__name__)

    def _apply(self, cmd: Command) -> None:
        match cmd:
            case SetScene(name=name):
                self.director.set_scene(name or None)
                self.edits.clear()
            case OverrideState(label=label):
                self._check_label(label, "/dreamstate/state/override", allow_absent=True)
                self.director.set_scene(None)
                self.director.override(label or None)
            case SetLayer(layer=layer, weight=weight):
                live = self.scene_layers()
                if layer not in live:
                    raise DreamstateError(f"/dreamstate/layer/{layer}: only the layers the show's scenes use are "
                                          f"compiled into the dream step, so only they can be set live",
                                          hint=f"use one of {live}, or add the layer to a scene in the show")
                self.edits.layers[layer] = weight
            case SetZoom(value=v):
                self.edits.fields["zoom"] = v
            case SetRotate(value=v):
                self.edits.fields["rotate_deg"] = v
            case SetStep(value=v):
                self.edits.fields["step"] = v
            case SetOctaves(value=n):
                self.edits.fields["octaves"] = n
            case SetParam(name=name, value=v):
                self.edits.fields[RECIPE_FIELDS.get(name, name)] = v
            case SetTranslate(x=x, y=y):
                self.edits.fields["translate"] = (x, y)
            case SetMask(path=path):
                if path:
                    self._check_image(path, "/dreamstate/mask")
                self.edits.fields["mask"] = path or None
            case SetGuide(path=path):
                if path:
                    if self.renderer is not None and self.renderer.guide_model is None:
                        raise DreamstateError("/dreamstate/guide: this show compiled no guide step (no scene has "
                                              "a guide)", hint='add guide = "<image>" to one scene of the show')
                    self._check_image(path, "/dreamstate/guide")
                self.edits.fields["guide"] = path or None
            case SetImage(image=image):
                images = self.show.show.images
                if isinstance(image, int):
                    if not 0 <= image < len(images):
                        fix = (f"the show lists {len(images)} image(s) in show.images (0..{len(images) - 1})"
                               if images else "list images in show.images")
                        raise DreamstateError(f"/dreamstate/image: index {image} is out of range", hint=fix)
                    image = images[image]
                self._check_image(image, "/dreamstate/image")
                self.edits.fields["source_image"] = image
            case Pause() | Play() | Blackout():
                self._transport(cmd)
            case CalibrateStart(label=label):
                if self.role == "render":
                    raise DreamstateError("/dreamstate/calibrate/start: this node has no headset (mqtt role render)",
                                          hint="send calibration to the node with role eeg")
                self._check_label(label, "/dreamstate/calibrate/start", allow_absent=False)
                self.signal_stage.calibrate(label)
            case CalibrateStop():
                self.signal_stage.calibrate(None)
            case _:
                typing.assert_never(cmd)

    def _check_label(self, label: str, address: str, *, allow_absent: bool) -> None:
        labels = list(self.show.states.labels) + ([ABSENT] if allow_absent else [])
        if label and label not in labels:
            raise DreamstateError(f"{address}: {label!r} is not a state of this show",
                                  hint=f"use one of {labels}")

    def _check_image(self, image: str, address: str) -> None:
        """The image must be a readable picture inside the show folder now, not at the next
        reseed: a bad path kept as a live edit would stop the watchdog from recovering."""
        from PIL import Image, UnidentifiedImageError

        path = self.loaded.path(image, what=address)  # refuses paths outside the show
        if not path.is_file():
            raise DreamstateError(f"{address}: {image!r} is not a file in the show folder ({path})",
                                  hint="send a path relative to the show folder" + (
                                      ", or an index into show.images" if address.endswith("image") else ""))
        try:
            with Image.open(path) as im:
                im.verify()  # the header and structure, without decoding the pixels
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            raise DreamstateError(f"{address}: {image!r} is not a readable image: {exc}",
                                  hint="send a PNG or JPEG inside the show folder") from None

    def _transport(self, cmd: Pause | Play | Blackout) -> None:
        r = self.renderer
        if r is None:
            raise DreamstateError(f"{cmd.ADDRESS}: the renderer is not running yet", hint="try again in a moment")
        match cmd:
            case Pause():
                r.set_paused(True)
            case Play():
                r.set_paused(False)
            case Blackout(on=on):
                r.set_blackout(on)

    # --- telemetry --------------------------------------------------------------------------------
    def telemetry(self) -> Telemetry:
        """The snapshot OSC and MQTT telemetry send (see :class:`Telemetry`)."""
        r, rec = self.renderer, self.recorder
        return Telemetry(eeg=self.signal_stage.eeg.get() or EegSnapshot(), state=self.latest_state,
                         scene=self.director.scene_name, stats=r.stats if r is not None else None,
                         recording=rec.status() if rec is not None else None, counters=self.input_counters(),
                         drawing=r.drawing_status if r is not None else None,
                         seeing=r.seeing_status if r is not None else None)

    def telemetry_doc(self) -> dict[str, Any]:
        """The telemetry snapshot as JSON-able data (the MQTT ``telemetry`` payload); a render
        node adds its clock offset against the states it follows."""
        doc = self.telemetry().doc()
        if self.role == "render":
            doc["clock_offset_ms"] = self.clock_offset_ms
        return doc

    def input_counters(self) -> dict[str, int | float]:
        """What came in over the network and how the event loop kept up: OSC datagrams by
        fate (applied, malformed, rejected, dropped), MQTT payloads by fate, loop stalls."""
        out: dict[str, int | float] = {"commands_applied": self.counters.get("commands"),
                                       "commands_rejected": self.counters.get("commands_rejected")}
        osc = self.osc_server
        if osc is not None:
            c = osc.counters
            out.update(osc_received=c.get("received"), osc_applied=c.get("applied"),
                       osc_malformed=c.total("malformed."), osc_rejected=c.total("rejected."),
                       osc_dropped=c.total("dropped."), osc_empty=c.get("empty_bundle"))
        link = self.mqtt
        if link is not None:
            c = link.counters
            out.update(mqtt_applied=c.get("applied"), mqtt_rejected=c.total("rejected."))
        lag = self.supervisor.lag
        if lag is not None:
            snap = lag.snapshot()
            out.update(loop_stalls=int(snap["stalls"]), loop_lag_p99_ms=round(1000 * snap["p99_s"], 1))
        return out

    def _make_osc(self) -> ControlTransport:
        from dreamstate.engine.control.osc import OscControlServer

        cfg = self.show.osc
        return OscControlServer(cfg.listen_host, cfg.listen_port, allow=cfg.allow)

    def _osc_companions(self, _transport: ControlTransport) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        cfg = self.show.osc
        return [("telemetry", self._osc_telemetry_loop(cfg.rate_hz))] if cfg.targets else []

    async def _osc_telemetry_loop(self, rate_hz: float) -> None:
        """The fixed address set at a steady rate (what TouchDesigner's OSC In CHOP wants);
        blinks go out as pulses when they happen; heartbeat and fps once a second."""

        cfg = self.show.osc
        tele = await self._open_telemetry([(t.host, t.port) for t in cfg.targets])
        self._tele = tele
        server = self.osc_server
        if server is not None:
            # refused messages are reported back on telemetry, without this machine's paths
            server.on_reject = lambda address, why: tele.error(address, self.public_text(why))
        period = 1.0 / rate_hz
        last_beat = 0.0
        blinks = (self.signal_stage.eeg.get() or EegSnapshot()).blinks
        try:
            while True:
                with tele.bundle():  # one packet per tick: values that belong together arrive together
                    blinks = self._osc_tick(tele, blinks, last_beat)
                now = time.monotonic()
                if now - last_beat >= 1.0:
                    last_beat = now
                await asyncio.sleep(period)
        finally:
            self._tele = None
            if server is not None:
                server.on_reject = None
            self.last_counters = self.input_counters()
            tele.close()

    def _osc_tick(self, tele: OscTelemetry, blinks: int, last_beat: float) -> int:
        """One telemetry tick: the fixed address set, blink pulses, and (once a second)
        heartbeat, fps and picture health. Returns the blink count sent so far."""
        snap = self.telemetry()
        e = snap.eeg
        if e.esense is not None:
            tele.esense(e.esense)
        if e.quality is not None:
            tele.signal(e.quality)
        if e.bands is not None:
            tele.bands(e.bands)
        if e.point is not None:
            tele.map_point(e.point)
        for _ in range(min(e.blinks - blinks, 10)):
            tele.blink()
        blinks = e.blinks
        if snap.state is not None:
            tele.state(snap.state)
        tele.scene(self.director.scene_name, self.director.chooser)
        if snap.drawing is not None:
            tele.drawing(snap.drawing.label, snap.drawing.score, snap.drawing.probability)
        if snap.seeing is not None:
            tele.seeing(snap.seeing.label, snap.seeing.score)
        if time.monotonic() - last_beat >= 1.0:
            tele.heartbeat()
            sup = self.supervisor
            failures = sum(v for k, v in sup.counters.snapshot().items() if k.endswith(".crashes"))
            tele.status(time.monotonic() - self._started, failures, sup.latest_error)
            if snap.stats is not None:
                tele.fps(snap.stats.display_fps)
                if snap.stats.health is not None:
                    h = snap.stats.health
                    tele.health(h.in_bounds, snap.stats.reseeds, list(h.measures.as_dict().values()))
        return blinks

    async def _open_telemetry(self, targets: list[tuple[str, int]]) -> OscTelemetry:
        """The telemetry sockets, retried with backoff while a target cannot be resolved or
        reached (a host name that is not known yet at boot): control goes on meanwhile."""
        from dreamstate.engine.control.osc import OscTelemetry
        from dreamstate.engine.core.backoff import Backoff

        retries = Backoff(base=1.0, cap=30.0).retries()
        last = ""
        while True:
            try:
                return await asyncio.to_thread(OscTelemetry, targets, labels=self.show.states.labels)
            except DreamstateError as exc:
                delay = retries.failed()
                self.counters.inc("osc_telemetry_errors")
                if str(exc) != last:
                    log.warning("OSC telemetry not sent: %s; retrying in %.0f s (control still works)", exc, delay)
                    last = str(exc)
                await asyncio.sleep(delay)

    def _make_mqtt(self) -> ControlTransport:
        from dreamstate.engine.control.mqtt import MqttLink

        return MqttLink(self.show.mqtt, resolve=lambda value, what: self.loaded.path(value, what=what),
                        clock=self.wall_clock)

    def _mqtt_companions(self, transport: ControlTransport) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        from dreamstate.engine.control.mqtt import MqttLink

        assert isinstance(transport, MqttLink)
        states = self._mqtt_follow_loop(transport) if self.role == "render" else self._mqtt_state_loop(transport)
        return [("telemetry", self._mqtt_telemetry_loop(transport)), ("state", states)]

    async def _mqtt_follow_loop(self, link: MqttLink) -> None:
        """role render: apply the eeg node's newest state at the wall-clock moment it names
        (``at`` = sent + ``lead_s``), so every projector changes together; a state whose moment
        has passed is applied at once and counted late when over 0.5 s."""
        import statistics

        version = 0
        offsets: collections.deque[float] = collections.deque(maxlen=50)
        pending = None
        while True:
            remote, version = link.remote_states.get_if_newer(version)
            if remote is not None:
                pending = remote
                offsets.append(remote.received - remote.sent)
                self.clock_offset_ms = round(1000.0 * statistics.median(offsets), 1)
            if pending is None:
                await asyncio.sleep(0.02)
                continue
            wait = pending.at - self.wall_clock()
            if wait > 0:  # never early: sleep until the moment, then apply
                await asyncio.sleep(min(wait, 0.02))
                continue
            self.states.put(pending.state)
            self.scenes_stage.tick()  # the scene changes now, not at the next tick
            applied = self.wall_clock()
            self.follow_lateness.append(-wait)
            self.followed.append((pending.state.label, pending.at, applied))
            self.counters.inc("states_followed")
            log.info("state followed", extra={"label": pending.state.label, "at": round(pending.at, 4),
                                              "applied": round(applied, 4), "late_ms": round(-1000 * wait, 1)})
            if -wait > 0.5:
                self.counters.inc("states_late")
            pending = None

    async def _mqtt_telemetry_loop(self, link: MqttLink) -> None:
        period = 1.0 / self.show.mqtt.telemetry_hz
        while True:
            await asyncio.sleep(period)
            link.publish_telemetry(self.status_doc())  # what the status file says: device, stages, errors, uptime too

    async def _mqtt_state_loop(self, link: MqttLink) -> None:
        """The retained state, published when its label changes (checked 20 times a second)."""
        version, label = 0, None
        while True:
            state, version = self.states.get_if_newer(version)
            if state is not None and state.label != label:
                label = state.label
                link.publish_state(state)
            await asyncio.sleep(0.05)

    # --- status -----------------------------------------------------------------------------------
    def status_doc(self) -> dict[str, Any]:
        """The status file's content: the telemetry snapshot plus the device, each stage's
        status and last error, and the uptime (JSON-able)."""
        doc = self.telemetry_doc()
        device = self.device_stage.device
        doc.update(role=self.role, clock_offset_ms=self.clock_offset_ms,
                   open=self.hours_stage.open if self.hours_stage is not None else None,
                   scene=self.director.scene_name, scene_chooser=self.director.chooser)
        doc.update(show=self.show.show.name, uptime_s=round(time.monotonic() - self._started, 1),
                   device=device.describe() if device is not None else None,
                   stages={name: str(status.value) for name, status in self.supervisor.status.items()},
                   last_errors=dict(self.supervisor.last_error), time=time.time())
        return doc

    def write_status(self, path: Path) -> None:
        """Write :meth:`status_doc` to ``path`` atomically (temporary file, then rename)."""
        import json

        tmp = path.with_name(f".{path.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.status_doc(), indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)

    async def _status_file_loop(self, path: Path, every_s: float) -> None:
        while True:
            try:
                await asyncio.to_thread(self.write_status, path)
            except OSError as exc:
                self.counters.inc("status_file_errors")
                if self.counters.get("status_file_errors") in (1, 100):
                    log.warning("cannot write the status file %s: %s (fix: a writable [status] file inside the "
                                "show folder)", path, exc.strerror or exc)
            await asyncio.sleep(every_s)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(10.0)
            state = self.latest_state
            extra: dict[str, Any] = {"scene": self.director.scene_name, "scene_chooser": self.director.chooser,
                                     "state": state.label if state else None}
            if self.renderer is not None:
                s = self.renderer.stats
                extra.update(display_fps=round(s.display_fps, 1), dream_steps_s=round(s.dream_steps_per_s, 2))
                if s.health is not None:
                    extra.update(picture="ok" if s.health.in_bounds else "out: " + ", ".join(s.health.out_of_bounds),
                                 reseeds=s.reseeds)
            extra.update({k: v for k, v in self.readings.dropped.items() if v})
            rec = self.recorder
            if rec is not None and rec.status()["state"] != "ok":
                st = rec.status()
                extra["recording"] = f"{st['state'].replace('_', ' ')}, {st['buffered_s']} s buffered"
            log.info("status", extra=extra)

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run the show until a critical stage ends or SIGINT/SIGTERM (``handle_signals``: the
        process's signals are this show's; False when several shows share a process, in tests)."""
        from dreamstate.engine.runtime.notify import start_watchdog

        def frames() -> int | None:
            r = self.renderer
            return r.stats.displayed_frames if r is not None else None

        def loop_ok() -> bool:
            lag = self.supervisor.lag
            return lag is None or lag.responsive(2.0)

        def picture_ok() -> bool:  # a reseed is normal; only failed reseeds in a row are not
            r = self.renderer
            h = r.stats.health if r is not None else None
            return h is None or h.recoverable

        def status() -> str:
            state = self.latest_state
            r = self.renderer
            fps = f", {r.stats.display_fps:.0f} fps" if r is not None else ""
            return f"scene {self.director.scene_name}, state {state.label if state else '-'}{fps}"

        dog = start_watchdog(frames, loop_ok, status, picture_ok)  # systemd Type=notify: READY=1, WATCHDOG=1
        try:
            await self.supervisor.run(handle_signals=handle_signals)
        finally:
            if dog is not None:
                await asyncio.to_thread(dog.stop)
            self.last_counters = self.input_counters()


class _TermOutsideTheShow(BaseException):  # not an Exception: no broad except may swallow it
    """SIGTERM while the show loads or ends, outside the supervisor's own handling."""


def _term_outside_the_show(_signum: int, _frame: object) -> None:
    raise _TermOutsideTheShow


def run_show(args: argparse.Namespace) -> int:
    """``dreamstate run``: validate the whole show, then run it until stopped.

    SIGTERM (``systemctl stop``) while the show is still being checked and its model compiled,
    or after it ended, stops the process with one log line and exit 0; while the show runs, the
    supervisor handles it (``engine.runtime.watch.ShutdownSignals``). Before, the default action
    killed it with exit 143 and nothing in the log."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _term_outside_the_show) if main else None
    try:
        return _run_show(args)
    except _TermOutsideTheShow:
        log.info("SIGTERM outside the running show (while it loaded or after it ended): exiting")
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_show(args: argparse.Namespace) -> int:
    loaded = load_show(args.show)
    show = loaded.show
    out = show.output
    updates: dict[str, Any] = {}
    if args.output:
        updates["kind"] = args.output
    if args.out:
        updates["path"] = args.out
    if args.device:
        updates["device"] = args.device
    if args.fullscreen:
        updates["fullscreen"] = True
    if updates:
        loaded = loaded.with_show(show.model_copy(update={"output": out.model_copy(update=updates)}))
        from dreamstate.engine.output.ndi import check_ndi
        from dreamstate.engine.render.checks import check_device

        # `--output ndi` and `--device cuda` ask for NDI and CUDA after the show's own check
        problems = check_ndi(loaded) + (check_device(loaded, "--device cuda") if args.device == "cuda" else [])
        if problems:
            raise ShowError(loaded.source, problems)
    for key, message in loaded.warnings:
        log.warning("show: %s: %s", key, message)
    opener: OutputFactory | None = None
    chord = getattr(args, "quit_chord", None)
    if getattr(args, "kiosk", False):
        from dreamstate.engine.output.window import WindowOutput

        def opener(given: LoadedShow) -> Output:
            """Kiosk: the fullscreen window (and the show's NDI source, if it asks for one), cursor
            hidden, only the chord quits. With no display yet the render stage waits and retries
            with backoff (X or Wayland often comes up after the unit starts); it never falls back
            to a video file."""
            from dreamstate.engine.output.factory import with_ndi

            cfg = given.show.output
            window = WindowOutput((int(cfg.size[0]), int(cfg.size[1])), display=cfg.display, fullscreen=True,
                                  vsync=cfg.vsync, hide_cursor=True, quit_chord=chord, scale=cfg.scale)
            return with_ndi(window, cfg)  # the window, and the show's NDI source beside it

    runtime = ShowRuntime(loaded, seconds=args.seconds, open_output=opener)
    log.info("show starting", extra={"show": loaded.show.show.name, "source": loaded.source,
                                     "kiosk": bool(getattr(args, "kiosk", False))})
    asyncio.run(runtime.run())
    crashed = {k: v for k, v in runtime.supervisor.counters.snapshot().items() if k.endswith(".crashes")}
    seen = {k: v for k, v in runtime.last_counters.items() if v}
    log.info("show ended", extra={"reason": runtime.supervisor.stop_reason, **crashed, **seen})
    return 0
