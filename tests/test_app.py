"""The whole show end to end: simulated headset -> signal -> scenes -> real dream -> video file,
with OSC control over real UDP."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import cv2
import pytest
from pythonosc.udp_client import SimpleUDPClient

from dreamstate.engine.runtime.app import ShowRuntime
from dreamstate.engine.runtime.showfile import load_show

SHOW = """
[show]
name = "e2e"
model = "SqueezeNet_fp16.onnx"
default_scene = "calm"
[device]
kind = "simulated"
seed = 3
script = [{ state = "relaxed", seconds = 30 }]
[states]
mode = "rules"
labels = ["calm", "focused", "neutral"]
dwell_s = 0.5
rules = [{ state = "calm", when = "alpha_rel > 0.30" }, { state = "focused", when = "beta_rel > 0.30" }]
[scenes.calm]
layers = { "fire3/concat" = 1.0 }
zoom = 1.0
[scenes.focused]
layers = { "fire5/concat" = 1.0 }
zoom = 1.03
crossfade_s = 0
[scenes.neutral]
layers = { "fire3/concat" = 1.0 }
[scenes.attract]
layers = { "fire3/concat" = 0.5 }
[output]
kind = "video"
path = "out/show.mp4"
size = [320, 180]
dream_size = [160, 96]
fps = 20
[osc]
enabled = true
listen_port = 0
"""


@pytest.fixture
def show_dir(tmp_path: Path, shared_models: Path) -> Path:
    shutil.copy(shared_models / "SqueezeNet_fp16.onnx", tmp_path / "SqueezeNet_fp16.onnx")
    (tmp_path / "show.toml").write_text(SHOW)
    return tmp_path


@pytest.mark.slow
async def test_show_runs_end_to_end_and_obeys_osc(show_dir: Path) -> None:
    loaded = load_show(show_dir / "show.toml")
    rt = ShowRuntime(loaded, seconds=8.0)
    task = asyncio.create_task(rt.run())
    # wait for the OSC listener and the renderer
    for _ in range(400):
        if rt.renderer is not None and rt.supervisor.status.get("osc") == "running":
            break
        await asyncio.sleep(0.05)
    assert rt.renderer is not None, rt.supervisor.last_error
    port = rt.osc_server.address[1]
    client = SimpleUDPClient("127.0.0.1", port)
    client.send_message("/dreamstate/scene", "focused")
    client.send_message("/dreamstate/zoom", "not a number")   # rejected, counted, show goes on
    client.send_message("/dreamstate/image", "../../etc/passwd")  # refused: outside the show folder
    for _ in range(100):
        if rt.director.scene_name == "focused" and rt.counters.get("commands_rejected") >= 1:
            break
        await asyncio.sleep(0.05)
    client.close()
    assert rt.director.scene_name == "focused"
    assert rt.osc_server.counters.total("rejected.") == 1, "bad argument rejected by the OSC layer"
    assert rt.counters.get("commands_rejected") == 1, "path outside the show folder refused"
    await asyncio.wait_for(task, 30)
    assert rt.supervisor.stop_reason == "stage timer finished"
    crashes = {k: v for k, v in rt.supervisor.counters.snapshot().items() if k.endswith("crashes")}
    assert crashes == {}
    assert rt.latest_state is not None, "the signal pipeline produced states"
    stats = rt.renderer.stats
    assert stats.dream_steps > 0
    video = show_dir / "out" / "show.mp4"
    cap = cv2.VideoCapture(str(video))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (180, 320, 3)
    assert frames >= 20


CALIBRATED = SHOW.replace('mode = "rules"', 'mode = "calibrated"').replace(
    'script = [{ state = "relaxed", seconds = 30 }]',
    'script = [{ state = "relaxed", seconds = 5 }, { state = "focused", seconds = 30 }]',
).replace('{ state = "focused", when = "beta_rel > 0.30" }]',
          '{ state = "focused", when = "beta_rel > 0.30" }]\n'
          '[states.calibration]\nmin_windows_per_label = 8\nsave = "calib.json"',
          ).replace('kind = "video"', 'kind = "none"')


@pytest.mark.slow
async def test_calibration_labels_over_osc_fit_and_save(tmp_path: Path, shared_models: Path) -> None:
    import json

    shutil.copy(shared_models / "SqueezeNet_fp16.onnx", tmp_path / "SqueezeNet_fp16.onnx")
    (tmp_path / "show.toml").write_text(CALIBRATED)
    rt = ShowRuntime(load_show(tmp_path / "show.toml"), seconds=30.0)
    task = asyncio.create_task(rt.run())
    for _ in range(400):
        if rt.osc_server is not None:
            break
        await asyncio.sleep(0.05)
    client = SimpleUDPClient("127.0.0.1", rt.osc_server.address[1])
    client.send_message("/dreamstate/calibrate/start", "calm")
    await asyncio.sleep(4.0)
    client.send_message("/dreamstate/calibrate/stop", [])
    await asyncio.sleep(2.0)  # the simulator is "focused" from 5 s on
    client.send_message("/dreamstate/calibrate/start", "focused")
    await asyncio.sleep(4.0)
    client.send_message("/dreamstate/calibrate/stop", [])
    saved = tmp_path / "calib.json"
    for _ in range(100):
        if saved.exists():
            break
        await asyncio.sleep(0.05)
    client.close()
    rt.supervisor.request_stop("test done")
    await asyncio.wait_for(task, 10)
    assert saved.exists(), "the fitted calibration was saved where the show says"
    doc = json.loads(saved.read_text())
    assert "calm" in json.dumps(doc) and "focused" in json.dumps(doc)
    assert rt.signal_stage.pipeline.calibrator.model is not None


async def test_missing_headset_never_stops_the_show(tmp_path: Path, shared_models: Path) -> None:
    """A headset port that does not exist: the device stage retries with backoff, the state is
    'absent', the attract scene plays, and the renderer keeps going."""
    shutil.copy(shared_models / "SqueezeNet_fp16.onnx", tmp_path / "SqueezeNet_fp16.onnx")
    text = SHOW.replace('kind = "simulated"', 'kind = "thinkgear"\nport = "/dev/dreamstate-no-such-port"').replace(
        'kind = "video"', 'kind = "none"') + "\n[attract]\nscene = \"attract\"\nafter_s = 0.5\n"
    (tmp_path / "show.toml").write_text(text)
    rt = ShowRuntime(load_show(tmp_path / "show.toml"), seconds=4.0)
    await asyncio.wait_for(rt.run(), 30)
    counters = rt.supervisor.counters.snapshot()
    assert counters.get("device.crashes", 0) >= 2, counters
    assert "no-such-port" in rt.supervisor.last_error["device"]
    assert counters.get("render.crashes", 0) == 0
    assert rt.latest_state is not None and rt.latest_state.label == "absent"
    assert rt.director.scene_name == "attract"
    assert rt.renderer.stats.displayed_frames > 10


async def test_telemetry_out_over_osc_and_mqtt(tmp_path: Path, shared_models: Path) -> None:
    """TouchDesigner/Max get the fixed OSC address set at a steady rate; an MQTT render node
    gets retained state and telemetry, and can switch the scene over MQTT."""
    import json
    import socket

    import aiomqtt

    from tests.test_mqtt import Broker

    broker = Broker(tmp_path)
    broker.start()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    try:
        shutil.copy(shared_models / "SqueezeNet_fp16.onnx", tmp_path / "SqueezeNet_fp16.onnx")
        osc = f'listen_port = 0\nrate_hz = 20\ntargets = [{{ host = "127.0.0.1", port = {rx.getsockname()[1]} }}]'
        mqtt = (f'\n[mqtt]\nenabled = true\nport = {broker.port}\n'
                'installation = "room"\nnode = "eeg"\ntelemetry_hz = 5\n')
        text = SHOW.replace('kind = "video"', 'kind = "none"').replace("listen_port = 0", osc) + mqtt
        (tmp_path / "show.toml").write_text(text)
        rt = ShowRuntime(load_show(tmp_path / "show.toml"), seconds=20.0)
        task = asyncio.create_task(rt.run())
        got: dict[str, bytes] = {}
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe("dreamstate/room/eeg/#")
            async with asyncio.timeout(15):
                async for m in c.messages:
                    got[str(m.topic)] = m.payload  # type: ignore[assignment]
                    tele_doc = json.loads(got.get("dreamstate/room/eeg/telemetry", b"{}"))
                    if "dreamstate/room/eeg/state" in got and {"signal", "state"} <= set(tele_doc):
                        break
            await c.publish("dreamstate/room/control/scene", b"focused")
            for _ in range(100):
                if rt.director.scene_name == "focused":
                    break
                await asyncio.sleep(0.05)
        assert rt.director.scene_name == "focused", "scene switched over MQTT"
        for _ in range(300):  # fps goes out once a second, once the renderer shows frames
            if rt.renderer is not None and rt.renderer.stats.displayed_frames > 0:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.3)
        tele = json.loads(got["dreamstate/room/eeg/telemetry"])
        assert 0.0 <= tele["signal"] <= 1.0 and "state" in tele
        # the status file's content: the device, each stage, the last errors and the uptime too
        assert {"device", "stages", "last_errors", "uptime_s"} <= set(tele), sorted(tele)
        assert {"device", "signal", "render", "mqtt"} <= set(tele["stages"]) and tele["device"].startswith("simulated")
        assert json.loads(got["dreamstate/room/eeg/state"])["label"] in {"calm", "focused", "neutral"}
        addresses: dict[str, int] = {}
        from pythonosc.osc_packet import OscPacket

        packets = 0
        while True:
            try:
                data = rx.recv(65536)
            except BlockingIOError:
                break
            packets += 1
            assert data.startswith(b"#bundle\x00"), "each telemetry tick is one bundle"
            for timed in OscPacket(data).messages:
                addresses[timed.message.address] = addresses.get(timed.message.address, 0) + 1
        rt.supervisor.request_stop("test done")
        await asyncio.wait_for(task, 10)
        for address in ("/dreamstate/heartbeat", "/dreamstate/status", "/dreamstate/state", "/dreamstate/eeg/signal",
                        "/dreamstate/eeg/attention", "/dreamstate/state/calm", "/dreamstate/render/fps"):
            assert addresses.get(address, 0) >= 1, (address, addresses)
        assert addresses["/dreamstate/state"] >= 10, "sent at a steady rate, not only on change"
        assert all(a.startswith("/dreamstate/") for a in addresses)
    finally:
        rx.close()
        broker.stop()


INJECTED = """
[show]
name = "injected"
model = "starter"
default_scene = "calm"
[states]
mode = "rules"
labels = ["calm", "focused", "neutral"]
dwell_s = 0.5
rules = [{ state = "calm", when = "alpha_rel > 0.30" }, { state = "focused", when = "beta_rel > 0.30" }]
[scenes.calm]
layers = { block2 = 1.0 }
[scenes.focused]
layers = { block3 = 1.0 }
[scenes.neutral]
layers = { block2 = 1.0 }
[scenes.attract]
layers = { block2 = 0.5 }
[output]
kind = "none"
size = [96, 64]
dream_size = [96, 64]
fps = 30
"""


async def test_device_model_and_output_can_be_injected(tmp_path: Path) -> None:
    """The runtime builds nothing it was given: a scripted simulator as fast as the loop allows,
    a model loaded once by the test, and an output that keeps what it is shown."""
    import numpy as np

    from dreamstate.devices.simulator import SimulatedDevice
    from dreamstate.engine.core.show import LoadedShow
    from dreamstate.engine.output.base import Output
    from dreamstate.models.dream import DreamModel

    class Kept(Output):
        name = "kept"

        def __init__(self, size: tuple[int, int]) -> None:
            super().__init__(size)
            self.last: np.ndarray | None = None

        def open(self) -> tuple[int, int]:
            return self.size

        def present(self, frame: np.ndarray) -> None:
            self.last = frame
            self.frames += 1

        def close(self) -> None:
            pass

    (tmp_path / "show.toml").write_text(INJECTED)
    loaded = load_show(tmp_path / "show.toml")
    model = DreamModel.load("starter", ["block2", "block3"])
    output = Kept((96, 64))
    calls: list[str] = []

    def device(given: LoadedShow) -> SimulatedDevice:
        calls.append(f"device {given.show.show.name}")
        return SimulatedDevice([("relaxed", 600.0)], seed=1, speed=8.0)

    def load(given: LoadedShow, layers: list[str] | None, guide: bool) -> DreamModel:
        calls.append(f"model {sorted(layers or [])} guide={guide}")
        return model

    rt = ShowRuntime(loaded, seconds=4.0, open_device=device, load_model=load, open_output=lambda _l: output)
    await asyncio.wait_for(rt.run(), 30)
    assert calls == ["device injected", "model ['block2', 'block3'] guide=False"]
    assert output.frames > 20 and output.last is not None and output.last.shape == (64, 96, 3)
    state = rt.latest_state
    assert state is not None and state.label == "calm"  # 8x speed: the relaxed script is well under way
    assert rt.renderer is not None and rt.renderer.stats.dream_steps > 5
    assert rt.telemetry().doc()["state"] == "calm"


async def test_output_seconds_ends_the_show(tmp_path: Path) -> None:
    """`[output] seconds` (render a video of a set length) ends the show by itself; it was
    validated and then ignored."""
    from dreamstate.models.dream import DreamModel

    (tmp_path / "show.toml").write_text(INJECTED.replace('kind = "none"', 'kind = "none"\nseconds = 1.5'))
    model = DreamModel.load("starter", ["block2", "block3"])
    rt = ShowRuntime(load_show(tmp_path / "show.toml"), load_model=lambda _l, _layers, _g: model)
    await asyncio.wait_for(rt.run(), 30)
    assert rt.supervisor.stop_reason == "stage timer finished"


async def test_status_file_is_written_atomically_with_what_a_technician_checks(tmp_path: Path) -> None:
    import json

    from dreamstate.models.dream import DreamModel

    (tmp_path / "show.toml").write_text(INJECTED + '[status]\nfile = "state/status.json"\nevery_s = 0.5\n')
    model = DreamModel.load("starter", ["block2", "block3"])
    rt = ShowRuntime(load_show(tmp_path / "show.toml"), seconds=3.0, load_model=lambda _l, _layers, _g: model)
    await asyncio.wait_for(rt.run(), 30)
    doc = json.loads((tmp_path / "state" / "status.json").read_text())
    assert doc["show"] == "injected" and doc["uptime_s"] > 1.0
    assert doc["device"].startswith("simulated headset")
    assert doc["stages"]["render"] == "running" and doc["stages"]["device"] == "running"
    assert doc["fps"] > 0 and "picture" in doc and "counters" in doc and doc["last_errors"] == {}
    assert not list((tmp_path / "state").glob(".*tmp"))  # written through a temporary file, renamed


def test_status_file_outside_the_show_folder_is_refused(tmp_path: Path) -> None:
    from dreamstate.engine.core.errors import ShowError

    (tmp_path / "show.toml").write_text(INJECTED + '[status]\nfile = "../status.json"\n')
    with pytest.raises(ShowError, match=r"status\.file"):
        load_show(tmp_path / "show.toml")
