"""systemd readiness and watchdog keepalives that only a living show can send.

Under a unit with ``Type=notify`` and ``WatchdogSec=`` (``deploy/dreamstate.service``), systemd
sets ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``. :class:`ShowWatchdog` then sends ``READY=1``
once the first frame is on screen and ``WATCHDOG=1`` every half watchdog period, but only
while all of these hold:

* the display loop is presenting frames (its count grew since the last check),
* the asyncio event loop answers (``LoopLagMonitor.responsive``), and
* the picture can be recovered (``HealthReport.recoverable`` in ``engine.render.health``).

It runs on its own thread, so a hung event loop cannot keep it quiet by accident, and a frozen
display stops the keepalives: systemd then restarts the process. A reseed by the picture
watchdog is normal operation and does not stop the keepalives. They stop only when the picture
cannot be recovered: ``UNRECOVERABLE_RESEEDS`` (3) reseeds in a row failed, each followed at
once by a picture still out of bounds, with no check in bounds between them. While keepalives
are withheld a one-line warning names the reason, and ``STATUS=`` says it to
``systemctl status``. Without ``NOTIFY_SOCKET`` nothing is sent.

The protocol is the documented datagram (``sd_notify(3)``: ``KEY=value`` lines to the
``AF_UNIX`` socket named in ``NOTIFY_SOCKET``, ``@`` for the abstract namespace). It is a few
lines, so no library is used (the PyPI wrappers add nothing over it).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("dreamstate.runtime")


def notify_socket_address(env: dict[str, str] | None = None) -> str | None:
    """The socket path from ``NOTIFY_SOCKET`` (abstract names as ``\\0name``), or None."""
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not value:
        return None
    return "\0" + value[1:] if value.startswith("@") else value


def watchdog_period_s(env: dict[str, str] | None = None) -> float | None:
    """systemd's watchdog period in seconds from ``WATCHDOG_USEC`` (None when not set)."""
    value = (os.environ if env is None else env).get("WATCHDOG_USEC", "")
    try:
        usec = int(value)
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


class Notifier:
    """Sends ``sd_notify`` datagrams; every call is a no-op when there is no socket. Send
    errors are counted in ``errors`` and logged once, never raised."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.errors = 0
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(self, *lines: str) -> bool:
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            self.errors += 1
            if self.errors == 1:
                log.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"), exc)
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ShowWatchdog:
    """The keepalive thread (see the module docstring).

    ``frames`` returns the number of frames presented so far (None before the renderer runs);
    ``loop_ok`` says whether the event loop answers; ``picture_ok`` whether the picture can
    still be recovered; ``status`` is a short line for ``systemctl status``. After ``start()``
    the thread runs; ``stop()`` sends ``STOPPING=1`` and joins it. ``ready`` is set once
    ``READY=1`` was sent; ``pings`` counts ``WATCHDOG=1``, ``withheld`` the checks that sent
    none, and ``reason`` says why the last one was withheld (None while healthy).
    """

    def __init__(self, notifier: Notifier, frames: Callable[[], int | None], loop_ok: Callable[[], bool],
                 *, period_s: float | None, status: Callable[[], str] = lambda: "",
                 picture_ok: Callable[[], bool] = lambda: True) -> None:
        self.notifier = notifier
        self.frames = frames
        self.loop_ok = loop_ok
        self.picture_ok = picture_ok
        self.status = status
        self.interval_s = (period_s / 2.0) if period_s else 2.0
        self.keepalives = period_s is not None
        self.ready = False
        self.pings = 0
        self.withheld = 0
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.notifier.send("STOPPING=1")
        self.notifier.close()

    def why_not(self, presenting: bool) -> str | None:
        """Why no keepalive may be sent now (the first failing condition), or None."""
        if not presenting:
            return "the display loop is not presenting frames"
        if not self.loop_ok():
            return "the event loop does not answer"
        if not self.picture_ok():
            return "the picture cannot be recovered (reseeds in a row failed)"
        return None

    def _run(self) -> None:
        """Polls the frame count every ``poll_s``; at each keepalive time the display counts as
        presenting only when the count moved within the last ``fresh_s`` (not merely somewhere
        in the last interval: a display that froze just after a keepalive would otherwise earn
        one more and delay systemd's restart by an interval)."""
        poll_s = min(0.25, self.interval_s / 2)
        fresh_s = min(1.0, self.interval_s)
        last = self.frames()
        changed_at = time.monotonic()
        next_ping = 0.0
        while not self._stop.wait(poll_s if self.ready else 0.1):
            now = self.frames()
            t = time.monotonic()
            if now is not None and now != last:
                changed_at = t
            last = now
            if not self.ready:
                if now:
                    self.notifier.send("READY=1", f"STATUS={self.status()}")
                    self.ready = True
                    next_ping = t + self.interval_s
                    log.info("systemd notified: ready (first frame shown)")
                continue
            if not self.keepalives or t < next_ping:
                continue
            next_ping = t + self.interval_s
            reason = self.why_not(now is not None and t - changed_at <= fresh_s)
            if reason is None:
                self.notifier.send("WATCHDOG=1", f"STATUS={self.status()}")
                self.pings += 1
                if self.reason is not None:
                    log.info("systemd keepalives resumed", extra={"withheld": self.withheld})
            else:
                self.withheld += 1
                if reason != self.reason:  # once per episode (and again if the reason changes)
                    self.notifier.send(f"STATUS=keepalive withheld: {reason}")
                    log.warning("systemd keepalive withheld: %s", reason,
                                extra={"watchdog_s": round(2 * self.interval_s, 1)})
            self.reason = reason


def start_watchdog(frames: Callable[[], int | None], loop_ok: Callable[[], bool],
                   status: Callable[[], str], picture_ok: Callable[[], bool] = lambda: True) -> ShowWatchdog | None:
    """A running :class:`ShowWatchdog` when systemd asked for notifications, else None."""
    address = notify_socket_address()
    if address is None:
        return None
    dog = ShowWatchdog(Notifier(address), frames, loop_ok, period_s=watchdog_period_s(), status=status,
                       picture_ok=picture_ok)
    dog.start()
    log.info("systemd notifications on", extra={"watchdog_s": watchdog_period_s()})
    return dog
