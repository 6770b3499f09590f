"""MQTT against a real mosquitto broker on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from dreamstate.engine.control.commands import SetOctaves, SetScene, SetZoom
from dreamstate.engine.control.mqtt import MqttLink
from dreamstate.engine.core.backoff import Backoff
from dreamstate.engine.core.records import EegState
from dreamstate.engine.core.show import MqttConfig

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, tmp: Path, extra: str = "", *, anonymous: bool = True, listener_extra: str = "") -> None:
        if not Path(MOSQUITTO).exists():
            pytest.fail("mosquitto is not installed; run ./scripts/setup.sh (Debian package mosquitto)")
        self.port = _free_port()
        self.conf = tmp / "mosquitto.conf"
        user = "user root\n" if os.getuid() == 0 else ""  # as root it would drop to 'mosquitto', who cannot read tmp
        self.conf.write_text(f"{user}per_listener_settings false\nallow_anonymous {str(anonymous).lower()}\n"
                             f"persistence false\n{extra}listener {self.port} 127.0.0.1\n{listener_extra}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@contextlib.asynccontextmanager
async def running(link: MqttLink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.connected.wait(), 5)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _cfg(port: int) -> MqttConfig:
    return MqttConfig(enabled=True, port=port, installation="gallery", node="eeg1")


async def test_state_is_retained_and_control_becomes_commands(broker: Broker) -> None:
    link = MqttLink(_cfg(broker.port))
    async with running(link):
        link.publish_state(EegState("calm", {"calm": 0.9, "focused": 0.1}, 0.9, 1.0, index=0))
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.publish("dreamstate/gallery/control/zoom", b"1.02")
            await c.publish("dreamstate/gallery/control/scene", b"calm")
            await c.publish("dreamstate/gallery/control/zoom", b"\xff\xfe")       # not UTF-8
            await c.publish("dreamstate/gallery/control/warp", b"9")             # unknown command
        for _ in range(200):
            if len(link.commands) >= 2 and link.counters.total("rejected.") >= 2:
                break
            await asyncio.sleep(0.02)
        assert link.commands.drain() == [SetZoom(1.02), SetScene("calm")]
        assert link.counters.total("rejected.") == 2
        assert link.counters.get("rejected.bad_utf8") == 1 and link.counters.get("rejected.unknown_address") == 1
        # a render node that subscribes later still gets the retained state and status
        async with aiomqtt.Client("127.0.0.1", broker.port) as late:
            await late.subscribe("dreamstate/gallery/eeg1/#")
            got: dict[str, bytes] = {}
            async with asyncio.timeout(5):
                async for m in late.messages:
                    got[str(m.topic)] = m.payload  # type: ignore[assignment]
                    if {"dreamstate/gallery/eeg1/state", "dreamstate/gallery/eeg1/status"} <= set(got):
                        break
        assert b'"label": "calm"' in got["dreamstate/gallery/eeg1/state"]
        assert got["dreamstate/gallery/eeg1/status"] == b"online"


async def test_broker_that_goes_away_is_reconnected(broker: Broker) -> None:
    link = MqttLink(_cfg(broker.port), backoff=Backoff(base=0.05, cap=0.2))
    async with running(link):
        broker.stop()
        for _ in range(200):
            if link.counters.get("disconnects") >= 1:
                break
            await asyncio.sleep(0.02)
        assert link.counters.get("disconnects") >= 1
        link.publish_telemetry({"fps": 30.0})
        assert link.counters.get("telemetry_dropped") == 1, "telemetry while offline is dropped and counted"
        broker.start()
        await asyncio.wait_for(link.connected.wait(), 10)
        assert link.counters.get("connects") >= 2
        link.publish_state(EegState("focused", {}, 1.0, 2.0))
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe("dreamstate/gallery/eeg1/state")
            async with asyncio.timeout(5):
                async for m in c.messages:
                    assert b"focused" in m.payload  # type: ignore[operator]
                    break


async def test_last_will_says_offline_when_the_node_dies(broker: Broker) -> None:
    import os
    import signal
    import sys

    script = (
        "import asyncio\n"
        "from dreamstate.engine.control.mqtt import MqttLink\n"
        "from dreamstate.engine.core.show import MqttConfig\n"
        f"cfg = MqttConfig(enabled=True, port={broker.port}, installation='gallery', node='dying')\n"
        "async def main():\n"
        "    link = MqttLink(cfg)\n"
        "    t = asyncio.create_task(link.run())\n"
        "    await link.connected.wait()\n"
        "    print('up', flush=True)\n"
        "    await t\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"up"
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
        await c.subscribe("dreamstate/gallery/dying/status")
        async with asyncio.timeout(5):
            async for m in c.messages:
                assert m.payload == b"offline"
                break



async def _retained_status(port: int, node: str, wait: float = 5.0) -> bytes:
    """The node's retained status, or b"" when none arrives within ``wait`` seconds."""
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.subscribe(f"dreamstate/gallery/{node}/status")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                async for m in c.messages:
                    return bytes(m.payload)  # type: ignore[arg-type]
    return b""


