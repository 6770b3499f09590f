"""Typed control commands, one set for every transport (OSC and MQTT).

A command is one of the frozen dataclasses below; ``Command`` is their union, so the runtime
matches on the class (``case SetZoom(value=v)``) and mypy checks every field. Each class names
its address under ``/dreamstate/`` (``ADDRESS``) and, for dream parameters, the show schema
field its value is checked against (``SCHEMA``): the ranges come from ``SceneConfig``'s field
constraints through ``engine.core.params``, the one source the show file and the command line
use as well, so a value a show file refuses is refused over OSC and MQTT too.

``parse_command(address, args)`` is the decoder for both transports, generated from the
dataclasses' fields. Wire values are first converted to the field's type the way control
surfaces send them: an OSC ``T``/``F`` or 1/0 becomes a bool, a whole-number float (which
TouchDesigner and Max send for integers) becomes an int. Anything else raises
``ControlError`` naming the address and saying what it expects. A finite number outside its
schema range is clamped to the nearest allowed value (a TouchDesigner fader overshoots; the
show should follow, not ignore it) and the command carries what was clamped in ``clamped``,
which the runtime reports on ``/dreamstate/clamped``. Show files stay strictly typed and
refuse out-of-range values; this leniency is only for the wire. The address set follows ``../shared/DESIGN.md``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.params import ParamError, check_scene_value, scene_limits

PREFIX = "/dreamstate"


class ControlError(DreamstateError):
    """A control message that cannot be applied (unknown address, wrong arguments)."""


@dataclass(frozen=True, slots=True)
class SetScene:
    """``/dreamstate/scene [name]``: hold a scene whatever the state (clears live edits); an empty
    name, or none, lets the EEG state choose the scene again."""

    ADDRESS: ClassVar[str] = "scene"
    name: str = dataclasses.field(default="", metadata={"empty_ok": True})


@dataclass(frozen=True, slots=True)
class OverrideState:
    """``/dreamstate/state/override [label]``: act as if the EEG state were ``label`` (one of
    ``states.labels`` or ``absent``; it also releases a scene held by ``/dreamstate/scene``); an
    empty label, or none, follows the headset again."""

    ADDRESS: ClassVar[str] = "state/override"
    label: str = dataclasses.field(default="", metadata={"empty_ok": True})


@dataclass(frozen=True, slots=True)
class SetLayer:
    """``/dreamstate/layer/<layer> <weight>``: one layer's weight in the current dream."""

    ADDRESS: ClassVar[str] = "layer/"
    layer: str
    weight: float = dataclasses.field(metadata={"schema": "layer_weight"})
    clamped: tuple[tuple[str, float, float], ...] = dataclasses.field(default=(), metadata={"wire": False})
    """(argument, requested, applied) for each value that was out of range and clamped (not on the wire)."""


@dataclass(frozen=True, slots=True)
class SetZoom:
    """``/dreamstate/zoom <factor>``: zoom per motion step (``SceneConfig.zoom``)."""

    ADDRESS: ClassVar[str] = "zoom"
    value: float = dataclasses.field(metadata={"schema": "zoom"})
    clamped: tuple[tuple[str, float, float], ...] = dataclasses.field(default=(), metadata={"wire": False})
    """(argument, requested, applied) for each value that was out of range and clamped (not on the wire)."""


@dataclass(frozen=True, slots=True)
class SetRotate:
    """``/dreamstate/rotate <degrees>``: rotation per motion step (``SceneConfig.rotate``)."""

    ADDRESS: ClassVar[str] = "rotate"
    value: float = dataclasses.field(metadata={"schema": "rotate"})
    clamped: tuple[tuple[str, float, float], ...] = dataclasses.field(default=(), metadata={"wire": False})
    """(argument, requested, applied) for each value that was out of range and clamped (not on the wire)."""


