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


def test_show_reference_is_generated_from_the_schema() -> None:
    """docs/SHOWS.md is exactly what `python -m engine.show_doc` writes today."""
    from engine.show_doc import render

    doc = (SHOWS[0].parents[1] / "docs" / "SHOWS.md").read_text()
    assert doc == render(), "docs/SHOWS.md is stale: run `python -m engine.show_doc > docs/SHOWS.md`"


def test_show_reference_has_a_row_for_every_key() -> None:
    """The generator itself leaves no key out (a row per field, a section per table)."""
    from pydantic import BaseModel

    from engine.show import SceneConfig
    from engine.show_doc import render

    doc = render()
    missing: list[str] = []

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                assert f"## `{prefix}{name}`" in doc, f"no section for {prefix}{name}"
                walk(f"{prefix}{name}.", ann)
            elif model is Show and name == "scenes":
                continue
            elif f"| `{name}` |" not in doc:
                missing.append(prefix + name)

    walk("", Show)
    walk("scenes.<name>.", SceneConfig)
    assert not missing, missing
