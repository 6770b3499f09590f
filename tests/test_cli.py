"""The command line's own wiring: every command module is imported directly, so a module that
fails to import stops `dreamstate` with its name instead of the command silently vanishing."""

from __future__ import annotations

import pytest

from dreamstate.engine.tools import cli


def test_every_command_and_bench_is_registered() -> None:
    parser = cli.build_parser()
    text = parser.format_help()
    for command in ("run", "kiosk", "check", "devices", "simulate", "monitor", "record", "recover", "map",
                    "calibrate", "models", "dream", "feedback", "style", "draw", "explain", "bench"):
        assert command in text, command


def test_a_command_module_that_does_not_import_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "dreamstate.engine.tools.missing_cli"))
    with pytest.raises(ModuleNotFoundError, match=r"dreamstate\.engine\.tools\.missing_cli"):
        cli.build_parser()


def test_logging_options_work_before_and_after_the_command() -> None:
    """``dreamstate kiosk show.toml --log-json`` (as people write it in a systemd unit) means the
    same as ``dreamstate --log-json kiosk show.toml``; a command without them keeps the defaults."""
    from dreamstate.engine.tools.cli import build_parser

    p = build_parser()
    for argv in (["--log-json", "kiosk", "s.toml"], ["kiosk", "s.toml", "--log-json"]):
        a = p.parse_args(argv)
        assert a.log_json is True and a.command == "kiosk" and a.verbose == 0 and a.log_file is None
    a = p.parse_args(["kiosk", "s.toml"])
    assert a.log_json is False and a.verbose == 0
    a = p.parse_args(["run", "-v", "--log-file", "x.log"])
    assert a.verbose == 1 and a.log_file == "x.log"
    a = p.parse_args(["bench", "render", "--log-json"])
    assert a.log_json is True
