"""NDI video out with real parts on loopback: the sink (``engine/output/ndi.py``) sends through
cyndilib's bundled NDI runtime, and cyndilib's own Finder and Receiver in the test discover the
source and receive its frames.

Discovery: NDI finds sources by mDNS, which a box without a network (CI, this sandbox) does not
answer. The NDI configuration file's ``networks.ips`` ("extra IPs": machines whose NDI service
on port 5960 the finder asks directly, docs.ndi.video, "Configuration File Options") set to
127.0.0.1 makes a finder on this machine see this machine's senders without mDNS. The NDI runtime
reads the file from ``$NDI_CONFIG_DIR`` once, when the process's first finder or sender is made
(one made earlier keeps the process blind), so ``tests/conftest.py`` sets it at import.
Source names carry the process id, so tests run at the same time on one machine (other
checkouts, xdist workers) never receive each other's sources.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamstate.engine.core.show import OutputConfig
from dreamstate.engine.output.base import NullOutput, TeeOutput
from dreamstate.engine.output.factory import open_output, with_ndi
from dreamstate.engine.output.ndi import NdiOutput

REPO = Path(__file__).resolve().parents[1]


def test_the_ndi_configuration_for_loopback_discovery_is_in_place() -> None:
    """tests/conftest.py points NDI_CONFIG_DIR at tests/ndi before any NDI object exists."""
    config = Path(os.environ["NDI_CONFIG_DIR"]) / "ndi-config.v1.json"
    assert json.loads(config.read_text())["ndi"]["networks"]["ips"] == "127.0.0.1"


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def find_source(nd: Any, finder: Any, name: str, timeout_s: float = 5.0) -> Any:
    """The NDI source whose stream name is ``name`` (full names are "HOST (name)")."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        finder.wait_for_sources(0.2)
        for full in finder.get_source_names():
            if full.endswith(f"({name})"):
                return finder.get_source(full)
    pytest.fail(f"NDI source {name!r} not found in {timeout_s} s; visible: {finder.get_source_names()}")


