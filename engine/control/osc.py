"""OSC over UDP: a control server and a telemetry sender, for TouchDesigner and Max.

``OscControlServer`` listens on ``127.0.0.1:9000`` unless the show says otherwise. Every valid
message becomes a ``Command`` in a bounded control queue (oldest dropped and counted when the
show cannot keep up). A datagram that is not OSC, or a message with the wrong arguments, is
logged with the sender and the fix, counted, and dropped; the server keeps running.

``OscTelemetry`` sends a fixed set of addresses (none created at run time) with floats
normalised to 0..1 where that makes sense. Sending is lossy: a failed send is counted, never
retried, never blocking.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket, ParseError

from engine.channels import BoundedQueue
from engine.control.commands import Command, ControlError, parse_command
from engine.errors import NetworkError
from engine.metrics import Counters
from engine.records import BandPowers, EegState, ESense, MapPoint, SignalQuality

log = logging.getLogger("dreamstate.osc")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: OscControlServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.handle_datagram(data, addr)


class OscControlServer:
    """UDP OSC listener.

    After ``await start()``, ``address`` is the bound (host, port) and valid commands appear in
    ``commands``. After ``close()``, the socket is closed. Counters: ``received``, ``malformed``,
    ``rejected`` (valid OSC, invalid command).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9000, *, queue_size: int = 256) -> None:
        self.host = host
        self.port = port
        self.commands: BoundedQueue[Command] = BoundedQueue(queue_size, name="osc.control")
        self.counters = Counters()
        self._transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = (host, port)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self),
                                                               local_addr=(self.host, self.port))
        except OSError as exc:
            raise NetworkError(f"cannot listen for OSC on {self.host}:{self.port}: {exc.strerror}",
                               hint="pick a free [osc] listen_port, or stop the program using it",
            ) from exc
        self._transport = transport
        sock = transport.get_extra_info("socket")
        self.address = sock.getsockname()[:2]
        log.info("OSC control listening", extra={"address": f"{self.address[0]}:{self.address[1]}"})

    def handle_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.counters.inc("received")
        try:
            packet = OscPacket(data)
        except ParseError as exc:
            self.counters.inc("malformed")
            log.warning("dropped a datagram that is not OSC",
                        extra={"sender": f"{addr[0]}:{addr[1]}", "bytes": len(data), "error": str(exc),
                               "fix": "send OSC 1.0 messages (TouchDesigner OSC Out, Max udpsend)"})
            return
        for timed in packet.messages:
            msg = timed.message
            try:
                cmd = parse_command(msg.address, list(msg.params))
            except ControlError as exc:
                self.counters.inc("rejected")
                log.warning("rejected OSC message", extra={"sender": f"{addr[0]}:{addr[1]}", "error": str(exc)})
                continue
            if not self.commands.put_nowait(cmd):
                self.counters.inc("dropped")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def _message(address: str, args: Sequence[Any]) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


class OscTelemetry:
    """Sends state to every target. ``labels`` fixes the ``/dreamstate/state/<label>`` set."""

    def __init__(self, targets: Sequence[tuple[str, int]], labels: Sequence[str]) -> None:
        self.targets = list(targets)
        self.labels = list(labels)
        self.counters = Counters()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def _send(self, address: str, *args: Any) -> None:
        data = _message(address, args)
        for target in self.targets:
            try:
                self._sock.sendto(data, target)
                self.counters.inc("sent")
            except OSError as exc:  # lossy by design: count and carry on
                self.counters.inc("send_errors")
                if self.counters.get("send_errors") in (1, 100, 10000):
                    log.warning("OSC telemetry send failed", extra={"target": f"{target[0]}:{target[1]}",
                                                                    "error": str(exc)})

    def esense(self, e: ESense) -> None:
        self._send("/dreamstate/eeg/attention", e.attention / 100.0)
        self._send("/dreamstate/eeg/meditation", e.meditation / 100.0)

    def signal(self, q: SignalQuality) -> None:
        self._send("/dreamstate/eeg/signal", 1.0 - min(q.poor_signal, 200) / 200.0)

    def bands(self, b: BandPowers) -> None:
        total = float(sum(b.values)) or 1.0
        self._send("/dreamstate/eeg/bands", *[v / total for v in b.values])

    def blink(self) -> None:
        self._send("/dreamstate/eeg/blink", 1)

    def map_point(self, p: MapPoint) -> None:
        self._send("/dreamstate/map", float(p.x), float(p.y))

    def state(self, s: EegState) -> None:
        labels = self.labels
        index = labels.index(s.label) if s.label in labels else -1
        self._send("/dreamstate/state", index, s.label, float(s.confidence))
        for label in labels:
            self._send(f"/dreamstate/state/{label}", float(s.probabilities.get(label, 0.0)))

    def fps(self, fps: float) -> None:
        self._send("/dreamstate/render/fps", float(fps))

    def health(self, in_bounds: bool, reseeds: int, measures: Sequence[float | None]) -> None:
        """Picture health: ``/dreamstate/render/health`` f in-bounds (1/0), f reseeds so far;
        ``/dreamstate/render/measures`` the measures in ``engine.render.health.MEASURES`` order
        (0..1; motion is -1 before the first second)."""
        self._send("/dreamstate/render/health", 1.0 if in_bounds else 0.0, float(reseeds))
        self._send("/dreamstate/render/measures", *[(-1.0 if v is None else float(v)) for v in measures])

    def heartbeat(self) -> None:
        self._send("/dreamstate/heartbeat", 1)

    def close(self) -> None:
        self._sock.close()


__all__ = ["OscControlServer", "OscTelemetry"]
