"""MQTT over an existing broker (mosquitto or any MQTT cluster), with aiomqtt.

Topics (``<base>`` is ``dreamstate/<installation>/<node>``):

* ``<base>/state``: JSON EEG state, retained, latest value wins;
* ``<base>/telemetry``: JSON, a few Hz, lossy (a send that cannot happen is counted);
* ``<base>/status``: ``online`` (retained) while connected; the broker's last will says
  ``offline`` when the node dies;
* ``dreamstate/<installation>/control/#``: the OSC commands, e.g. ``…/control/zoom`` with
  payload ``1.02`` or ``[1.02]``; ``…/control/scene`` with ``calm``.

``MqttLink.run()`` is the reconnect loop (capped, jittered backoff; every attempt has a timeout);
inside one connection a reader task turns messages into ``Command``s in a bounded queue and a
writer task publishes the latest state and telemetry. A broker that goes away is logged with its
address and the cause in its own words (refused login, untrusted certificate, a TLS-only broker,
nothing listening), counted (``disconnects``), and reconnected; the show keeps running.
Username/password and TLS (``ca_file``, ``certfile``, ``keyfile``) come from ``[mqtt]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from dreamstate.engine.control.commands import PREFIX, Command, ControlError, parse_command
from dreamstate.engine.control.transport import ControlTransport
from dreamstate.engine.core.aio import cancellable, wait_for
from dreamstate.engine.core.backoff import Backoff
from dreamstate.engine.core.channels import BoundedQueue, LatestSlot
from dreamstate.engine.core.errors import NetworkError
from dreamstate.engine.core.logs import LogLimiter
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.core.records import EegState
from dreamstate.engine.core.show import MqttConfig

log = logging.getLogger("dreamstate.mqtt")


def state_payload(state: EegState, *, lead_s: float = 0.0, now: float | None = None) -> str:
    """The retained state as JSON: label, index, confidence, probabilities, the signal time,
    ``sent`` (wall-clock seconds, Unix time) and ``at`` = ``sent`` + ``lead_s``, the moment every
    render node applies it."""
    sent = time.time() if now is None else now
    return json.dumps({"label": state.label, "index": state.index, "confidence": round(state.confidence, 4),
                       "probabilities": {k: round(v, 4) for k, v in state.probabilities.items()},
                       "time": round(state.time, 3), "sent": round(sent, 4), "at": round(sent + lead_s, 4)})


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteState:
    """A state another node published: when it was sent and when to apply it (wall clock, s),
    and when it arrived here (wall clock)."""

    state: EegState
    sent: float
    at: float
    received: float


def parse_state_payload(raw: bytes, received: float) -> RemoteState:
    """Read :func:`state_payload`'s JSON defensively. Raises :class:`PayloadError`."""
    args = payload_args(raw)
    doc = args[0] if len(args) == 1 and isinstance(args[0], dict) else None
    try:
        if doc is None:
            raise TypeError("not a JSON object")
        label = str(doc["label"])
        probs = {str(k): float(v) for k, v in dict(doc.get("probabilities", {})).items()}
        state = EegState(label, probs, float(doc.get("confidence", 0.0)), float(doc.get("time", 0.0)),
                         index=int(doc.get("index", 0)))
        sent = float(doc.get("sent", received))
        at = float(doc.get("at", sent))
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError("bad_state", f"not a dreamstate state: {exc}",
                           hint="states come from a dreamstate node with role = 'eeg' or 'all'") from None
    if not all(math.isfinite(v) for v in (sent, at, state.confidence, state.time)):
        raise PayloadError("bad_state", "a state with a non-finite time or confidence")
    return RemoteState(state, sent, at, received)


MAX_PAYLOAD = 4096  # bytes; a control value is a number, a name or a short list
MAX_DEPTH = 4  # JSON nesting
MAX_DIGITS = 30  # an integer literal longer than this is not a control value


class PayloadError(ControlError):
    """A control payload refused before it reached a command; ``reason`` names the counter."""

    def __init__(self, reason: str, message: str, hint: str = "send a number, a name or a short JSON list") -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


