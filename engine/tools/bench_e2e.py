"""``dreamstate bench e2e``: the installation end to end, in separate processes on this machine.

Every show runs in its own process (``multiprocessing`` spawn: a ``ShowRuntime`` built from a
show file the bench writes, as ``dreamstate run`` would build it), so the measuring side never
shares an event loop or the GIL with the show it measures. Two parts:

1. **One show** (role ``all``): the simulated headset at 1x (real time) switching between
   relaxed and focused, the signal stage, the scenes, the renderer with a small dream on the
   ``starter`` model (CPU) and a headless output at 60 fps, OSC control on a free loopback port
   with telemetry sent to the bench, for ``--seconds`` and until ``--changes`` latencies are
   measured. Two figures come from it:

   * **state -> frame**: for each scene change an EEG state caused (after the warm-up), the
     time from that state's own sample time (``EegState.time``: its window's last sample, on
     the simulator's paced clock) to the moment the display presented the first picture in
     which a dream step made with the new scene's recipe (its ``generation``, or a newer one)
     shows with a weight above 0 (``Renderer.generations_shown``; a new dream frame comes in
     at weight 0 and fades in from the next refresh, so this includes one refresh). It covers
     the scenes stage picking the state up (it ticks every 50 ms), the dream worker finishing
     the step in flight and making one with the new recipe, and the display taking it. The
     window hop itself (the signal's own pace) lies before the sample time and is not in it;
     the target allows it anyway: hop (250 ms) plus one dream step (the mean step interval
     measured in the same run).
   * **OSC set -> echo**: a client process (this one) sends ``/dreamstate/param/crossfade_s``
     with a value past the schema's end (100 + its sequence number) to the show's control port
     on 127.0.0.1 and waits for the show's answer on its telemetry port:
     ``/dreamstate/clamped`` (address, argument, requested, applied), matched by the requested
     value. No telemetry address echoes an in-range set (``engine.control.osc.TELEMETRY`` is the
     EEG state and the render figures), and ``/dreamstate/clamped`` is the echo of a set that
     the show applied (clamped to 60 s, a value that only matters for cuts and reseeds). The
     path is the one every set takes: socket, decoder, bounded queue, ``apply_command``, then
     the reply on the telemetry socket. Sets are paced 110 ms apart, because replies are limited
     to 10 a second.

2. **Three nodes through mosquitto**: a bench-owned broker on a free loopback port (killed at
   the end), two render nodes (role ``render``) and one eeg node (role ``eeg``, the simulator
   at ``--speed``, so states change more often), each its own process, started together.
   **node skew**: for every scene change both render nodes made once all three were up (after
   the warm-up; paired by scene, within 0.5 s), the difference between the wall-clock moments
   their scene directors started the crossfade (``SceneDirector.changes``; each node maps its
   monotonic clock to the wall clock, which all nodes share on one machine). Each render node
   applies a state at the moment the eeg node stamped in it (``sent + lead_s``).

Targets (issue 13): state -> frame at most 250 ms + one dream step; OSC round trip p99 at most
10 ms; node skew p99 at most 17 ms (one frame at 60 Hz). The command prints PASS or MISS for
each; with ``--strict`` it exits 1 on a miss. It exits 1 when a figure could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.params import size_arg

HOP_S = 0.25  # the bench show's window hop, which the state -> frame target allows
OSC_PAUSE_S = 0.11  # between sets: the show answers at most 10 a second
OSC_BASE = 100.0  # requested crossfade_s = OSC_BASE + sequence number (the schema's end is 60)
LEAD_S = 0.15  # [mqtt] lead_s, the default: render nodes apply a state this long after it was sent
PAIR_S = 0.5  # two render nodes' changes to the same scene within this are the same change
MODEL = "starter"  # the bundled model; the bench show's scenes use its layers
READY_TIMEOUT_S = 180.0  # a show must show frames (and connect) within this after it is started
EXTRA_S = 300.0  # part 1 runs at most this much past --seconds to measure --changes scene changes

TARGET_E2E_HOP_MS = HOP_S * 1000.0
TARGET_OSC_P99_MS = 10.0
TARGET_SKEW_P99_MS = 17.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long each part measures once its shows are up (60); part 1 runs "
                             "longer when the OSC round trips need it")
    parser.add_argument("--changes", type=int, default=20,
                        help="part 1 also runs until this many state -> frame latencies are measured "
                             "(at most 5 minutes more) (20)")
    parser.add_argument("--repeats", type=int, default=200,
                        help="OSC round trips, 110 ms apart (200)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds after a show is up before its scene changes count (1)")
    parser.add_argument("--dream-size", type=size_arg, default=(128, 72), help="dream size (128x72)")
    parser.add_argument("--output-size", type=size_arg, default=(1280, 720),
                        help="headless output size the display composes (1280x720)")
    parser.add_argument("--speed", type=float, default=4.0,
                        help="the eeg node's simulator speed in the node-skew part (4)")
    parser.add_argument("--mosquitto", default=None,
                        help="the mosquitto broker binary (default: on PATH, else /usr/sbin/mosquitto)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")


# --- the shows ------------------------------------------------------------------------------------

def show_text(*, role: str, model: str, dream_size: tuple[int, int], output_size: tuple[int, int],
              speed: float, osc_target: int | None = None, mqtt_port: int | None = None,
              node: str = "node1") -> str:
    """A bench show: three states with a scene each, short dwell and smoothing (the bench times
    what happens after the state changed), a headless output, optional OSC and MQTT."""
    text = f"""
