"""The ``dreamstate`` command.

Each area registers its own subcommands from its own module, so areas stay independent:
a module in ``COMMAND_MODULES`` defines ``register(sub)`` that adds parsers to ``sub`` and sets
``func=handler`` where ``handler(args) -> int``. Benchmarks register under ``dreamstate bench``
from ``BENCH_MODULES`` the same way. Heavy imports happen inside handlers, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from dreamstate import __version__
from dreamstate.engine.core.errors import DreamstateError
from dreamstate.engine.core.logs import setup_logging

log = logging.getLogger("dreamstate.cli")

COMMAND_MODULES: tuple[str, ...] = (
    "dreamstate.engine.tools.show_cli",          # run, check
    "dreamstate.engine.tools.devices_cli",       # devices, simulate
    "dreamstate.engine.tools.session_cli",      # monitor, record, recover
    "dreamstate.engine.tools.signal_cli",   # map, calibrate
    "dreamstate.engine.tools.models_cli",          # models layers|compile|fetch|list|export-torchvision
    "dreamstate.engine.tools.render_cli",   # dream, feedback
    "dreamstate.engine.tools.style_cli",    # style
    "dreamstate.engine.tools.draw_cli",     # draw
    "dreamstate.engine.tools.explain_cli",  # explain
)

BENCH_MODULES: dict[str, str] = {
    "parser": "dreamstate.engine.tools.bench_parser",
    "signal": "dreamstate.engine.tools.bench_signal",
    "dream": "dreamstate.engine.tools.bench_dream",
    "render": "dreamstate.engine.tools.bench_render",
    "longrun": "dreamstate.engine.tools.bench_longrun",
    "osc-flood": "dreamstate.engine.tools.bench_osc",
    "soak": "dreamstate.engine.tools.bench_soak",
    "e2e": "dreamstate.engine.tools.bench_e2e",
    "lsl": "dreamstate.engine.tools.bench_lsl",
    "style": "dreamstate.engine.tools.bench_style",
    "draw": "dreamstate.engine.tools.bench_draw",
    "explain": "dreamstate.engine.tools.bench_explain",
}

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamstate",
        description="EEG-steered DeepDream for installations. Run `dreamstate run` for the demo show.",
    )
    parser.add_argument("--version", action="version", version=f"dreamstate {__version__}")
    _logging_options(parser, default=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        # a command module that does not import is a packaging fault: fail loudly, naming it
        importlib.import_module(name).register(sub)
    bench = sub.add_parser("bench", help=f"benchmarks that print their figures ({', '.join(BENCH_MODULES)})")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for bench_name, module_name in BENCH_MODULES.items():
        bp = bench_sub.add_parser(bench_name, help=f"benchmark: {bench_name}")
        bp.set_defaults(func=_bench_runner(module_name), bench_module=module_name)
        module = importlib.import_module(module_name)
        if hasattr(module, "add_arguments"):
            module.add_arguments(bp)
    for name, command in sub.choices.items():  # the logging options also after the command
        if name != "bench":
            _logging_options(command, default=False)
    for command in bench_sub.choices.values():
        _logging_options(command, default=False)
    return parser


def _logging_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """-v, --log-json and --log-file: on the main parser with their defaults, and on each command
    with none (``argparse.SUPPRESS``), so ``dreamstate kiosk show.toml --log-json`` works as well
    as ``dreamstate --log-json kiosk show.toml`` and a command without them keeps the main values."""
    d: dict[str, Any] = {} if default else {"default": argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="count", help="-v: dreamstate debug lines; -vv: every library's too",
                        **({"default": 0} if default else d))
    parser.add_argument("--log-json", action="store_true", help="structured JSON log lines on stderr", **d)
    parser.add_argument("--log-file", metavar="PATH",
                        help="also log to this file, rotated at 10 MB with 5 old files kept (outside systemd)", **d)


def _bench_runner(module_name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(module_name)
        result: int = module.main(args)
        return result

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbosity=args.verbose, json_lines=args.log_json, log_file=args.log_file)
    if not getattr(args, "func", None):
        if args.command is None:
            # No command: the embedded default, the demo show.
            args = parser.parse_args(["run", *(argv or [])])
        else:
            parser.print_help()
            return 2
    try:
        code: int = args.func(args)
        return code
    except DreamstateError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        _finish_dream_workers()


def _finish_dream_workers(timeout_s: float = 10.0) -> None:
    """No onnxruntime call may be running when the interpreter exits (the process would abort
    with exit 134): wait for dream workers to end their step; if one hangs, exit at once."""
    renderer = sys.modules.get("dreamstate.engine.render.renderer")
    if renderer is None or renderer.finish_workers(timeout_s):
        return
    log.warning("a dream worker is still in a step after %.0f s; exiting without it", timeout_s)
    logging.shutdown()
    os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
