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


def test_show_reference_lists_every_key() -> None:
    from pydantic import BaseModel

    doc = (SHOWS[0].parents[1] / "docs" / "SHOWS.md").read_text()
    missing: list[str] = []

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
            if isinstance(default, BaseModel):
                walk(f"{prefix}.{name}", type(default))
            elif model is Show and name == "scenes":
                continue  # a table of SceneConfig tables, walked below
            elif f"| `{name}` |" not in doc:
                missing.append(f"{prefix}.{name}")

    walk("show", Show)
    from engine.show import SceneConfig

    walk("scenes.<name>", SceneConfig)
    assert not missing, f"docs/SHOWS.md lacks {missing}; regenerate it from engine/show.py"