[show]
name = "bench-e2e"
model = "{model}"
default_scene = "neutral"

[device]
kind = "simulated"
seed = 4
speed = {speed}
script = [{{ state = "relaxed", seconds = 2 }}, {{ state = "focused", seconds = 2 }}]

[signal]
hop_s = {HOP_S}

[states]
mode = "rules"
labels = ["calm", "focused", "neutral"]
dwell_s = 0.25
smooth_s = 0.5
rules = [{{ state = "calm", when = "alpha_rel > 0.50" }}, {{ state = "focused", when = "beta_rel > 0.30" }}]

[scenes.calm]
layers = {{ block2 = 1.0 }}
zoom = 1.003

[scenes.focused]
layers = {{ block3 = 1.0 }}
zoom = 1.01

[scenes.neutral]
layers = {{ block3 = 0.5, block2 = 0.5 }}

[scenes.attract]
layers = {{ block2 = 0.5 }}

[output]
kind = "none"
size = [{output_size[0]}, {output_size[1]}]
dream_size = [{dream_size[0]}, {dream_size[1]}]
device = "cpu"
"""
    if osc_target is not None:
        text += f"""
[osc]
enabled = true
listen_host = "127.0.0.1"
listen_port = 0
rate_hz = 30
targets = [{{ host = "127.0.0.1", port = {osc_target} }}]
"""
    if mqtt_port is not None:
        text += f"""