@dataclass(frozen=True, slots=True)
class SetStep:
    """``/dreamstate/step <levels>``: gradient step in display levels (``SceneConfig.step``)."""

    ADDRESS: ClassVar[str] = "step"
    value: float = dataclasses.field(metadata={"schema": "step"})
    clamped: tuple[tuple[str, float, float], ...] = dataclasses.field(default=(), metadata={"wire": False})
    """(argument, requested, applied) for each value that was out of range and clamped (not on the wire)."""


@dataclass(frozen=True, slots=True)
class SetOctaves:
    """``/dreamstate/octaves <n>``: DeepDream octaves (``SceneConfig.octaves``)."""

    ADDRESS: ClassVar[str] = "octaves"
    value: int = dataclasses.field(metadata={"schema": "octaves"})
    clamped: tuple[tuple[str, float, float], ...] = dataclasses.field(default=(), metadata={"wire": False})
    """(argument, requested, applied) for each value that was out of range and clamped (not on the wire)."""


LIVE_PARAMS: tuple[str, ...] = ("zoom", "rotate", "step", "octaves", "octave_scale", "steps", "color_nudge",
                                 "contrast", "warp_px", "crossfade_s", "seeing_opacity", "seeing_smooth",
                                 "seeing_every_s")
"""The numeric ``SceneConfig`` fields the live renderer reads, so the ones ``/dreamstate/param/<name>``
sets (``translate``, ``mask``, ``guide``, ``image`` and layer weights have their own addresses)."""

OFFLINE_PARAMS: dict[str, str] = {
    "blend": "blend is used only by the offline `dreamstate feedback`; live, the display crossfades instead "
             "(set /dreamstate/param/crossfade_s)",
    "channels": "channels are compiled into the dream step when the show starts; put them in a scene",
    "layers": "send /dreamstate/layer/<name> <weight>",
}
"""Scene fields that exist but cannot be set live, with what to do instead."""


@dataclass(frozen=True, slots=True)
class SetParam:
    """``/dreamstate/param/<name> <value>``: any live dream parameter of the current scene by its
    show-file name (``LIVE_PARAMS``), checked against the show schema's range for that field."""

    ADDRESS: ClassVar[str] = "param/"
    name: str
    value: float = dataclasses.field(metadata={"schema": "<name>"})
    clamped: tuple[tuple[str, float, float], ...] = dataclasses.field(default=(), metadata={"wire": False})
    """(argument, requested, applied) for each value that was out of range and clamped (not on the wire)."""


@dataclass(frozen=True, slots=True)
class SetTranslate:
    """``/dreamstate/translate <x> <y>``: pixels per motion step (``SceneConfig.translate``)."""

    ADDRESS: ClassVar[str] = "translate"
    x: float = dataclasses.field(metadata={"schema": "translate"})
    y: float = dataclasses.field(metadata={"schema": "translate"})
    clamped: tuple[tuple[str, float, float], ...] = dataclasses.field(default=(), metadata={"wire": False})
    """(argument, requested, applied) for each value that was out of range and clamped (not on the wire)."""


@dataclass(frozen=True, slots=True)
class SetMask:
    """``/dreamstate/mask [path]``: a greyscale image inside the show folder that confines the dream
    (``SceneConfig.mask``); an empty path, or none, dreams everywhere again."""

    ADDRESS: ClassVar[str] = "mask"
    path: str = dataclasses.field(default="", metadata={"empty_ok": True})


@dataclass(frozen=True, slots=True)
class SetGuide:
    """``/dreamstate/guide [path]``: an image inside the show folder whose features the dream is
    drawn toward (``SceneConfig.guide``; the show must use a guide in some scene, so that the
    guide step is compiled); an empty path, or none, drops the guide."""

    ADDRESS: ClassVar[str] = "guide"
    path: str = dataclasses.field(default="", metadata={"empty_ok": True})


