"""Typed control: one command set (a union of dataclasses), decoded the same way for OSC and
MQTT, with ranges from the show schema and the wire's own types converted first. OSC messages
come from liblo's ``oscsend`` and telemetry is read by ``oscdump``: clients written by others."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from typing import Any

import pytest

from dreamstate.engine.control.commands import (
    COMMANDS,
    Blackout,
    CalibrateStart,
    CalibrateStop,
    ControlError,
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
    parse_command,
)
from dreamstate.engine.control.mqtt import MqttLink
from dreamstate.engine.control.osc import OscControlServer, OscTelemetry
from dreamstate.engine.control.transport import ControlTransport
from dreamstate.engine.core.params import scene_limits
from dreamstate.engine.core.records import EegState, ESense
from dreamstate.engine.core.show import MqttConfig

P = "/dreamstate/"


@pytest.mark.parametrize(("address", "args", "command"), [
    ("scene", ["calm"], SetScene("calm")),
    ("scene", [], SetScene("")),                # follow the EEG state again
    ("state/override", ["focused"], OverrideState("focused")),
    ("state/override", [], OverrideState("")),
    ("layer/block7", [0.5], SetLayer("block7", 0.5)),
    ("zoom", [1.02], SetZoom(1.02)),
    ("rotate", [-0.5], SetRotate(-0.5)),
    ("step", [1.5], SetStep(1.5)),
    ("octaves", [3], SetOctaves(3)),
    ("octaves", [3.0], SetOctaves(3)),          # TouchDesigner and Max send floats
    ("param/octave_scale", [1.6], SetParam("octave_scale", 1.6)),
    ("param/steps", [4.0], SetParam("steps", 4)),
    ("param/crossfade_s", [0], SetParam("crossfade_s", 0.0)),
    ("translate", [1.5, -2], SetTranslate(1.5, -2.0)),
    ("mask", ["masks/left.png"], SetMask("masks/left.png")),
    ("mask", [], SetMask("")),                  # dream everywhere again
    ("guide", ["guide.png"], SetGuide("guide.png")),
    ("image", [1], SetImage(1)),
    ("image", [1.0], SetImage(1)),
    ("image", ["pagoda.jpg"], SetImage("pagoda.jpg")),
    ("pause", [], Pause()),
    ("play", [], Play()),
    ("blackout", [], Blackout(True)),
    ("blackout", [False], Blackout(False)),    # OSC F
    ("blackout", [0], Blackout(False)),
    ("blackout", [1.0], Blackout(True)),
    ("calibrate/start", ["calm"], CalibrateStart("calm")),
    ("calibrate/stop", [], CalibrateStop()),
])
def test_every_address_decodes_to_its_typed_command(address: str, args: list[Any], command: object) -> None:
    got = parse_command(P + address, args)
    assert got == command and type(got) is type(command)
    for name, value in vars(command).items() if hasattr(command, "__dict__") else []:
        assert type(getattr(got, name)) is type(value)


def test_wire_numbers_become_the_schema_types() -> None:
    octaves = parse_command(P + "octaves", [4.0])
    assert isinstance(octaves, SetOctaves) and type(octaves.value) is int
    zoom = parse_command(P + "zoom", [1])
    assert isinstance(zoom, SetZoom) and type(zoom.value) is float
    blackout = parse_command(P + "blackout", [1])
    assert isinstance(blackout, Blackout) and blackout.on is True


@pytest.mark.parametrize(("address", "args", "match"), [
    ("octaves", [2.5], "integer"),
    ("image", [1.5], "not an integer"),
    ("blackout", [2], "not true/false"),
    ("blackout", ["yes"], "not true/false"),
    ("zoom", [True], "number"),                 # a bool is not a number on the wire
    ("zoom", [1.0, 2.0], "expects"),
    ("scene", [1], "not a string"),
    ("calibrate/start", [""], "empty"),
    ("pause", [1], "expects no arguments"),
    ("step", [float("nan")], "not a finite number"),
    ("layer/fire3", [float("inf")], "not a finite number"),
    ("dance", [1], "unknown OSC address"),
    ("param/", [1.0], "not a live dream parameter"),
    ("param/jitter", [1.0], "not a live dream parameter"),
    ("param/blend", [0.5], "cannot be set live"),
    ("param/steps", [2.5], "not an integer"),
    ("param/zoom", ["fast"], "is not a number"),
    ("translate", [1.0], "expects"),
])
def test_bad_messages_name_the_address_and_what_it_expects(address: str, args: list[Any], match: str) -> None:
    with pytest.raises(ControlError, match=match) as info:
        parse_command(P + address, args)
    assert "/dreamstate/" in str(info.value)


def test_ranges_are_the_show_schema_ranges_and_overshoots_are_clamped() -> None:
    """The decoder has no ranges of its own: the edges of the schema's range are the edges here.
    A value past an edge (a fader overshooting) is clamped to the nearest allowed value and the
    command says so in ``clamped``; a value inside is applied as sent."""
    import math

    from dreamstate.engine.control.commands import LIVE_PARAMS

    cases = [(SetZoom.ADDRESS, "zoom"), (SetStep.ADDRESS, "step"), (SetOctaves.ADDRESS, "octaves"),
             (SetRotate.ADDRESS, "rotate")] + [("param/" + name, name) for name in LIVE_PARAMS]
    for address, field in cases:
        limits = scene_limits(field)
        for edge, open_, inward in ((limits.lo, limits.lo_open, math.inf), (limits.hi, limits.hi_open, -math.inf)):
            if edge is None:
                continue
            beyond = edge - 7 if inward > 0 else edge + 7
            inside = (edge + (1 if inward > 0 else -1) if limits.kind is int else math.nextafter(edge, inward)) \
                if open_ else edge
            for sent in ([edge, beyond] if open_ else [beyond]):
                cmd = parse_command(P + address, [sent])
                value = cmd.value  # type: ignore[union-attr]
                assert value == inside and limits.contains(value), (address, sent, value)
                assert cmd.clamped == (("value", float(sent), float(inside)),)  # type: ignore[union-attr]
            assert parse_command(P + address, [inside]).clamped == ()  # type: ignore[union-attr]
    layer = parse_command(P + "layer/block2", [25.0])
    assert layer == SetLayer("block2", 10.0, clamped=(("weight", 25.0, 10.0),))
    moved = parse_command(P + "translate", [100.0, 3.0])
    assert moved == SetTranslate(64.0, 3.0, clamped=(("x", 100.0, 64.0),))


def test_every_command_class_has_an_address_and_a_docstring() -> None:
    addresses = [c.ADDRESS for c in COMMANDS]
    assert len(set(addresses)) == len(addresses) == 17
    assert all(c.__doc__ and c.__doc__.strip().startswith("``/dreamstate/") for c in COMMANDS)


def test_osc_and_mqtt_are_one_kind_of_transport() -> None:
    assert issubclass(OscControlServer, ControlTransport)
    assert issubclass(MqttLink, ControlTransport)
    link = MqttLink(MqttConfig(enabled=True, port=1))
    mqtt_cmds = []
    for topic, payload in (("zoom", b"1.02"), ("blackout", b"true"), ("octaves", b"3.0"), ("image", b"[2]")):
        link.handle_message(f"dreamstate/{link.cfg.installation}/control/{topic}", payload)
        mqtt_cmds += link.commands.drain()
    assert mqtt_cmds == [SetZoom(1.02), Blackout(True), SetOctaves(3), SetImage(2)]


needs_liblo = pytest.mark.skipif(shutil.which("oscsend") is None or shutil.which("oscdump") is None,
                                 reason="liblo-tools (oscsend/oscdump) not installed; scripts/setup.sh installs it")


@needs_liblo
async def test_oscsend_wire_types_become_typed_commands() -> None:
    """liblo's own encoder: T/F (no payload bytes), f for integers, i for floats, s strings,
    Max's and Pd's int64 (h) and double (d)."""
    server = OscControlServer("127.0.0.1", 0)
    await server.start()
    try:
        port = str(server.address[1])
        for address, types, *values in (
                ("/dreamstate/blackout", "T"), ("/dreamstate/blackout", "F"),
                ("/dreamstate/octaves", "f", "3.0"), ("/dreamstate/zoom", "i", "1"),
                ("/dreamstate/layer/block7", "f", "0.25"), ("/dreamstate/scene", "s", "calm"),
                ("/dreamstate/octaves", "d", "4.0"), ("/dreamstate/image", "h", "1"),
                ("/dreamstate/octaves", "f", "2.5")):
            await asyncio.to_thread(subprocess.run, ["oscsend", "127.0.0.1", port, address, types, *values],
                                    check=True, timeout=10)
        deadline = time.monotonic() + 5
        while len(server.commands) < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        got = server.commands.drain()
        assert got == [Blackout(True), Blackout(False), SetOctaves(3), SetZoom(1.0), SetLayer("block7", 0.25),
                       SetScene("calm"), SetOctaves(4), SetImage(1)]
        assert type(got[2].value) is int  # type: ignore[union-attr]
        assert server.counters.total("rejected.") == 1  # octaves 2.5
    finally:
        server.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_liblo
def test_oscdump_reads_the_telemetry() -> None:
    port = _free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # oscdump binds
        tele = OscTelemetry([("127.0.0.1", port)], labels=["calm", "focused"])
        tele.esense(ESense(40, 80, 0.0))
        tele.state(EegState("focused", {"calm": 0.25, "focused": 0.75}, 0.75, 0.0))
        tele.heartbeat()
        tele.close()
        time.sleep(0.5)
    finally:
        dump.terminate()
        out, _ = dump.communicate(timeout=10)
    messages = [line.split(" ", 1)[1] for line in out.splitlines() if " " in line]  # after the time tag
    assert "/dreamstate/eeg/attention f 0.400000" in messages, out
    assert "/dreamstate/eeg/meditation f 0.800000" in messages, out
    assert '/dreamstate/state isf 1 "focused" 0.750000' in messages, out
    assert "/dreamstate/state/focused f 0.750000" in messages, out


def test_osc_reference_is_generated_from_the_code() -> None:
    """docs/osc.md is what `python -m dreamstate.engine.tools.osc_doc` writes today."""
    from pathlib import Path

    from dreamstate.engine.tools.osc_doc import render

    doc = (Path(__file__).resolve().parents[1] / "docs" / "osc.md").read_text(encoding="utf-8")
    assert doc == render(), "docs/osc.md is stale: run `python -m dreamstate.engine.tools.osc_doc > docs/osc.md`"
    for cls in COMMANDS:
        assert f"`/dreamstate/{cls.ADDRESS}" in doc


def test_telemetry_sends_exactly_the_documented_addresses_and_types() -> None:
    from pythonosc.osc_message import OscMessage

    from dreamstate.engine.control.osc import TELEMETRY
    from dreamstate.engine.core.records import BandPowers, MapPoint, SignalQuality

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tele = OscTelemetry([rx.getsockname()], labels=["calm", "focused"])
    try:
        tele.esense(ESense(40, 80, 0.0))
        tele.signal(SignalQuality(20, 0.0))
        tele.bands(BandPowers((1, 2, 3, 4, 5, 6, 7, 8), 0.0))
        tele.blink()
        tele.map_point(MapPoint(0.25, 0.75, 0.0))
        tele.state(EegState("calm", {"calm": 0.6, "focused": 0.4}, 0.6, 0.0))
        tele.fps(59.9)
        tele.health(True, 2, [0.5] * 10)
        tele.heartbeat()
        tele.status(12.5, 1, "render: RenderError: no display")
        tele.error("/dreamstate/zoom", "zoom nan is out of range")
        tele.clamped("/dreamstate/zoom", "value", 5.0, 1.9999)
        tele.drawing("killer whale", -0.25, 0.78)
        tele.scene("calm", "state")
        tele.seeing("bell cote", 23.05)
        sent: dict[str, str] = {}
        for _ in range(19):  # eSense 2, signal, bands, blink, map, state + 2 labels, fps, health 2, beat,
            # status, error, clamped, drawing, scene, seeing
            m = OscMessage(rx.recv(4096))
            tags = "".join({float: "f", int: "i", str: "s"}[type(p)] for p in m.params)
            sent[m.address] = tags
    finally:
        tele.close()
        rx.close()
    documented = {a: t for a, t, _ in TELEMETRY}
    for address, tags in sent.items():
        key = "/dreamstate/state/<label>" if address.startswith("/dreamstate/state/") else address
        assert key in documented, f"{address} is sent but not in TELEMETRY (docs/osc.md)"
        want = documented[key]
        assert tags == want or (want.endswith("...") and tags.startswith(want[0])), (address, tags, want)
    assert {("/dreamstate/state/<label>" if a.startswith("/dreamstate/state/") else a) for a in sent} == set(documented)


async def test_senders_outside_the_allowlist_are_dropped_and_counted() -> None:
    """[osc] allow: a flood from a sender not on the list is dropped before decoding and
    counted; control from an allowed sender still takes effect (127.0.0.2 is another loopback
    address, so the test needs no second machine)."""
    server = OscControlServer("127.0.0.1", 0, allow=["127.0.0.1/32", "10.0.0.0/24"])
    await server.start()
    outsider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    insider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        outsider.bind(("127.0.0.2", 0))
        insider.bind(("127.0.0.1", 0))
        from pythonosc.osc_message_builder import OscMessageBuilder

        def msg(address: str, value: float) -> bytes:
            b = OscMessageBuilder(address)
            b.add_arg(value)
            return b.build().dgram

        for _ in range(200):
            outsider.sendto(msg("/dreamstate/zoom", 1.5), server.address)
        insider.sendto(msg("/dreamstate/zoom", 1.02), server.address)
        deadline = time.monotonic() + 5
        while server.counters.get("received") < 201 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert server.commands.drain() == [SetZoom(pytest.approx(1.02))]
        assert server.counters.get("dropped.not_allowed") == 200
        assert server.counters.get("messages") == 1  # the outsider's datagrams were never decoded
    finally:
        outsider.close()
        insider.close()
        server.close()


def test_allowlist_entries_are_checked_in_the_show() -> None:
    from pydantic import ValidationError

    from dreamstate.engine.core.show import OscConfig

    assert OscConfig(allow=["10.0.0.0/24", "192.168.1.7", "::1"]).allow is not None
    with pytest.raises(ValidationError, match="not an IP address or network"):
        OscConfig(allow=["studio-mac"])


def test_a_telemetry_tick_is_one_bundle() -> None:
    """Values that belong together arrive together: inside bundle(), every message goes out
    in one OSC bundle per target; oscdump and TouchDesigner read bundles."""
    from pythonosc.osc_packet import OscPacket

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tele = OscTelemetry([rx.getsockname()], labels=["calm", "focused"])
    try:
        with tele.bundle():
            tele.esense(ESense(40, 80, 0.0))
            tele.state(EegState("calm", {"calm": 0.6, "focused": 0.4}, 0.6, 0.0))
        data = rx.recv(65536)
        rx.settimeout(0.2)
        with pytest.raises(TimeoutError):
            rx.recv(65536)  # nothing else: one datagram
        with tele.bundle():
            pass  # an empty tick sends nothing
        with pytest.raises(TimeoutError):
            rx.recv(65536)
    finally:
        tele.close()
        rx.close()
    addresses = [t.message.address for t in OscPacket(data).messages]
    assert addresses == ["/dreamstate/eeg/attention", "/dreamstate/eeg/meditation", "/dreamstate/state",
                         "/dreamstate/state/calm", "/dreamstate/state/focused"]


def test_refused_commands_are_reported_back_at_most_ten_a_second() -> None:
    from pythonosc.osc_message import OscMessage

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.3)
    tele = OscTelemetry([rx.getsockname()], labels=["calm"])
    try:
        for i in range(50):
            tele.error("/dreamstate/zoom", f"zoom {i} is out of range (fix: 0.5 < zoom < 2)")
        got = []
        while True:
            try:
                got.append(OscMessage(rx.recv(4096)))
            except TimeoutError:
                break
    finally:
        tele.close()
        rx.close()
    assert len(got) == 10 and tele.counters.get("errors_dropped") == 40
    assert got[0].address == "/dreamstate/error" and got[0].params[0] == "/dreamstate/zoom"
    assert "fix:" in got[0].params[1]

