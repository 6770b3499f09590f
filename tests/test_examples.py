"""The Max example patch talks to dreamstate for real: every address it sends is a valid
command (at both ends of each slider), it sends to the default control port and listens on the
default telemetry port, and every address it routes is one dreamstate sends. (Max is not on
this machine; the patch's structure, boxes and patch lines, is checked here.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dreamstate.engine.control.commands import parse_command
from dreamstate.engine.control.osc import TELEMETRY
from dreamstate.engine.core.show import OscConfig, OscTarget

PATCH = Path(__file__).resolve().parents[1] / "examples" / "max" / "dreamstate.maxpat"


def _arg(token: str) -> Any:
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return token


def _boxes() -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    doc = json.loads(PATCH.read_text(encoding="utf-8"))
    boxes = {b["box"]["id"]: b["box"] for b in doc["patcher"]["boxes"]}
    assert len(boxes) == len(doc["patcher"]["boxes"]), "box ids are unique"
    return boxes, [ln["patchline"] for ln in doc["patcher"]["lines"]]


def test_patch_lines_join_existing_inlets_and_outlets() -> None:
    boxes, lines = _boxes()
    for ln in lines:
        (src, out), (dst, inl) = ln["source"], ln["destination"]
        assert src in boxes and dst in boxes, ln
        assert out < boxes[src]["numoutlets"] and inl < boxes[dst]["numinlets"], ln


def test_every_address_the_patch_sends_is_a_valid_command() -> None:
    boxes, lines = _boxes()
    sent = 0
    for box in boxes.values():
        text = box.get("text", "")
        if box["maxclass"] == "message" and text.startswith("/dreamstate/"):
            address, *args = text.split()
            parse_command(address, [_arg(a) for a in args])
            sent += 1
        if box["maxclass"] == "newobj" and text.startswith("prepend /dreamstate/"):
            address = text.split()[1]
            feeders = [boxes[ln["source"][0]] for ln in lines if ln["destination"][0] == box["id"]]
            assert feeders, f"nothing feeds {text}"
            for f in feeders:
                kind = float if f["maxclass"] == "flonum" else int
                for end in (f["minimum"], f["maximum"]):  # the slider's whole range is valid
                    parse_command(address, [kind(end)])
            sent += 1
    assert sent >= 12


def test_ports_match_the_defaults_and_routes_match_the_telemetry() -> None:
    boxes, _ = _boxes()
    texts = [b.get("text", "") for b in boxes.values()]
    assert f"udpsend 127.0.0.1 {OscConfig().listen_port}" in texts
    assert f"udpreceive {OscTarget().port}" in texts
    documented = {a for a, _, _ in TELEMETRY}
    routed = [t.split()[1:] for t in texts if t.startswith("route ")]
    assert routed and all(a in documented for a in routed[0])


def test_the_layers_the_patch_sends_exist_in_the_show_it_pairs_with() -> None:
    """The patch drives ``shows/touchdesigner.toml``: every /dreamstate/layer/<name> it sends is a
    layer of that show's model (the show would refuse an unknown layer)."""
    from dreamstate.engine.core.show import read_show
    from dreamstate.models import registry
    from dreamstate.models.graph import load_forward

    show = read_show(PATCH.parents[2] / "shows" / "touchdesigner.toml")
    path, _ = registry.resolve(show.show.show.model)
    names = {info.name for info in load_forward(path, label=str(path)).layers()}
    boxes, _ = _boxes()
    sent = {t.split()[-1].removeprefix("/dreamstate/layer/") for b in boxes.values()
            for t in [b.get("text", "")] if "/dreamstate/layer/" in t}
    assert sent and sent <= names, sent - names
