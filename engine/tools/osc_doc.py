"""Generate ``docs/osc.md`` from the command set and the telemetry table.

``python -m dreamstate.engine.tools.osc_doc > docs/osc.md``; ``tests/test_control.py`` checks
the file is what this writes today, so the address space is written once, in the code.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any

from dreamstate.engine.control.commands import (
    COMMANDS,
    LIVE_PARAMS,
    OFFLINE_PARAMS,
    PREFIX,
    PREFIXED,
    SetParam,
    wire_fields,
)
from dreamstate.engine.control.osc import TELEMETRY
from dreamstate.engine.core.params import scene_limits
from dreamstate.engine.core.show import SceneConfig

WIRE = {bool: "T/F, or 1/0", int: "i h, or a whole f d", float: "f d i h", str: "s"}


def _wire(kind: Any) -> str:
    if kind == (int | str):
        return "i h (an index; a whole f d too) or s (a path)"
    return WIRE[kind]


def _range(meta: typing.Mapping[str, Any]) -> str:
    return scene_limits(meta["schema"]).describe() if "schema" in meta else ""


def _field_doc(name: str) -> str:
    info = SceneConfig.model_fields[name]
    text = info.description or getattr(SceneConfig, "__pydantic_fields__", {}).get(name, info).description or ""
    return " ".join(text.split()).rstrip(".")


def render() -> str:
    lines = [
        "# OSC and MQTT address reference",
        "",
        "Generated from `engine/control/commands.py` and `engine/control/osc.py` by",
        "`python -m dreamstate.engine.tools.osc_doc`; `tests/test_control.py` checks that it is unchanged.",
        "",
        "Control listens on `[osc] listen_host:listen_port` (127.0.0.1:9000 by default). MQTT takes the",
        f"same commands on `dreamstate/<installation>/control/<address without {PREFIX}/>` with the",
        "arguments as the payload (`1.02`, `calm`, `[1.02]`, `true`; `[]` for a command without",
        "arguments: an empty payload deletes a retained message in MQTT and is ignored). Numbers are",
        "checked against the show file's own ranges (`docs/SHOWS.md`): a finite number outside its range",
        "is clamped to the nearest allowed value, applied, and reported on `/dreamstate/clamped`; a",
        "message that does not fit otherwise is counted, logged with the address and the fix, and",
        "reported on `/dreamstate/error`, and the show goes on.",
        "",
        "## Control in",
        "",
        "| address | argument | OSC types | range | default | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for cls in COMMANDS:
        hints = typing.get_type_hints(cls)
        fields = [f for f in wire_fields(cls) if f.name != PREFIXED.get(cls)]
        address = f"`{PREFIX}/{cls.ADDRESS}{'<' + PREFIXED[cls] + '>' if cls in PREFIXED else ''}`"
        if cls is SetParam:  # one row per live parameter, range and meaning from the show schema
            for name in LIVE_PARAMS:
                kind = int if scene_limits(name).kind is int else float
                lines.append(f"| `{PREFIX}/{cls.ADDRESS}{name}` | `value` | {_wire(kind)} | "
                             f"{scene_limits(name).describe()} |  | {_field_doc(name)} (`SceneConfig.{name}`). |")
            lines += [f"| `{PREFIX}/{cls.ADDRESS}{name}` | – | – |  |  | not live: {why.replace('`', '')}. |"
                      for name, why in OFFLINE_PARAMS.items()]
            continue
        doc = " ".join((cls.__doc__ or "").split())
        doc = doc.split(":", 1)[1].strip() if doc.startswith("``") and ":" in doc else doc
        doc = doc.replace("``", "`")
        if not fields:
            lines.append(f"| {address} | – | – |  |  | {doc} |")
        for f in fields:
            default = "" if f.default is dataclasses.MISSING else f"`{f.default!r}`"
            lines.append(f"| {address} | `{f.name}` | {_wire(hints[f.name])} | {_range(f.metadata)} | {default} | "
                         f"{doc} |")
    lines += [
        "",
        "## Telemetry out",
        "",
        "Sent to every `[[osc.targets]]` at `osc.rate_hz`, each tick as one OSC bundle (time tag",
        "immediately), so values that belong together arrive together; the fixed set, none made up",
        "at run time; lossy: a failed send is counted, never retried.",
        "",
        "| address | OSC types | value |",
        "|---|---|---|",
    ]
    lines += [f"| `{a}` | {t} | {m} |" for a, t, m in TELEMETRY]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
