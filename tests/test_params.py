"""One source of truth for dream parameters (issue 11, item 6).

The kind of fault: the command line, show files and OSC/MQTT each had their own idea of a
parameter's range (or none: ``--octave-scale 0`` divided by zero, ``--step nan`` wrote a black
PNG, OSC took ``step 0`` and ``zoom 2.0`` that a show file refuses). Now every way in reads the
range from ``SceneConfig``; these tests probe each parameter at and around its bounds and
require the three to agree.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from dreamstate.engine.control.commands import ControlError, SetLayer, parse_command
from dreamstate.engine.core.params import ParamError, check_scene_value, cli_type, scene_limits
from dreamstate.engine.core.show import SceneConfig
from dreamstate.engine.tools.cli import build_parser
from dreamstate.engine.tools.cli import main as cli_main

FIELDS = ["step", "octaves", "octave_scale", "zoom", "rotate", "blend", "steps", "layer_weight"]
OSC = {"step": "/dreamstate/step", "octaves": "/dreamstate/octaves", "zoom": "/dreamstate/zoom",
       "rotate": "/dreamstate/rotate", "layer_weight": "/dreamstate/layer/fire5"}


def _probes(field: str) -> list[float]:
    lim = scene_limits(field)
    vals = [0.0, 1.0, 2.5, -1.0, 1e6, math.nan, math.inf, -math.inf]
    for b in (lim.lo, lim.hi):
        if b is not None:
            vals += [b, b - 1e-6, b + 1e-6, b - 1, b + 1]
    return vals


def _show_accepts(field: str, value: float) -> bool:
    data: dict[str, Any] = {"layers": {"fire5": value}} if field == "layer_weight" else {field: value}
    if scene_limits(field).kind is int and float(value).is_integer():
        data = {field: int(value)}
    try:
        SceneConfig.model_validate(data)
    except ValidationError:
        return False
    return True


def _cli_accepts(field: str, value: float) -> bool:
    text = repr(int(value)) if scene_limits(field).kind is int and float(value).is_integer() else repr(value)
    try:
        cli_type(field, "--x")(text)
    except argparse.ArgumentTypeError:
        return False
    return True


def _osc_result(field: str, value: float) -> str:
    """"as sent", "clamped" (applied at a value inside the range) or "refused"."""
    limits = scene_limits(field)
    arg: Any = int(value) if limits.kind is int and float(value).is_integer() else value
    try:
        cmd = parse_command(OSC[field], [arg])
    except ControlError:
        return "refused"
    applied = cmd.weight if isinstance(cmd, SetLayer) else cmd.value  # type: ignore[union-attr]
    assert limits.contains(applied), (field, value, applied)
    return "clamped" if cmd.clamped else "as sent"  # type: ignore[union-attr]


@pytest.mark.parametrize("field", FIELDS)
def test_show_cli_and_osc_agree_on_every_value(field: str) -> None:
    """Show files and the command line refuse what is out of range; live control clamps a
    finite number of the right kind (a fader overshooting) and refuses the rest."""
    kind = scene_limits(field).kind
    for value in _probes(field):
        show = _show_accepts(field, value)
        assert _cli_accepts(field, value) == show, (field, value, show)
        if field in OSC:
            clampable = math.isfinite(value) and (kind is float or float(value).is_integer())
            want = "as sent" if show else "clamped" if clampable else "refused"
            assert _osc_result(field, value) == want, (field, value, want)


def test_ranges_come_from_the_schema() -> None:
    assert scene_limits("step").describe() == "0 < step <= 20"
    assert scene_limits("octaves").describe() == "1 <= octaves <= 10 (an integer)"
    assert scene_limits("zoom").describe() == "0.8 <= zoom <= 1.25"
    assert scene_limits("layer_weight").describe() == "-10 <= layer weight <= 10"


def test_a_shrink_factor_is_explained() -> None:
    with pytest.raises(ParamError, match=r"1/0.6 = 1.67 here"):
        check_scene_value("octave_scale", 0.6, where="--octave-scale")


@pytest.mark.parametrize(("argv", "message"), [
    (["--octave-scale", "0"], "argument --octave-scale: 0 is out of range (fix: use 1.05 <= octave_scale <= 3)"),
    (["--octave-scale", "0.6"], "1/0.6 = 1.67 here"),
    (["--step", "nan"], "argument --step: nan is out of range (not a finite number)"),
    (["--step", "0"], "argument --step: 0 is out of range"),
    (["--octaves", "2.5"], "argument --octaves: '2.5' is not an integer"),
    (["--steps", "0"], "argument --steps: 0 is out of range"),
    (["--layers", "fire5=inf"], "layer 'fire5' weight inf is out of range"),
    (["--jitter", "-3"], "argument --jitter: -3 is out of range"),
    (["--tile", "nan"], "argument --tile: 'nan' is not a number"),
])
def test_dream_cli_refuses_bad_parameters_before_any_work(tmp_path: Path, argv: list[str], message: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.png"
    with pytest.raises(SystemExit) as exc:
        cli_main(["dream", "missing.png", "--out", str(out), *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("flag", "value"), [("--zoom", "2"), ("--zoom", "inf"), ("--blend", "1.5"),
                                             ("--seconds", "0"), ("--seconds", "nan"), ("--fps", "-1"),
                                             ("--center", "2"), ("--source-mix", "-0.1"),
                                             ("--steps-per-frame", "0"), ("--rotate", "90")])
def test_feedback_cli_refuses_bad_parameters(flag: str, value: str) -> None:
    args = ["feedback", "x.png", "--out", "o.mp4", flag, value]
    if flag == "--center":
        args.append("0.5")
    with pytest.raises(SystemExit):
        build_parser().parse_args(args)


@pytest.mark.parametrize("text", ["[states]\ndwell_s = nan\n", "[output]\nfps = inf\n",
                                  "[scenes.a]\nstep = nan\n", "[attract]\nscene = \"a\"\nafter_s = inf\n"])
def test_show_files_refuse_non_finite_numbers_anywhere(tmp_path: Path, text: str) -> None:
    from dreamstate.engine.core.errors import ShowError
    from dreamstate.engine.runtime.showfile import load_show

    base = '[show]\nname = "t"\nmodel = "starter"\ndefault_scene = "a"\n'
    if "[scenes.a]" not in text:
        text += "[scenes.a]\nstep = 1.0\n"
    (tmp_path / "show.toml").write_text(base + text)
    with pytest.raises(ShowError, match="finite"):
        load_show(tmp_path / "show.toml", deep=False)


def test_valid_values_still_dream(tmp_path: Path) -> None:
    from dreamstate.engine.core.images import save_image

    save_image(tmp_path / "a.png", np.random.default_rng(0).random((48, 64, 3), dtype=np.float32))
    assert cli_main(["dream", str(tmp_path / "a.png"), "--model", "starter", "--octave-scale", "1.43",
                     "--octaves", "2", "--steps", "1", "--step", "20", "--out", str(tmp_path / "o.png")]) == 0
