"""Headless sinks: a video file, PNG snapshots, and an MJPEG preview over HTTP.

Encoding never happens on the display thread: each sink hands frames to its own writer
thread through a small bounded queue or a latest-value slot, so a slow disk cannot stutter the
display; frames that do not fit are dropped and counted in ``dropped``.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import queue
import socketserver
import threading
import time
from pathlib import Path
from typing import Any

from dreamstate.engine.core.background import report_background_error
from dreamstate.engine.core.channels import LatestSlot
from dreamstate.engine.core.cvlib import cv
from dreamstate.engine.core.errors import RenderError
from dreamstate.engine.core.metrics import Counters
from dreamstate.engine.output.base import U8, Output

log = logging.getLogger("dreamstate.output")


class VideoOutput(Output):
    """Writes every presented frame to a video file with OpenCV's VideoWriter (mp4v).

    After ``open()`` the file exists and a writer thread runs; after ``close()`` every queued
    frame is written and the file is complete. With ``max_bytes``, writing stops once the file
    reaches that size (checked every second of video): one warning names the file, the limit
    and the fix, and later frames are counted in ``dropped`` (a demo left running headless for
    a day would otherwise fill the disk at 20-30 MB a minute at 1280x720).

    With ``realtime=True`` (a show's recording) the file keeps the show's clock: each frame is
    written once for every frame slot (1/``fps``) that passed since the one before, so a display
    that ran slower than ``fps``, or frames dropped on a full queue, repeat the last frame instead
    of making the video play fast; a frame that arrives ahead of its slot is skipped and counted in
    ``dropped``. Without it every presented frame is written once (offline renders).
    """

    name = "video"

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float, *,
                 fourcc: str = "mp4v", queue_size: int = 16, max_bytes: int | None = None,
                 realtime: bool = False) -> None:
        super().__init__(size)
        self.realtime = realtime
        self._t0: float | None = None
        self.slots = 0  # frame slots written (realtime: the video's length in frames)
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.full = False
        self.fps = fps
        self.fourcc = fourcc
        self._q: queue.Queue[tuple[U8, float] | None] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._writer: Any = None
        self.written = 0

    def open(self) -> tuple[int, int]:
        cv2 = cv()

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RenderError(f"cannot create the folder for video file {str(self.path)!r}: "
                              f"{exc.strerror}", hint="use a writable folder") from None
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*self.fourcc),
                                       self.fps, self.size)
        if not self._writer.isOpened():
            raise RenderError(f"cannot open video file {str(self.path)!r} for writing",
                              hint="use a .mp4 or .avi name in a writable folder")
        self._thread = threading.Thread(target=self._run, name="video-writer", daemon=True)
        self._thread.start()
        log.info("writing %s", self.describe(), extra={"output": self.name, "file": str(self.path.resolve())})
        return self.size

    def _run(self) -> None:
        cv2 = cv()

        while True:
            item = self._q.get()
            if item is None:
                return
            frame, at = item
            if self.full:
                self.dropped += 1
                continue
            copies = 1
            if self.realtime:
                if self._t0 is None:
                    self._t0 = at
                due = int((at - self._t0) * self.fps) + 1  # slots up to and including this frame's
                copies = min(due - self.slots, 10 * max(1, round(self.fps)))  # a long stall: at most 10 s
                if copies <= 0:
                    self.dropped += 1  # ahead of its slot
                    continue
            try:
                bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
                for _ in range(copies):
                    self._writer.write(bgr)
                    self.slots += 1
                self.written += 1
            except Exception as exc:  # noqa: BLE001 -- reported; the writer takes the next frame
                report_background_error("video writer", exc, log, output=self.name, file=str(self.path))
            if self.max_bytes is not None and self.written % max(1, round(self.fps)) == 0:
                self._check_size()

    def _check_size(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if self.max_bytes is not None and size >= self.max_bytes:
            self.full = True
            log.warning("video file %s reached its limit of %.0f MB after %d frames; no more frames are "
                        "written (fix: raise output.video_limit_mb, or use output.kind = \"none\" or a window "
                        "for a show that runs all day)", self.path, self.max_bytes / 1e6, self.written,
                        extra={"output": self.name, "file": str(self.path)})

    def present(self, frame: U8) -> None:
        try:
            self._q.put_nowait((frame, time.monotonic()))
            self.frames += 1
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None, timeout=10.0)
            self._thread.join(timeout=30.0)
            self._thread = None
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            log.info("video file %s closed: %d frames written", self.path, self.written,
                     extra={"output": self.name, "dropped": self.dropped})

    def describe(self) -> str:
        return f"video file {self.path} ({self.size[0]}x{self.size[1]} @ {self.fps:g} fps)"


class PngOutput(Output):
    """PNG snapshots: on demand with ``snapshot()``, and every ``every_s`` seconds if set.

    Files are ``<folder>/<prefix>-<n>.png``. ``snapshot(path)`` writes the latest frame to that
    path (on the writer thread) and returns the path; ``wait()`` blocks until pending writes
    are on disk.
    """

    name = "png"

    def __init__(self, folder: str | Path, size: tuple[int, int], *,
                 every_s: float | None = None, prefix: str = "frame") -> None:
        super().__init__(size)
        self.folder = Path(folder)
        self.every_s = every_s
        self.prefix = prefix
        self._last: U8 | None = None
        self._last_write = 0.0
        self._n = 0
        self._q: queue.Queue[tuple[U8, Path] | None] = queue.Queue(maxsize=8)
        self._thread: threading.Thread | None = None
        self.written: list[Path] = []

    def open(self) -> tuple[int, int]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RenderError(f"cannot create snapshot folder {str(self.folder)!r}: "
                              f"{exc.strerror}", hint="use a writable folder") from None
        self._thread = threading.Thread(target=self._run, name="png-writer", daemon=True)
        self._thread.start()
        return self.size

    def _run(self) -> None:
        from dreamstate.engine.core.images import save_image

        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                frame, path = item
                save_image(path, frame)
                self.written.append(path)
            except RenderError as exc:
                log.error("snapshot failed: %s", exc, extra={"output": self.name})
            finally:
                self._q.task_done()

    def _next_path(self) -> Path:
        self._n += 1
        return self.folder / f"{self.prefix}-{self._n:05d}.png"

    def present(self, frame: U8) -> None:
        self._last = frame
        self.frames += 1
        now = time.monotonic()
        if self.every_s is not None and now - self._last_write >= self.every_s:
            self._last_write = now
            self._enqueue(frame, self._next_path())

    def _enqueue(self, frame: U8, path: Path) -> None:
        try:
            self._q.put_nowait((frame.copy(), path))
        except queue.Full:
            self.dropped += 1

    def snapshot(self, path: str | Path | None = None) -> Path | None:
        """Queue the latest frame for writing; None when no frame was presented yet."""
        if self._last is None:
            return None
        p = Path(path) if path is not None else self._next_path()
        self._enqueue(self._last, p)
        return p

    def wait(self) -> None:
        self._q.join()

    def close(self) -> None:
        if self._thread is not None:
            self._q.put(None, timeout=10.0)
            self._thread.join(timeout=30.0)
            self._thread = None

    def describe(self) -> str:
        every = f", every {self.every_s:g} s" if self.every_s else ", on demand"
        return f"PNG snapshots in {self.folder}{every}"


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """HTTP server with one thread per client, at most ``max_clients`` of them: the next one
    gets ``503 Service Unavailable`` at once, from the accepting thread, with no thread made."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler],
                 max_clients: int, counters: Counters) -> None:
        super().__init__(address, handler)
        self.max_clients = max_clients
        self.counters = counters
        self._active = 0
        self._lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = self._active >= self.max_clients
            if not full:
                self._active += 1
        if full:
            self.counters.inc("refused_clients")
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._active -= 1


