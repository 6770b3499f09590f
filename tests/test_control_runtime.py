"""What the show runtime does with typed commands (found by trying it as a TouchDesigner user):
a held scene can be released, bad images, layers and labels are refused when they arrive, and
rejections are counted and rate-limited in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.control.commands import (
    CalibrateStart,
    OverrideState,
    SetImage,
    SetLayer,
    SetScene,
    SetZoom,
)
from dreamstate.engine.core.images import save_image
from dreamstate.engine.core.records import EegState
from dreamstate.engine.runtime.app import ShowRuntime
from dreamstate.engine.runtime.showfile import load_show

SHOW = """
[show]
model = "starter"
images = ["a.png", "b.png"]
[scenes.calm]
layers = { block2 = 1.0 }
[scenes.focused]
layers = { block3 = 1.0 }
[scenes.attract]
layers = { block2 = 1.0 }
[output]
kind = "none"
"""


@pytest.fixture
def rt(tmp_path: Path) -> ShowRuntime:
    for name in ("a.png", "b.png"):
        save_image(tmp_path / name, np.full((32, 48, 3), 0.5, np.float32))
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "show.toml").write_text(SHOW)
    return ShowRuntime(load_show(tmp_path / "show.toml", deep=False))


def _state(label: str, t: float) -> EegState:
    return EegState(label, {label: 1.0}, 1.0, t)


def test_a_held_scene_is_released_by_an_empty_scene_or_an_override(rt: ShowRuntime) -> None:
    d = rt.director
    rt.apply_command(SetScene("calm"))
    d.on_state(_state("focused", 1.0))
    assert d.target_scene(1.0) == "calm"  # held
    rt.apply_command(SetScene(""))
    assert d.target_scene(1.0) == "focused"  # the state chooses again
    rt.apply_command(SetScene("calm"))
    rt.apply_command(OverrideState("focused"))
    assert d.target_scene(1.0) == "focused"  # an override releases the held scene
    assert rt.counters.get("commands_rejected") == 0


def test_images_are_checked_when_the_command_arrives(rt: ShowRuntime) -> None:
    for bad in ("missing.png", "notes.txt", "sub/../missing.png", "../outside.png", SetImage(7)):
        rt.apply_command(bad if isinstance(bad, SetImage) else SetImage(bad))
    assert rt.counters.get("commands_rejected") == 5
    assert "source_image" not in rt.edits.fields  # nothing half-applied: the watchdog can still reseed
    rt.apply_command(SetImage(1))
    rt.apply_command(SetImage("a.png"))
    assert rt.edits.fields["source_image"] == "a.png" and rt.counters.get("commands") == 2


def test_only_compiled_layers_can_be_set_live(rt: ShowRuntime, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        rt.apply_command(SetLayer("block4", 1.0))
    assert rt.edits.layers == {} and rt.counters.get("commands_rejected") == 1
    assert "block2" in caplog.text and "block3" in caplog.text  # the layers that can be set
    rt.apply_command(SetLayer("block3", 0.5))
    assert rt.edits.layers == {"block3": 0.5}


def test_labels_must_be_the_show_s_states(rt: ShowRuntime) -> None:
    rt.apply_command(OverrideState("bogus"))
    rt.apply_command(CalibrateStart("bogus"))
    assert rt.counters.get("commands_rejected") == 2
    rt.apply_command(OverrideState("absent"))
    rt.apply_command(OverrideState(""))
    assert rt.counters.get("commands_rejected") == 2


def test_rejections_are_rate_limited_and_cut_short_in_the_log(rt: ShowRuntime,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        for _ in range(500):
            rt.apply_command(SetScene("y" * 8000))
    lines = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert rt.counters.get("commands_rejected") == 500
    assert len(lines) <= 2 and all(len(r.getMessage()) < 600 for r in lines)
    assert rt.input_counters()["commands_rejected"] == 500


def test_empty_mqtt_payload_is_never_a_command() -> None:
    """An empty payload deletes a retained message: it must not pause or black out the show."""
    from dreamstate.engine.control.mqtt import MqttLink
    from dreamstate.engine.core.show import MqttConfig

    link = MqttLink(MqttConfig(enabled=True, port=1))
    for topic in ("pause", "blackout", "play", "zoom"):
        link.handle_message(f"dreamstate/gallery/control/{topic}", b"", retained=True)
    assert link.commands.drain() == [] and link.counters.get("ignored.empty") == 4
    link.handle_message("dreamstate/gallery/control/zoom", b"1.05")
    assert link.commands.drain() == [SetZoom(1.05)]


def test_negative_seconds_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from dreamstate.engine.tools.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", "--seconds", "-5"])
    assert info.value.code == 2 and "--seconds" in capsys.readouterr().err


async def test_an_unreachable_telemetry_target_leaves_control_working(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A target host that does not resolve (yet) is retried in the background with one clear
    line; OSC control goes on (it used to crash-loop the whole OSC stage)."""
    import asyncio
    import socket

    from pythonosc.osc_message_builder import OscMessageBuilder

    from dreamstate.models.dream import DreamModel

    for name in ("a.png", "b.png"):
        save_image(tmp_path / name, np.full((32, 48, 3), 0.5, np.float32))
    (tmp_path / "show.toml").write_text(
        SHOW + '[osc]\nenabled = true\nlisten_port = 0\ntargets = [{ host = "no-such-host.invalid", port = 7000 }]\n')
    model = DreamModel.load("starter", ["block2", "block3"])
    rt = ShowRuntime(load_show(tmp_path / "show.toml", deep=False), seconds=4.0,
                     load_model=lambda _l, _y, _g: model)
    with caplog.at_level(logging.WARNING):
        task = asyncio.create_task(rt.run())
        for _ in range(200):
            if rt.osc_server is not None and rt.osc_server.address[1]:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        b = OscMessageBuilder("/dreamstate/zoom")
        b.add_arg(1.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b.build().dgram, rt.osc_server.address)  # type: ignore[union-attr]
        await asyncio.wait_for(task, 30)
    assert rt.edits.fields.get("zoom") == pytest.approx(1.05)
    assert rt.supervisor.counters.get("osc.crashes") == 0
    lines = [r.getMessage() for r in caplog.records if "OSC telemetry not sent" in r.getMessage()]
    assert len(lines) == 1 and "no-such-host.invalid" in lines[0]


