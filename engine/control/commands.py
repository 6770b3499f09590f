"""Typed control commands, shared by every transport (OSC now; MQTT uses the same addresses).

``parse_command(address, args)`` turns ``/dreamstate/zoom 1.02`` into ``Command("zoom", 1.02)``
or raises ``ControlError`` with a message that names the address and says what it expects. The
address set follows ``../shared/DESIGN.md``. Dream parameters (zoom, rotate, step, octaves,
layer weights) are checked against the show schema's own ranges (``engine.params``), so a value
a show file refuses is refused over OSC and MQTT too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import DreamstateError
from engine.params import ParamError, check_scene_value

PREFIX = "/dreamstate"


class ControlError(DreamstateError):
    """A control message that cannot be applied (unknown address, wrong arguments)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One control action. ``name`` is the address without the prefix; ``value`` is typed."""

    name: str
    value: Any = None
    target: str | None = None  # the layer name for ``layer``


def _scene_value(address: str, args: list[Any], field: str) -> float | int:
    """One number checked against the show schema's range for ``SceneConfig.<field>`` (the same
    limits a show file and the command line use, see ``engine.params``)."""
    if len(args) != 1:
        raise ControlError(f"{address} expects one number, got {_shown(args)}",
                           hint=f"send one number, {_describe(field)}")
    try:
        return check_scene_value(field, args[0], where=address)
    except ParamError as exc:
        raise ControlError(str(exc)) from None


def _describe(field: str) -> str:
    from engine.params import scene_limits

    return scene_limits(field).describe()


def _one_str(address: str, args: list[Any], *, allow_empty: bool = False) -> str:
    if len(args) != 1 or not isinstance(args[0], str) or (not allow_empty and not args[0]):
        raise ControlError(f"{address} expects one string, got {_shown(args)}", hint="send a string argument")
    return args[0]


def _one_int(address: str, args: list[Any], lo: int, hi: int) -> int:
    if len(args) != 1 or isinstance(args[0], bool) or not isinstance(args[0], int | float):
        raise ControlError(f"{address} expects one integer, got {_shown(args)}", hint=f"send an int {lo} .. {hi}")
    v = float(args[0])
    if not v.is_integer() or not lo <= v <= hi:
        raise ControlError(f"{address} value {args[0]!r} is not an integer in {lo} .. {hi}",
                           hint=f"send an int {lo} .. {hi}")
    return int(v)


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def parse_command(address: str, args: list[Any]) -> Command:
    """Validate one message. Raises ``ControlError`` naming the address and the fix (values
    in messages are cut to 80 characters)."""
    if len(address) > 256 or len(args) > 64:
        raise ControlError(f"OSC address {_shown(address)} with {len(args)} arguments is too long",
                           hint="addresses are short, like /dreamstate/zoom")
    if not address.startswith(PREFIX + "/"):
        raise ControlError(f"unknown OSC address {address!r}", hint=f"addresses start with {PREFIX}/")
    name = address[len(PREFIX) + 1:]
    if name.startswith("layer/"):
        layer = name[len("layer/"):]
        if not layer:
            raise ControlError(f"{address} needs a layer name", hint="send /dreamstate/layer/<name> <weight>")
        return Command("layer", _scene_value(address, args, "layer_weight"), target=layer)
    match name:
        case "scene":
            return Command("scene", _one_str(address, args))
        case "zoom":
            return Command("zoom", _scene_value(address, args, "zoom"))
        case "rotate":
            return Command("rotate", _scene_value(address, args, "rotate"))
        case "step":
            return Command("step", _scene_value(address, args, "step"))
        case "octaves":
            return Command("octaves", _scene_value(address, args, "octaves"))
        case "image":
            if len(args) == 1 and isinstance(args[0], int) and not isinstance(args[0], bool):
                return Command("image", args[0])
            return Command("image", _one_str(address, args))
        case "pause" | "play" | "calibrate/stop":
            return Command(name)
        case "blackout":
            return Command("blackout", _one_int(address, args, 0, 1) if args else 1)
        case "state/override":
            return Command("override", _one_str(address, args, allow_empty=True) if args else "")
        case "calibrate/start":
            return Command("calibrate/start", _one_str(address, args))
    raise ControlError(f"unknown OSC address {address!r}",
                       hint="see the control table in README.md (scene, layer/<name>, zoom, rotate, step, "
                            "octaves, image, pause, play, blackout, state/override, calibrate/start|stop)")
