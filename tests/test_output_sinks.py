"""Headless sinks: video file, PNG snapshots, MJPEG preview over loopback HTTP, the factory."""

from __future__ import annotations

import logging
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.images import load_image
from dreamstate.engine.core.show import LoadedShow, OutputConfig, Show
from dreamstate.engine.output import (
    MjpegOutput,
    NullOutput,
    PngOutput,
    TeeOutput,
    VideoOutput,
    WindowOutput,
    open_output,
)
from dreamstate.engine.output.factory import FallbackOutput


def _frame(i: int, w: int = 96, h: int = 64) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (i * 40) % 256
    img[:, : w // 2, 1] = 200
    img[h // 2:, :, 2] = 150
    return img


def test_video_output_writes_every_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = VideoOutput(tmp_path / "sub" / "v.mp4", (96, 64), 25.0)
    with caplog.at_level(logging.INFO, "dreamstate.output"):
        out.open()
        for i in range(6):
            out.present(_frame(i))
        out.close()
        out.close()  # harmless twice
    assert out.written == 6 and out.dropped == 0
    # the log says where the file is (a new user found no line naming it) and what it holds
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("writing video file") and "v.mp4" in m for m in said), said
    assert sum("closed: 6 frames written" in m for m in said) == 1, said
    cap = cv().VideoCapture(str(tmp_path / "sub" / "v.mp4"))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr[:, :, ::-1])
    cap.release()
    assert len(frames) == 6
    assert np.abs(frames[3].astype(int) - _frame(3).astype(int)).mean() < 8


def test_video_output_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    out = VideoOutput(tmp_path / "file" / "v.mp4", (64, 48), 25.0)
    with pytest.raises(RenderError, match=r"file.*v\.mp4"):
        out.open()