def _json_depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings (linear scan, no recursion)."""
    depth = best = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise PayloadError("number_range", f"an integer with {len(text)} digits",
                           hint="control values are small numbers, e.g. 1.02")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise PayloadError("number_range", f"the number {text[:20]}... is out of range",
                           hint="control values are small numbers, e.g. 1.02")
    return value


def _no_constant(text: str) -> Any:
    raise PayloadError("number_range", f"{text} is not a control value", hint="send a finite number")


def _check_text(value: Any) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise PayloadError("nul_byte", "the payload holds a NUL byte", hint="send plain text or JSON")
    if isinstance(value, list):
        for v in value:
            _check_text(v)


def payload_args(payload: bytes) -> list[Any]:
    """A control payload as command arguments: empty -> [], JSON -> its value (a list stays a
    list), anything else -> the text. Defensive: at most ``MAX_PAYLOAD`` bytes, UTF-8, JSON
    nested at most ``MAX_DEPTH`` deep, integers of at most ``MAX_DIGITS`` digits, finite
    numbers, no NUL bytes. Raises :class:`PayloadError` naming the reason otherwise."""
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError("too_large", f"payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    try:
        text = payload.decode("utf-8", errors="strict").strip()
    except UnicodeDecodeError:
        raise PayloadError("bad_utf8", "the payload is not UTF-8 text", hint="send UTF-8 text or JSON") from None
    if not text:
        return []
    if _json_depth(text) > MAX_DEPTH:
        raise PayloadError("too_deep", f"JSON nested deeper than {MAX_DEPTH}", hint="send a flat JSON list")
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError:
        value = text
    except ValueError as exc:  # int() beyond Python's digit limit, and the like
        raise PayloadError("number_range", f"a number that is not a control value ({exc})"[:160]) from None
    _check_text(value)
    return value if isinstance(value, list) else [value]




def explain_connect_error(exc: BaseException, cfg: MqttConfig) -> tuple[str, str]:
    """(what went wrong, the fix) for a failed or lost connection: each cause its own words."""
    text = str(exc)
    address = f"{cfg.host}:{cfg.port}"
    rc = getattr(exc, "rc", None)
    code = getattr(rc, "value", rc)
    if isinstance(exc, aiomqtt.MqttCodeError) and (code in (4, 5, 134, 135) or "authori" in text.lower()):
        who = f"user {cfg.username!r}" if cfg.username else "an anonymous client"
        return (f"broker {address} refused the login of {who} (not authorised)",
                "check [mqtt] username and password (or password_env / password_file), and the broker's ACL")
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return (f"broker {address}: its TLS certificate is not trusted ({text[:120]})",
                "set [mqtt] ca_file to the CA that signed the broker's certificate")
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text or (
            cfg.tls and ("reset by peer" in text or "EOF occurred" in text)):
        return (f"broker {address} does not speak TLS on this port ({text[:80]})",
                "set [mqtt] tls = false, or use the broker's TLS port (often 8883)")
    if not cfg.tls and ("reset by peer" in text or "timed out" in text.lower()):
        return (f"broker {address} dropped the connection before MQTT began ({text[:80]}); it may require TLS",
                "if the broker only takes TLS: set [mqtt] tls = true and ca_file (port often 8883)")
    if "Connection refused" in text or "Errno 111" in text:
        return (f"nothing accepts MQTT connections at {address}",
                "check that the broker runs and [mqtt] host/port are right")
    if "Name or service not known" in text or "nodename nor servname" in text:
        return (f"the broker host {cfg.host!r} is unknown", "check [mqtt] host")
    return (f"broker {address} unreachable or gone ({text[:120]})",
            "check that the broker runs and [mqtt] host/port are right")


class MqttLink(ControlTransport):
    """One node's MQTT connection. After ``run()`` starts, it keeps (re)connecting until cancelled.

    An empty payload deletes a retained message in MQTT, so it is ignored (``ignored.empty``);
    ``pause`` or ``blackout`` without an argument take a payload such as ``1`` or ``true``.

    Control payloads are parsed defensively (:func:`payload_args`); every message ends as
    ``applied`` or ``rejected.<reason>`` and never stops the link. A rejected *retained*
    message is reported once, not again at every reconnect (``rejected.retained_repeat``).
    Credentials come from ``[mqtt] password``, the environment variable ``password_env`` or the
    file ``password_file`` (inside the show folder); they are never logged.
    """

    name = "mqtt"

    def __init__(self, cfg: MqttConfig, *, backoff: Backoff | None = None, connect_timeout: float = 5.0,
                 resolve: Callable[[str, str], Path] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        """Wall clock (Unix seconds) that stamps published states and received ones; injectable
        so a test can give one node a skewed clock."""
        self.base = f"dreamstate/{cfg.installation}/{cfg.node}"
        self.control_prefix = f"dreamstate/{cfg.installation}/control/"
        self.commands: BoundedQueue[Command] = BoundedQueue(256, name="mqtt.control")
        self.counters = Counters()
        self.backoff = backoff or Backoff(base=0.5, cap=15.0)
        self.connect_timeout = connect_timeout
        self.connected = asyncio.Event()
        self.resolve = resolve or (lambda value, _what: Path(value))
        self.limiter = LogLimiter(log)
        self.last_error: str | None = None
        self._state: LatestSlot[EegState] = LatestSlot()
        self._telemetry: LatestSlot[dict[str, Any]] = LatestSlot()
        self.state_prefix = f"dreamstate/{cfg.installation}/"
        self.follow = cfg.role == "render"
        self.remote_states: LatestSlot[RemoteState] = LatestSlot()
        """role render: the newest state another node of the installation published"""
        self._wake = asyncio.Event()
        self._rejected_retained: set[tuple[str, str]] = set()

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def publish_state(self, state: EegState) -> None:
        self._state.put(state)
        self._wake.set()

    def publish_telemetry(self, doc: dict[str, Any]) -> None:
        if not self.connected.is_set():
            self.counters.inc("telemetry_dropped")
        self._telemetry.put(doc)
        self._wake.set()

    def password(self) -> str | None:
        """The password from the show, its environment variable or its file (never logged)."""
        cfg = self.cfg
        if cfg.password is not None:
            return cfg.password.get_secret_value()
        if cfg.password_env:
            value = os.environ.get(cfg.password_env)
            if value is None:
                raise NetworkError(f"[mqtt] password_env names {cfg.password_env!r}, which is not set",
                                   hint=f"export {cfg.password_env}=... before starting the show")
            return value
        if cfg.password_file:
            path = self.resolve(cfg.password_file, "mqtt.password_file")
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise NetworkError(f"cannot read [mqtt] password_file {path}: {exc}",
                                   hint="put the password, alone, in that file (readable by this user)") from None
        return None

    def tls_params(self) -> aiomqtt.TLSParameters | None:
        cfg = self.cfg
        if not cfg.tls:
            return None
        ca = str(self.resolve(cfg.ca_file, "mqtt.ca_file")) if cfg.ca_file else None
        cert = str(self.resolve(cfg.certfile, "mqtt.certfile")) if cfg.certfile else None
        key = str(self.resolve(cfg.keyfile, "mqtt.keyfile")) if cfg.keyfile else None
        return aiomqtt.TLSParameters(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)

    async def start(self) -> None:
        """Read the credentials and certificates now, so a missing password file or variable
        stops this transport with its name instead of failing every reconnect."""
        self.password()
        self.tls_params()

    async def run(self) -> None:
        """The reconnect loop (see the module docstring); never returns normally."""
        retries = self.backoff.retries()
        while True:
            will = aiomqtt.Will(f"{self.base}/status", b"offline", qos=1, retain=True)
            client = aiomqtt.Client(self.cfg.host, self.cfg.port, will=will, timeout=self.connect_timeout,
                                    keepalive=10, max_queued_outgoing_messages=64,
                                    username=self.cfg.username, password=self.password(),
                                    tls_params=self.tls_params())
            error: BaseException | None = None
            try:
                async with client:
                    retries.reset()
                    self.counters.inc("connects")
                    self.last_error = None
                    log.info("MQTT connected", extra={"broker": self.address, "base": self.base,
                                                      "tls": self.cfg.tls})
                    try:  # from here on, a clean stop says offline (the online below may be out already)
                        await cancellable(client.publish(f"{self.base}/status", b"online", qos=1, retain=True))
                        await cancellable(client.subscribe(self.control_prefix + "#", qos=1))
                        if self.follow:
                            await cancellable(client.subscribe(self.state_prefix + "+/state", qos=1))
                        self.connected.set()
                        async with asyncio.TaskGroup() as tg:
                            tg.create_task(self._reader(client), name="mqtt.reader")
                            tg.create_task(self._writer(client), name="mqtt.writer")
                    except asyncio.CancelledError:
                        await self._say_offline(client)
                        raise
            except* (aiomqtt.MqttError, ssl.SSLError, OSError) as group:
                error = group.exceptions[0]
            finally:
                self.connected.clear()
            if error is None:
                continue
            # outside the except* block, so a cancellation while waiting stays a plain CancelledError
            self.counters.inc("disconnects")
            delay = retries.failed()
            what, fix = explain_connect_error(error, self.cfg)
            if what != self.last_error:
                log.warning("MQTT: %s; retrying in %.1f s", what, delay, extra={"broker": self.address, "fix": fix})
            else:
                log.debug("MQTT: %s (again)", what, extra={"retry_in_s": round(delay, 2)})
            self.last_error = what
            await asyncio.sleep(delay)

    async def _say_offline(self, client: aiomqtt.Client, timeout: float = 0.5) -> None:
        """On a clean stop (SIGTERM, the end of a show) publish the retained ``offline`` status
        that the last will only sends when the process dies; bounded, never raises."""
        try:
            await wait_for(client.publish(f"{self.base}/status", b"offline", qos=1, retain=True), timeout)
            log.info("MQTT status offline", extra={"broker": self.address})
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            log.debug("MQTT offline status not sent: %s", exc)

    async def _reader(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.handle_message(str(message.topic), message.payload, retained=bool(message.retain))

    def handle_message(self, topic: str, payload: Any, *, retained: bool = False) -> None:
        """One control message: queued as a command, or rejected and counted (never raises)."""
        self.counters.inc("received")
        raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        if not raw:
            # an empty payload is how MQTT deletes a retained message (and what our own hint
            # says to send): never a command, even for addresses that take no argument
            self.counters.inc("ignored.empty")
            return
        key = (topic, hashlib.sha256(raw).hexdigest())
        if self.follow and topic.startswith(self.state_prefix) and topic.endswith("/state") \
                and topic != f"{self.base}/state":
            try:
                self.remote_states.put(parse_state_payload(bytes(raw), self.clock()))
                self.counters.inc("states_received")
            except (ControlError, RecursionError, ValueError, OverflowError) as exc:
                self.counters.inc("rejected.bad_state")
                self.limiter.report("rejected MQTT states", f"rejected a state on {topic[:120]}: {exc}", topic=topic)
            return
        try:
            if not topic.startswith(self.control_prefix):
                raise PayloadError("unknown_topic", f"unexpected topic {topic[:80]!r}",
                                   hint=f"control topics start with {self.control_prefix}")
            name = topic[len(self.control_prefix):]
            cmd = parse_command(f"{PREFIX}/{name}", payload_args(bytes(raw)))
        except (ControlError, RecursionError, ValueError, OverflowError) as exc:
            reason = exc.reason if isinstance(exc, PayloadError) else (
                "unknown_address" if "unknown OSC address" in str(exc) else "bad_args")
            if retained and key in self._rejected_retained:
                self.counters.inc("rejected.retained_repeat")
                return
            if retained:
                self._rejected_retained.add(key)
            self.counters.inc(f"rejected.{reason}")
            self.limiter.report(f"rejected MQTT control ({reason})",
                                f"rejected MQTT control message on {topic[:120]}: {exc}"
                                + (" (retained: it stays on the broker; clear it with an empty retained "
                                   "message)" if retained else ""), topic=topic, example=bytes(raw[:40]))
            return
        if self.commands.put_nowait(cmd):
            self.counters.inc("applied")
        else:
            self.counters.inc("dropped.queue_full")

    async def _writer(self, client: aiomqtt.Client) -> None:
        state_version = 0
        tele_version = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            state, state_version_new = self._state.get_if_newer(state_version)
            if state is not None:
                state_version = state_version_new
                payload = state_payload(state, lead_s=self.cfg.lead_s, now=self.clock())
                # aiomqtt waits for the PUBACK with 3.11's wait_for, which can swallow a cancel
                await cancellable(client.publish(f"{self.base}/state", payload, qos=1, retain=True))
                self.counters.inc("state_sent")
            tele, tele_version_new = self._telemetry.get_if_newer(tele_version)
            if tele is not None:
                tele_version = tele_version_new
                with contextlib.suppress(aiomqtt.MqttCodeError):
                    await cancellable(client.publish(f"{self.base}/telemetry", json.dumps(tele), qos=0))
                    self.counters.inc("telemetry_sent")
