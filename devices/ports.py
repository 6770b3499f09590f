"""Serial port discovery: which ports exist and which look like a NeuroSky headset (and why).

``list_ports()`` asks pyserial (``serial.tools.list_ports``) and scores each port:

* a name or description that says MindWave / NeuroSky / ThinkGear / BrainWave (macOS names the
  paired MindWave Mobile ``/dev/tty.MindWaveMobile-DevA``): strong evidence;
* a Bluetooth serial port (Linux ``/dev/rfcomm*``, Windows "Standard Serial over Bluetooth
  link", macOS ``tty.*`` Bluetooth names): the MindWave Mobile pairs as SPP;
* the USB chip of NeuroSky's RF dongle (Silicon Labs CP210x, ``10C4:EA60``) or a USB-serial
  adapter that TGAM boards are wired to (FTDI, CH340, PL2303): weaker evidence.

Scoring only orders the probe; the ThinkGear checksums decide (see ``devices.serial_port``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KNOWN_USB: Final[dict[tuple[int, int], tuple[int, str]]] = {
    (0x10C4, 0xEA60): (3, "Silicon Labs CP210x (the chip in NeuroSky's MindWave USB dongle)"),
    (0x0403, 0x6001): (1, "FTDI FT232 USB-serial (TGAM boards are often wired to one)"),
    (0x0403, 0x6015): (1, "FTDI FT231X USB-serial (TGAM boards are often wired to one)"),
    (0x1A86, 0x7523): (1, "CH340 USB-serial (TGAM boards are often wired to one)"),
    (0x067B, 0x2303): (1, "Prolific PL2303 USB-serial (TGAM boards are often wired to one)"),
}
"""USB VID:PID -> (score, reason)."""

NAME_HINTS: Final = ("mindwave", "neurosky", "thinkgear", "brainwave", "mindset")
BLUETOOTH_HINTS: Final = ("rfcomm", "bluetooth", "serial over bluetooth")


@dataclass(frozen=True, slots=True)
class PortInfo:
    """One serial port and how much it looks like a NeuroSky headset (``score`` > 0)."""

    device: str
    description: str = ""
    hwid: str = ""
    vid: int | None = None
    pid: int | None = None
    manufacturer: str = ""
    product: str = ""
    score: int = 0
    reasons: tuple[str, ...] = ()

    @property
    def looks_like_neurosky(self) -> bool:
        return self.score > 0

    @property
    def vid_pid(self) -> str:
        if self.vid is None or self.pid is None:
            return ""
        return f"{self.vid:04X}:{self.pid:04X}"


def score_port(device: str, *, description: str = "", hwid: str = "", vid: int | None = None,
               pid: int | None = None, manufacturer: str = "",
               product: str = "") -> tuple[int, tuple[str, ...]]:
    """How much a port looks like a NeuroSky headset, and the reasons (for ``dreamstate
    devices``)."""
    score = 0
    reasons: list[str] = []
    text = " ".join((device, description, manufacturer, product)).lower()
    for hint in NAME_HINTS:
        if hint in text:
            score += 5
            reasons.append(f"name mentions {hint!r}")
            break
    for hint in BLUETOOTH_HINTS:
        if hint in text or hint in hwid.lower():
            score += 2
            reasons.append("Bluetooth serial port (the MindWave Mobile pairs as SPP)")
            break
    if vid is not None and pid is not None and (vid, pid) in KNOWN_USB:
        points, why = KNOWN_USB[(vid, pid)]
        score += points
        reasons.append(why)
    return score, tuple(reasons)


def make_port_info(device: str, *, description: str = "", hwid: str = "", vid: int | None = None,
                   pid: int | None = None, manufacturer: str = "",
                   product: str = "") -> PortInfo:
    score, reasons = score_port(device, description=description, hwid=hwid, vid=vid, pid=pid,
                                manufacturer=manufacturer, product=product)
    return PortInfo(device, description, hwid, vid, pid, manufacturer, product, score, reasons)


def list_ports() -> list[PortInfo]:
    """Every serial port pyserial sees, most NeuroSky-like first."""
    from serial.tools import list_ports as lp

    infos = []
    for p in lp.comports():
        desc = "" if p.description in (None, "n/a") else str(p.description)
        hwid = "" if p.hwid in (None, "n/a") else str(p.hwid)
        infos.append(make_port_info(str(p.device), description=desc, hwid=hwid, vid=p.vid,
                                    pid=p.pid, manufacturer=str(p.manufacturer or ""),
                                    product=str(p.product or "")))
    return sorted(infos, key=lambda i: (-i.score, i.device))


def probe_order(ports: list[PortInfo]) -> list[PortInfo]:
    """The ports ``port = "auto"`` probes: the NeuroSky-looking ones (best first); when none
    look like one, every port."""
    likely = [p for p in ports if p.looks_like_neurosky]
    return sorted(likely or ports, key=lambda i: (-i.score, i.device))
