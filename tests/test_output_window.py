"""The projector window, for real, under Xvfb: open it, present a frame, screenshot, compare.

Needs Debian packages ``xvfb`` (the X server) and ``x11-apps`` (``xwd`` for the screenshot).
When they are missing these tests FAIL with a message saying what to install.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.records import DreamRecipe
from dreamstate.engine.core.show import OutputConfig
from dreamstate.engine.output import FallbackOutput, VideoOutput, WindowOutput, open_output
from dreamstate.engine.output.window import NoDisplayError, display_present
from dreamstate.engine.render.renderer import Renderer
from dreamstate.models.dream import DreamModel

SCREEN = (320, 240)


def _free_display() -> int:
    for n in range(40, 400):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    pytest.fail("no free X display number between :40 and :399")


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """A private Xvfb server; yields its DISPLAY value."""
    if shutil.which("Xvfb") is None:
        pytest.fail("Xvfb is not installed: install the Debian package `xvfb` "
                    "(apt-get install -y xvfb x11-apps) to test the projector window")
    if shutil.which("xwd") is None:
        pytest.fail("xwd is not installed: install the Debian package `x11-apps`")
    n = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                             "-nolisten", "tcp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    sock = Path(f"/tmp/.X11-unix/X{n}")
    t0 = time.monotonic()
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() - t0 > 15:
            proc.kill()
            pytest.fail(f"Xvfb :{n} did not start")
        time.sleep(0.05)
    try:
        yield f":{n}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def display(xvfb: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    return xvfb


def screenshot(display: str) -> np.ndarray:
    """The whole X screen as (H, W, 3) uint8 RGB, from ``xwd -root`` (XWD format, parsed)."""
    raw = subprocess.run(["xwd", "-root", "-silent", "-display", display], check=True,
                         capture_output=True, timeout=20).stdout
    fields = struct.unpack(">25I", raw[:100])
    header_size, width, height = fields[0], fields[4], fields[5]
    byte_order, bpp, bytes_per_line = fields[7], fields[11], fields[12]
    red_mask, green_mask, blue_mask, ncolors = fields[14], fields[15], fields[16], fields[19]
    assert bpp in (24, 32), f"expected a 24/32-bit XWD image, got {bpp} bits per pixel"
    start = header_size + ncolors * 12
    nbytes = bpp // 8
    rows = np.frombuffer(raw, dtype=np.uint8, count=height * bytes_per_line, offset=start)
    b = rows.reshape(height, bytes_per_line)[:, :width * nbytes].reshape(height, width, nbytes)
    b = b.astype(np.uint32)
    order = range(nbytes) if byte_order == 0 else range(nbytes - 1, -1, -1)
    px = np.zeros((height, width), np.uint32)
    for k, i in enumerate(order):
        px |= b[..., i] << np.uint32(8 * k)

    def channel(mask: int) -> np.ndarray:
        shift = (mask & -mask).bit_length() - 1
        return ((px & mask) >> shift).astype(np.uint8)

    return np.dstack([channel(red_mask), channel(green_mask), channel(blue_mask)])


def _pattern(w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (xx * 255 // max(1, w - 1)).astype(np.uint8)
    img[..., 1] = (yy * 255 // max(1, h - 1)).astype(np.uint8)
    img[..., 2] = ((xx // 16 + yy // 16) % 2 * 200).astype(np.uint8)
    img[h // 3:h // 2, w // 4:w // 2] = (250, 30, 120)
    return img


def _in_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` on its own thread, as the display loop does, and re-raise its error."""
    box: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below on the test thread
            box.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    if box:
        raise box[0]


def test_fullscreen_window_shows_exactly_the_frame(display: str) -> None:
    frame = _pattern(*SCREEN)
    shots: list[np.ndarray] = []
    info: dict[str, object] = {}

    def body() -> None:
        out = WindowOutput((160, 120), display=0, fullscreen=True, vsync=True)
        size = out.open()
        info["size"], info["driver"] = size, out.driver
        try:
            for _ in range(25):  # a loaded machine may take a while to map the window
                for _ in range(3):
                    out.present(frame)
                    assert out.poll()
                time.sleep(0.2)
                shots.append(screenshot(display))
                if np.array_equal(shots[-1], frame):
                    break
        finally:
            out.close()

    _in_thread(body)
    assert info["driver"] == "x11"
    assert info["size"] == SCREEN  # borderless fullscreen takes the display's size
    assert np.array_equal(shots[-1], frame)


def test_windowed_output_shows_the_frame_somewhere_on_screen(display: str) -> None:
    frame = _pattern(160, 120)
    shots: list[np.ndarray] = []

    def body() -> None:
        out = WindowOutput((160, 120), display=0, fullscreen=False, vsync=False)
        assert out.open() == (160, 120)
        try:
            out.present(frame)
            out.present(frame)
            time.sleep(0.2)
            shots.append(screenshot(display))
        finally:
            out.close()

    _in_thread(body)
    shot = shots[0]
    # SDL centres the window on its display when no window manager places it
    x0, y0 = (SCREEN[0] - 160) // 2, (SCREEN[1] - 120) // 2
    assert np.array_equal(shot[y0:y0 + 120, x0:x0 + 160], frame)