@dataclass(frozen=True, slots=True)
class SetImage:
    """``/dreamstate/image <index | path>``: the source image, by its index in ``show.images``
    or a path inside the show folder (the runtime checks both)."""

    ADDRESS: ClassVar[str] = "image"
    image: int | str


@dataclass(frozen=True, slots=True)
class Pause:
    """``/dreamstate/pause``: hold the picture (no steps, no motion)."""

    ADDRESS: ClassVar[str] = "pause"


@dataclass(frozen=True, slots=True)
class Play:
    """``/dreamstate/play``: resume after ``pause``."""

    ADDRESS: ClassVar[str] = "play"


@dataclass(frozen=True, slots=True)
class Blackout:
    """``/dreamstate/blackout [on]``: black screen (``on`` true, the default) or back (false)."""

    ADDRESS: ClassVar[str] = "blackout"
    on: bool = True


@dataclass(frozen=True, slots=True)
class CalibrateStart:
    """``/dreamstate/calibrate/start <label>``: label the coming windows for calibration."""

    ADDRESS: ClassVar[str] = "calibrate/start"
    label: str


@dataclass(frozen=True, slots=True)
class CalibrateStop:
    """``/dreamstate/calibrate/stop``: end the label and refit the classifier."""

    ADDRESS: ClassVar[str] = "calibrate/stop"


Command = (SetScene | OverrideState | SetLayer | SetZoom | SetRotate | SetStep | SetOctaves | SetParam
           | SetTranslate | SetMask | SetGuide | SetImage | Pause | Play | Blackout | CalibrateStart | CalibrateStop)
"""One control action; match on its class."""

COMMANDS: tuple[type[Any], ...] = typing.get_args(Command)
BY_ADDRESS: dict[str, type[Any]] = {cls.ADDRESS: cls for cls in COMMANDS}
_SPECS: dict[type[Any], tuple[dict[str, Any], tuple[dataclasses.Field[Any], ...]]] = {
    cls: (typing.get_type_hints(cls), tuple(f for f in dataclasses.fields(cls) if f.metadata.get("wire", True)))
    for cls in COMMANDS}
PREFIXED: dict[type[Any], str] = {SetLayer: "layer", SetParam: "name"}
"""Commands whose first field is the rest of the address (``/dreamstate/layer/<layer>``)."""


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _expects(kind: Any, meta: typing.Mapping[str, Any]) -> str:
    if "schema" in meta:
        return f"a number, {scene_limits(meta['schema']).describe()}"
    return {bool: "true/false (or 1/0)", int: "an integer", float: "a number", str: "a string"}.get(
        kind, "an image index or a path")


def wire_value(address: str, name: str, kind: Any, meta: typing.Mapping[str, Any], value: Any) -> Any:
    """One wire argument as the field's type ``kind`` (see the module docstring), checked
    against the schema range when the field names one. Raises ``ControlError``."""
    def bad(why: str) -> ControlError:
        return ControlError(f"{address} {name} {_shown(value)} {why}", hint=f"send {_expects(kind, meta)}")

    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if is_number and value in (0, 1):
            return bool(value)
        raise bad("is not true/false")
    if kind is str:
        if not isinstance(value, str):
            raise bad("is not a string")
        if not value and not meta.get("empty_ok"):
            raise bad("is empty")
        return value
    if kind == (int | str):  # an index or a path
        if isinstance(value, str):
            return wire_value(address, name, str, meta, value)
        return wire_value(address, name, int, meta, value)
    if not is_number:
        raise bad("is not a number")
    if "schema" in meta:  # out of range: clamped (decode reports it in the command's ``clamped``)
        try:
            return check_scene_value(meta["schema"], value, where=address, clamp=True)
        except ParamError as exc:
            raise ControlError(str(exc)) from None
    if not math.isfinite(value):
        raise bad("is not finite")
    if kind is int:
        if not float(value).is_integer():
            raise bad("is not an integer")
        return int(value)
    return float(value)


