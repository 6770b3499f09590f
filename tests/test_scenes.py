"""Scene choice from EEG state, overrides, attract mode and crossfades (pure logic)."""

from __future__ import annotations

import pytest

from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.records import ABSENT, EegState
from dreamstate.engine.core.show import validate_show_data
from dreamstate.engine.scenes import SceneDirector

SHOW = """
[show]
default_scene = "calm"
[scenes.calm]
layers = { block3 = 1.0 }
zoom = 1.004
[scenes.focused]
layers = { block4 = 1.0 }
zoom = 1.012
[scenes.neutral]
layers = { block2 = 1.0 }
[scenes.attract]
layers = { block2 = 0.5 }
"""


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def state(label: str) -> EegState:
    return EegState(label=label, probabilities={label: 1.0}, confidence=1.0, time=0.0)


@pytest.fixture
def director() -> tuple[SceneDirector, Clock]:
    clock = Clock()
    import tomllib
    from pathlib import Path

    return SceneDirector(validate_show_data(tomllib.loads(SHOW), Path.cwd(), "t").show, clock=clock), clock


def test_state_picks_its_scene_and_crossfades(director: tuple[SceneDirector, Clock]) -> None:
    d, clock = director
    calm = d.recipe()
    assert d.scene_name == "calm"
    d.on_state(state("focused"))
    assert d.scene_name == "focused"
    start = d.recipe()
    assert start.zoom == pytest.approx(calm.zoom)
    clock.t += 1.0  # half of the default 2 s crossfade
    mid = d.recipe()
    assert mid.zoom == pytest.approx((1.004 + 1.012) / 2)
    assert mid.layer_weights["block3"] == pytest.approx(0.5)
    assert mid.layer_weights["block4"] == pytest.approx(0.5)
    clock.t += 5
    end = d.recipe()
    assert end.zoom == pytest.approx(1.012)
    assert end.layer_weights == {"block4": 1.0}
    assert end.generation == mid.generation == 1


def test_unknown_label_falls_back_to_default_scene(director: tuple[SceneDirector, Clock]) -> None:
    d, _ = director
    d.on_state(state("focused"))
    d.on_state(state("horror"))
    assert d.scene_name == "calm"


def test_absent_goes_to_attract_after_delay(director: tuple[SceneDirector, Clock]) -> None:
    d, clock = director
    d.on_state(state(ABSENT))
    assert d.scene_name == "calm", "a short drop-out must not switch scenes"
    clock.t += 5.1
    d.tick()
    assert d.scene_name == "attract"
    d.on_state(state("focused"))
    assert d.scene_name == "focused"


def test_the_attract_crossfade_starts_when_it_fell_due_not_at_the_late_tick(
        director: tuple[SceneDirector, Clock]) -> None:
    """Two projectors that saw ``absent`` at the same stamped moment but tick at different
    times must start the attract crossfade at the same moment (bench e2e found up to one tick,
    50 ms, between them)."""
    d, clock = director
    d.on_state(state(ABSENT))
    t_absent = clock.t
    assert d.next_change_at() == pytest.approx(t_absent + 5.0)
    clock.t += 5.04  # the tick comes 40 ms after the change fell due
    d.tick()
    assert d.scene_name == "attract"
    assert d.changes[-1].at == pytest.approx(t_absent + 5.0)
    assert d.next_change_at() is None
    d.set_scene("neutral")
    assert d.next_change_at() is None  # a held scene has no pending change


def test_override_and_manual_scene_win(director: tuple[SceneDirector, Clock]) -> None:
    d, _ = director
    d.override("focused")
    d.on_state(state("calm"))
    assert d.scene_name == "focused"
    d.override(None)
    assert d.scene_name == "calm"
    d.set_scene("neutral")
    d.on_state(state("focused"))
    assert d.scene_name == "neutral"
    with pytest.raises(DreamstateError, match="unknown scene"):
        d.set_scene("nope")


def test_the_director_says_who_chose_the_scene(director: tuple[SceneDirector, Clock]) -> None:
    """chooser: state, then override, manual, attract (telemetry /dreamstate/scene)."""
    d, clock = director
    d.on_state(state("calm"))
    assert (d.scene_name, d.chooser) == ("calm", "state")
    d.override("focused")
    assert (d.scene_name, d.chooser) == ("focused", "override")
    d.set_scene("neutral")
    assert (d.scene_name, d.chooser) == ("neutral", "manual")
    d.set_scene(None)
    d.override(None)
    d.on_state(state(ABSENT))
    clock.t += 5.1
    d.tick()
    assert (d.scene_name, d.chooser) == ("attract", "attract")
    d.on_state(state("focused"))
    assert (d.scene_name, d.chooser) == ("focused", "state")
