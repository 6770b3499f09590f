"""Field faults survived by a running show, on real parts (issue 13's list):

* the serial port goes away mid-show (the process serving the pty is killed) and comes back;
* the MQTT broker (a real mosquitto) is stopped and started under an eeg and a render node;
* the headset comes off the head and goes back on: the attract scene, and back.

Each test runs a whole ``ShowRuntime`` (signal, scenes, renderer on the starter model, a
headless output) and asserts that the picture never stops while the fault lasts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from dreamstate.engine.runtime.app import ShowRuntime
from dreamstate.engine.runtime.showfile import load_show
from dreamstate.models.dream import DreamModel
from tests.test_mqtt import ROLE_SHOW, Broker, broker  # noqa: F401 -- broker is a fixture

SHOW = """
[show]
model = "starter"
default_scene = "neutral"
[device]
{device}
[states]
mode = "rules"
labels = ["calm", "neutral"]
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
fps = 30
"""


@pytest.fixture(scope="module")
def model() -> DreamModel:
    return DreamModel.load("starter", ["block2", "block3"])


async def until(what: Callable[[], bool], seconds: float, why: str) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.05)


def frames(rt: ShowRuntime) -> int:
    return rt.renderer.stats.displayed_frames if rt.renderer is not None else 0


async def frames_keep_coming(rt: ShowRuntime, seconds: float) -> None:
    """The display presents at least a few frames in every half second of ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        before = frames(rt)
        await asyncio.sleep(0.5)
        assert frames(rt) > before + 2, "the picture stopped during the fault"


