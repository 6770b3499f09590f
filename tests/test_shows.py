"""Every example show in shows/ passes the full check, and demo.toml is the embedded default."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from engine.show import DEMO_SHOW, Show, load_show

SHOWS = sorted((Path(__file__).resolve().parents[1] / "shows").glob("*.toml"))


@pytest.mark.parametrize("path", SHOWS, ids=[p.name for p in SHOWS])
def test_example_show_is_valid(path: Path) -> None:
    loaded = load_show(path)
    assert loaded.show.scenes


def test_demo_file_matches_the_embedded_demo() -> None:
    on_disk = Show.model_validate(tomllib.loads((SHOWS[0].parent / "demo.toml").read_text()))
    assert on_disk == Show.model_validate(tomllib.loads(DEMO_SHOW))
