"""Opening hours: the projector fades to black and the dream rests while the gallery is closed.

``is_open(cfg, when)`` is pure: ``when`` is an aware datetime; it is converted to the show's
time zone (``zoneinfo``, so daylight saving is followed), then a date in ``closed_on`` is closed,
a date in ``open_on`` has its own hours, and any other day has its weekday's hours. A range
that ends before it starts runs past midnight and also counts for the early hours of the next
day. ``HoursStage`` checks once a second: at closing it fades the picture out over ``fade_s``
and then pauses the dream worker (the CPU or GPU rests); at opening it resumes and fades in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Protocol
from zoneinfo import ZoneInfo

from dreamstate.engine.core.show import DAYS, HoursConfig, parse_ranges
from dreamstate.engine.runtime.supervisor import Stage

log = logging.getLogger("dreamstate.app")


def _ranges_for(cfg: HoursConfig, day: dt.date) -> list[tuple[int, int]]:
    iso = day.isoformat()
    if iso in cfg.closed_on:
        return []
    if iso in cfg.open_on:
        return parse_ranges(cfg.open_on[iso])
    return parse_ranges(cfg.weekly.get(DAYS[day.weekday()], ""))


def is_open(cfg: HoursConfig, when: dt.datetime) -> bool:
    """Whether the gallery is open at ``when`` (an aware datetime). Raises ValueError for a
    naive datetime."""
    if when.tzinfo is None:
        raise ValueError("is_open needs an aware datetime (with a time zone)")
    local = when.astimezone(ZoneInfo(cfg.timezone))
    minute = local.hour * 60 + local.minute
    for start, end in _ranges_for(cfg, local.date()):
        if start <= end and start <= minute < end:
            return True
        if start > end and minute >= start:  # runs past midnight
            return True
    yesterday = local.date() - dt.timedelta(days=1)
    return any(start > end and minute < end for start, end in _ranges_for(cfg, yesterday))


class Shutter(Protocol):
    """What the stage drives: the renderer's brightness and pause."""

    def set_brightness(self, level: float, fade_s: float = 0.0) -> None: ...

    def set_paused(self, paused: bool) -> None: ...


class HoursStage(Stage):
    """Once a second: open or closed? On a change, fade (and pause or resume) the renderer that
    ``renderer()`` returns (None while it is not running: checked again next second).
    ``open`` is the last answer; ``clock`` returns an aware datetime (injectable for tests)."""

    name = "hours"

    def __init__(self, cfg: HoursConfig, renderer: Callable[[], Shutter | None], *,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC), period_s: float = 1.0) -> None:
        self.cfg = cfg
        self.renderer = renderer
        self.clock = clock
        self.period_s = period_s
        self.open: bool | None = None
        self._applied_to: object | None = None

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(self.period_s)

    def check(self) -> None:
        now_open = is_open(self.cfg, self.clock())
        r = self.renderer()
        if r is None:
            self.open = now_open
            return
        if now_open == self.open and r is self._applied_to:
            return
        first = self._applied_to is not r
        self.open, self._applied_to = now_open, r
        fade = 0.0 if first and not now_open else self.cfg.fade_s
        if now_open:
            r.set_paused(False)
            r.set_brightness(1.0, 0.0 if first else fade)
            if not first:
                log.info("gallery open: fading in", extra={"fade_s": fade})
        else:
            r.set_brightness(0.0, fade)
            log.info("gallery closed: %s", "black" if fade == 0 else f"fading out over {fade:g} s",
                     extra={"timezone": self.cfg.timezone})
            asyncio.get_running_loop().call_later(fade, self._rest, r)

    def _rest(self, r: Shutter) -> None:
        if self.open is False and self._applied_to is r:
            r.set_paused(True)  # the dream worker rests until opening
