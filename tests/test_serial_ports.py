"""Port discovery scoring and the `dreamstate devices` command (probing a real pty)."""

from __future__ import annotations

import termios

import pytest

from dreamstate.devices.ports import PortInfo, list_ports, make_port_info, probe_order, score_port
from dreamstate.engine.tools.cli import main
from tests.test_serial_pty import BaudHeadset, PtyHeadset


@pytest.mark.parametrize(("kwargs", "likely", "why"), [
    ({"device": "/dev/rfcomm0"}, True, "Bluetooth"),
    ({"device": "/dev/tty.MindWaveMobile-DevA"}, True, "mindwave"),
    ({"device": "COM5", "description": "Standard Serial over Bluetooth link (COM5)"}, True,
     "Bluetooth"),
    ({"device": "/dev/ttyUSB0", "description": "CP2102 USB to UART Bridge Controller",
      "vid": 0x10C4, "pid": 0xEA60}, True, "CP210x"),
    ({"device": "/dev/ttyUSB1", "vid": 0x0403, "pid": 0x6001}, True, "FTDI"),
    ({"device": "/dev/ttyACM0", "description": "Arduino Uno", "vid": 0x2341, "pid": 0x0043},
     False, ""),
    ({"device": "/dev/ttyS0"}, False, ""),
])
def test_scoring_says_why(kwargs: dict[str, object], likely: bool, why: str) -> None:
    info = make_port_info(**kwargs)  # type: ignore[arg-type]
    assert info.looks_like_neurosky is likely
    assert (why.lower() in " ".join(info.reasons).lower()) if likely else info.reasons == ()


def test_probe_order_prefers_named_ports() -> None:
    ports = [make_port_info("/dev/ttyUSB0", vid=0x0403, pid=0x6001),
             make_port_info("/dev/ttyS0"),
             make_port_info("/dev/rfcomm0", description="MindWave Mobile")]
    assert [p.device for p in probe_order(ports)] == ["/dev/rfcomm0", "/dev/ttyUSB0"]
    plain = [make_port_info("/dev/ttyS1"), make_port_info("/dev/ttyS0")]
    assert [p.device for p in probe_order(plain)] == ["/dev/ttyS0", "/dev/ttyS1"]
    assert score_port("/dev/ttyS0") == (0, ())
    assert make_port_info("x", vid=0x10C4, pid=0xEA60).vid_pid == "10C4:EA60"


def test_list_ports_on_this_machine() -> None:
    ports = list_ports()
    assert all(isinstance(p, PortInfo) and p.device for p in ports)
    assert [p.score for p in ports] == sorted((p.score for p in ports), reverse=True)


def test_devices_command_lists_ports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "serial ports" in out or "no serial ports found" in out


def test_devices_probe_finds_the_rate(capsys: pytest.CaptureFixture[str]) -> None:
    pty = PtyHeadset()
    try:
        with BaudHeadset(pty, termios.B115200):
            rc = main(["devices", "--port", pty.path, "--timeout", "0.4"])
    finally:
        pty.close()
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0
    assert "ThinkGear stream at 115200 baud" in out
    assert "at 57600 baud:" in out  # tried first, rejected


def test_devices_probe_reports_garbage(capsys: pytest.CaptureFixture[str]) -> None:
    pty = PtyHeadset()
    try:
        with BaudHeadset(pty, None):
            rc = main(["devices", "--port", pty.path, "--timeout", "0.3"])
    finally:
        pty.close()
    out = capsys.readouterr().out
    assert rc == 1
    assert "no ThinkGear stream" in out
    for rate in ("57600", "115200", "9600"):
        assert f"at {rate} baud" in out