async def test_a_clean_stop_says_offline(broker: Broker) -> None:
    """Cancelling the link (what the supervisor does on SIGTERM or at the end of a show) leaves
    the retained status 'offline'; it used to stay 'online' (only kill -9 fired the last will)."""
    link = MqttLink(_cfg(broker.port))
    async with running(link):
        assert await _retained_status(broker.port, "eeg1") == b"online"
    assert await _retained_status(broker.port, "eeg1") == b"offline"


async def test_a_stop_while_saying_online_still_says_offline(broker: Broker) -> None:
    """SIGTERM right after connecting (CI: the show was stopped as it came up) lands while the
    'online' status is being published; that message may already be on its way, so the stop
    must still say offline. It stayed 'online' before."""
    link = MqttLink(_cfg(broker.port))
    task = asyncio.create_task(link.run())
    async with asyncio.timeout(10):
        while not link.counters.get("connects"):
            await asyncio.sleep(0)  # no later than the iteration after "MQTT connected"
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert await _retained_status(broker.port, "eeg1") == b"offline"


@pytest.mark.slow
async def test_systemctl_stop_of_a_show_says_offline(broker: Broker, tmp_path: Path) -> None:
    """SIGTERM to `dreamstate run` (what `systemctl stop` sends): the node says offline."""
    import signal
    import sys

    (tmp_path / "show.toml").write_text(
        '[show]\nmodel = "starter"\n[scenes.calm]\nlayers = { block2 = 1.0 }\n'
        '[scenes.attract]\nlayers = { block2 = 1.0 }\n'
        '[output]\nkind = "none"\ndream_size = [64, 48]\nsize = [64, 48]\n'
        f'[mqtt]\nenabled = true\nport = {broker.port}\nnode = "proj1"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dreamstate", "run", str(tmp_path / "show.toml"), "--seconds", "60", cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(60):
            while await _retained_status(broker.port, "proj1", wait=0.5) != b"online":
                assert proc.returncode is None, "the show ended before it connected"
                await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert await _retained_status(broker.port, "proj1") == b"offline", err.decode()


# --- hostile payloads, authentication, TLS ------------------------------------------------------
HOSTILE: list[tuple[str, bytes, str]] = [  # (command, payload, the counter it must end in)
    ("zoom", b"1" + b"0" * 400, "number_range"),          # OverflowError crashed the stage before
    ("zoom", b"7" * 600, "number_range"),                 # a 600-digit integer
    ("zoom", b"7" * 4400, "too_large"),                   # ValueError (int digit limit) before
    ("image", b"inside\x00.png", "nul_byte"),             # ValueError (embedded NUL) before
    ("zoom", b"[" * 2000 + b"]" * 2000, "too_deep"),      # RecursionError before
    ("scene", b'"' + b"x" * 9000 + b'"', "too_large"),
    ("zoom", b"\xff\xfe", "bad_utf8"),
    ("zoom", b"NaN", "number_range"),
]


async def test_hostile_retained_payloads_are_rejected_once_and_control_goes_on(broker: Broker) -> None:
    """Each hostile payload waits retained on the broker; a node that connects rejects it,
    stays connected, and valid control sent afterwards is applied."""
    async with aiomqtt.Client("127.0.0.1", broker.port) as c:
        for command, payload, reason in HOSTILE:
            topic = f"dreamstate/gallery/control/{command}"
            await c.publish(topic, payload, qos=1, retain=True)
            link = MqttLink(_cfg(broker.port))
            async with running(link):
                for _ in range(150):
                    if link.counters.total("rejected."):
                        break
                    await asyncio.sleep(0.02)
                await c.publish("dreamstate/gallery/control/octaves", b"3")
                for _ in range(150):
                    if len(link.commands):
                        break
                    await asyncio.sleep(0.02)
                assert link.counters.get(f"rejected.{reason}") == 1, (reason, link.counters.snapshot())
                assert link.commands.drain() == [SetOctaves(3)]
                assert link.counters.get("connects") == 1 and link.counters.get("disconnects") == 0
            await c.publish(topic, b"", qos=1, retain=True)  # clear it


def test_every_payload_is_applied_or_counted_and_a_retained_one_is_reported_once() -> None:
    link = MqttLink(_cfg(1))
    for command, payload, _reason in HOSTILE:
        link.handle_message(f"dreamstate/gallery/control/{command}", payload)
    assert link.counters.total("rejected.") == len(HOSTILE)
    for reason in {r for _, _, r in HOSTILE}:
        assert link.counters.get(f"rejected.{reason}") == sum(r == reason for _, _, r in HOSTILE)
    for _ in range(3):  # a reconnect delivers the same retained message again
        link.handle_message("dreamstate/gallery/control/zoom", b"[[[[[[[[1]]]]]]]]", retained=True)
    assert link.counters.get("rejected.too_deep") == 2 and link.counters.get("rejected.retained_repeat") == 2


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["zoom", "scene", "image", "layer/block3", "octaves", "blackout", "nope"]),
       st.one_of(st.binary(max_size=300), st.text(max_size=80).map(str.encode),
                 st.recursive(st.one_of(st.integers(), st.floats(), st.text(max_size=10)),
                              lambda c: st.lists(c, max_size=4), max_leaves=20).map(lambda v: repr(v).encode())))