def test_unknown_display_index_lists_the_displays(display: str) -> None:
    def body() -> None:
        with pytest.raises(RenderError, match=r"display 3 does not exist; displays present: "
                                              r"0: 320x240"):
            WindowOutput((100, 100), display=3).open()

    _in_thread(body)


def test_no_display_falls_back_to_the_video_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(var, raising=False)
    assert not display_present()
    for kind in ("auto", "window"):  # an explicit window used to crash-loop the render stage
        caplog.clear()
        cfg = OutputConfig(kind=kind, path=str(tmp_path / "show.mp4"), size=(64, 48))
        out = open_output(cfg, None)
        assert isinstance(out, VideoOutput), kind
        assert "no display found" in caplog.text and "DISPLAY" in caplog.text
    with pytest.raises(NoDisplayError, match="no display"):
        WindowOutput((64, 48)).open()


def test_dead_display_falls_back_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DISPLAY", f":{_free_display()}")  # nothing listens there
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    out = open_output(OutputConfig(kind="auto", path=str(tmp_path / "v.mp4"), size=(64, 48)))
    assert isinstance(out, FallbackOutput)
    result: list[str] = []

    def body() -> None:
        out.open()
        out.present(np.zeros((48, 64, 3), np.uint8))
        result.append(out.name)
        out.close()

    _in_thread(body)
    assert result == ["video"]
    assert "falling back" in caplog.text
    assert (tmp_path / "v.mp4").stat().st_size > 0


@pytest.mark.parametrize("scale", ["gpu", "cpu"])
async def test_renderer_drives_the_projector_window(display: str, shared_models: Path, scale: str) -> None:
    """gpu: the renderer hands dream-size frames to the window, which scales them on the GPU;
    cpu: the renderer upscales. Either way the screen shows the renderer's frames."""
    import cv2

    model = DreamModel.load(shared_models / "SqueezeNet_fp16.onnx", ["fire3/concat"],
                            device="cpu", threads=1)
    out = WindowOutput(SCREEN, display=0, fullscreen=True, vsync=True, scale=scale)
    r = Renderer(model, out, dream_size=(160, 120), output_size=(160, 120), fps=60)
    r.set_recipe(DreamRecipe(layer_weights={"fire3/concat": 1.0}, zoom=1.0, octaves=2,
                             steps_per_octave=2, step=0.5))
    task = asyncio.create_task(r.run())
    await asyncio.sleep(2.0)
    shot = await asyncio.to_thread(screenshot, display)
    shown = r.latest_frame
    r.stop()
    await asyncio.wait_for(task, 20)
    assert out.scale_used == scale and (scale in out.describe())
    assert shown is not None
    if scale == "gpu":
        assert shown.shape == (120, 160, 3)  # dream size: no CPU upscale
        shown = cv2.resize(shown, SCREEN, interpolation=cv2.INTER_LINEAR)
    assert shown.shape == (SCREEN[1], SCREEN[0], 3)
    assert r.output_size == SCREEN
    st = r.stats
    assert st.displayed_frames > 30 and st.dream_steps >= 1
    # the screen shows the renderer's frames (consecutive frames differ only slightly)
    diff = np.abs(shot.astype(np.int16) - shown.astype(np.int16)).mean()
    assert diff < 6.0, diff
    assert shot.std() > 5  # a real picture, not a blank screen


def test_gpu_scaling_fills_the_screen_from_a_small_frame(display: str) -> None:
    """A 32x24 frame (left half red, right half blue) on the fullscreen window: the screen is
    red on the left and blue on the right, edge to edge (SDL scales the texture)."""
    frame = np.zeros((24, 32, 3), np.uint8)
    frame[:, :16] = (255, 0, 0)
    frame[:, 16:] = (0, 0, 255)
    shots: list[np.ndarray] = []

    def body() -> None:
        out = WindowOutput((160, 120), display=0, fullscreen=True, vsync=True)
        out.open()
        try:
            assert out.scales and out.scale_used == "gpu"
            for _ in range(25):
                for _ in range(3):
                    out.present(frame)
                    assert out.poll()
                time.sleep(0.2)
                shots.append(screenshot(display))
                s = shots[-1]
                if (s[:, :2] == (255, 0, 0)).all() and (s[:, -2:] == (0, 0, 255)).all():
                    break
        finally:
            out.close()

    _in_thread(body)
    shot = shots[-1]
    w = shot.shape[1]
    assert (shot[:, : w // 2 - 8] == (255, 0, 0)).all()
    assert (shot[:, w // 2 + 8:] == (0, 0, 255)).all()


def test_env_driven_display_detection() -> None:
    assert display_present({"DISPLAY": ":0"})
    assert display_present({"WAYLAND_DISPLAY": "wayland-0"})
    assert display_present({"SDL_VIDEODRIVER": "kmsdrm"})
    assert not display_present({})
    assert not display_present({"SDL_VIDEODRIVER": "dummy"})
    assert display_present({"SDL_VIDEODRIVER": "offscreen", "DREAMSTATE_ALLOW_DUMMY_WINDOW": "1"})



def test_display_detection_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER", "DREAMSTATE_ALLOW_DUMMY_WINDOW"):
        monkeypatch.delenv(key, raising=False)
    assert not display_present()
    monkeypatch.setenv("DISPLAY", ":99")
    assert display_present()