def test_png_snapshots_on_demand_and_periodic(tmp_path: Path) -> None:
    out = PngOutput(tmp_path / "shots", (96, 64))
    out.open()
    assert out.snapshot() is None  # nothing shown yet
    out.present(_frame(1))
    out.present(_frame(2))
    p = out.snapshot(tmp_path / "now.png")
    out.wait()
    assert p == tmp_path / "now.png"
    got = (load_image(p) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(got, _frame(2))
    out.close()
    periodic = PngOutput(tmp_path / "every", (96, 64), every_s=0.0)
    periodic.open()
    for i in range(3):
        periodic.present(_frame(i))
    periodic.wait()
    periodic.close()
    assert sorted(q.name for q in (tmp_path / "every").glob("*.png")) == \
        ["frame-00001.png", "frame-00002.png", "frame-00003.png"]


def test_mjpeg_preview_serves_frames_on_loopback() -> None:
    out = MjpegOutput((96, 64), port=0, fps=1000.0)
    out.open()
    try:
        assert out.host == "127.0.0.1" and out.port > 0
        url = f"http://127.0.0.1:{out.port}"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "/frame.jpg", timeout=5)
        out.present(_frame(3))
        data = urllib.request.urlopen(url + "/frame.jpg", timeout=5).read()
        img = cv().imdecode(np.frombuffer(data, np.uint8), cv().IMREAD_COLOR)[:, :, ::-1]
        assert np.abs(img.astype(int) - _frame(3).astype(int)).mean() < 6
        with urllib.request.urlopen(url + "/", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            time.sleep(0.01)
            out.present(_frame(4))
            head = resp.read(200)
            assert head.startswith(b"--frame\r\nContent-Type: image/jpeg")
    finally:
        out.close()


def test_mjpeg_port_in_use_is_a_clear_error() -> None:
    a = MjpegOutput((32, 32), port=0)
    a.open()
    try:
        with pytest.raises(RenderError, match=f"127.0.0.1:{a.port}"):
            MjpegOutput((32, 32), port=a.port).open()
    finally:
        a.close()


def test_factory_builds_each_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = LoadedShow(Show(), tmp_path, "<test>")
    assert isinstance(open_output(OutputConfig(kind="none")), NullOutput)
    v = open_output(OutputConfig(kind="video", path="out/show.mp4", fps=30), loaded)
    assert isinstance(v, VideoOutput) and v.path == tmp_path / "out" / "show.mp4"
    png = open_output(OutputConfig(kind="png", path="shots"), loaded)
    assert isinstance(png, PngOutput) and png.folder == tmp_path / "shots"
    monkeypatch.setenv("DISPLAY", ":0")
    w = open_output(OutputConfig(kind="window", display=1, fullscreen=True, vsync=False))
    assert isinstance(w, FallbackOutput) and isinstance(w.primary, WindowOutput)
    assert w.primary.display == 1 and w.primary.fullscreen and not w.primary.vsync
    assert isinstance(open_output(OutputConfig(kind="auto")), FallbackOutput)
    tee = open_output(OutputConfig(kind="none", mjpeg_port=0))
    assert isinstance(tee, TeeOutput) and isinstance(tee.extra[0], MjpegOutput)
    assert tee.extra[0].host == "127.0.0.1"
    tee.open()
    tee.present(_frame(0))
    assert tee.primary.frames == 1
    tee.close()


def test_mjpeg_preview_refuses_clients_beyond_its_cap() -> None:
    import socket
    import urllib.error
    import urllib.request

    import numpy as np

    out = MjpegOutput((32, 32), port=0, fps=1000.0, max_clients=2)
    out.open()
    held = []
    try:
        out.present(np.zeros((32, 32, 3), np.uint8))
        for _ in range(2):  # two viewers keep their streams open
            s = socket.create_connection(("127.0.0.1", out.port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.0 200")
            held.append(s)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{out.port}/frame.jpg", timeout=5)
        assert err.value.code == 503
        err.value.close()
        assert out.counters.get("refused_clients") == 1
        held.pop().close()
        for i in range(50):  # the freed slot serves the next viewer (its thread notices at the next frame)
            out.present(np.full((32, 32, 3), i, np.uint8))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{out.port}/frame.jpg", timeout=5) as r:
                    assert r.status == 200
                    break
            except urllib.error.HTTPError as busy:
                import time

                busy.close()
                time.sleep(0.05)
        else:
            raise AssertionError("the slot of a viewer that left was never freed")
    finally:
        for s in held:
            s.close()
        out.close()


def test_video_file_stops_at_its_size_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A show left writing video all day stops at output.video_limit_mb with one warning and
    counts the frames it no longer writes; the file stays playable."""
    rng = np.random.default_rng(0)
    out = VideoOutput(tmp_path / "v.mp4", (96, 64), fps=10, max_bytes=300_000)
    out.open()
    for _ in range(400):  # noise compresses badly: ~1.5 KB a frame
        out.present(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
        time.sleep(0.002)
    out.close()
    assert out.full and out.dropped > 0 and 0 < out.written < 400
    assert caplog.text.count("reached its limit") == 1 and "video_limit_mb" in caplog.text
    size = (tmp_path / "v.mp4").stat().st_size
    assert size < 300_000 + 300_000  # the muxer writes in 256 KiB chunks: the limit is seen that late
    cap = cv().VideoCapture(str(tmp_path / "v.mp4"))
    assert cap.isOpened() and int(cap.get(7)) == out.written  # CAP_PROP_FRAME_COUNT
    cap.release()


def test_factory_passes_the_video_limit(tmp_path: Path) -> None:
    loaded = LoadedShow(Show(), tmp_path, "<test>")
    v = open_output(OutputConfig(kind="video", path="v.mp4", video_limit_mb=1.5), loaded)
    assert isinstance(v, VideoOutput) and v.max_bytes == 1_500_000
    assert open_output(OutputConfig(kind="video", path="v.mp4", video_limit_mb=None), loaded).max_bytes is None


def test_a_show_recording_keeps_the_show_clock(tmp_path: Path) -> None:
    """realtime (a show's recording, as the factory makes it): frames presented at 10 a second
    into a 30 fps file fill 3 slots each, so 1 s of show is ~1 s of video, not a third of one;
    frames presented faster than the file's rate are skipped and counted."""
    out = VideoOutput(tmp_path / "v.mp4", (96, 64), 30.0, realtime=True)
    out.open()
    for i in range(11):  # 0.0 .. 1.0 s
        out.present(_frame(i))
        time.sleep(0.1)
    for i in range(20):  # then a burst, far faster than 30 a second
        out.present(_frame(i))
    out.close()
    cap = cv().VideoCapture(str(tmp_path / "v.mp4"))
    n = int(cap.get(7))  # CAP_PROP_FRAME_COUNT
    cap.release()
    assert n == out.slots and 30 <= n <= 40  # ~1.1 s at 30 fps (sleep overshoot adds a slot or two)
    assert out.dropped >= 15  # the burst's frames ahead of their slots
    v = open_output(OutputConfig(kind="video", path="rec.mp4"), LoadedShow(Show(), tmp_path, "<test>"))
    assert isinstance(v, VideoOutput) and v.realtime
