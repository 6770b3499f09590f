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
address, counted (``disconnects``), and reconnected; the show keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import aiomqtt

from engine.channels import BoundedQueue, LatestSlot
from engine.control.commands import PREFIX, Command, ControlError, parse_command
from engine.metrics import Counters
from engine.records import EegState
from engine.runtime import Backoff
from engine.show import MqttConfig

log = logging.getLogger("dreamstate.mqtt")


def state_payload(state: EegState) -> str:
    return json.dumps({"label": state.label, "index": state.index, "confidence": round(state.confidence, 4),
                       "probabilities": {k: round(v, 4) for k, v in state.probabilities.items()},
                       "time": round(state.time, 3)})


def _payload_args(payload: bytes) -> list[Any]:
    text = payload.decode("utf-8", errors="strict").strip()
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return [text]
    return value if isinstance(value, list) else [value]


class MqttLink:
    """One node's MQTT connection. After ``run()`` starts, it keeps (re)connecting until cancelled."""

    def __init__(self, cfg: MqttConfig, *, backoff: Backoff | None = None, connect_timeout: float = 5.0) -> None:
        self.cfg = cfg
        self.base = f"dreamstate/{cfg.installation}/{cfg.node}"
        self.control_prefix = f"dreamstate/{cfg.installation}/control/"
        self.commands: BoundedQueue[Command] = BoundedQueue(256, name="mqtt.control")
        self.counters = Counters()
        self.backoff = backoff or Backoff(base=0.5, cap=15.0)
        self.connect_timeout = connect_timeout
        self.connected = asyncio.Event()
        self._state: LatestSlot[EegState] = LatestSlot()
        self._telemetry: LatestSlot[dict[str, Any]] = LatestSlot()
        self._wake = asyncio.Event()

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

    async def run(self) -> None:
        attempt = 0
        while True:
            will = aiomqtt.Will(f"{self.base}/status", b"offline", qos=1, retain=True)
            client = aiomqtt.Client(self.cfg.host, self.cfg.port, will=will, timeout=self.connect_timeout,
                                    keepalive=10, max_queued_outgoing_messages=64)
            try:
                async with client:
                    attempt = 0
                    self.counters.inc("connects")
                    log.info("MQTT connected", extra={"broker": self.address, "base": self.base})
                    await client.publish(f"{self.base}/status", b"online", qos=1, retain=True)
                    await client.subscribe(self.control_prefix + "#", qos=1)
                    self.connected.set()
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._reader(client), name="mqtt.reader")
                        tg.create_task(self._writer(client), name="mqtt.writer")
            except* aiomqtt.MqttError as group:
                self.connected.clear()
                attempt += 1
                self.counters.inc("disconnects")
                delay = self.backoff.delay(attempt)
                log.warning("MQTT broker unreachable or gone; reconnecting",
                            extra={"broker": self.address, "error": str(group.exceptions[0]),
                                   "retry_in_s": round(delay, 2),
                                   "fix": "check that the broker runs and [mqtt] host/port are right"})
                await asyncio.sleep(delay)
            finally:
                self.connected.clear()

    async def _reader(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            self.counters.inc("received")
            try:
                if not topic.startswith(self.control_prefix):
                    raise ControlError(f"unexpected topic {topic!r}")
                payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                cmd = parse_command(f"{PREFIX}/{topic[len(self.control_prefix):]}", _payload_args(payload))
            except (ControlError, UnicodeDecodeError) as exc:
                self.counters.inc("rejected")
                log.warning("rejected MQTT control message", extra={"topic": topic, "error": str(exc)})
                continue
            if not self.commands.put_nowait(cmd):
                self.counters.inc("control_dropped")

    async def _writer(self, client: aiomqtt.Client) -> None:
        state_version = 0
        tele_version = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            state, state_version_new = self._state.get_if_newer(state_version)
            if state is not None:
                state_version = state_version_new
                await client.publish(f"{self.base}/state", state_payload(state), qos=1, retain=True)
                self.counters.inc("state_sent")
            tele, tele_version_new = self._telemetry.get_if_newer(tele_version)
            if tele is not None:
                tele_version = tele_version_new
                with contextlib.suppress(aiomqtt.MqttCodeError):
                    await client.publish(f"{self.base}/telemetry", json.dumps(tele), qos=0)
                    self.counters.inc("telemetry_sent")
