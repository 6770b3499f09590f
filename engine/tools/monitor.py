"""A live terminal view of the headset for a gallery technician (``dreamstate monitor``).

It shows, refreshed a few times a second: signal quality in words and colour, attention and
meditation, the eight band powers as bars, a sparkline of the last two seconds of raw EEG,
samples/s and status packets/s, blinks, the link counters of the device (checksum errors,
resyncs, reconnects, ... whatever the backend counts) and the latest device events.

Extra panels plug in through ``MonitorPanel`` (``feed(reading)`` + ``render()``):
``PipelinePanel`` shows the live EEG map point and state of an
``engine.signal.pipeline.SignalPipeline`` (or anything with ``feed``, ``latest_state`` and
``latest_point``).

``MonitorModel`` (pure state) and ``render_monitor`` (pure rendering) are separate from
``run_monitor`` (the async loop), so the view can be tested by rendering to a recording
``rich.console.Console``. When the console is not a terminal (a pipe, a log file), the monitor
prints one plain status line per second instead of redrawing, and the full panel at the end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dreamstate.devices.base import Device
from dreamstate.engine.core.aio import wait_for
from dreamstate.engine.core.records import (
    BAND_NAMES,
    SFREQ,
    BandPowers,
    Blink,
    DeviceEvent,
    DeviceEventKind,
    ESense,
    HeartRate,
    Marker,
    RawChunk,
    Reading,
    SignalQuality,
)

log = logging.getLogger("dreamstate.devices.monitor")

SPARK = "▁▂▃▄▅▆▇█"
KEY_COUNTERS = ("checksum_errors", "resyncs", "reconnects", "length_errors", "lost_raw_frames")


class MonitorPanel(Protocol):
    """An extra panel: fed every reading, asked to render a few times a second."""

    title: str

    def feed(self, reading: Reading) -> None: ...

    def render(self) -> RenderableType: ...


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._hits: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, t: float, n: int = 1) -> None:
        self._hits.append((t, n))

    def rate(self, now: float) -> float:
        while self._hits and self._hits[0][0] < now - self.window_s:
            self._hits.popleft()
        return sum(n for _, n in self._hits) / self.window_s


class MonitorModel:
    """The latest values the monitor shows.

    After ``feed(reading)`` the matching fields hold that reading's values; ``raw_tail()``
    returns up to the last ``seconds`` of raw µV. Uses the local monotonic clock for rates
    and staleness (``clock``), not reading times, so replays at speed show true arrival rates.
    """

    def __init__(self, seconds: float = 2.0, sfreq: float = SFREQ,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.capacity = round(seconds * sfreq)
        self._ring: npt.NDArray[np.float32] = np.zeros(self.capacity, dtype=np.float32)
        self._filled = 0
        self.samples = 0
        self.gaps = 0
        self.lost_samples = 0
        self.next_index = -1
        self.poor_signal: int | None = None
        self.attention: int | None = None
        self.meditation: int | None = None
        self.bands: tuple[int, ...] | None = None
        self.blinks = 0
        self.last_blink: tuple[float, int] | None = None
        self.heart: int | None = None
        self.events: collections.deque[tuple[float, str]] = collections.deque(maxlen=5)
        self.last_reading_at: float | None = None
        self.diagnosis: str | None = None
        """Why no data arrives, when the device knows (e.g. bytes but no valid frames)."""
        self.started = clock()
        self.ended = False
        self._sample_rate = _Rate()
        self._status_rate = _Rate()

    def feed(self, reading: Reading) -> None:
        now = self.clock()
        if not isinstance(reading, DeviceEvent):  # events say why data is missing; they are not data
            self.last_reading_at = now
            self.diagnosis = None
        if isinstance(reading, RawChunk):
            x = np.asarray(reading.samples, dtype=np.float32)
            n = len(x)
            if self.next_index >= 0 and reading.first_index > self.next_index:
                self.gaps += 1
                self.lost_samples += reading.first_index - self.next_index
            self.next_index = reading.first_index + n
            self.samples += n
            self._sample_rate.add(now, n)
            if n >= self.capacity:
                self._ring[:] = x[-self.capacity:]
            else:
                self._ring = np.roll(self._ring, -n)
                self._ring[-n:] = x
            self._filled = min(self.capacity, self._filled + n)
        elif isinstance(reading, SignalQuality):
            self.poor_signal = reading.poor_signal
            self._status_rate.add(now)
        elif isinstance(reading, ESense):
            self.attention, self.meditation = reading.attention, reading.meditation
        elif isinstance(reading, BandPowers):
            self.bands = tuple(reading.values)
        elif isinstance(reading, Blink):
            self.blinks += 1
            self.last_blink = (now, reading.strength)
        elif isinstance(reading, HeartRate):
            self.heart = reading.bpm
        elif isinstance(reading, Marker):
            self.events.append((time.time(), f"marker {reading.label or '(end)'}"))
        elif isinstance(reading, DeviceEvent):
            text = reading.kind.value.replace("_", " ")
            if reading.detail:
                text += f": {reading.detail}"
            self.events.append((time.time(), text))
            if reading.kind == DeviceEventKind.END_OF_STREAM:
                self.ended = True
            if reading.kind == DeviceEventKind.NO_FRAMES:
                self.diagnosis = reading.detail

    def raw_tail(self) -> npt.NDArray[np.float32]:
        return self._ring[self.capacity - self._filled:]

    def samples_per_s(self) -> float:
        return self._sample_rate.rate(self.clock())

    def packets_per_s(self) -> float:
        return self._status_rate.rate(self.clock())

    def stale_s(self) -> float | None:
        """Seconds since the last reading (None before the first)."""
        if self.last_reading_at is None:
            return None
        return self.clock() - self.last_reading_at


def quality_text(poor: int | None, stale: float | None, diagnosis: str | None = None) -> Text:
    if diagnosis and (stale is None or stale > 2.0):
        return Text(f"NO VALID FRAMES: {diagnosis}", style="bold white on red")
    if stale is None:
        return Text("WAITING FOR DATA", style="bold yellow")
    if stale > 2.0:
        return Text(f"NO DATA for {stale:.0f} s", style="bold white on red")
    if poor is None:
        return Text("signal: no report yet", style="yellow")
    if poor == 0:
        return Text("GOOD contact (0)", style="bold green")
    if poor >= 200:
        return Text("OFF HEAD (200)", style="bold white on red")
    if poor < 50:
        return Text(f"FAIR contact ({poor})", style="bold yellow")
    return Text(f"POOR contact ({poor})", style="bold red")


def sparkline(values: npt.NDArray[np.float32], width: int = 64) -> tuple[str, float, float]:
    """Block-character sparkline of ``values`` (mean per column); returns text, min, max."""
    if len(values) == 0:
        return "", 0.0, 0.0
    width = max(1, min(width, len(values)))
    edges = np.linspace(0, len(values), width + 1).astype(int)
    cols = np.array([values[a:b].mean() for a, b in itertools.pairwise(edges)])
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo if hi > lo else 1.0
    idx = np.clip(((cols - lo) / span * (len(SPARK) - 1)).round().astype(int), 0, len(SPARK) - 1)
    return "".join(SPARK[i] for i in idx), lo, hi


def _bar(fraction: float, width: int) -> str:
    full = max(0, min(width, round(fraction * width)))
    return "█" * full + "·" * (width - full)


def render_monitor(model: MonitorModel, *, title: str = "dreamstate monitor",
                   counters: dict[str, int] | None = None,
                   panels: Sequence[MonitorPanel] = (), width: int = 64) -> RenderableType:
    """The whole monitor view for the current model (pure; no I/O)."""
    stale = model.stale_s()
    head = Table.grid(padding=(0, 2))
    head.add_row(quality_text(model.poor_signal, stale, model.diagnosis),
                 Text(f"{model.samples_per_s():5.0f} samples/s", style="cyan"),
                 Text(f"{model.packets_per_s():3.1f} status/s", style="cyan"),
                 Text(f"blinks {model.blinks}", style="magenta"),
                 Text(f"up {model.clock() - model.started:5.0f} s", style="dim"))

    es = Table(title="eSense (0-100)", title_justify="left", show_header=False, box=None,
               padding=(0, 1))
    for name, value in (("attention", model.attention), ("meditation", model.meditation)):
        if value is None:
            es.add_row(name, "—", "")
        else:
            es.add_row(name, f"{value:3d}", Text(_bar(value / 100, 20), style="green"))

    bands = Table(title="band powers (log scale)", title_justify="left", show_header=False,
                  box=None, padding=(0, 1))
    for i, name in enumerate(BAND_NAMES):
        if model.bands is None:
            bands.add_row(name, "—", "")
        else:
            v = model.bands[i]
            bands.add_row(name, f"{v:>9,d}", Text(_bar(math.log10(v + 1) / 7.3, 24),
                                                   style="blue"))

    tail = model.raw_tail()
    spark, lo, hi = sparkline(tail, width)
    rms = float(np.sqrt(np.mean(tail.astype(np.float64) ** 2))) if len(tail) else 0.0
    railing = len(tail) > 0 and max(abs(lo), abs(hi)) > 7000
    raw_text = Text(spark or "(no raw samples yet)", style="red" if railing else "white")
    raw_info = Text(f"last {len(tail) / SFREQ:.1f} s   min {lo:8.1f} µV   max {hi:8.1f} µV   "
                    f"rms {rms:7.1f} µV" + ("   RAILING" if railing else ""), style="dim")

    link = Table(title="link", title_justify="left", show_header=False, box=None, padding=(0, 1))
    snap = dict(counters or {})
    link.add_row("samples", f"{model.samples:,d}")
    link.add_row("gaps / lost", f"{model.gaps} / {model.lost_samples}")
    for key in KEY_COUNTERS:
        value = snap.pop(key, 0)
        style = "red" if value else ""
        link.add_row(key.replace("_", " "), Text(f"{value:,d}", style=style))
    for key, value in sorted(snap.items()):
        if value and key not in ("samples", "bytes", "frames"):
            link.add_row(key.replace("_", " "), f"{value:,d}")

    events = Table(title="events", title_justify="left", show_header=False, box=None,
                   padding=(0, 1))
    for t, text in list(model.events)[-5:]:
        events.add_row(time.strftime("%H:%M:%S", time.localtime(t)), text)
    if not model.events:
        events.add_row("", Text("none yet", style="dim"))

    body: list[RenderableType] = [
        head,
        Columns([es, bands, link], padding=(0, 3)),
        Panel(Group(raw_text, raw_info), title="raw EEG (Fp1)", title_align="left"),
    ]
    for panel in panels:
        body.append(Panel(panel.render(), title=panel.title, title_align="left"))
    body.append(events)
    return Panel(Group(*body), title=title, title_align="left")


def status_line(model: MonitorModel, panels: Sequence[MonitorPanel] = ()) -> str:
    """One plain line for logs and pipes."""
    q = quality_text(model.poor_signal, model.stale_s(), model.diagnosis).plain
    parts = [f"signal={q}", f"attention={model.attention if model.attention is not None else '-'}",
             f"meditation={model.meditation if model.meditation is not None else '-'}",
             f"samples/s={model.samples_per_s():.0f}", f"samples={model.samples}",
             f"blinks={model.blinks}", f"gaps={model.gaps}"]
    if model.bands is not None:
        parts.append("bands=" + ",".join(str(v) for v in model.bands))
    for panel in panels:
        summary = getattr(panel, "summary", None)
        if callable(summary):
            parts.append(str(summary()))
    return " ".join(parts)


class PipelinePanel:
    """Live EEG map point and state from a signal pipeline (``feed(reading)`` returning window
    results with a ``point``, plus ``latest_state`` / ``latest_point``). The map plots the last
    ``trail`` points, scaled to their own extent. Errors inside the pipeline are logged and counted, never raised to the
    monitor (``errors``)."""

    title = "EEG state and map"

    def __init__(self, pipeline: Any, grid: tuple[int, int] = (33, 9), trail: int = 40) -> None:
        self.pipeline = pipeline
        self.grid = grid
        self.errors = 0
        self._points: collections.deque[tuple[float, float]] = collections.deque(maxlen=trail)

    def feed(self, reading: Reading) -> None:
        try:
            results = self.pipeline.feed(reading)
        except Exception as exc:  # noqa: BLE001 - the monitor must keep running
            self.errors += 1
            if self.errors <= 3 or self.errors % 100 == 0:
                log.warning("signal pipeline failed on a reading: %s", exc,
                            extra={"errors": self.errors})
            return
        for result in results or ():
            point = getattr(result, "point", None)
            if point is not None:
                self._points.append((float(point.x), float(point.y)))

    @property
    def points(self) -> list[tuple[float, float]]:
        """The trail of map points, oldest first."""
        return list(self._points)

    def summary(self) -> str:
        """``state=LABEL(CONF)``, plus ``leading=LABEL(P,HELD/DWELL s)`` while a challenger
        waits out the dwell or ``ahead=LABEL(P)`` while it is within the hysteresis margin."""
        state = getattr(self.pipeline, "latest_state", None)
        if state is None or not state.probabilities:
            return f"state={state.label if state is not None else '-'}(no-windows-yet)"
        text = f"state={state.label}({state.confidence:.2f})"
        if state.leading is not None:
            p = state.probabilities.get(state.leading, 0.0)
            text += f" leading={state.leading}({p:.2f},{state.leading_s:.1f}/{state.dwell_s:.1f}s)"
        elif state.ahead() is not None:
            top = state.ahead()
            text += f" ahead={top}({state.probabilities[top]:.2f},within-hysteresis)"
        return text

    def _map(self) -> Text:
        w, h = self.grid
        cells = [[" "] * w for _ in range(h)]
        if self._points:
            xs = np.array([p[0] for p in self._points])
            ys = np.array([p[1] for p in self._points])
            x0, x1 = float(xs.min()), float(xs.max())
            y0, y1 = float(ys.min()), float(ys.max())
            sx = (w - 1) / (x1 - x0) if x1 > x0 else 0.0
            sy = (h - 1) / (y1 - y0) if y1 > y0 else 0.0
            for k, (x, y) in enumerate(self._points):
                cx = round((x - x0) * sx) if sx else w // 2
                cy = h - 1 - (round((y - y0) * sy) if sy else h // 2)
                cells[cy][cx] = "●" if k == len(self._points) - 1 else "·"
        if not self._points:
            hint = "map fills in as windows arrive"[:w]
            row = h // 2
            cells[row] = list(hint.center(w))
        text = Text()
        text.append("┌" + "─" * w + "┐\n", style="cyan")
        for row_cells in cells:
            text.append("│" + "".join(row_cells) + "│\n", style="cyan")
        text.append("└" + "─" * w + "┘", style="cyan")
        return text

    def render(self) -> RenderableType:
        state = getattr(self.pipeline, "latest_state", None)
        point = getattr(self.pipeline, "latest_point", None)
        info = Table(show_header=False, box=None, padding=(0, 1))
        if state is None or not state.probabilities:
            info.add_row("state", Text(f"{state.label if state else '-'}: waiting for windows", style="dim"))
        else:
            info.add_row("state", Text(state.label, style="bold magenta"))
            info.add_row("confidence", f"{state.confidence:.2f}")
            top = state.ahead()
            if state.leading is not None:
                info.add_row("next", Text(f"{state.leading} leads, takes over after {state.dwell_s:.1f} s "
                                          f"({state.leading_s:.1f} s so far)", style="yellow"))
            elif top is not None:
                info.add_row("next", Text(f"{top} is ahead, not by the hysteresis margin yet", style="dim"))
            for label, p in sorted(state.probabilities.items()):
                info.add_row(f"  {label}", Text(f"{p:.2f} " + _bar(p, 16), style="magenta"))
        if point is not None:
            info.add_row("map point", f"({point.x:+.2f}, {point.y:+.2f})")
        if self.errors:
            info.add_row("errors", Text(str(self.errors), style="red"))
        return Columns([info, self._map()], padding=(0, 3))


def make_pipeline_panel(show: Any = None) -> PipelinePanel | None:
    """A ``PipelinePanel`` over ``engine.signal.pipeline.SignalPipeline`` with the show's
    (or default) signal/map/states config; None when that module is not available."""
    try:
        from dreamstate.engine.signal.pipeline import SignalPipeline
    except ImportError as exc:
        log.info("state panel unavailable: %s", exc)
        return None
    from dreamstate.engine.core.show import MapConfig
    from dreamstate.engine.runtime.showfile import load_show

    if show is not None:
        pipeline = SignalPipeline(show.signal, show.map, show.states)
    else:  # the demo show's rules, so the state moves; a small reference so the map appears in ~15 s
        demo = load_show(None, deep=False).show
        pipeline = SignalPipeline(demo.signal, MapConfig(reference_size=60), demo.states)
    start = getattr(pipeline, "start", None)
    if callable(start):
        start()
    return PipelinePanel(pipeline)


async def run_monitor(device: Device, *, seconds: float | None = None,
                      console: Console | None = None, panels: Sequence[MonitorPanel] = (),
                      refresh_hz: float = 4.0, plain: bool | None = None,
                      stop: asyncio.Event | None = None) -> MonitorModel:
    """Open ``device`` and show it until ``seconds`` pass, ``stop`` is set or the stream ends.

    ``plain`` (default: when the console is not a terminal) prints a status line per second
    instead of redrawing; the full panel is printed once at the end either way.
    Returns the final model.
    """
    console = console or Console()
    plain = (not console.is_terminal) if plain is None else plain
    model = MonitorModel()
    stop = stop or asyncio.Event()
    title = f"dreamstate monitor — {device.describe()}"

    async def consume() -> None:
        async for reading in device.readings():
            model.feed(reading)
            for panel in panels:
                panel.feed(reading)
            if model.ended:
                break
        stop.set()

    def view() -> RenderableType:
        return render_monitor(model, title=title, counters=device.counters.snapshot(),
                              panels=panels)

    deadline = None if seconds is None else time.monotonic() + seconds
    period = 1.0 / max(0.5, refresh_hz)
    async with device:
        task = asyncio.create_task(consume(), name="monitor-readings")
        task.add_done_callback(lambda _t: stop.set())
        try:
            if plain:
                last_line = time.monotonic()
                while not stop.is_set():
                    await _wait(stop, period, deadline)
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    if time.monotonic() - last_line >= 1.0:
                        last_line = time.monotonic()
                        console.print(status_line(model, panels), highlight=False, soft_wrap=True)
            else:
                from rich.live import Live

                # logging must go through the live console: a line written to the terminal
                # behind its back shifts the screen, and the redraw then leaves stale copies of
                # the header and the tails of wrapped lines (a stray quote) behind
                with Live(view(), console=console, auto_refresh=False, vertical_overflow="crop",
                          redirect_stdout=False, redirect_stderr=False) as live, \
                        logs_through_console(live.console):
                    while not stop.is_set():
                        await _wait(stop, period, deadline)
                        if deadline is not None and time.monotonic() >= deadline:
                            break
                        live.update(view(), refresh=True)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    if plain:
        console.print(view())
    return model


class _ConsoleLogHandler(logging.Handler):
    """Prints formatted log records above a ``rich.live.Live`` view (``console.print``), with
    the formatter and filters of the handler it stands in for."""

    def __init__(self, console: Console, like: logging.Handler) -> None:
        super().__init__(like.level)
        self.console = console
        self.setFormatter(like.formatter)
        for f in like.filters:
            self.addFilter(f)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(Text(self.format(record)), soft_wrap=False, highlight=False, markup=False)
        except Exception:  # noqa: BLE001 - logging must never raise (logging.Handler.handleError)
            self.handleError(record)


@contextlib.contextmanager
def logs_through_console(console: Console) -> Any:
    """While active, the root logger's terminal handlers (stream handlers on stdout/stderr)
    are replaced by :class:`_ConsoleLogHandler` on ``console``; restored on exit."""
    import sys

    root = logging.getLogger()
    saved = list(root.handlers)
    terminal = [sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__]
    terminal += [getattr(f, "rich_proxied_file", None) for f in terminal]  # under a redirecting Live
    root.handlers[:] = [
        _ConsoleLogHandler(console, h)
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) and h.stream in terminal
        else h
        for h in saved
    ]
    try:
        yield
    finally:
        root.handlers[:] = saved


async def _wait(stop: asyncio.Event, period: float, deadline: float | None) -> None:
    timeout = period
    if deadline is not None:
        timeout = max(0.0, min(period, deadline - time.monotonic()))
    with contextlib.suppress(TimeoutError):
        await wait_for(stop.wait(), timeout)
