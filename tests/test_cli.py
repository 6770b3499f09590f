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
