"""``dreamstate run`` (the show), ``dreamstate kiosk`` (the same for an unattended room) and
``dreamstate check`` (validate a show without running it)."""

from __future__ import annotations

import argparse
from typing import Any

from dreamstate.engine.core.params import finite


def register(sub: Any) -> None:
    run = sub.add_parser("run", help="run a show (default: the embedded demo show)")
    run.add_argument("show", nargs="?", help="show file (TOML); omit for the demo show")
    run.add_argument("--seconds", type=finite(float, lo=0, lo_open=True, name="--seconds"),
                     help="stop after this many seconds")
    run.add_argument("--output", choices=["auto", "window", "video", "png", "ndi", "none"],
                     help="override [output] kind")
    run.add_argument("--out", help="video/PNG path for headless outputs (relative to the show folder)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the dream device")
    run.add_argument("--fullscreen", action="store_true", help="borderless fullscreen on the display")
    run.set_defaults(func=_run)

    kiosk = sub.add_parser("kiosk", help="run a show for an unattended room: fullscreen window, no cursor, "
                                         "only a key chord quits, waits for the display")
    kiosk.add_argument("show", nargs="?", help="show file (TOML); omit for the demo show")
    kiosk.add_argument("--quit-chord", default="ctrl+alt+q", type=_chord,
                       help="the only keys that end the show (default ctrl+alt+q)")
    kiosk.add_argument("--seconds", type=finite(float, lo=0, lo_open=True, name="--seconds"),
                       help="stop after this many seconds")
    kiosk.set_defaults(func=_run, kiosk=True, output=None, out=None, device=None, fullscreen=True)

    check = sub.add_parser("check", help="validate a show file completely, run nothing")
    check.add_argument("show", nargs="?", help="show file (TOML); omit for the demo show")
    check.add_argument("--shallow", action="store_true", help="skip checks that load models/images")
    check.set_defaults(func=_check)


def _chord(text: str) -> str:
    from dreamstate.engine.core.errors import RenderError
    from dreamstate.engine.output.window import parse_chord

    try:
        parse_chord(text)
    except RenderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from dreamstate.engine.runtime.showfile import load_show

    loaded = load_show(args.show, deep=not args.shallow)
    show = loaded.show
    console = Console()
    for key, message in loaded.warnings:
        console.print(f"[yellow]warning[/yellow] {escape(key)}: {escape(message)}", highlight=False)
    console.print(
        f"[green]ok[/green] show [bold]{show.show.name}[/bold] ({loaded.source}): "
        f"device={show.device.kind}, states={show.states.mode}, scenes={sorted(show.scenes)}, "
        f"output={show.output.kind}" + (f", {len(loaded.warnings)} warning(s)" if loaded.warnings else "")
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from dreamstate.engine.runtime.app import run_show

    code: int = run_show(args)
    return code
