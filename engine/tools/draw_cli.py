"""``dreamstate draw``: search an ellipse drawing that a classifier scores as a class.

::

    dreamstate draw --class "killer whale" --model squeezenet1.0 --seconds 60 --out whale.png --svg whale.svg
    dreamstate draw --list-classes --model starter

The search is :mod:`dreamstate.engine.render.drawing` (the same one the live drawing scenes
run). Progress (the score over time) is a rich line on a terminal and a log line every 10 s
otherwise (``DREAMSTATE_PROGRESS_S``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from dreamstate.engine.core.params import image_out_arg, positive_int, size_arg

log = logging.getLogger("dreamstate.draw")


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0 (``--seconds``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and value < 1e7):
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds above 0")
    return value


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The flags ``draw`` and ``bench draw`` share."""
    p.add_argument("--ellipses", type=positive_int, default=40, help="ellipses in the drawing (40)")
    p.add_argument("--jitters", type=positive_int, default=4,
                   help="jittered views the score is averaged over (4; the first is the drawing itself)")
    p.add_argument("--threads", type=positive_int, default=2, help="onnxruntime threads (2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="where the classifier runs (cpu)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from dreamstate.engine.render.drawing import DEFAULT_OPTIMIZER, OPTIMIZERS
    from dreamstate.models.registry import DEFAULT_MODEL

    p = sub.add_parser("draw", help="search a two-colour ellipse drawing a classifier scores as a class")
    p.add_argument("--class", dest="target", metavar="CLASS",
                   help="class name (any case) or index, e.g. \"killer whale\" or 148")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"a registry name or an .onnx classifier ({DEFAULT_MODEL}; squeezenet1.0, starter, ...)")
    p.add_argument("--seconds", type=positive_seconds, default=60.0, help="search time in seconds (60)")
    p.add_argument("--evaluations", type=positive_int, default=None,
                   help="stop after this many scored drawings instead (reproducible with --seed)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULT_OPTIMIZER,
                   help=f"random (the original's search), cma (CMA-ES) or gradient (the classifier's gradient through "
                        f"a soft raster, then random search) ({DEFAULT_OPTIMIZER})")
    p.add_argument("--seed", type=int, default=0, help="random seed of the start drawing and the search (0)")
    p.add_argument("--out", type=lambda t: Path(image_out_arg(t)), help="PNG to write")
    p.add_argument("--svg", type=Path, help="also write the drawing as SVG")
    p.add_argument("--size", type=size_arg, default=(1024, 1024), help="PNG and SVG size, WxH (1024x1024)")
    p.add_argument("--list-classes", action="store_true", help="print the model's classes and stop")
    add_search_arguments(p)
    p.set_defaults(func=cmd_draw)


def cmd_draw(args: argparse.Namespace) -> int:
    from dreamstate.engine.core.errors import RenderError
    from dreamstate.engine.core.images import save_image
    from dreamstate.engine.render.drawing import (
        DrawingObjective,
        make_search,
        random_drawing,
        render_u8,
        run_search,
        to_svg,
    )
    from dreamstate.models.classify import ClassifierModel

    classifier = ClassifierModel.load(args.model, device=args.device, threads=args.threads)
    if args.list_classes:
        for i in range(classifier.num_classes):
            print(f"{i}\t{classifier.label(i)}")  # noqa: T201 -- the command's output
        return 0
    if args.target is None or args.out is None:
        raise RenderError("draw needs --class and --out", hint="e.g. --class \"killer whale\" --out whale.png")
    target = classifier.resolve(args.target)
    label = classifier.label(target)
    objective = DrawingObjective(classifier, target, jitters=args.jitters, seed=args.seed)
    horizon = args.evaluations or max(200, int(args.seconds * 15))
    search = make_search(args.optimizer, objective, random_drawing(args.ellipses, args.seed), seed=args.seed,
                         horizon=horizon)
    show = _Progress(f"{label} ({args.optimizer}, {classifier.name})", args.seconds, args.evaluations)
    with show:
        result = run_search(search, seconds=None if args.evaluations else args.seconds,
                            evaluations=args.evaluations, on_step=show.update)
    prob = objective.probability(result.best)
    save_image(args.out, render_u8(result.best, args.size))
    if args.svg is not None:
        args.svg.write_text(to_svg(result.best, args.size), encoding="utf-8")
    print(f"{label}: score {result.score:.3f} (log-probability over {objective.jitters} views), "  # noqa: T201
          f"probability {prob:.3f}, {result.evaluations} drawings in {result.seconds:.1f} s "
          f"({result.evaluations / max(result.seconds, 1e-9):.1f}/s); wrote {args.out}"
          + (f" and {args.svg}" if args.svg else ""))
    return 0


class _Progress:
    """The score over time: a rich line on a terminal, else a log line every interval."""

    def __init__(self, label: str, seconds: float, evaluations: int | None) -> None:
        from dreamstate.engine.tools.progress import default_interval

        self.label = label
        self.total = float(evaluations) if evaluations else seconds
        self.by_evals = evaluations is not None
        self.terminal = sys.stdout.isatty()
        self.interval = default_interval()
        self._bar: object = None
        self._task: object = None
        self._last = time.monotonic()

    def __enter__(self) -> _Progress:
        if self.terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            bar = Progress(TextColumn(self.label), BarColumn(), TextColumn("score {task.fields[score]}"),
                           TextColumn("p {task.fields[p]}"), TextColumn("{task.fields[evals]} drawings"),
                           TimeElapsedColumn())
            bar.__enter__()
            self._task = bar.add_task(self.label, total=self.total, score="-", p="-", evals=0)
            self._bar = bar
        else:
            log.info("drawing started", extra={"task": self.label})
        return self

    def update(self, elapsed: float, search: object) -> None:
        import math

        score = float(getattr(search, "best_score", 0.0))
        evals = int(getattr(search, "evaluations", 0))
        done = evals if self.by_evals else elapsed
        if self._bar is not None:
            self._bar.update(self._task, completed=min(done, self.total),  # type: ignore[attr-defined]
                             score=f"{score:.3f}", p=f"{math.exp(score):.3f}", evals=evals)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            log.info("drawing", extra={"task": self.label, "elapsed_s": round(elapsed, 1), "score": round(score, 4),
                                       "probability": round(math.exp(score), 4), "drawings": evals})

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)  # type: ignore[attr-defined]
