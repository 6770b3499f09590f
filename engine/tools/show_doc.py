"""Generate ``docs/SHOWS.md`` (the show file reference) from the schema in ``engine.core.show``.

``python -m dreamstate.engine.tools.show_doc > docs/SHOWS.md`` writes it; ``tests/test_shows.py`` regenerates
it and compares byte for byte, so the reference never drifts from the schema. Every table of
the schema becomes a section with one row per key: its type, allowed range (from the field's
constraints), default and description (the field's ``description``).
"""

from __future__ import annotations

import re
import sys
import types
import typing
from typing import Any, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dreamstate.engine.core.show import KNOWN_FEATURES, Show

INTRO = """# Show file reference

A show is a TOML file. `dreamstate check SHOW` validates all of it before anything runs and
lists every problem with its key path, the bad value and a hint. Unknown keys are errors.
Relative paths resolve against the show file's folder and may not leave it (symlinks
included). Examples: [`shows/`](../shows/).

This page is generated from the schema in `engine/core/show.py` by `python -m dreamstate.engine.tools.show_doc`;
`tests/test_shows.py` regenerates it and checks that it is unchanged.
"""

NOTES: dict[str, str] = {
    "scenes.<name>": """One table per scene; a scene named like a state label is chosen when the EEG state has that
label, `attract.scene` plays after `attract.after_s` seconds of `absent`. Motion (`zoom`,
`rotate` in degrees, `translate` as a fraction of the frame) is per tick, 10 ticks a second.
`mask` is `circle`, `radial`, an image path, `luminance:<image>` or `edges:<image>`; the dream
happens inside it and the undreamed source shows outside. `step` is the mean change of the
shown picture per dream step in 0..255 levels, the same for every model. A change of image or
mask crossfades on screen over `crossfade_s`. `color_nudge`, `contrast` and `warp_px` are the
stabilisers that keep the zoom-feedback loop alive for a whole day
(`engine/render/stabilise.py`).""",
    "health": """Is the picture alive? Every half second the renderer measures the dream (luminance, contrast,
channel means, colourfulness, detail, clipped pixels, hue entropy, motion over one second; all
0..1) against bounds derived from the current source image. When it stays out of bounds for
`watchdog_s` seconds, the show reseeds: it crossfades to the next image of `show.images` and
dreams again from there. A `[low, high]` pair given for a measure replaces its derived bounds.""",
}


def _constraints(info: FieldInfo, annotation: Any) -> str:
    lo: Any = None
    hi: Any = None
    lo_open = hi_open = False
    metas = list(info.metadata)
    for arg in get_args(annotation):  # constraints inside Annotated[...] members of a container
        metas += list(getattr(arg, "__metadata__", ()))
    for m in list(metas):
        if isinstance(m, FieldInfo):
            metas += list(m.metadata)
    for m in metas:
        if isinstance(m, Ge):
            lo = m.ge
        elif isinstance(m, Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, Le):
            hi = m.le
        elif isinstance(m, Lt):
            hi, hi_open = m.lt, True
    if lo is None and hi is None:
        return ""
    if hi == 0xFFFF:
        hi = "0xFFFF"
    left = "" if lo is None else f"{lo}{' (excl.)' if lo_open else ''}"
    right = "" if hi is None else f"{hi}{' (excl.)' if hi_open else ''}"
    return f"{left}..{right}"


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is typing.Annotated:
        return _type_name(get_args(annotation)[0])
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__name__
    origin = get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return " | ".join(_type_name(a) for a in get_args(annotation))
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in get_args(annotation)) + "]"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in get_args(annotation))}]"
    return re.sub(r"typing\.", "", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(table)"
        text = repr(value)
        return "see below" if len(text) > 40 else text
    if info.is_required():
        return "required"
    return repr(info.default)


def _row(name: str, info: FieldInfo) -> str:
    annotation = info.annotation
    kind = _type_name(annotation)
    rng = _constraints(info, annotation)
    desc = " ".join((info.description or "").split()).replace("|", "\\|")  # one table row, whatever the docstring
    default = _default(info)
    shown = default if default == "required" else f"`{default}`"
    return f"| `{name}` | `{kind.replace('|', chr(92) + '|')}` | {rng} | {shown} | {desc} |"


def _section(path: str, model: type[BaseModel], out: list[str], nested: list[tuple[str, type[BaseModel]]]) -> None:
    out.append(f"\n## `{path}`\n")
    if path in NOTES:
        out.append(NOTES[path] + "\n")
    out.append("| key | type | range | default | description |")
    out.append("|---|---|---|---|---|")
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((f"{path}.{name}", annotation))
            continue
        out.append(_row(name, info))
        for arg in get_args(annotation):  # list[SimStep], list[Rule], list[OscTarget]
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                nested.append((f"{path}.{name}[]", arg))


def render() -> str:
    """The whole reference as Markdown."""
    out = [INTRO.rstrip("\n")]
    for name, info in Show.model_fields.items():
        annotation = info.annotation
        if name == "scenes":
            model = get_args(annotation)[1]
            path = "scenes.<name>"
        else:
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
            model, path = annotation, name
        nested: list[tuple[str, type[BaseModel]]] = []
        _section(path, model, out, nested)
        while nested:
            sub_path, sub = nested.pop(0)
            more: list[tuple[str, type[BaseModel]]] = []
            _section(sub_path, sub, out, more)
            nested[:0] = more
    out.append("\n## Features\n")
    out.append("`signal.features` takes any of: " + ", ".join(f"`{f}`" for f in KNOWN_FEATURES) + ".\n")
    out.append("## Rules\n")
    out.append('`states.rules` is a list of `{ state = "calm", when = "alpha_rel > 0.30 and attention > 50" }`:\n'
               "comparisons of a feature name (`delta_log` … `alpha_rel` …, as produced by the chosen features),\n"
               "`attention`, `meditation` or `signal` with a number, joined by `and` / `or`, with parentheses.\n"
               "No code is evaluated.")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