def wire_fields(cls: type[Any]) -> tuple[dataclasses.Field[Any], ...]:
    """The fields of a command class that come from the address or the arguments, in order
    (not ``clamped``, which the decoder fills)."""
    return _SPECS[cls][1]


def _meta(f: dataclasses.Field[Any], values: list[Any]) -> typing.Mapping[str, Any]:
    """A field's metadata; ``schema = "<name>"`` takes the schema field from the first value."""
    if f.metadata.get("schema") == "<name>":
        return {**f.metadata, "schema": values[0]}
    return f.metadata


def decode(cls: type[Any], address: str, args: list[Any], *, prefix: list[Any] | None = None) -> Any:
    """Build ``cls`` from wire ``args`` (``prefix`` fills leading fields taken from the address,
    like a layer name): one argument per field in order, defaults for missing trailing ones. A
    number out of its schema range is clamped and noted in the command's ``clamped``."""
    hints, fields = _SPECS[cls]
    values = list(prefix or []) + list(args)
    usage = " ".join(f"<{f.name}>" if f.default is dataclasses.MISSING else f"[{f.name}]"
                     for f in fields[len(prefix or []):])
    required = sum(f.default is dataclasses.MISSING for f in fields)
    if not required <= len(values) <= len(fields):
        shown = f"got {_shown(args)}" if args else "got no arguments"
        want = ", ".join(_expects(hints[f.name], _meta(f, values))
                         for f in fields[len(prefix or []):]) or "no arguments"
        raise ControlError(f"{address} expects {want}; {shown}",
                           hint=f"send {address}{' ' + usage if usage else ''}")
    kwargs: dict[str, Any] = {}
    clamped: list[tuple[str, float, float]] = []
    for f, v in zip(fields, values, strict=False):
        meta = _meta(f, values)
        kwargs[f.name] = wire_value(address, f.name, hints[f.name], meta, v)
        if "schema" in meta and float(kwargs[f.name]) != float(v):
            clamped.append((f.name, float(v), float(kwargs[f.name])))
    if clamped:
        kwargs["clamped"] = tuple(clamped)
    return cls(**kwargs)


def parse_command(address: str, args: list[Any]) -> Command:
    """Validate one message into a typed command. Raises ``ControlError`` naming the address
    and the fix (values in messages are cut to 80 characters)."""
    if len(address) > 256 or len(args) > 64:
        raise ControlError(f"OSC address {_shown(address)} with {len(args)} arguments is too long",
                           hint="addresses are short, like /dreamstate/zoom")
    if not address.startswith(PREFIX + "/"):
        raise ControlError(f"unknown OSC address {_shown(address)}", hint=f"addresses start with {PREFIX}/")
    name = address[len(PREFIX) + 1:]
    if name.startswith(SetLayer.ADDRESS):
        layer = name[len(SetLayer.ADDRESS):]
        if not layer:
            raise ControlError(f"{address} needs a layer name", hint="send /dreamstate/layer/<name> <weight>")
        return typing.cast(Command, decode(SetLayer, address, args, prefix=[layer]))
    if name.startswith(SetParam.ADDRESS):
        param = name[len(SetParam.ADDRESS):]
        if param not in LIVE_PARAMS:
            why = OFFLINE_PARAMS.get(param)
            raise ControlError(f"{address}: {_shown(param)} " + ("cannot be set live" if why else
                                                                  "is not a live dream parameter"),
                               hint=why or f"use one of {', '.join(LIVE_PARAMS)}")
        return typing.cast(Command, decode(SetParam, address, args, prefix=[param]))
    cls = BY_ADDRESS.get(name)
    if cls is None or cls in PREFIXED:
        raise ControlError(f"unknown OSC address {_shown(address)}",
                           hint="see docs/osc.md (" + ", ".join(
                               c.ADDRESS + (f"<{PREFIXED[c]}>" if c in PREFIXED else "") for c in COMMANDS) + ")")
    return typing.cast(Command, decode(cls, address, args))
