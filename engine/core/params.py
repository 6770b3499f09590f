"""One source of truth for dream parameter limits: the show schema.

A dream parameter (``step``, ``octaves``, ``octave_scale``, ``zoom``, a layer weight, ...) has
its type and range declared once, on ``engine.core.show.SceneConfig``. This module reads those
declarations so that every way in checks a value the same way:

- show files: pydantic validates ``[scenes.*]`` directly;
- the command line: ``dreamstate dream/feedback`` flags use :func:`cli_type` as argparse type;
- control: OSC and MQTT commands (``engine.control.commands``) use :func:`check_scene_value`.

Floats must be finite everywhere (``nan``/``inf`` are refused, ``Section`` sets
``allow_inf_nan=False``). :func:`check_scene_value` raises ``ParamError`` naming the parameter,
the value, the allowed range and, where a value looks like another tool's convention (an
``octave_scale`` below 1 is a shrink factor elsewhere), what it means here.
"""

from __future__ import annotations

import argparse
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types as at

from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.show import SceneConfig


class ParamError(DreamstateError):
    """A dream parameter outside its declared range (message: name, value, range, fix)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The declared range of one parameter. ``lo``/``hi`` are None when open-ended;
    ``lo_open``/``hi_open`` say whether the bound itself is excluded (``gt``/``lt``)."""

    name: str
    kind: type  # int or float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value: float) -> bool:
        return math.isfinite(value) and self._above_lo(value) and self._below_hi(value)

    def clamp(self, value: float) -> float:
        """The allowed value nearest to a finite ``value``: a closed bound itself, the nearest
        float (or integer) inside an open one."""
        if self.lo is not None and not self._above_lo(value):
            value = (self.lo + 1 if self.kind is int else math.nextafter(self.lo, math.inf)) if self.lo_open \
                else self.lo
        if self.hi is not None and not self._below_hi(value):
            value = (self.hi - 1 if self.kind is int else math.nextafter(self.hi, -math.inf)) if self.hi_open \
                else self.hi
        return value

    def _above_lo(self, value: float) -> bool:
        return self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)

    def _below_hi(self, value: float) -> bool:
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def describe(self) -> str:
        """E.g. ``0 < step <= 20`` or ``1 <= octaves <= 10`` (an integer)."""
        left = f"{self.lo:g} {'<' if self.lo_open else '<='} " if self.lo is not None else ""
        right = f" {'<' if self.hi_open else '<='} {self.hi:g}" if self.hi is not None else ""
        return f"{left}{self.name}{right}" + (" (an integer)" if self.kind is int else "")


def _limits_from(name: str, annotation: Any, metadata: list[Any]) -> Limits:
    lo = hi = None
    lo_open = hi_open = False
    for m in metadata:
        if isinstance(m, at.Gt):
            lo, lo_open = float(m.gt), True  # type: ignore[arg-type]
        elif isinstance(m, at.Ge):
            lo, lo_open = float(m.ge), False  # type: ignore[arg-type]
        elif isinstance(m, at.Lt):
            hi, hi_open = float(m.lt), True  # type: ignore[arg-type]
        elif isinstance(m, at.Le):
            hi, hi_open = float(m.le), False  # type: ignore[arg-type]
    kind = int if annotation is int else float
    return Limits(name, kind, lo, hi, lo_open, hi_open)


def scene_limits(field: str) -> Limits:
    """The range of ``SceneConfig.<field>`` as declared in the schema; ``layer_weight`` is the
    value range of ``SceneConfig.layers``. Raises ``KeyError`` for a field with no numeric range."""
    if field in ("layer_weight", "translate"):
        # the value type of the layers dict, or the element type of the (x, y) tuple
        args = typing.get_args(SceneConfig.model_fields["layers" if field == "layer_weight" else field].annotation)
        base, *extra = typing.get_args(args[1] if field == "layer_weight" else args[0])
        meta = [m for info in extra for m in getattr(info, "metadata", [info])]
        return _limits_from("layer weight" if field == "layer_weight" else "translate", base, meta)
    info = SceneConfig.model_fields[field]
    if info.annotation not in (int, float):
        raise KeyError(f"scene parameter {field!r} has no numeric range")
    return _limits_from(field, info.annotation, list(info.metadata))


