"""OSC control and telemetry over real UDP on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from engine.control.commands import Command, ControlError, parse_command
from engine.control.osc import OscControlServer, OscTelemetry
from engine.records import BandPowers, EegState, ESense, SignalQuality


async def _wait_for(cond, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_control_server_parses_commands_and_survives_garbage() -> None:
    server = OscControlServer("127.0.0.1", 0)
    await server.start()
    try:
        host, port = server.address
        assert host == "127.0.0.1"
        client = SimpleUDPClient(host, port)
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        raw.sendto(b"\x00\x01garbage that is not OSC", (host, port))
        client.send_message("/dreamstate/zoom", "fast")        # wrong type
        client.send_message("/dreamstate/nope", 1.0)           # unknown address
        client.send_message("/dreamstate/zoom", 1.02)
        client.send_message("/dreamstate/layer/block3", 0.75)
        client.send_message("/dreamstate/scene", "calm")
        client.send_message("/dreamstate/state/override", "")
        await _wait_for(lambda: len(server.commands) == 4)
        got = server.commands.drain()
        assert got == [Command("zoom", pytest.approx(1.02)), Command("layer", 0.75, target="block3"),
                       Command("scene", "calm"), Command("override", "")]
        assert server.counters.get("malformed") == 1
        assert server.counters.get("rejected") == 2
        raw.close()
        client.close()
    finally:
        server.close()


async def test_listen_port_in_use_gives_clear_error() -> None:
    a = OscControlServer("127.0.0.1", 0)
    await a.start()
    try:
        b = OscControlServer("127.0.0.1", a.address[1])
        with pytest.raises(Exception, match="cannot listen for OSC"):
            await b.start()
    finally:
        a.close()


@pytest.mark.parametrize(("address", "args", "match"), [
    ("/dreamstate/octaves", [2.5], "integer"),
    ("/dreamstate/zoom", [float("nan")], "out of range"),
    ("/dreamstate/layer/", [1.0], "layer name"),
    ("/other/zoom", [1.0], "start with /dreamstate"),
    ("/dreamstate/calibrate/start", [], "one string"),
])
def test_bad_commands_name_the_address(address: str, args: list[object], match: str) -> None:
    with pytest.raises(ControlError, match=match):
        parse_command(address, args)


def test_telemetry_sends_fixed_normalised_addresses() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tele = OscTelemetry([rx.getsockname()], labels=["calm", "focused"])
    tele.esense(ESense(40, 80, 0.0))
    tele.signal(SignalQuality(200, 0.0))
    tele.bands(BandPowers((1, 1, 1, 1, 1, 1, 1, 1), 0.0))
    tele.state(EegState("focused", {"calm": 0.2, "focused": 0.8}, 0.8, 0.0))
    got = {}
    for _ in range(7):
        m = OscMessage(rx.recv(2048))
        got[m.address] = list(m.params)
    assert got["/dreamstate/eeg/attention"] == [pytest.approx(0.4)]
    assert got["/dreamstate/eeg/meditation"] == [pytest.approx(0.8)]
    assert got["/dreamstate/eeg/signal"] == [pytest.approx(0.0)]
    assert got["/dreamstate/eeg/bands"] == [pytest.approx(0.125)] * 8
    assert got["/dreamstate/state"][:2] == [1, "focused"]
    assert got["/dreamstate/state/calm"] == [pytest.approx(0.2)]
    assert got["/dreamstate/state/focused"] == [pytest.approx(0.8)]
    tele.close()
    rx.close()
