"""Every example show in shows/ passes the full check, and demo.toml is the embedded default."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from dreamstate.engine.core.show import DEMO_SHOW, Show
from dreamstate.engine.runtime.showfile import load_show

SHOWS = sorted((Path(__file__).resolve().parents[1] / "shows").glob("*.toml"))


@pytest.mark.parametrize("path", SHOWS, ids=[p.name for p in SHOWS])
def test_example_show_is_valid(path: Path) -> None:
    loaded = load_show(path)
    assert loaded.show.scenes


def test_demo_file_matches_the_embedded_demo() -> None:
    on_disk = Show.model_validate(tomllib.loads((SHOWS[0].parent / "demo.toml").read_text()))
    assert on_disk == Show.model_validate(tomllib.loads(DEMO_SHOW))


def test_show_reference_is_generated_from_the_schema() -> None:
    """docs/SHOWS.md is exactly what `python -m dreamstate.engine.tools.show_doc` writes today."""
    from dreamstate.engine.tools.show_doc import render

    doc = (SHOWS[0].parents[1] / "docs" / "SHOWS.md").read_text()
    assert doc == render(), "docs/SHOWS.md is stale: run `python -m dreamstate.engine.tools.show_doc > docs/SHOWS.md`"


def _sections(doc: str) -> dict[str, dict[str, str]]:
    """'## `heading`' -> {key: its table row} for every table in the reference."""
    out: dict[str, dict[str, str]] = {}
    rows: dict[str, str] = {}
    for line in doc.splitlines():
        if line.startswith("## "):
            rows = out.setdefault(line[3:].strip().strip("`"), {})
        elif line.startswith("| `"):
            rows[line.split("`")[1]] = line
    return out


def test_show_reference_has_a_row_for_every_key_in_its_own_table() -> None:
    """The generator leaves no key out: each field has a row in its table's section (a key
    named like one in another table does not count), showing its default."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    from dreamstate.engine.core.show import SceneConfig
    from dreamstate.engine.tools.show_doc import render

    sections = _sections(render())
    missing: list[str] = []
    wrong_default: list[str] = []

    def walk(section: str, model: type[BaseModel]) -> None:
        rows = sections.get(section)
        assert rows is not None, f"no section ## `{section}`"
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(f"{section}.{name}" if section else name, ann)
                continue
            if model is Show and name == "scenes":
                continue
            row = rows.get(name)
            if row is None:
                missing.append(f"{section}.{name}")
            elif field.default is not PydanticUndefined and field.default_factory is None \
                    and f"`{field.default!r}`" not in row:
                wrong_default.append(f"{section}.{name}: {row}")

    for name, field in Show.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            walk(name, ann)
    walk("scenes.<name>", SceneConfig)
    assert not missing, missing
    assert not wrong_default, wrong_default
    undescribed = [f"{section}.{key}" for section, rows in sections.items() for key, row in rows.items()
                   if section not in ("Features", "Rules") and not re.split(r"(?<!\\)\|", row)[-2].strip()]
    assert not undescribed, f"keys without a description (add a docstring under the field): {undescribed}"