class MjpegOutput(Output):
    """An MJPEG preview over HTTP (``multipart/x-mixed-replace``), on loopback by default.

    ``GET /`` (or ``/stream.mjpg``) streams; ``GET /frame.jpg`` returns one JPEG. Frames are
    offered at most ``fps`` times a second, scaled to ``width`` pixels wide; JPEG encoding
    happens on the HTTP threads, never on the display thread. At most ``max_clients`` viewers
    at once (each costs a thread and an encode per frame); the next get 503, counted in
    ``counters["refused_clients"]``. After ``open()`` ``port`` is the real port (0 asks the OS
    for a free one).
    """

    name = "mjpeg"

    def __init__(self, size: tuple[int, int], *, host: str = "127.0.0.1", port: int = 8080,
                 fps: float = 10.0, width: int = 640, quality: int = 80, max_clients: int = 4) -> None:
        super().__init__(size)
        self.max_clients = max_clients
        self.counters = Counters()
        self.host = host
        self.port = port
        self.fps = fps
        self.width = width
        self.quality = quality
        self.slot: LatestSlot[U8] = LatestSlot()
        self._last_offer = 0.0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def open(self) -> tuple[int, int]:
        handler = self._handler()
        try:
            self._server = _Server((self.host, self.port), handler, self.max_clients, self.counters)
        except OSError as exc:
            raise RenderError(f"MJPEG preview cannot listen on {self.host}:{self.port}: "
                              f"{exc.strerror}",
                              hint="pick another [output] mjpeg_port or free that port") from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="mjpeg-preview", daemon=True)
        self._thread.start()
        log.info("MJPEG preview at http://%s:%d/", self.host, self.port,
                 extra={"output": self.name})
        return self.size

    def present(self, frame: U8) -> None:
        now = time.monotonic()
        if now - self._last_offer >= 1.0 / self.fps:
            self._last_offer = now
            self.slot.put(frame)
            self.frames += 1

    def encode(self, frame: U8) -> bytes:
        cv2 = cv()

        h, w = frame.shape[:2]
        if w > self.width:
            frame = cv2.resize(frame, (self.width, max(1, round(h * self.width / w))),
                               interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RenderError("JPEG encoding failed", hint="check the frame")
        return bytes(buf.tobytes())

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        out = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("mjpeg: " + format, *args)

            def do_GET(self) -> None:
                if self.path == "/frame.jpg":
                    frame = out.slot.get()
                    if frame is None:
                        self.send_error(503, "no frame yet")
                        return
                    data = out.encode(frame)
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if self.path not in ("/", "/stream.mjpg"):
                    self.send_error(404, "use / or /frame.jpg")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                version = 0
                while not out._stop.is_set():
                    frame, version = out.slot.wait_newer(version, timeout=0.5)
                    if frame is None:
                        continue
                    data = out.encode(frame)
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(data)}\r\n\r\n".encode()
                                         + data + b"\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        return

        return Handler

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def describe(self) -> str:
        return f"MJPEG preview http://{self.host}:{self.port}/"