def pattern(w: int, h: int, blue: int) -> np.ndarray:
    """Smooth gradients (NDI's codec is lossy; smooth content survives it) with a per-frame blue level."""
    f = np.empty((h, w, 3), np.uint8)
    f[..., 0] = (np.arange(w) * 255 // max(1, w - 1))[None, :]
    f[..., 1] = (np.arange(h) * 255 // max(1, h - 1))[:, None]
    f[..., 2] = blue
    return f


def test_frames_from_the_sink_arrive_at_a_real_ndi_receiver() -> None:
    import cyndilib as nd

    w, h = 320, 180
    name = unique("ds-test")
    out = NdiOutput((w, h), source_name=name, fps=60.0)
    out.open()
    finder = nd.Finder()
    finder.open()
    receiver = nd.Receiver(color_format=nd.RecvColorFormat.RGBX_RGBA, bandwidth=nd.RecvBandwidth.highest)
    got = nd.VideoFrameSync()
    receiver.frame_sync.set_video_frame(got)
    try:
        assert out.full_name is not None and out.full_name.endswith(f"({name})")
        receiver.set_source(find_source(nd, finder, name))
        for blue in (40, 210):  # the second proves the receiver follows the live picture
            sent = pattern(w, h, blue)
            deadline = time.monotonic() + 5.0
            frame = None
            while time.monotonic() < deadline:
                out.present(sent)
                time.sleep(1 / 60)
                receiver.frame_sync.capture_video()
                if got.xres == w and got.yres == h:
                    arr = np.asarray(got.get_array()).reshape(h, w, 4)[..., :3]
                    if abs(float(arr[..., 2].mean()) - blue) < 8:
                        frame = arr.copy()
                        break
            assert frame is not None, f"no {w}x{h} frame with blue {blue} arrived in 5 s (sent {out.sent})"
            diff = np.abs(frame.astype(np.int16) - sent.astype(np.int16))
            assert float(diff.mean()) < 4.0, f"mean error {diff.mean():.1f} levels"
            assert float(np.percentile(diff, 99)) < 24, "the gradients did not survive the trip"
        assert receiver.is_connected()
        assert out.connections() == 1
        assert out.sent >= 2
    finally:
        receiver.disconnect()
        finder.close()
        out.close()
    assert out.connections() == 0


class _GatedNdi(NdiOutput):
    """The real sink whose sender thread, once inside a send, waits for the test to open a gate:
    a send that takes as long as the test likes, without timing anything."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.in_send = threading.Event()

    def _send(self, frame: np.ndarray, w: int, h: int) -> None:
        self.in_send.set()
        self.gate.wait(30.0)
        super()._send(frame, w, h)


def test_present_never_waits_for_the_send_and_drops_are_counted() -> None:
    """At 1920x1080 a send costs about 11 ms here (libndi's compression): a display loop that
    waited for it would lose its 60 Hz. ``present`` only copies into the latest-frame slot, so
    40 presents return while one send is held open, and 39 of them are counted as dropped."""
    w, h = 1920, 1080
    out = _GatedNdi((w, h), source_name=unique("ds-rate"), fps=60.0)
    frames = [pattern(w, h, b) for b in (0, 128)]
    out.open()
    try:
        out.present(frames[0])
        assert out.in_send.wait(10.0), "the sender thread never took the first frame"
        presents = threading.Thread(target=lambda: [out.present(frames[i % 2]) for i in range(40)])
        presents.start()
        presents.join(10.0)
        assert not presents.is_alive(), "present() waited for a send that had not finished"
        assert out.sent == 0 and out.frames == 41
        assert out.dropped == 39  # 40 frames into a one-frame slot: all but the last replaced, counted
        out.gate.set()
        deadline = time.monotonic() + 10.0
        while out.sent < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert out.sent == 2  # the held frame, then the latest one; nothing else was waiting
    finally:
        out.gate.set()
        out.close()
    # every presented frame was either sent or replaced before the sender took it
    assert out.sent + out.dropped == out.frames


def test_max_fps_caps_the_sends_and_counts_the_rest_as_dropped() -> None:
    """``[output] ndi_fps``: a 60 Hz display, at most 12 NDI frames a second."""
    out = NdiOutput((160, 90), source_name=unique("ds-cap"), fps=60.0, max_fps=12.0)
    frames = [pattern(160, 90, b) for b in (0, 255)]
    out.open()
    try:
        start = deadline = time.monotonic()
        while time.monotonic() - start < 1.0:
            out.present(frames[out.frames % 2])
            deadline += 1 / 60
            time.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        out.close()
    assert out.frames >= 54
    assert 9 <= out.sent <= 14, f"{out.sent} frames sent in a second at ndi_fps = 12"
    assert out.frames - 1 <= out.sent + out.dropped <= out.frames


def test_present_copies_the_frame() -> None:
    """A caller that reuses its array after ``present`` (the display loop's black frame) must not
    change what is sent: the slot holds a copy."""
    out = NdiOutput((32, 16), source_name=unique("ds-copy"))
    frame = pattern(32, 16, 99)
    out.present(frame)
    frame[...] = 0
    held = out.slot.get()
    assert held is not None and held is not frame and int(held[..., 2].max()) == 99


def test_factory_builds_ndi_alone_or_beside_another_output() -> None:
    alone = open_output(OutputConfig(kind="ndi", size=(64, 32)))
    assert isinstance(alone, NdiOutput) and alone.source_name == "dreamstate" and alone.size == (64, 32)
    beside = open_output(OutputConfig(kind="none", ndi="VJ out", ndi_fps=30, size=(64, 32)))
    assert isinstance(beside, TeeOutput) and beside.primary.name == "none"
    assert [type(o) for o in beside.extra] == [NdiOutput]
    assert isinstance(beside.extra[0], NdiOutput) and beside.extra[0].source_name == "VJ out"
    assert beside.extra[0].max_fps == 30 and alone.max_fps is None
    assert not isinstance(open_output(OutputConfig(kind="none")), TeeOutput)
    # the kiosk's opener: its own window, plus the NDI source a `kind = "ndi"` show asks for
    kiosk = with_ndi(NullOutput((64, 32)), OutputConfig(kind="ndi"))
    assert isinstance(kiosk, TeeOutput) and isinstance(kiosk.extra[0], NdiOutput)
    assert kiosk.extra[0].source_name == "dreamstate"


@pytest.mark.parametrize("name", ["", "   ", "tab\there"])
def test_unusable_source_names_are_refused(name: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="ndi"):
        OutputConfig(ndi=name)


ABSENT = """
import sys
sys.modules["cyndilib"] = None  # the import fails as it does where the extra is not installed
from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.show import OutputConfig
from dreamstate.engine.output.factory import open_output
from dreamstate.engine.tools.cli import main

print("check", main(["check", sys.argv[1]]), flush=True)
print("run", main(["run", sys.argv[2], "--output", "ndi", "--seconds", "1"]), flush=True)
try:
    open_output(OutputConfig(kind="none", ndi="x"))
except RenderError as exc:
    print("open_output:", exc, flush=True)
"""


def test_absent_library_is_named_by_check_and_at_start(tmp_path: Path) -> None:
    scenes = '[scenes.calm]\nlayers = { block10 = 1.0 }\n[scenes.attract]\nlayers = { block9 = 1.0 }\n'
    wants = tmp_path / "ndi.toml"
    wants.write_text('[show]\nname = "vj"\n' + scenes + '[output]\nkind = "none"\nndi = "VJ out"\n')
    plain = tmp_path / "plain.toml"
    plain.write_text('[show]\nname = "plain"\n' + scenes + '[output]\nkind = "none"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", ABSENT, str(wants), str(plain)], capture_output=True, text=True,
                       timeout=90, env=env, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "check 1" in r.stdout and "run 1" in r.stdout, out
    assert out.count("pip install 'dreamstate[ndi]'") >= 3, out  # check, run --output ndi, open_output
    assert "output.ndi" in out and "output.kind" in out, out
    assert "open_output: NDI output needs the optional cyndilib library" in r.stdout, out
    assert "show starting" not in out, "the show must not start without the NDI library"


def test_bench_render_sink_ndi_prints_send_times_and_runs_the_renderer_with_ndi_beside(
        capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from dreamstate.engine.tools.cli import main as cli_main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = cli_main(["bench", "render", "--sink", "ndi", "--model", "starter", "--seconds", "1.5",
                         "--warmup", "0.3", "--dream-size", "96x64", "--output-size", "192x128", "--threads", "1",
                         "--ndi-sizes", "192x128", "320x180", "--ndi-seconds", "0.5", "--flicker-seconds", "0"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert code == 0
    out = capsys.readouterr().out
    assert "NDI sink alone" in out and "192x128" in out and "320x180" in out
    flat = " ".join(out.split())  # rich wraps long lines at the terminal width
    assert "display sink = none + NDI source" in flat
    sent = re.search(r"NDI beside it: (\d+) frames sent, (\d+) dropped", flat)
    assert sent is not None and int(sent[1]) > 0, out


SHOW = """
[show]
name = "vj"
model = "starter"
default_scene = "calm"
[scenes.calm]
layers = {{ block2 = 1.0 }}
[scenes.attract]
layers = {{ block2 = 0.5 }}
[output]
kind = "none"
ndi = "{name}"
size = [160, 96]
dream_size = [96, 64]
fps = 30
"""


async def test_a_show_with_output_ndi_sends_its_displayed_frames(tmp_path: Path) -> None:
    """The whole path: a show file's `[output] ndi`, the output factory, the renderer's display
    loop and the sink; a real receiver in a thread gets moving frames of the show's size."""
    import asyncio
    import threading

    import cyndilib as nd

    from dreamstate.engine.core.show import LoadedShow
    from dreamstate.engine.output.base import Output
    from dreamstate.engine.runtime.app import ShowRuntime
    from dreamstate.engine.runtime.showfile import load_show
    from dreamstate.models.dream import DreamModel

    name = unique("ds-show")
    (tmp_path / "show.toml").write_text(SHOW.format(name=name))
    model = DreamModel.load("starter", ["block2"])
    got: list[np.ndarray] = []
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            finder = nd.Finder()  # made after the sink opened: a finder lists existing sources at once
            finder.open()
            receiver = nd.Receiver(color_format=nd.RecvColorFormat.RGBX_RGBA, bandwidth=nd.RecvBandwidth.highest)
            frame = nd.VideoFrameSync()
            receiver.frame_sync.set_video_frame(frame)
            try:
                deadline = time.monotonic() + 10.0
                # polled with sleeps: cyndilib's wait_for_sources holds the GIL while it waits
                # (finder.pyx calls NDIlib_find_wait_for_sources outside a nogil block), which
                # would stall the show's threads in this process
                while not any(n.endswith(f"({name})") for n in finder.update_sources()):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"NDI source {name!r} not found; visible: {finder.get_source_names()}")
                    time.sleep(0.05)
                receiver.set_source(finder.get_source(next(n for n in finder.get_source_names()
                                                           if n.endswith(f"({name})"))))
                deadline = time.monotonic() + 8.0
                while time.monotonic() < deadline and len(got) < 10:
                    receiver.frame_sync.capture_video()
                    if frame.xres:
                        arr = np.asarray(frame.get_array()).reshape(frame.yres, frame.xres, 4)[..., :3].copy()
                        if not got or not np.array_equal(arr, got[-1]):
                            got.append(arr)
                    time.sleep(1 / 60)
            finally:
                receiver.disconnect()
                finder.close()
        except BaseException as exc:  # noqa: BLE001 -- handed to the test, which fails with it
            errors.append(exc)

    made: list[Output] = []

    def opener(loaded: LoadedShow) -> Output:
        """The real factory; the test keeps what it made, to know when the NDI source is up."""
        out = open_output(loaded.show.output, loaded)
        made.append(out)
        return out

    rt = ShowRuntime(load_show(tmp_path / "show.toml"), seconds=20.0, load_model=lambda _l, _layers, _g: model,
                     open_output=opener)
    show = asyncio.create_task(rt.run())
    deadline = time.monotonic() + 20.0
    while not (made and isinstance(made[0], TeeOutput) and getattr(made[0].extra[0], "full_name", None)):
        assert time.monotonic() < deadline and not show.done(), "the show's NDI source did not open"
        await asyncio.sleep(0.05)
    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    while thread.is_alive() and not show.done():
        await asyncio.sleep(0.05)
    rt.supervisor.request_stop("the receiver has its frames")
    await asyncio.wait_for(show, 40)
    thread.join(timeout=20)
    assert not errors, errors
    assert len(got) >= 10, f"only {len(got)} distinct frames arrived"
    assert all(f.shape == (96, 160, 3) for f in got)
    assert float(got[-1].mean()) > 10, "the frames arrived black"
