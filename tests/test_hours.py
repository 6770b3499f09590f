"""Opening hours: time zones, holidays, exceptions, ranges past midnight; the projector fades
out at closing and the dream rests; it comes back at opening."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from dreamstate.engine.core.show import HoursConfig
from dreamstate.engine.runtime.hours import HoursStage, is_open

BERLIN = HoursConfig(enabled=True, timezone="Europe/Berlin",
                     weekly={"mon": "", "tue": "10:00-18:00", "wed": "10:00-18:00", "thu": "10:00-13:00, 14:00-22:00",
                             "fri": "20:00-02:00", "sat": "10:00-18:00", "sun": ""},
                     closed_on=["2026-12-24"], open_on={"2026-12-28": "12:00-14:00"})


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.parametrize(("when", "expected"), [
    (utc(2026, 12, 1, 9, 30), True),     # Tue 10:30 in Berlin (UTC+1 in winter)
    (utc(2026, 12, 1, 8, 59), False),    # Tue 09:59
    (utc(2026, 12, 1, 17, 0), False),    # Tue 18:00: the end is exclusive
    (utc(2026, 7, 7, 8, 30), True),      # Tue 10:30 in summer (UTC+2)
    (utc(2026, 7, 7, 16, 30), False),    # Tue 18:30 in summer
    (utc(2026, 12, 3, 12, 30), False),   # Thu 13:30: the lunch break
    (utc(2026, 12, 3, 13, 30), True),    # Thu 14:30
    (utc(2026, 12, 4, 20, 0), True),     # Fri 21:00
    (utc(2026, 12, 5, 0, 30), True),     # Sat 01:30: Friday's range runs past midnight
    (utc(2026, 12, 5, 1, 30), False),    # Sat 02:30
    (utc(2026, 12, 6, 12, 0), False),    # Sunday: closed
    (utc(2026, 12, 24, 11, 0), False),   # Thursday 24 December: closed_on
    (utc(2026, 12, 28, 11, 30), True),   # Monday 28 December, 12:30: open_on exception
    (utc(2026, 12, 28, 14, 0), False),   # ... 15:00
])
def test_is_open(when: dt.datetime, expected: bool) -> None:
    assert is_open(BERLIN, when) == expected


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_open(BERLIN, dt.datetime(2026, 12, 1, 12, 0))


@pytest.mark.parametrize(("data", "match"), [
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"weekly": {"monday": "10:00-18:00"}}, "unknown day"),
    ({"weekly": {"mon": "10-18"}}, "not a time range"),
    ({"weekly": {"mon": "10:00-25:00"}}, "outside 00:00"),
    ({"closed_on": ["24.12.2026"]}, "not a date"),
    ({"open_on": {"2026-12-28": "noon"}}, "not a time range"),
])
def test_bad_hours_are_refused_with_the_fix(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        HoursConfig.model_validate(data)


class FakeRenderer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def set_brightness(self, level: float, fade_s: float = 0.0) -> None:
        self.calls.append(("brightness", (level, fade_s)))

    def set_paused(self, paused: bool) -> None:
        self.calls.append(("paused", paused))


async def test_closing_fades_out_then_rests_and_opening_comes_back() -> None:
    cfg = BERLIN.model_copy(update={"fade_s": 0.05})
    now = [utc(2026, 12, 1, 16, 59)]  # Tue 17:59, open
    r = FakeRenderer()
    stage = HoursStage(cfg, lambda: r, clock=lambda: now[0])
    stage.check()
    assert stage.open is True and r.calls == [("paused", False), ("brightness", (1.0, 0.0))]
    r.calls.clear()
    now[0] = utc(2026, 12, 1, 17, 0)  # 18:00: closing
    stage.check()
    assert r.calls == [("brightness", (0.0, 0.05))]
    await asyncio.sleep(0.1)
    assert r.calls[-1] == ("paused", True)  # after the fade the dream rests
    r.calls.clear()
    stage.check()
    assert r.calls == []  # nothing to do while closed
    now[0] = utc(2026, 12, 2, 9, 0)  # Wed 10:00: opening
    stage.check()
    assert r.calls == [("paused", False), ("brightness", (1.0, 0.05))]


async def test_a_show_started_while_closed_is_black_at_once() -> None:
    r = FakeRenderer()
    stage = HoursStage(BERLIN, lambda: r, clock=lambda: utc(2026, 12, 6, 12, 0))  # Sunday
    stage.check()
    await asyncio.sleep(0.01)
    assert r.calls == [("brightness", (0.0, 0.0)), ("paused", True)]


async def test_the_renderer_fades_the_picture_it_shows() -> None:
    """set_brightness ramps what the display presents (0 = black) while the dream goes on."""
    from dreamstate.engine.core.records import DreamRecipe
    from dreamstate.engine.output.base import Output
    from dreamstate.engine.render.renderer import Renderer
    from dreamstate.models.dream import DreamModel

    class Means(Output):
        name = "means"

        def __init__(self) -> None:
            super().__init__((64, 48))
            self.means: list[tuple[float, float]] = []

        def open(self) -> tuple[int, int]:
            return self.size

        def present(self, frame: np.ndarray) -> None:
            self.means.append((time.monotonic(), float(frame.mean())))
            self.frames += 1

        def close(self) -> None:
            pass

    out = Means()
    r = Renderer(DreamModel.load("starter", ["block2"]), out, dream_size=(64, 48), output_size=(64, 48), fps=30)
    r.set_recipe(DreamRecipe(layer_weights={"block2": 1.0}, zoom=1.0, octaves=1, step=1.0))
    task = asyncio.create_task(r.run())
    await asyncio.sleep(1.0)
    t_fade = time.monotonic()
    r.set_brightness(0.0, 0.6)
    await asyncio.sleep(1.0)
    t_back = time.monotonic()
    r.set_brightness(1.0)
    await asyncio.sleep(0.5)
    r.stop()
    await asyncio.wait_for(task, 10)
    before = [m for t, m in out.means if t < t_fade]
    during = [m for t, m in out.means if t_fade + 0.2 < t < t_fade + 0.4]
    dark = [m for t, m in out.means if t_fade + 0.7 < t < t_back]
    after = [m for t, m in out.means if t > t_back + 0.1]
    assert min(before) > 20
    assert 0 < np.mean(during) < 0.85 * np.mean(before)  # part way down
    assert max(dark) == 0.0
    assert np.mean(after) > 0.8 * np.mean(before)