[mqtt]
enabled = true
host = "127.0.0.1"
port = {mqtt_port}
installation = "bench"
node = "{node}"
role = "{role}"
"""
    return text


def node_main(show_path: str, results: Any, stop: Any, measured: Any, *, warmup_s: float, limit_s: float) -> None:
    """A spawned show process: run the show until ``stop`` is set (or ``limit_s``); send
    ``("ready", info)`` once it is up and ``("done", figures)`` (or ``("error", text)``) at the end;
    meanwhile keep ``measured`` at the number of state -> frame latencies measured so far."""
    try:
        figures = asyncio.run(_node(Path(show_path), results, stop, measured, warmup_s=warmup_s, limit_s=limit_s))
    except BaseException as exc:  # noqa: BLE001 -- reported to the bench, which says which node failed
        results.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    results.send(("done", figures))


async def _node(path: Path, results: Any, stop: Any, measured: Any, *, warmup_s: float,
                limit_s: float) -> dict[str, Any]:
    import logging

    from dreamstate.engine.runtime.app import ShowRuntime
    from dreamstate.engine.runtime.showfile import load_show

    # the OSC probe's overshoots are expected: keep their "applied clamped" warnings off the terminal
    logging.getLogger("dreamstate.app").addFilter(lambda r: "crossfade_s" not in r.getMessage())
    rt = ShowRuntime(load_show(path, deep=False), seconds=limit_s)
    loop = asyncio.get_running_loop()

    def wait_stop() -> None:
        stop.wait()
        loop.call_soon_threadsafe(rt.supervisor.request_stop, "bench done")

    threading.Thread(target=wait_stop, name="bench-stop", daemon=True).start()
    fig: dict[str, Any] = {"ready": None, "changes": [], "shown": []}
    steps0 = 0.0

    def collect() -> None:
        """Copy the new scene changes and shown generations (their deques keep only the last 256)."""
        r = rt.renderer
        last = fig["changes"][-1][0] if fig["changes"] else -1
        fig["changes"] += [(c.generation, c.scene, c.at, c.state_time) for c in list(rt.director.changes)
                           if c.generation > last]
        if r is not None:
            t_last = fig["shown"][-1][1] if fig["shown"] else -math.inf
            fig["shown"] += [(g, t) for g, t in list(r.generations_shown) if t > t_last]

    async def watch() -> None:
        nonlocal steps0
        while True:
            await asyncio.sleep(0.05)
            r, link, osc = rt.renderer, rt.mqtt, rt.osc_server
            if rt.role != "eeg" and (r is None or not r.generations_shown):
                continue
            if rt.show.mqtt.enabled and (link is None or not link.connected.is_set()):
                continue
            if rt.show.osc.enabled and osc is None:
                continue
            break
        fig["ready"] = time.monotonic()
        steps0 = float(r.stats.dream_steps) if r is not None else 0.0
        results.send(("ready", {"osc_port": int(osc.address[1]) if osc is not None else None}))
        while True:
            collect()
            measured.value = len(state_to_frame(fig, warmup_s)[0])
            await asyncio.sleep(0.25)

    task = asyncio.create_task(watch())
    try:
        await rt.run(handle_signals=False)
    finally:
        task.cancel()
    end = time.monotonic()
    collect()
    r = rt.renderer
    steps = float(r.stats.dream_steps) - steps0 if r is not None else 0.0
    ready = fig["ready"]
    return {
        **fig, "end": end, "wall_minus_mono": time.time() - time.monotonic(),
        "step_ms": 1000.0 * (end - ready) / steps if steps > 0 and ready is not None else math.nan,
        "provider": getattr(r.model, "provider", "?") if r is not None else None,
        "lateness": list(rt.follow_lateness), "stop_reason": rt.supervisor.stop_reason,
    }


@dataclass
class Node:
    """One show process, started and stopped by the bench."""

    name: str
    show: Path
    limit_s: float
    warmup_s: float = 0.0
    ctx: Any = field(default_factory=lambda: mp.get_context("spawn"))
    proc: Any = None
    conn: Any = None
    stop_event: Any = None
    measured: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        recv, send = self.ctx.Pipe(duplex=False)
        self.stop_event = self.ctx.Event()
        self.measured = self.ctx.Value("i", 0)
        self.proc = self.ctx.Process(target=node_main, name=f"bench-{self.name}", daemon=True,
                                     args=(str(self.show), send, self.stop_event, self.measured),
                                     kwargs={"warmup_s": self.warmup_s, "limit_s": self.limit_s})
        self.proc.start()
        send.close()
        self.conn = recv

    def _message(self, timeout: float, want: str) -> Any:
        if not self.conn.poll(timeout):
            raise DreamstateError(f"bench e2e: the {self.name} show sent nothing for {timeout:.0f} s "
                                  f"(waiting for {want})", hint="run it again with fewer other programs running")
        try:
            kind, payload = self.conn.recv()
        except EOFError:
            raise DreamstateError(f"bench e2e: the {self.name} show process ended early "
                                  f"(exit code {self.proc.exitcode})", hint="see its messages above") from None
        if kind == "error":
            raise DreamstateError(f"bench e2e: the {self.name} show failed: {payload}",
                                  hint="see its messages above")
        if kind != want:
            raise DreamstateError(f"bench e2e: the {self.name} show sent {kind!r} instead of {want!r}")
        return payload

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        self.info = dict(self._message(timeout, "ready"))
        return self.info

    def stop(self) -> None:
        """Ask the show to end (it sends its figures as it does)."""
        self.stop_event.set()

    def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        """End the show and return its figures."""
        self.stop()
        figures: dict[str, Any] = self._message(timeout, "done")
        self.proc.join(10)
        return figures

    def kill(self) -> None:
        """Stop the process if it still runs (after an error): ask, then terminate, then kill."""
        if self.proc is None or not self.proc.is_alive():
            return
        if self.stop_event is not None:
            self.stop_event.set()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# --- the broker -----------------------------------------------------------------------------------

def find_mosquitto(given: str | None) -> str:
    path = given or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise DreamstateError(f"bench e2e: the node-skew part needs the mosquitto broker, and {path} is not "
                              "an executable", hint="install it (Debian: apt install mosquitto, or "
                                                    "./scripts/setup.sh), or name it with --mosquitto PATH")
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A mosquitto on a free loopback port with a throwaway config, owned by the bench."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        user = "user root\n" if os.getuid() == 0 else ""  # as root it would drop to 'mosquitto'
        self.conf.write_text(f"{user}per_listener_settings false\nallow_anonymous true\npersistence false\n"
                             f"listener {self.port} 127.0.0.1\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise DreamstateError(f"bench e2e: mosquitto exited at once: {err.strip()[:300]}",
                                      hint=f"try `{self.binary} -c {self.conf}` by hand")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        raise DreamstateError(f"bench e2e: mosquitto did not listen on 127.0.0.1:{self.port} within 10 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None


# --- measuring ------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))]


def state_to_frame(figures: dict[str, Any], warmup_s: float) -> tuple[list[float], list[float], list[float]]:
    """For each state-caused scene change after the warm-up: (state -> shown, state -> crossfade
    start, crossfade start -> shown), in ms. A change superseded before it showed counts up to
    the first newer generation on screen."""
    ready = figures["ready"]
    shown: list[tuple[int, float]] = figures["shown"]
    total, pick, draw = [], [], []
    for generation, _scene, at, state_time in figures["changes"]:
        if state_time is None or ready is None or state_time < ready + warmup_s:
            continue
        seen = [t for g, t in shown if g >= generation and t >= at]
        if not seen:
            continue  # the run ended before it showed
        total.append(1000.0 * (seen[0] - state_time))
        pick.append(1000.0 * (at - state_time))
        draw.append(1000.0 * (seen[0] - at))
    return total, pick, draw


def pair_changes(a: dict[str, Any], b: dict[str, Any], since_wall: float) -> tuple[list[float], int]:
    """Skews (ms) between two render nodes' scene changes after ``since_wall`` (paired by scene,
    nearest within ``PAIR_S``), and how many changes found no partner."""
    def wall(fig: dict[str, Any]) -> list[tuple[str, float]]:
        off = float(fig["wall_minus_mono"])
        return [(scene, at + off) for _g, scene, at, _st in fig["changes"] if at + off >= since_wall]

    left, right = wall(a), wall(b)
    used: set[int] = set()
    skews: list[float] = []
    for scene, t in left:
        best: tuple[float, int] | None = None
        for i, (other, u) in enumerate(right):
            if i in used or other != scene or abs(u - t) > PAIR_S:
                continue
            if best is None or abs(u - t) < best[0]:
                best = (abs(u - t), i)
        if best is not None:
            used.add(best[1])
            skews.append(1000.0 * best[0])
    unpaired = len(left) - len(skews) + len(right) - len(used)
    return skews, unpaired


def osc_round_trips(tele: socket.socket, port: int, repeats: int) -> tuple[list[float], int]:
    """Send ``repeats`` out-of-range sets to the show's control port and time each one's
    ``/dreamstate/clamped`` echo on ``tele``; returns the round trips (ms) and the number lost."""
    from pythonosc.osc_message_builder import OscMessageBuilder
    from pythonosc.osc_packet import OscPacket, ParseError

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtts: list[float] = []
    lost = 0
    t0 = time.monotonic()
    try:
        for seq in range(repeats):
            delay = t0 + seq * OSC_PAUSE_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            want = OSC_BASE + seq
            b = OscMessageBuilder("/dreamstate/param/crossfade_s")
            b.add_arg(want, "f")
            data = b.build().dgram
            sent = time.perf_counter()
            sock.sendto(data, ("127.0.0.1", port))
            deadline = sent + 1.0
            got = False
            while not got and (left := deadline - time.perf_counter()) > 0:
                tele.settimeout(left)
                try:
                    reply = tele.recv(65536)
                except TimeoutError:
                    break
                now = time.perf_counter()
                try:
                    messages = OscPacket(reply).messages
                except ParseError:
                    continue
                for timed in messages:
                    m = timed.message
                    if m.address == "/dreamstate/clamped" and len(m.params) == 4 and m.params[2] == want:
                        rtts.append(1000.0 * (now - sent))
                        got = True
            lost += 0 if got else 1
    finally:
        sock.close()
    return rtts, lost


# --- the run --------------------------------------------------------------------------------------

@dataclass
class Figure:
    name: str
    values: list[float]
    target_ms: float
    target: str
    note: str = ""

    @property
    def p50(self) -> float:
        return pct(self.values, 50)

    @property
    def p99(self) -> float:
        return pct(self.values, 99)

    @property
    def verdict(self) -> str:
        if not self.values:
            return "NONE"
        return "PASS" if self.p99 <= self.target_ms else "MISS"


def _part_one(args: argparse.Namespace, folder: Path, say: Any) -> tuple[dict[str, Any], list[float], int, float]:
    tele = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tele.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    tele.bind(("127.0.0.1", 0))
    path = folder / "show" / "show.toml"
    path.parent.mkdir()
    path.write_text(show_text(role="all", model=MODEL, dream_size=args.dream_size,
                              output_size=args.output_size, speed=1.0, osc_target=int(tele.getsockname()[1])))
    osc_s = args.repeats * OSC_PAUSE_S
    node = Node("show", path, limit_s=READY_TIMEOUT_S + args.seconds + osc_s + EXTRA_S + 120,
                warmup_s=args.warmup)
    try:
        node.start()
        info = node.wait_ready()
        up = time.monotonic()
        time.sleep(args.warmup)
        say(f"part 1: show up (role all, simulator 1x); {args.repeats} OSC round trips, and scene changes "
            f"for {max(args.seconds, osc_s):.0f} s and until {args.changes} are measured")
        rtts, lost = osc_round_trips(tele, int(info["osc_port"]), args.repeats)
        rest = args.seconds - (time.monotonic() - up)
        if rest > 0:
            time.sleep(rest)
        deadline = time.monotonic() + EXTRA_S
        while node.measured.value < args.changes and time.monotonic() < deadline and node.proc.is_alive():
            time.sleep(0.1)
        figures = node.finish()
    finally:
        node.kill()
        tele.close()
    return figures, rtts, lost, time.monotonic() - up


def _part_two(args: argparse.Namespace, folder: Path, binary: str, say: Any) -> tuple[list[float], int, dict[str, Any]]:
    broker = Broker(binary, folder)
    nodes: list[Node] = []
    try:
        broker.start()
        for name, role in (("render-a", "render"), ("render-b", "render"), ("eeg", "eeg")):
            path = folder / name / "show.toml"
            path.parent.mkdir()
            path.write_text(show_text(role=role, model=MODEL, dream_size=args.dream_size,
                                      output_size=args.output_size, speed=args.speed, mqtt_port=broker.port,
                                      node=name))
            nodes.append(Node(name, path, limit_s=2 * READY_TIMEOUT_S + args.seconds + 120))
        a, b, eeg = nodes
        for n in nodes:
            n.start()
        for n in nodes:
            n.wait_ready()
        # from here on (after the warm-up) every state the render nodes follow is a live, stamped one;
        # a retained state met at connection time is applied at once and is not counted
        since = time.time()
        say(f"part 2: broker on 127.0.0.1:{broker.port}, render nodes a and b up, eeg node up (simulator "
            f"{args.speed:g}x); measuring {args.seconds:.0f} s")
        time.sleep(args.seconds)
        fe = eeg.finish()  # no new states; the render nodes apply the one they may hold, then stop together
        time.sleep(LEAD_S + 0.5)
        a.stop()
        b.stop()
        fa, fb = a.finish(), b.finish()
    finally:
        for n in nodes:
            n.kill()
        broker.stop()
    skews, unpaired = pair_changes(fa, fb, since + args.warmup)
    lateness = [1000.0 * x for x in fa["lateness"] + fb["lateness"]]
    return skews, unpaired, {"lateness": lateness, "a": fa, "b": fb, "eeg": fe}


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(width=160, highlight=False)

    def say(text: str) -> None:
        console.print(text, highlight=False)

    if args.repeats < 1 or args.changes < 0 or not args.seconds > 0 or args.warmup < 0 or not args.speed > 0:
        raise DreamstateError("bench e2e: --repeats must be at least 1, --seconds and --speed above 0, "
                              "--warmup and --changes 0 or more", hint="e.g. --seconds 10 --repeats 50")
    binary = find_mosquitto(args.mosquitto)  # say so before anything runs for minutes
    folder = Path(tempfile.mkdtemp(prefix="dreamstate-e2e-"))
    try:
        one, rtts, lost, part1_s = _part_one(args, folder, say)
        skews, unpaired, two = _part_two(args, folder, binary, say)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    total, pick, draw = state_to_frame(one, args.warmup)
    step_ms = float(one["step_ms"])
    e2e_target = TARGET_E2E_HOP_MS + (step_ms if math.isfinite(step_ms) else 0.0)
    rows = [
        Figure("state -> first frame shown", total, e2e_target,
               f"p99 <= {TARGET_E2E_HOP_MS:.0f} + {step_ms:.1f} (one step) = {e2e_target:.0f} ms"),
        Figure("OSC set -> echo, loopback", rtts, TARGET_OSC_P99_MS, f"p99 <= {TARGET_OSC_P99_MS:.0f} ms"),
        Figure("node skew via mosquitto", skews, TARGET_SKEW_P99_MS, f"p99 <= {TARGET_SKEW_P99_MS:.0f} ms"),
    ]
    say("")
    say(f"{'figure':<30} {'n':>5} {'p50 ms':>9} {'p99 ms':>9}  {'target':<40} result")
    for f in rows:
        say(f"{f.name:<30} {len(f.values):>5} {f.p50:>9.2f} {f.p99:>9.2f}  {f.target:<40} {f.verdict}")
    say("")
    say(f"state -> frame, split: state -> crossfade start (scenes tick, 50 ms) p50 {pct(pick, 50):.1f} ms, "
        f"p99 {pct(pick, 99):.1f} ms; crossfade start -> shown (worker step, display) p50 {pct(draw, 50):.1f} ms, "
        f"p99 {pct(draw, 99):.1f} ms; dream {args.dream_size[0]}x{args.dream_size[1]} on {MODEL} "
        f"({one['provider']}), mean step interval {step_ms:.1f} ms; output "
        f"{args.output_size[0]}x{args.output_size[1]} at 60 fps; {part1_s:.0f} s measured")
    say(f"OSC: {len(rtts)} of {args.repeats} echoes back ({lost} lost), sets 110 ms apart, client and show in "
        f"separate processes; the show dreams and displays meanwhile")
    late = two["lateness"]
    say(f"node skew: {len(skews)} paired scene changes ({unpaired} unpaired); render nodes applied states "
        f"{pct(late, 50):.1f} ms (p50), {pct(late, 99):.1f} ms (p99) after the stamped moment; 3 node "
        f"processes and the broker on this machine")
    say("definitions: state -> frame = a state's sample time to the first presented picture showing a dream step "
        "of its scene; OSC = /dreamstate/param/crossfade_s past its range to its /dreamstate/clamped echo; "
        "skew = |difference| of the two render nodes' crossfade starts (wall clock)")
    say(f"machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"the dream on CPU")
    if any(not f.values for f in rows):
        return 1
    if args.strict and any(f.verdict != "PASS" for f in rows):
        return 1
    return 0
