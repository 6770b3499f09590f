"""The show runtime: every part of dreamstate wired together under one supervisor.

``ShowRuntime(loaded)`` builds these stages (see ``engine.runtime``):

* ``device``: opens the show's headset backend and publishes every reading on a
  ``Broadcast`` (each consumer has its own bounded, counted queue);
* ``signal``: windows, features, map point and state (``engine.signal.pipeline``); the state
  goes to the scene director and to OSC/MQTT telemetry;
* ``scenes``: turns state, overrides and live edits into the current ``DreamRecipe`` and hands
  it to the renderer (latest wins) about 20 times a second;
* ``render``: the dream worker and the display loop (``engine.render.renderer``); critical, so
  closing the window ends the show;
* ``osc`` / ``mqtt`` (when enabled in the show): control in, telemetry out;
* ``record`` (when enabled): the crash-safe journal, finalised to FIF on shutdown;
* ``status``: one log line every 10 s with fps, state and error counters;
* ``timer`` (``--seconds``): ends the show.

A stage that crashes is restarted with backoff while the others carry on with the last good
state and frame.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import time
import typing
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from dreamstate.engine.control.commands import (
    Blackout,
    CalibrateStart,
    CalibrateStop,
    Command,
    OverrideState,
    Pause,
    Play,
    SetImage,
    SetLayer,
    SetOctaves,
    SetRotate,
    SetScene,
    SetStep,
    SetZoom,
)
from dreamstate.engine.control.transport import ControlTransport
from dreamstate.engine.core.background import watch_task
from dreamstate.engine.core.channels import BoundedQueue, Broadcast
from dreamstate.engine.core.errors import CalibrationError, DreamstateError
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import (
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    DreamRecipe,
    EegState,
    ESense,
    MapPoint,
    Reading,
    SignalQuality,
)
from dreamstate.engine.core.show import LoadedShow, Show
from dreamstate.engine.runtime import FunctionStage, Stage, Supervisor
from dreamstate.engine.runtime.showfile import load_show
from dreamstate.engine.scenes import SceneDirector

log = logging.getLogger("dreamstate.app")


def default_source_path() -> Path | None:
    """A photo that ships inside a dependency, for shows that name no image."""
    try:
        import sklearn.datasets

        p = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    except ImportError:  # pragma: no cover - sklearn is a dependency
        return None
    return p if p.is_file() else None


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


class DeviceStage(Stage):
    name = "device"

    def __init__(self, runtime: ShowRuntime) -> None:
        self.rt = runtime
        self.device: Any = None

    async def start(self) -> None:
        from dreamstate.devices.factory import open_device

        self.device = open_device(self.rt.show.device, self.rt.loaded)
        await self.device.open()
        log.info("device open", extra={"device": self.device.describe()})

    async def run(self) -> None:
        async for reading in self.device.readings():
            self.rt.readings.publish(reading)

    async def stop(self) -> None:
        """Close the device and tell the rest of the show it is gone (so the state becomes
        ``absent`` and the attract scene takes over while the supervisor retries)."""
        if self.device is not None:
            await self.device.close()
            self.device = None
        self.rt.readings.publish(DeviceEvent(DeviceEventKind.DISCONNECTED, time.monotonic(),
                                             detail="device stage stopped"))


class SignalStage(Stage):
    name = "signal"

    def __init__(self, runtime: ShowRuntime) -> None:
        from dreamstate.engine.signal.pipeline import SignalPipeline

        self.rt = runtime
        show = runtime.show
        self.queue: BoundedQueue[Reading] = runtime.readings.subscribe(16384, name="signal")
        self.pipeline = SignalPipeline(show.signal, show.map, show.states)
        self.pipeline.on_schedule_end = self.fit_soon
        self._fits: set[asyncio.Task[None]] = set()
        cal = show.states.calibration
        if show.states.mode == "calibrated" and cal.save:
            path = runtime.loaded.path(cal.save, what="states.calibration.save")
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
        rt = self.rt
        while True:
            reading = await self.queue.get()
            if isinstance(reading, Blink) and rt.osc_telemetry is not None:
                rt.osc_telemetry.blink()
            rt.on_reading(reading)
            for result in self.pipeline.feed(reading):
                rt.on_state(result.state)
                if result.point is not None:
                    rt.eeg["point"] = result.point
            state = self.pipeline.latest_state
            if state is not None and state is not rt.latest_state:  # e.g. absent on a device event
                rt.on_state(state)

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
        watch_task(task, log, counters=self.rt.counters)  # an unexpected error is logged, not lost
        self._fits.add(task)
        task.add_done_callback(self._fits.discard)

    def _fit_and_save(self) -> None:
        try:
            report = self.pipeline.fit_calibration()
        except CalibrationError as exc:
            log.warning("calibration not fitted yet: %s", exc)
            return
        log.info("calibration fitted", extra={"counts": report.counts, "accuracy": round(report.accuracy, 3)})
        cal = self.rt.show.states.calibration
        if cal.save:
            saved = self.pipeline.save_calibration(self.rt.loaded.path(cal.save, what="states.calibration.save"))
            log.info("calibration saved", extra={"file": str(saved)})


class RenderStage(Stage):
    name = "render"
    critical = True
    start_timeout = 300.0  # compiling a large model's dream step the first time

    def __init__(self, runtime: ShowRuntime) -> None:
        self.rt = runtime
        self.renderer: Any = None

    async def start(self) -> None:
        self.renderer = await asyncio.to_thread(self.rt.build_renderer)
        self.rt.renderer = self.renderer
        self.renderer.set_recipe(self.rt.current_recipe())

    async def run(self) -> None:
        await self.renderer.run()
        if self.renderer.quit_requested:
            log.info("window closed by the viewer")

    async def stop(self) -> None:
        if self.renderer is not None:
            self.renderer.stop()


class ShowRuntime:
    """Builds the stages of a show and runs them; see the module docstring."""

    def __init__(self, loaded: LoadedShow, *, seconds: float | None = None) -> None:
        self.loaded = loaded
        self.show: Show = loaded.show
        self.seconds = seconds
        self.counters = Counters()
        self.readings: Broadcast[Reading] = Broadcast("readings")
        self.director = SceneDirector(self.show)
        self.edits = LiveEdits()
        self.renderer: Any = None
        self.latest_state: EegState | None = None
        self.osc_telemetry: Any = None
        self.mqtt: Any = None
        self.osc_server: Any = None
        self.recorder: Any = None
        self.last_counters: dict[str, int | float] = {}
        self.eeg: dict[str, ESense | SignalQuality | BandPowers | MapPoint] = {}
        self._last_recipe: DreamRecipe | None = None
        self.signal_stage = SignalStage(self)
        self.supervisor = Supervisor(self._stages())

    # --- wiring ---------------------------------------------------------------------------------
    def _stages(self) -> list[Stage]:
        show = self.show
        stages: list[Stage] = [DeviceStage(self), self.signal_stage, RenderStage(self),
                               FunctionStage("scenes", self._scenes_loop), FunctionStage("status", self._status_loop)]
        if show.osc.enabled:
            stages.append(FunctionStage("osc", self._osc_loop))
        if show.mqtt.enabled:
            stages.append(FunctionStage("mqtt", self._mqtt_loop))
        if show.record.enabled:
            stages.append(FunctionStage("record", self._record_loop))
        if self.seconds is not None:
            seconds = self.seconds

            async def timer() -> None:
                await asyncio.sleep(seconds)

            stages.append(FunctionStage("timer", timer, critical=True, restart=False))
        return stages

    def scene_layers(self) -> list[str]:
        names: dict[str, None] = {}
        for scene in self.show.scenes.values():
            names.update(dict.fromkeys(scene.layers))
        return list(names)

    def build_renderer(self) -> Any:
        """Load the model (compiling or reusing its cached dream step) and make the renderer."""
        from dreamstate.engine.core.images import load_image
        from dreamstate.engine.output.factory import open_output
        from dreamstate.engine.render.checks import model_source
        from dreamstate.engine.render.health import HealthSettings
        from dreamstate.engine.render.renderer import Renderer
        from dreamstate.models.dream import DreamModel

        show = self.show
        out_cfg = show.output
        layers = self.scene_layers() or None
        model_ref = model_source(self.loaded)
        # Leave a core to the display thread and the event loop.
        threads = max(1, (os.cpu_count() or 2) - 1)
        model = DreamModel.load(model_ref, layers, device=out_cfg.device, threads=threads)
        log.info("dream model ready", extra={"model": model.name, "layers": list(model.layers),
                                             "provider": model.provider})
        guide_model = None
        if any(s.guide for s in show.scenes.values()):
            guide_model = DreamModel.load(model_ref, layers, guide=True, device=out_cfg.device, threads=threads)
        paths = [self.loaded.path(img, what=f"show.images[{i}]") for i, img in enumerate(show.show.images)]
        if not paths and default_source_path() is not None:
            paths = [p for p in [default_source_path()] if p is not None]
        sources = [load_image(p, what="source image") for p in paths]
        hc = show.health
        health = HealthSettings(enabled=hc.enabled, watchdog_s=hc.watchdog_s, limits=hc.limits())
        output = open_output(out_cfg, self.loaded)
        return Renderer(model, output, dream_size=out_cfg.dream_size, output_size=out_cfg.size, fps=out_cfg.fps,
                        source=sources[0] if sources else None, sources=sources,
                        resolve=lambda p: self.loaded.path(p, what="recipe path"),
                        guide_model=guide_model, health=health)

    # --- events ---------------------------------------------------------------------------------
    def on_reading(self, reading: Reading) -> None:
        """Keep the latest device values; telemetry sends them at its own steady rate."""
        if isinstance(reading, ESense):
            self.eeg["esense"] = reading
        elif isinstance(reading, SignalQuality):
            self.eeg["quality"] = reading
        elif isinstance(reading, BandPowers):
            self.eeg["bands"] = reading

    def on_state(self, state: EegState) -> None:
        changed = self.latest_state is None or state.label != self.latest_state.label
        self.latest_state = state
        self.director.on_state(state)
        if self.mqtt is not None and changed:
            self.mqtt.publish_state(state)

    def current_recipe(self) -> DreamRecipe:
        return self.edits.apply(self.director.recipe())

    def apply_command(self, cmd: Command) -> None:
        """One control command from OSC or MQTT. Bad values are logged, never raised."""
        try:
            self._apply(cmd)
            self.counters.inc("commands")
        except DreamstateError as exc:
            self.counters.inc("commands_rejected")
            log.warning("control command rejected: %s", exc, extra={"command": type(cmd).__name__})

    def _apply(self, cmd: Command) -> None:
        match cmd:
            case SetScene(name=name):
                self.director.set_scene(name)
                self.edits.clear()
            case OverrideState(label=label):
                self.director.override(label or None)
            case SetLayer(layer=layer, weight=weight):
                self.edits.layers[layer] = weight
            case SetZoom(value=v):
                self.edits.fields["zoom"] = v
            case SetRotate(value=v):
                self.edits.fields["rotate_deg"] = v
            case SetStep(value=v):
                self.edits.fields["step"] = v
            case SetOctaves(value=n):
                self.edits.fields["octaves"] = n
            case SetImage(image=image):
                images = self.show.show.images
                if isinstance(image, int):
                    if not 0 <= image < len(images):
                        raise DreamstateError(f"image index {image} is out of range",
                                              hint=f"the show lists {len(images)} image(s) in show.images")
                    image = images[image]
                self.loaded.path(image, what="/dreamstate/image")  # refuses paths outside the show
                self.edits.fields["source_image"] = image
            case Pause() | Play() | Blackout():
                self._transport(cmd)
            case CalibrateStart(label=label):
                self.signal_stage.calibrate(label)
            case CalibrateStop():
                self.signal_stage.calibrate(None)
            case _:
                typing.assert_never(cmd)

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

    # --- small loops ----------------------------------------------------------------------------
    async def _scenes_loop(self) -> None:
        while True:
            self.director.tick()
            recipe = self.current_recipe()
            if recipe != self._last_recipe and self.renderer is not None:
                self.renderer.set_recipe(recipe)
                self._last_recipe = recipe
            await asyncio.sleep(0.05)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(10.0)
            extra: dict[str, Any] = {"scene": self.director.scene_name,
                                     "state": self.latest_state.label if self.latest_state else None}
            if self.renderer is not None:
                s = self.renderer.stats
                extra.update(display_fps=round(s.display_fps, 1), dream_steps_s=round(s.dream_steps_per_s, 2))
                if s.health is not None:
                    extra.update(picture="ok" if s.health.in_bounds else "out: " + ", ".join(s.health.out_of_bounds),
                                 reseeds=s.reseeds)
            extra.update({k: v for k, v in self.readings.dropped.items() if v})
            if self.recorder is not None and self.recorder.status()["state"] != "ok":
                st = self.recorder.status()
                extra["recording"] = f"{st['state'].replace('_', ' ')}, {st['buffered_s']} s buffered"
            log.info("status", extra=extra)

    async def _control(self, transport: ControlTransport,
                       companions: Sequence[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = ()) -> None:
        """Wire one control transport: start it, run it beside its companion loops (telemetry)
        while applying its commands, close it whatever happens."""
        await transport.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(transport.run(), name=f"{transport.name}.run")
                for name, loop in companions:
                    tg.create_task(loop(), name=f"{transport.name}.{name}")
                while True:
                    self.apply_command(await transport.commands.get())
        finally:
            transport.close()

    async def _osc_loop(self) -> None:
        from dreamstate.engine.control.osc import OscControlServer, OscTelemetry

        cfg = self.show.osc
        server = OscControlServer(cfg.listen_host, cfg.listen_port)
        self.osc_server = server
        tele = await asyncio.to_thread(OscTelemetry, [(t.host, t.port) for t in cfg.targets],
                                       labels=self.show.states.labels)
        self.osc_telemetry = tele if cfg.targets else None
        try:
            companions = [("telemetry", lambda: self._osc_telemetry_loop(tele, cfg.rate_hz))] if cfg.targets else []
            await self._control(server, companions)
        finally:
            self.osc_telemetry = None
            self.last_counters = self.input_counters()
            tele.close()

    async def _osc_telemetry_loop(self, tele: Any, rate_hz: float) -> None:
        """The fixed address set at a steady rate (what TouchDesigner's OSC In CHOP wants);
        blinks go out as pulses when they happen; heartbeat and fps once a second."""
        period = 1.0 / rate_hz
        last_beat = 0.0
        while True:
            e, q, b, p = (self.eeg.get(k) for k in ("esense", "quality", "bands", "point"))
            if isinstance(e, ESense):
                tele.esense(e)
            if isinstance(q, SignalQuality):
                tele.signal(q)
            if isinstance(b, BandPowers):
                tele.bands(b)
            if isinstance(p, MapPoint):
                tele.map_point(p)
            if self.latest_state is not None:
                tele.state(self.latest_state)
            now = time.monotonic()
            if now - last_beat >= 1.0:
                last_beat = now
                tele.heartbeat()
                if self.renderer is not None:
                    stats = self.renderer.stats
                    tele.fps(stats.display_fps)
                    if stats.health is not None:
                        h = stats.health
                        tele.health(h.in_bounds, stats.reseeds, list(h.measures.as_dict().values()))
            await asyncio.sleep(period)

    async def _mqtt_loop(self) -> None:
        from dreamstate.engine.control.mqtt import MqttLink

        link = MqttLink(self.show.mqtt, resolve=lambda value, what: self.loaded.path(value, what=what))
        self.mqtt = link
        try:
            await self._control(link, [("telemetry", lambda: self._mqtt_telemetry_loop(link))])
        finally:
            self.mqtt = None

    def input_counters(self) -> dict[str, int | float]:
        """What came in over the network and how the event loop kept up: OSC datagrams by
        fate (applied, malformed, rejected, dropped), MQTT payloads by fate, loop stalls."""
        out: dict[str, int | float] = {}
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

    def telemetry_doc(self) -> dict[str, Any]:
        """One JSON-able snapshot: eSense and signal 0..1, map x y, state, fps."""
        doc: dict[str, Any] = {"scene": self.director.scene_name}
        e, q, p = (self.eeg.get(k) for k in ("esense", "quality", "point"))
        if isinstance(e, ESense):
            doc.update(attention=e.attention / 100.0, meditation=e.meditation / 100.0)
        if isinstance(q, SignalQuality):
            doc["signal"] = round(1.0 - min(q.poor_signal, 200) / 200.0, 3)
        if isinstance(p, MapPoint):
            doc["map"] = [round(p.x, 4), round(p.y, 4)]
        if self.latest_state is not None:
            doc.update(state=self.latest_state.label, confidence=round(self.latest_state.confidence, 3))
        if self.recorder is not None:
            doc["recording"] = self.recorder.status()
        doc["counters"] = self.input_counters()
        if self.renderer is not None:
            stats = self.renderer.stats
            doc["fps"] = round(stats.display_fps, 1)
            if stats.health is not None:
                doc["picture"] = {**stats.health.as_dict(), "reseeds": stats.reseeds}
        return doc

    async def _mqtt_telemetry_loop(self, link: Any) -> None:
        period = 1.0 / self.show.mqtt.telemetry_hz
        while True:
            await asyncio.sleep(period)
            link.publish_telemetry(self.telemetry_doc())

    async def _record_loop(self) -> None:
        from dreamstate.devices.recording import Recorder, journal_path_for, unrecovered_journals

        out = self.loaded.path(self.show.record.path, what="record.path")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = out.name.removesuffix(".gz").removesuffix(".fif").removesuffix("_raw")
        fif = out.with_name(f"{name}-{stamp}_raw.fif")
        journal = journal_path_for(fif)
        for old in unrecovered_journals(out.parent, exclude=journal):
            log.warning("an earlier recording did not finish: its journal %s is still there; "
                        "recover it with `dreamstate recover %s`", old, old, extra={"journal": str(old)})
        recorder = Recorder(journal, device=self.show.device.kind)
        self.recorder = recorder
        queue = self.readings.subscribe(65536, name="record")
        await recorder.start()
        try:
            while True:
                recorder.add(await queue.get())
        finally:
            self.recorder = None
            await asyncio.shield(self._finish_recording(recorder, fif))

    async def _finish_recording(self, recorder: Any, fif: Path) -> None:
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

    async def run(self) -> None:
        try:
            await self.supervisor.run()
        finally:
            self.last_counters = self.input_counters()


def run_show(args: argparse.Namespace) -> int:
    """``dreamstate run``: validate the whole show, then run it until stopped."""
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
    for key, message in loaded.warnings:
        log.warning("show: %s: %s", key, message)
    runtime = ShowRuntime(loaded, seconds=args.seconds)
    log.info("show starting", extra={"show": loaded.show.show.name, "source": loaded.source})
    asyncio.run(runtime.run())
    crashed = {k: v for k, v in runtime.supervisor.counters.snapshot().items() if k.endswith(".crashes")}
    seen = {k: v for k, v in runtime.last_counters.items() if v}
    log.info("show ended", extra={"reason": runtime.supervisor.stop_reason, **crashed, **seen})
    return 0
