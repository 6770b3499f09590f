"""OSC control and telemetry over real UDP on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from dreamstate.engine.control.commands import ControlError, OverrideState, SetLayer, SetScene, SetZoom, parse_command
from dreamstate.engine.control.osc import OscControlServer, OscTelemetry
from dreamstate.engine.core.records import BandPowers, EegState, ESense, SignalQuality


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
        assert got == [SetZoom(pytest.approx(1.02)), SetLayer("block3", 0.75), SetScene("calm"), OverrideState("")]
        assert server.counters.total("malformed.") == 1
        assert server.counters.total("rejected.") == 2
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
    ("/dreamstate/calibrate/start", [], "expects a string"),
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


# --- hostile input ----------------------------------------------------------------------------
import logging  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dreamstate.engine.control import oscwire  # noqa: E402


def _osc_string(s: bytes) -> bytes:
    s += b"\x00"
    return s + b"\x00" * (-len(s) % 4)


def _msg(address: bytes, tags: bytes = b",", payload: bytes = b"") -> bytes:
    return _osc_string(address) + _osc_string(tags) + payload


POISON_BUNDLE = b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", -4)  # froze python-osc for good


@pytest.mark.parametrize(("data", "reason"), [
    (POISON_BUNDLE, "bad_element_size"),
    (b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 0), "bad_element_size"),
    (b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 6) + b"/a\x00\x00", "bad_element_size"),
    (b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 1 << 30), "bad_element_size"),
    (_msg(b"/dream\xffstate/zoom", b",f", struct.pack(">f", 1.0)), "bad_address"),
    (_msg(b"/dreamstate/zoom", b"," + b"[" * 2000 + b"]" * 2000), "too_deep"),
    (_msg(b"/dreamstate/zoom", b",f"), "truncated"),
    (_msg(b"/dreamstate/zoom", b",q", b"\x00" * 4), "unknown_type_tag"),
    (_msg(b"/dreamstate/zoom", b",b", struct.pack(">i", -1)), "bad_blob"),
    (b"/dreamstate/zoom", "unterminated_string"),
    (b"/ab\x00\x00", "bad_padding"),
    (b"\x00\x01not osc at all..", "not_osc"),
])
def test_hostile_datagrams_are_named_and_counted(data: bytes, reason: str) -> None:
    with pytest.raises(oscwire.OscDecodeError) as err:
        oscwire.decode(data)
    assert err.value.reason == reason
    server = OscControlServer()
    server.handle_datagram(data, ("127.0.0.1", 5000))
    assert server.counters.get(f"malformed.{reason}") == 1


def _bundle(*elements: bytes, depth_tag: bytes = b"#bundle\x00") -> bytes:
    return depth_tag + b"\x00" * 8 + b"".join(struct.pack(">i", len(e)) + e for e in elements)


def test_bundles_nested_and_empty_are_bounded_and_counted() -> None:
    zoom = _msg(b"/dreamstate/zoom", b",f", struct.pack(">f", 1.05))
    assert [m.address for m in oscwire.decode(_bundle(_bundle(zoom), zoom))] == ["/dreamstate/zoom"] * 2
    deep = zoom
    for _ in range(oscwire.MAX_BUNDLE_DEPTH + 1):
        deep = _bundle(deep)
    with pytest.raises(oscwire.OscDecodeError, match="deeper"):
        oscwire.decode(deep)
    server = OscControlServer()
    server.handle_datagram(_bundle(), ("127.0.0.1", 1))
    assert server.counters.get("empty_bundle") == 1


# Structured junk: real OSC pieces with random sizes, tags and nesting, plus raw bytes.
_tags = st.text(alphabet=",ifsbhtdcrmTFNI[]qXZ", max_size=40).map(lambda t: t.encode())
_pieces = st.one_of(
    st.binary(max_size=64),
    st.builds(_msg, st.sampled_from([b"/dreamstate/zoom", b"/dreamstate/scene", b"/x", b"/dream\xffstate"]),
              _tags, st.binary(max_size=48)),
    st.integers(min_value=-(2**31), max_value=2**31 - 1).map(lambda n: struct.pack(">i", n)),
    st.just(b"#bundle\x00" + b"\x00" * 8),
)
_datagrams = st.one_of(st.binary(max_size=512), st.lists(_pieces, max_size=12).map(b"".join))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_datagrams)
def test_any_datagram_is_applied_or_counted_and_returns(data: bytes) -> None:
    """Whatever arrives: the handler returns, and the datagram is in exactly one place."""
    server = OscControlServer(queue_size=1024)
    t0 = time.perf_counter()
    server.handle_datagram(data, ("127.0.0.1", 9))
    elapsed = time.perf_counter() - t0
    c = server.counters
    assert c.get("received") == 1
    outcome = c.total("malformed.") + c.get("empty_bundle") + (1 if c.get("messages") else 0)
    assert outcome == 1, c.snapshot()
    assert c.get("messages") == c.get("applied") + c.total("rejected.") + c.total("dropped.")
    assert elapsed < 1.0  # never a loop (speed itself is measured by `dreamstate bench osc`)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_decode_walks_forward_on_any_bytes(data: bytes) -> None:
    try:
        msgs = oscwire.decode(data)
    except oscwire.OscDecodeError as exc:
        assert exc.reason and str(exc)
    else:
        assert len(msgs) <= oscwire.MAX_MESSAGES


async def test_poison_bundle_over_udp_never_blocks_the_loop_and_control_goes_on() -> None:
    server = OscControlServer("127.0.0.1", 0)
    await server.start()
    try:
        host, port = server.address
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client = SimpleUDPClient(host, port)
        lags: list[float] = []
        for _ in range(20):
            raw.sendto(POISON_BUNDLE, (host, port))
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)
        client.send_message("/dreamstate/zoom", 1.02)
        await _wait_for(lambda: len(server.commands) == 1)
        assert server.counters.get("malformed.bad_element_size") == 20
        assert max(lags) < 0.5
        raw.close()
        client.close()
    finally:
        server.close()


def test_malformed_floods_log_a_summary_not_a_line_each(caplog: pytest.LogCaptureFixture) -> None:
    server = OscControlServer()
    clock = [0.0]
    server.limiter.clock = lambda: clock[0]
    with caplog.at_level(logging.INFO, logger="dreamstate.osc"):
        for i in range(10_000):
            clock[0] = i * 0.001  # 10,000 datagrams over 10 s
            server.handle_datagram(b"\x00junk!!!" * (1 + i % 3), ("10.0.0.9", 4000 + i % 7))
        unknown = _msg(b"/dreamstate/zoom", b"," + b"q" * 1000)
        server.handle_datagram(unknown, ("10.0.0.9", 4000))
        long_string = _msg(b"/dreamstate/scene", b",i", struct.pack(">i", 3))
        server.handle_datagram(_msg(b"/dreamstate/" + b"x" * 60_000, b",i", struct.pack(">i", 1)), ("10.0.0.9", 1))
        server.handle_datagram(long_string, ("10.0.0.9", 1))
        clock[0] = 30.0
        server.limiter.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) <= 8, lines
    assert any("9999 more" in line for line in lines), lines
    assert max(len(line) for line in lines) < 400
    assert server.counters.get("malformed.not_osc") == 10_000
    assert server.counters.get("malformed.unknown_type_tag") == 1


def test_bench_osc_flood_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark's short version: every valid command applied under a malformed flood."""
    from dreamstate.engine.tools.cli import main as cli_main

    assert cli_main(["bench", "osc-flood", "--seconds", "2", "--rate", "500", "--valid", "40"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "applied 40 of 40 valid commands" in out
    assert "log lines per 1,000 malformed datagrams" in out and "loop lag p99" in out


def test_telemetry_sockets_bind_to_the_interface_they_send_from() -> None:
    """Never 0.0.0.0: loopback targets get a socket bound to 127.0.0.1."""
    tele = OscTelemetry([("127.0.0.1", 7000), ("127.0.0.1", 7001)], labels=["calm"])
    try:
        assert [host for host, _ in tele.local_addresses] == ["127.0.0.1"]
    finally:
        tele.close()