def simulate(link: Path) -> subprocess.Popen[bytes]:
    """``dreamstate simulate --pty``: a process that serves a relaxed headset's ThinkGear bytes
    on a new pseudo-terminal behind ``link`` (what a MindWave dongle looks like to pyserial)."""
    proc = subprocess.Popen([sys.executable, "-m", "dreamstate", "simulate", "--pty", "--link", str(link),
                             "--script", "relaxed:600", "--seed", "3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not link.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "dreamstate simulate did not start"
        time.sleep(0.05)
    return proc


@pytest.mark.slow
async def test_the_serial_port_lost_mid_show_and_back(tmp_path: Path, model: DreamModel) -> None:
    link = tmp_path / "mindwave"
    headset = simulate(link)
    (tmp_path / "show.toml").write_text(SHOW.format(device=f'kind = "thinkgear"\nport = "{link}"\nbaud = 57600'))
    rt = ShowRuntime(load_show(tmp_path / "show.toml", deep=False), seconds=60.0, load_model=lambda _l, _y, _g: model)
    task = asyncio.create_task(rt.run(handle_signals=False))
    try:
        await until(lambda: rt.latest_state is not None and rt.latest_state.label == "calm", 30,
                    "the show never read the headset")
        device = rt.device_stage.device
        assert device is not None
        headset.kill()  # the port vanishes: the process that served the pty died
        headset.wait(5)
        await frames_keep_coming(rt, 3.0)
        assert device.counters.get("disconnects") >= 1, device.counters.snapshot()
        await until(lambda: rt.director.scene_name == "attract", 10, "no attract scene while the headset is gone")
        headset = simulate(link)  # plugged back in, behind the same path
        await until(lambda: rt.latest_state is not None and rt.latest_state.label == "calm", 30,
                    "the show did not read the headset again")
        await until(lambda: rt.director.scene_name == "calm", 10, "the scene did not come back")
        assert device is rt.device_stage.device or rt.device_stage.device is not None
        reconnected = rt.device_stage.device
        assert reconnected is not None and reconnected.counters.get("reconnects") >= 1, \
            reconnected.counters.snapshot()
        assert rt.supervisor.counters.get("render.crashes") == 0
    finally:
        headset.kill()
        headset.wait(5)
        rt.supervisor.request_stop("test over")
        await asyncio.wait_for(task, 20)


@pytest.mark.slow
async def test_a_broker_restart_under_a_running_eeg_and_render_node(broker: Broker, tmp_path: Path,  # noqa: F811
                                                                     model: DreamModel) -> None:
    def node(name: str, role: str) -> ShowRuntime:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "show.toml").write_text(ROLE_SHOW.format(port=broker.port, node=name, role=role).replace(
            'seconds = 40 }}, {{ state = "off_head"', 'seconds = 400 }}, {{ state = "off_head"'))
        return ShowRuntime(load_show(folder / "show.toml", deep=False), seconds=60.0,
                           load_model=lambda _l, _y, _g: model)

    eeg, render = node("eeg1", "eeg"), node("proj1", "render")
    tasks = [asyncio.create_task(n.run(handle_signals=False)) for n in (eeg, render)]
    try:
        await until(lambda: render.counters.get("states_followed") >= 1 and render.latest_state is not None
                    and render.latest_state.label == "calm", 40, "the render node never followed a state")
        links = [n.mqtt_stage.transport for n in (eeg, render) if n.mqtt_stage is not None]
        assert len(links) == 2
        scene, label = render.director.scene_name, render.latest_state.label if render.latest_state else None
        broker.stop()
        await until(lambda: all(not link.connected.is_set() for link in links), 10,  # type: ignore[attr-defined]
                    "the nodes did not notice the broker was gone")
        await frames_keep_coming(render, 3.0)  # render nodes keep showing the last state meanwhile
        assert render.director.scene_name == scene
        assert render.latest_state is not None and render.latest_state.label == label
        broker.start()  # the same port; a fresh broker remembers nothing (persistence false)
        await until(lambda: all(link.counters.get("connects") >= 2 for link in links), 30,  # type: ignore[attr-defined]
                    "the nodes did not reconnect")
        # the retained state is right again: the eeg node published it anew on reconnecting
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("dreamstate/gallery/eeg1/state")
            async with asyncio.timeout(10):
                async for m in client.messages:
                    assert m.retain
                    doc = json.loads(bytes(m.payload))  # type: ignore[arg-type]
                    break
        assert eeg.latest_state is not None and doc["label"] == eeg.latest_state.label == "calm"
        status = {}
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("dreamstate/gallery/+/status")
            async with asyncio.timeout(10):
                async for m in client.messages:
                    status[str(m.topic)] = bytes(m.payload)  # type: ignore[arg-type]
                    if len(status) == 2:
                        break
        assert set(status.values()) == {b"online"}, status
        await frames_keep_coming(render, 1.0)
        assert render.supervisor.counters.get("render.crashes") == 0
    finally:
        for n in (eeg, render):
            n.supervisor.request_stop("test over")
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def test_the_headset_off_and_on_plays_the_attract_scene_and_comes_back(tmp_path: Path,
                                                                            model: DreamModel) -> None:
    device = ('kind = "simulated"\nseed = 5\nspeed = 4.0\nloop = false\nscript = [{ state = "relaxed", '
              'seconds = 16 }, { state = "off_head", seconds = 16 }, { state = "relaxed", seconds = 60 }]')
    (tmp_path / "show.toml").write_text(SHOW.format(device=device))
    rt = ShowRuntime(load_show(tmp_path / "show.toml", deep=False), seconds=40.0, load_model=lambda _l, _y, _g: model)
    task = asyncio.create_task(rt.run(handle_signals=False))
    try:
        await until(lambda: rt.director.scene_name == "calm", 20, "the worn headset never chose a scene")
        await until(lambda: rt.director.scene_name == "attract", 15, "no attract scene once the headset was off")
        await frames_keep_coming(rt, 1.0)
        await until(lambda: rt.director.scene_name == "calm", 20, "the scene did not come back with the headset")
        await frames_keep_coming(rt, 1.0)
    finally:
        rt.supervisor.request_stop("test over")
        await asyncio.wait_for(task, 20)
