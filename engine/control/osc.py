"""OSC over UDP: a control server and a telemetry sender, for TouchDesigner and Max.

``OscControlServer`` listens on ``127.0.0.1:9000`` unless the show says otherwise. Every valid
message becomes a ``Command`` in a bounded control queue (oldest dropped and counted when the
show cannot keep up). Datagrams are decoded by the bounded decoder of
:mod:`engine.control.oscwire`, whatever they contain; a datagram that is not OSC, or a message
with the wrong arguments, is counted by reason and logged with the sender and the fix (one
line per kind per interval, then a summary); the server keeps running.

``OscTelemetry`` sends a fixed set of addresses (none created at run time) with floats
normalised to 0..1 where that makes sense. Sending is lossy: a failed send is counted, never
retried, never blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder

from dreamstate.engine.control import oscwire
from dreamstate.engine.control.commands import Command, ControlError, parse_command
from dreamstate.engine.control.transport import ControlTransport
from dreamstate.engine.core.channels import BoundedQueue
from dreamstate.engine.core.errors import NetworkError
from dreamstate.engine.core.logs import LogLimiter
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import BandPowers, EegState, ESense, MapPoint, SignalQuality

log = logging.getLogger("dreamstate.osc")


ERRORS_PER_S = 10  # refused-command reports sent back on telemetry, per second
RCVBUF_BYTES = 4 << 20  # a burst of ~16,000 small datagrams waits in the kernel, not on the wire
DRAIN_MAX = 512  # datagrams per wake-up
DRAIN_BUDGET_S = 0.003  # ... or this much time, whichever comes first: the loop never waits longer


class OscControlServer(ControlTransport):
    """UDP OSC listener for a network where anyone can send.

    After ``await start()``, ``address`` is the bound (host, port) and valid commands appear in
    ``commands`` (bounded; the oldest are dropped and counted when the show falls behind).
    After ``close()`` the socket is closed.

    The receive path is cheap and bounded: a non-blocking socket with a large ``SO_RCVBUF``
    is drained in batches (at most ``DRAIN_MAX`` datagrams or ``DRAIN_BUDGET_S`` per wake-up of
    the event loop), and every datagram goes through the bounded decoder
    (:mod:`engine.control.oscwire`), never python-osc's parser. Each datagram ends in exactly
    one place: ``malformed.<reason>``, ``empty_bundle``, or its messages; each message ends as
    ``applied`` (queued for the show), ``rejected.<reason>`` or ``dropped.queue_full``. With
    ``allow`` (addresses or networks), a datagram from any other sender ends as
    ``dropped.not_allowed`` before it is decoded.
    ``received`` and ``messages`` count what came in. Bad input is logged through a
    :class:`~engine.logs.LogLimiter`: one line per kind per 10 s, then a summary.
    """

    name = "osc"

    def __init__(self, host: str = "127.0.0.1", port: int = 9000, *, queue_size: int = 256,
                 allow: Sequence[str] | None = None) -> None:
        self.host = host
        self.port = port
        self.allow = None if allow is None else [ipaddress.ip_network(a, strict=False) for a in allow]
        self.commands: BoundedQueue[Command] = BoundedQueue(queue_size, name="osc.control")
        self.counters = Counters()
        self.address: tuple[str, int] = (host, port)
        self.limiter = LogLimiter(log)
        self.on_reject: Callable[[str, str], None] | None = None
        """Told (address, why) for each refused message: the runtime echoes it on telemetry."""
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
            sock.setblocking(False)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise NetworkError(f"cannot listen for OSC on {self.host}:{self.port}: {exc.strerror}",
                               hint="pick a free [osc] listen_port, or stop the program using it",
            ) from exc
        self._sock, self._loop = sock, loop
        self.address = sock.getsockname()[:2]
        loop.add_reader(sock.fileno(), self._drain)
        if self.allow is None and not ipaddress.ip_address(self.address[0]).is_loopback:
            log.warning("OSC control listens on %s with no [osc] allow: any machine that reaches it can control "
                        "the show (fix: list the control machines in [osc] allow)", self.address[0])
        log.info("OSC control listening", extra={"address": f"{self.address[0]}:{self.address[1]}",
                                                 "rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)})

    async def run(self) -> None:
        """Datagrams are drained by the event loop's reader callback (see ``start``); this only
        waits, so the server has the same lifecycle as every ``ControlTransport``."""
        await asyncio.Event().wait()

    def _drain(self) -> None:
        sock = self._sock
        if sock is None:
            return
        deadline = time.perf_counter() + DRAIN_BUDGET_S
        for _ in range(DRAIN_MAX):
            try:
                data, addr = sock.recvfrom(oscwire.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable surfaced on a UDP socket
                self.counters.inc("socket_errors")
                self.limiter.report("socket_error", f"OSC socket error: {exc}")
                break
            self.handle_datagram(data, addr)
            if time.perf_counter() > deadline:
                break
        self.limiter.flush()

    def _allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allow or [])

    def handle_datagram(self, data: bytes, addr: tuple[str, int] | tuple[Any, ...]) -> None:
        """Decode one datagram and queue its commands (see the class docstring)."""
        self.counters.inc("received")
        sender = f"{addr[0]}:{addr[1]}"
        if self.allow is not None and not self._allowed(str(addr[0])):
            self.counters.inc("dropped.not_allowed")
            self.limiter.report("OSC datagrams from senders not in [osc] allow",
                                f"dropped an OSC datagram from {sender}, which is not in [osc] allow", sender=sender,
                                fix=f"add {addr[0]} (or its network) to [osc] allow if it should control the show")
            return
        try:
            messages = oscwire.decode(data)
        except oscwire.OscDecodeError as exc:
            self.counters.inc(f"malformed.{exc.reason}")
            self.limiter.report(f"malformed OSC datagrams ({exc.reason})",
                                f"dropped a malformed OSC datagram from {sender}: {exc}",
                                sender=sender, bytes=len(data), example=data[:32],
                                fix="send OSC 1.0 messages (TouchDesigner OSC Out, Max udpsend)")
            return
        if not messages:
            self.counters.inc("empty_bundle")
            self.limiter.report("empty OSC bundles", f"ignored an empty OSC bundle from {sender}", sender=sender)
            return
        for msg in messages:
            self.counters.inc("messages")
            try:
                cmd = parse_command(msg.address, list(msg.args))
            except ControlError as exc:
                reason = "unknown_address" if "unknown OSC address" in str(exc) else "bad_args"
                self.counters.inc(f"rejected.{reason}")
                self.limiter.report(f"rejected OSC messages ({reason})",
                                    f"rejected OSC message from {sender}: {exc}", sender=sender,
                                    example=f"{msg.address} {msg.args!r}")
                if self.on_reject is not None:
                    self.on_reject(msg.address, str(exc))
                continue
            if self.commands.put_nowait(cmd):
                self.counters.inc("applied")
            else:
                self.counters.inc("dropped.queue_full")
                self.limiter.report("OSC commands dropped (queue full)",
                                    "the show is not keeping up with OSC control; dropped the oldest command",
                                    fix="send fewer control messages per second")

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self.limiter.flush(float("inf"))


def _message(address: str, args: Sequence[Any]) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def source_address(target: tuple[str, int]) -> str:
    """The local address this machine sends to ``target`` from (the kernel's route choice:
    a connected UDP socket sends nothing), 127.0.0.1 for local targets."""
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(target)
        except OSError as exc:
            raise NetworkError(f"OSC telemetry target {target[0]}:{target[1]} cannot be reached: {exc.strerror}",
                               hint="check the [[osc.targets]] host; the machine needs a route to it") from None
        return str(probe.getsockname()[0])


TELEMETRY: tuple[tuple[str, str, str], ...] = (
    ("/dreamstate/eeg/attention", "f", "eSense attention 0..1 (ThinkGear 0..100 / 100)"),
    ("/dreamstate/eeg/meditation", "f", "eSense meditation 0..1"),
    ("/dreamstate/eeg/signal", "f", "signal quality 0..1 (1 - POOR_SIGNAL/200; 0 = off the head)"),
    ("/dreamstate/eeg/bands", "ffffffff", "the 8 ThinkGear band powers (delta, theta, low/high alpha, "
                                          "low/high beta, low/mid gamma) as shares of their sum"),
    ("/dreamstate/eeg/blink", "i", "1 on each blink (a pulse)"),
    ("/dreamstate/map", "ff", "the current window's place on the 2D map, x y in 0..1; silent until the map's "
     "first fit (`[map] reference_size` accepted windows: about a minute at the defaults, longer while poor "
     "signal rejects windows)"),
    ("/dreamstate/state", "isf", "state index in states.labels (-1: absent or not listed), label, confidence 0..1"),
    ("/dreamstate/state/<label>", "f", "probability 0..1, one address per label in states.labels"),
    ("/dreamstate/render/fps", "f", "display frames per second (once a second)"),
    ("/dreamstate/render/health", "ff", "picture in bounds (1/0), reseeds so far (once a second)"),
    ("/dreamstate/render/measures", "f...", "picture measures in engine.render.health.MEASURES order, 0..1 "
                                            "(motion -1 before the first second)"),
    ("/dreamstate/scene", "ss", "the scene on screen (the crossfade's target) and who chose it: state, override, "
                                "manual (/dreamstate/scene NAME) or attract"),
    ("/dreamstate/drawing", "sff", "while a drawing scene plays: the class it is drawing, its score (log-probability "
                                   "averaged over jittered views, <= 0) and exp(score) 0..1"),
    ("/dreamstate/seeing", "sf", "while a scene shows what the network sees: the class of the map on screen and "
                                 "its logit for the frame"),
    ("/dreamstate/heartbeat", "i", "1, once a second"),
    ("/dreamstate/status", "fis", "uptime in seconds, stage failures so far (all stages), the latest failure as "
                                  "'stage: error' ('' when none); once a second"),
    ("/dreamstate/error", "ss", "a refused control message: its address, and why with the fix (at most 10 a second)"),
    ("/dreamstate/clamped", "ssff", "a control value outside its range, applied clamped: address, argument, "
                                    "requested, applied (at most 10 a second, with /dreamstate/error)"),
)
"""Every address ``OscTelemetry`` sends: (address, OSC type tags, meaning). ``docs/osc.md`` is
generated from it and the tests check that nothing else is sent."""


class OscTelemetry:
    """Sends state to every target. ``labels`` fixes the ``/dreamstate/state/<label>`` set."""

    def __init__(self, targets: Sequence[tuple[str, int]], labels: Sequence[str]) -> None:
        self.targets = list(targets)
        self.labels = list(labels)
        self.counters = Counters()
        # One socket per local address the targets are reached from, bound to that address (never
        # 0.0.0.0): 127.0.0.1 when every target is local. Resolving may do DNS: build this off the loop.
        self._batch: list[Any] | None = None  # messages held by bundle()
        self._error_window = 0.0
        self._errors_in_window = 0
        self._socks: dict[str, socket.socket] = {}
        self._route: list[tuple[tuple[str, int], socket.socket]] = []
        for target in self.targets:
            local = source_address(target)
            sock = self._socks.get(local)
            if sock is None:
                sock = socket.socket(socket.AF_INET6 if ":" in local else socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((local, 0))
                sock.setblocking(False)
                self._socks[local] = sock
            self._route.append((target, sock))

    @property
    def local_addresses(self) -> list[tuple[str, int]]:
        """Where the telemetry sockets are bound (host, port)."""
        return [s.getsockname()[:2] for s in self._socks.values()]

    @contextlib.contextmanager
    def bundle(self) -> Iterator[None]:
        """Messages sent inside go out together as one OSC bundle per target (time tag
        "immediately"), so values that belong together (a state and its probabilities, the
        eSense pair) arrive in the same packet; an empty bundle is not sent."""
        self._batch = []
        try:
            yield
        finally:
            batch, self._batch = self._batch, None
            if batch:
                builder = OscBundleBuilder(IMMEDIATELY)
                for message in batch:
                    builder.add_content(message)
                self._deliver(builder.build().dgram)

    def _send(self, address: str, *args: Any) -> None:
        if self._batch is not None:
            b = OscMessageBuilder(address)
            for a in args:
                b.add_arg(a)
            self._batch.append(b.build())
            return
        self._deliver(_message(address, args))

    def _deliver(self, data: bytes) -> None:
        for target, sock in self._route:
            try:
                sock.sendto(data, target)
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

    def scene(self, name: str, chooser: str) -> None:
        """``/dreamstate/scene`` s scene s chooser (state, override, manual, attract)."""
        self._send("/dreamstate/scene", name[:120], chooser)

    def seeing(self, label: str, score: float) -> None:
        """``/dreamstate/seeing`` s class, f logit (the seeing overlay's map on screen)."""
        self._send("/dreamstate/seeing", label[:120], float(score))

    def drawing(self, label: str, score: float, probability: float) -> None:
        """``/dreamstate/drawing`` s class, f score (nats, <= 0), f probability 0..1."""
        self._send("/dreamstate/drawing", label[:120], float(score), float(probability))

    def heartbeat(self) -> None:
        self._send("/dreamstate/heartbeat", 1)

    def status(self, uptime_s: float, failures: int, latest_error: str) -> None:
        """``/dreamstate/status`` f uptime (s) i stage failures so far s the latest failure
        (cut to 200 characters): what the status file says, for a control surface."""
        self._send("/dreamstate/status", float(uptime_s), int(failures), latest_error[:200])

    def error(self, address: str, why: str) -> None:
        """``/dreamstate/error`` s address s why: a refused control message reported back to
        the control surface (it listens on the telemetry port anyway). At most ``ERRORS_PER_S``
        a second together with ``clamped``, the rest counted in ``errors_dropped``."""
        if self._reply_allowed():
            self._send("/dreamstate/error", address[:120], why[:300])

    def clamped(self, address: str, argument: str, requested: float, applied: float) -> None:
        """``/dreamstate/clamped`` s address s argument f requested f applied: a control value
        outside its schema range that was applied clamped (same rate limit as ``error``)."""
        if self._reply_allowed():
            big = 3.4e38  # OSC f is float32: a huge requested value (sent as d) is shown at its limit
            self._send("/dreamstate/clamped", address[:120], argument, max(-big, min(big, float(requested))),
                       float(applied))

    def _reply_allowed(self) -> bool:
        now = time.monotonic()
        if now - self._error_window >= 1.0:
            self._error_window, self._errors_in_window = now, 0
        if self._errors_in_window >= ERRORS_PER_S:
            self.counters.inc("errors_dropped")
            return False
        self._errors_in_window += 1
        return True

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()


__all__ = ["TELEMETRY", "OscControlServer", "OscTelemetry"]