def _hint(field: str, value: float, limits: Limits) -> str:
    if field == "octave_scale" and 0 < value < 1:
        return (f"octave_scale here is the growth from one octave to the next (1.4 by default); "
                f"{value:g} looks like another tool's shrink factor: 1/{value:g} = {1 / value:.2f} here")
    return f"use {limits.describe()}"


def _problem(field: str, value: Any) -> tuple[str, str] | None:
    """(what is wrong, the fix) for ``value`` as ``SceneConfig.<field>``, or None when it fits."""
    limits = scene_limits(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expects a number, got {value!r}", f"use {limits.describe()}"
    v = float(value)
    if not math.isfinite(v):
        return f"{value!r} is out of range (not a finite number)", f"use {limits.describe()}"
    if limits.kind is int and not v.is_integer():
        return f"{value!r} is not an integer", f"use {limits.describe()}"
    if not limits.contains(v):
        return f"{value!r} is out of range", _hint(field, v, limits)
    return None


def check_scene_value(field: str, value: Any, *, where: str | None = None, clamp: bool = False) -> float | int:
    """``value`` as the declared type of ``SceneConfig.<field>`` (or ``layer_weight``,
    ``translate`` for one coordinate), checked against the schema's range. ``where`` names the
    source in the message (``--step``, an OSC address). Raises ``ParamError`` for a non-number,
    a non-finite number, a fraction where an integer is declared, or a value out of range.
    With ``clamp`` (live control, where a fader overshoots) a finite value out of range is
    brought to the nearest allowed value instead (``Limits.clamp``); the caller reports it."""
    limits = scene_limits(field)
    problem = _problem(field, value)
    if problem is not None:
        if not (clamp and problem[0].endswith("is out of range")):
            raise ParamError(f"{where or field} {problem[0]}", hint=problem[1])
        value = limits.clamp(float(value))
    return int(value) if limits.kind is int else float(value)


def cli_type(field: str, flag: str) -> Callable[[str], float | int]:
    """An argparse ``type=`` that parses and checks ``SceneConfig.<field>``; errors become
    argparse's usage errors naming ``flag``."""
    kind = scene_limits(field).kind

    def parse(text: str) -> float | int:
        try:
            raw: float | int = int(text) if kind is int else float(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} ({scene_limits(field).describe()})") from None
        problem = _problem(field, raw)
        if problem is not None:  # argparse already names the flag
            raise argparse.ArgumentTypeError(f"{text} {problem[0].partition(' ')[2]} (fix: {problem[1]})")
        return check_scene_value(field, raw, where=flag)

    parse.__name__ = field  # argparse names the type in its messages
    return parse


def finite(kind: type, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           name: str = "value") -> Callable[[str], Any]:
    """An argparse ``type=`` for a command-line-only number (``--seconds``, ``--fps``, ...):
    finite, of ``kind``, within the given bounds."""
    limits = Limits(name, kind, lo, hi, lo_open, False)

    def parse(text: str) -> Any:
        try:
            v = int(text) if kind is int else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({limits.describe()})") from None
        if not limits.contains(float(v)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: use {limits.describe()}")
        return v

    parse.__name__ = name
    return parse


def _whole_number(text: str, minimum: int, rule: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} must be {rule}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number above 0 (``--ellipses``, ``--repeat``)."""
    return _whole_number(text, 1, "at least 1")


def count_arg(text: str) -> int:
    """argparse type: a whole number, 0 or more (``--ascent-steps``: 0 turns a table off)."""
    return _whole_number(text, 0, "0 or more")


def sizes_arg(text: str) -> list[tuple[int, int]]:
    """argparse type: a comma-separated list of :func:`size_arg` sizes (``224x224,640x360``)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("give at least one size, like 640x360")
    return [size_arg(part) for part in parts]


def image_out_arg(text: str) -> str:
    """argparse type: a picture to write (``--out``), refused at once when its ending is not an
    image type ``save_image`` writes, rather than after the work that makes the picture."""
    from dreamstate.engine.core.images import IMAGE_SUFFIXES

    suffix = Path(text).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text!r} does not end in an image type ({', '.join(IMAGE_SUFFIXES)})")
    return text


def size_arg(text: str) -> tuple[int, int]:
    """An argparse ``type=`` for a size like ``640x360``: (width, height) in pixels, each side
    1 .. 8192. Errors become argparse's usage errors."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must look like 640x360") from None
    if not (1 <= w <= 8192 and 1 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"size {text!r} is out of range: each side 1 .. 8192 px")
    return w, h