async def test_a_running_show_reports_refused_and_clamped_commands_on_its_telemetry(tmp_path: Path) -> None:
    """TouchDesigner hears why a control was refused: /dreamstate/error on the telemetry port,
    for a value that is not a number (refused by the decoder) and a layer the dream cannot use
    (refused by the runtime); a fader past the end of its range is applied clamped and
    reported on /dreamstate/clamped."""
    import asyncio
    import socket

    from pythonosc.osc_message_builder import OscMessageBuilder
    from pythonosc.osc_packet import OscPacket

    from dreamstate.models.dream import DreamModel

    for name in ("a.png", "b.png"):
        save_image(tmp_path / name, np.full((32, 48, 3), 0.5, np.float32))
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    target = f'{{ host = "127.0.0.1", port = {rx.getsockname()[1]} }}'
    (tmp_path / "show.toml").write_text(SHOW + f'[osc]\nenabled = true\nlisten_port = 0\ntargets = [{target}]\n')
    model = DreamModel.load("starter", ["block2", "block3"])
    rt = ShowRuntime(load_show(tmp_path / "show.toml", deep=False), seconds=4.0, load_model=lambda _l, _y, _g: model)
    task = asyncio.create_task(rt.run())
    try:
        for _ in range(200):
            if rt._tele is not None:
                break
            await asyncio.sleep(0.02)

        def msg(address: str, value: float) -> bytes:
            b = OscMessageBuilder(address)
            b.add_arg(value)
            return b.build().dgram

        assert rt.osc_server is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            await asyncio.sleep(0.3)  # a few telemetry ticks with the scene the state chose
            b = OscMessageBuilder("/dreamstate/scene")
            b.add_arg("focused")
            tx.sendto(b.build().dgram, rt.osc_server.address)
            await asyncio.sleep(0.2)  # held before the edits below, which then apply to it
            tx.sendto(msg("/dreamstate/zoom", float("nan")), rt.osc_server.address)
            tx.sendto(msg("/dreamstate/layer/block4", 1.0), rt.osc_server.address)
            tx.sendto(msg("/dreamstate/param/octave_scale", 9.0), rt.osc_server.address)
            tx.sendto(msg("/dreamstate/rotate", -50.0), rt.osc_server.address)
            for path in ("missing.png", "../outside.png"):
                b = OscMessageBuilder("/dreamstate/image")
                b.add_arg(path)
                tx.sendto(b.build().dgram, rt.osc_server.address)
        await asyncio.wait_for(task, 30)
        errors, clamped, scenes = [], [], []
        while True:
            try:
                data = rx.recv(65536)
            except BlockingIOError:
                break
            for t in OscPacket(data).messages:
                if t.message.address == "/dreamstate/error":
                    errors.append(t.message.params)
                elif t.message.address == "/dreamstate/clamped":
                    clamped.append(t.message.params)
                elif t.message.address == "/dreamstate/scene":
                    scenes.append(tuple(t.message.params))
    finally:
        rx.close()
    assert scenes[0][1] == "state" and scenes[-1] == ("focused", "manual"), scenes  # who chose the scene
    addresses = [e[0] for e in errors]
    assert "/dreamstate/zoom" in addresses and "/dreamstate/layer/block4" in addresses, errors
    assert any("not a finite" in e[1] for e in errors) and any("block2" in e[1] for e in errors)
    images = [e[1] for e in errors if e[0] == "/dreamstate/image"]
    assert len(images) == 2 and any("<show>" in e for e in images), images
    assert not any(str(tmp_path) in e[1] or str(tmp_path.resolve()) in e[1] for e in errors), errors  # no paths
    assert sorted(clamped) == [["/dreamstate/param/octave_scale", "value", 9.0, 3.0],
                               ["/dreamstate/rotate", "value", -50.0, -45.0]], clamped
    recipe = rt.current_recipe()
    assert recipe.octave_scale == 3.0 and recipe.rotate_deg == -45.0
    assert rt.counters.get("commands_clamped") == 2