def test_any_payload_is_applied_or_counted(command: str, payload: bytes) -> None:
    link = MqttLink(_cfg(1))
    link.handle_message(f"dreamstate/gallery/control/{command}", payload)
    c = link.counters
    assert c.get("received") == 1
    assert c.get("applied") + c.total("rejected.") + c.total("dropped.") + c.total("ignored.") == 1


def _certs(tmp: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=dreamstate test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (tmp / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return {name: tmp / name for name in ("ca.crt", "server.crt", "server.key")}


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[tuple[Broker, Path]]:
    """mosquitto with a password file (alice / s3cret) and TLS only."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed; run ./scripts/setup.sh (Debian package openssl)")
    certs = _certs(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-c", "-b", str(passwd),
                    "alice", "s3cret"], check=True, capture_output=True)
    tls = f"cafile {certs['ca.crt']}\ncertfile {certs['server.crt']}\nkeyfile {certs['server.key']}\n"
    b = Broker(tmp_path, f"password_file {passwd}\n", anonymous=False, listener_extra=tls)  # TLS on that listener
    b.start()
    yield b, tmp_path
    b.stop()


async def _first_error(link: MqttLink, caplog: pytest.LogCaptureFixture) -> str:
    """'connected', or the first MQTT warning with its fix."""
    task = asyncio.create_task(link.run())
    found: list[logging.LogRecord] = []
    connected = False
    try:
        for _ in range(500):
            found = [r for r in caplog.records if r.name == "dreamstate.mqtt" and "MQTT:" in r.getMessage()]
            connected = link.connected.is_set()
            if found or connected:
                break
            if task.done():
                raise AssertionError(f"the link stopped: {task.exception()!r}")
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if connected:
        return "connected"
    assert found, "no connection and no MQTT warning within 10 s"
    return found[0].getMessage() + " | " + str(getattr(found[0], "fix", ""))


# paho leaves the socket of a failed TLS handshake to the garbage collector (it is closed then):
# collected here, with its ResourceWarning ignored, so it cannot surface in a later test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_authentication_and_tls_against_a_real_broker(secure_broker: tuple[Broker, Path],
                                                            caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    broker, folder = secure_broker
    ca = str(folder / "ca.crt")

    def link(**kw: object) -> MqttLink:
        cfg = MqttConfig(enabled=True, port=broker.port, installation="gallery", node="n", **kw)  # type: ignore[arg-type]
        return MqttLink(cfg, backoff=Backoff(base=5.0, cap=5.0), connect_timeout=2.0,
                        resolve=lambda value, _what: folder / value)

    caplog.set_level(logging.INFO, logger="dreamstate.mqtt")
    plain = await _first_error(link(username="alice", password="s3cret"), caplog)
    assert "may require TLS" in plain and "tls = true" in plain, plain
    caplog.clear()
    untrusted = await _first_error(link(username="alice", password="s3cret", tls=True), caplog)
    assert "not trusted" in untrusted and "ca_file" in untrusted, untrusted
    caplog.clear()
    wrong = await _first_error(link(username="alice", password="nope", tls=True, ca_file=ca), caplog)
    assert "refused the login of user 'alice' (not authorised)" in wrong and "username and password" in wrong
    assert "nope" not in wrong and all("nope" not in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setenv("DS_TEST_MQTT_PASSWORD", "s3cret")
    assert await _first_error(link(username="alice", password_env="DS_TEST_MQTT_PASSWORD", tls=True, ca_file=ca),
                              caplog) == "connected"
    (folder / "pw.txt").write_text("s3cret\n")
    assert await _first_error(link(username="alice", password_file="pw.txt", tls=True, ca_file=ca),
                              caplog) == "connected"
    import gc

    gc.collect()


def test_a_password_is_never_echoed_by_validation(tmp_path: Path) -> None:
    from dreamstate.engine.core.errors import ShowError
    from dreamstate.engine.core.show import validate_show_data

    with pytest.raises(ShowError) as err:
        validate_show_data({"mqtt": {"password": 12345678, "password_env": "P"}}, tmp_path, "t")
    assert "12345678" not in str(err.value)
    with pytest.raises(ShowError) as err:
        validate_show_data({"mqtt": {"password": ["hunter2"]}}, tmp_path, "t")
    assert "hunter2" not in str(err.value) and "mqtt.password" in str(err.value)


# --- roles: one headset, several projectors ------------------------------------------------------
ROLE_SHOW = """
[show]
model = "starter"
default_scene = "calm"
[device]
kind = "simulated"
seed = 4
speed = 4.0
script = [{{ state = "relaxed", seconds = 40 }}, {{ state = "off_head", seconds = 40 }}]
[states]
mode = "rules"
labels = ["calm", "focused", "neutral"]
dwell_s = 0.5
rules = [{{ state = "calm", when = "alpha_rel > 0.30" }}]
[scenes.calm]
layers = {{ block2 = 1.0 }}
[scenes.neutral]
layers = {{ block3 = 1.0 }}
[scenes.attract]
layers = {{ block2 = 0.5 }}
[attract]
after_s = 1.0
[output]
kind = "none"
size = [64, 48]
dream_size = [64, 48]
[mqtt]
enabled = true
port = {port}
node = "{node}"
role = "{role}"
lead_s = 0.2
"""


@pytest.mark.slow
async def test_a_render_node_follows_the_eeg_node_at_the_stamped_moment(broker: Broker, tmp_path: Path) -> None:
    """Two nodes through a real broker: the eeg node reads the (simulated) headset and shows
    nothing; the render node has no headset, follows the eeg node's state and applies each one
    at the wall-clock moment it was stamped with (sent + lead_s), never before."""
    from dreamstate.engine.runtime.app import ShowRuntime
    from dreamstate.engine.runtime.showfile import load_show
    from dreamstate.models.dream import DreamModel

    def node(name: str, role: str) -> ShowRuntime:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "show.toml").write_text(ROLE_SHOW.format(port=broker.port, node=name, role=role))
        model = DreamModel.load("starter", ["block2", "block3"])
        return ShowRuntime(load_show(folder / "show.toml", deep=False), seconds=14.0,
                           load_model=lambda _l, _y, _g: model)

    eeg, render = node("eeg1", "eeg"), node("proj1", "render")
    await asyncio.wait_for(asyncio.gather(eeg.run(handle_signals=False), render.run(handle_signals=False)), 60)
    assert eeg.renderer is None and "render" not in eeg.supervisor.status  # the eeg node shows nothing
    assert "device" not in render.supervisor.status and render.renderer is not None
    followed = render.counters.get("states_followed")
    assert followed >= 2, render.counters.snapshot()
    seen = {s for s in (render.latest_state.label if render.latest_state else None,) if s}
    assert seen, "the render node never received a state"
    # the states it applied were the eeg node's (calm while relaxed, absent once off the head)
    assert render.latest_state is not None and eeg.latest_state is not None
    assert render.latest_state.label == eeg.latest_state.label
    # never early: each was applied at or after its stamped moment, and promptly
    lateness = list(render.follow_lateness)
    assert min(lateness) >= 0.0 and max(lateness) < 0.25, lateness
    assert render.clock_offset_ms is not None and abs(render.clock_offset_ms) < 500
    doc = render.telemetry_doc()
    assert doc["clock_offset_ms"] == render.clock_offset_ms


def test_roles_need_the_broker_and_render_nodes_record_nothing(tmp_path: Path) -> None:
    from dreamstate.engine.core.errors import ShowError
    from dreamstate.engine.runtime.showfile import load_show

    base = ('[show]\nmodel = "starter"\n[scenes.calm]\nlayers = { block2 = 1.0 }\n'
            '[scenes.attract]\nlayers = { block2 = 1.0 }\n')
    (tmp_path / "a.toml").write_text(base + '[mqtt]\nrole = "render"\n')
    with pytest.raises(ShowError, match="set enabled = true"):
        load_show(tmp_path / "a.toml", deep=False)
    (tmp_path / "b.toml").write_text(base + '[mqtt]\nenabled = true\nrole = "render"\n[record]\nenabled = true\n')
    with pytest.raises(ShowError, match="no headset to record"):
        load_show(tmp_path / "b.toml", deep=False)
