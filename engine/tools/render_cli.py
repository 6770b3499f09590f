"""``dreamstate dream`` and ``dreamstate feedback``: DeepDream from the command line.

``dreamstate dream IMAGE --model M [--layers L ...] --out OUT.png``: one still.
``dreamstate feedback IMAGE --seconds S --out video.mp4``: a zoom-feedback video, offline.
``M`` is a registry name (``efficientnet-lite0``, the default, ``starter``, ``squeezenet1.0``, ...)
or an .onnx path; without
``--layers`` the model's recommended layers are used. Long runs show a progress bar on a
terminal and log a progress line every 10 s otherwise (``engine.tools.progress``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamstate.engine.core.params import cli_type, finite, image_out_arg, size_arg
from dreamstate.engine.tools.progress import ProgressReporter

if TYPE_CHECKING:
    from dreamstate.engine.render.dream import DreamParams, StepModel

log = logging.getLogger("dreamstate.render")


def _layer_weight(text: str) -> tuple[str, float]:
    from dreamstate.engine.core.params import ParamError, check_scene_value

    name, sep, weight = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"layer {text!r}: use NAME or NAME=WEIGHT")
    try:
        value = float(weight) if sep else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"layer {text!r}: use NAME or NAME=WEIGHT") from None
    try:
        return name, float(check_scene_value("layer_weight", value, where=f"layer {name!r} weight"))
    except ParamError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser) -> None:
    # ranges: the show schema's (engine.params), so a value a show refuses is refused here too
    p.add_argument("image", help="source image (PNG/JPEG)")
    p.add_argument("--model", default="efficientnet-lite0",
                   help="registry name (efficientnet-lite0, the bundled default; starter; squeezenet1.0; "
                        "googlenet; ...) or an .onnx path")
    p.add_argument("--layers", nargs="+", type=_layer_weight, metavar="NAME[=WEIGHT]",
                   help="layers to dream on (default: the model's recommended layers)")
    p.add_argument("--step", type=cli_type("step", "--step"), default=1.5,
                   help="step size: mean change of the shown picture per step, in 0..255 levels, any model (1.5)")
    p.add_argument("--octaves", type=cli_type("octaves", "--octaves"), default=4, help="number of octaves (4)")
    p.add_argument("--octave-scale", type=cli_type("octave_scale", "--octave-scale"), default=1.4,
                   help="growth from one octave to the next, above 1 (1.4; a shrink factor 0.7 is 1.43 here)")
    p.add_argument("--steps", type=cli_type("steps", "--steps"), default=10, help="steps per octave (10)")
    p.add_argument("--jitter", type=finite(int, lo=0, hi=512, name="jitter"), default=32,
                   help="random roll in pixels (32)")
    p.add_argument("--tile", type=finite(int, lo=0, hi=8192, name="tile"), default=512,
                   help="tile size in pixels, at least twice the model's minimum input; 0 = no tiling")
    p.add_argument("--size", type=size_arg, help="resize the source first, e.g. 640x360")
    p.add_argument("--mask", help="circle | radial | IMAGE | edges:IMAGE | luminance:IMAGE")
    p.add_argument("--guide", help="guide image whose features steer the dream")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=finite(int, lo=1, hi=1024, name="threads"), default=None,
                   help="onnxruntime threads")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("dream", help="DeepDream one image",
                       description="DeepDream a still image with octaves, jitter and tiling.")
    _common(d)
    d.add_argument("--out", required=True, type=image_out_arg, help="output image (PNG/JPEG)")
    d.set_defaults(func=cmd_dream)

    f = sub.add_parser("feedback", help="render a zoom-feedback DeepDream video offline",
                       description="Zoom into the dream, frame after frame, and write a video.")
    _common(f)
    f.add_argument("--seconds", type=finite(float, lo=0, lo_open=True, hi=86400, name="seconds"), default=5.0,
                   help="video length in seconds (5)")
    f.add_argument("--fps", type=finite(float, lo=0, lo_open=True, hi=240, name="fps"), default=25.0,
                   help="video frame rate (25)")
    f.add_argument("--out", required=True, help="output video (.mp4 or .avi)")
    f.add_argument("--zoom", type=cli_type("zoom", "--zoom"), default=1.04, help="zoom per frame (1.04)")
    f.add_argument("--rotate", type=cli_type("rotate", "--rotate"), default=0.0, help="degrees per frame")
    f.add_argument("--translate", type=finite(float, lo=-1, hi=1, name="translate"), nargs=2,
                   default=(0.0, 0.0), metavar=("DX", "DY"),
                   help="shift per frame as a fraction of width/height")
    f.add_argument("--center", type=finite(float, lo=0, hi=1, name="center"), nargs=2,
                   default=(0.5, 0.5), metavar=("CX", "CY"),
                   help="zoom/rotation centre as a fraction of the frame (0.5 0.5)")
    f.add_argument("--realtime", action="store_true",
                   help="one octave per frame, cycling (as the live renderer does)")
    f.add_argument("--steps-per-frame", type=cli_type("steps", "--steps-per-frame"), default=2,
                   help="steps per frame in --realtime mode (2)")
    f.add_argument("--blend", type=cli_type("blend", "--blend"), default=0.0,
                   help="temporal blend with the previous frame, 0..1 (flicker control)")
    f.add_argument("--source-mix", type=finite(float, lo=0, hi=1, name="source-mix"), default=0.0,
                   help="share of the (moving) source mixed back in per frame, 0..1")
    f.add_argument("--flow", choices=["dis", "farneback"],
                   help="warp the carried dream along optical flow (for video sources)")
    f.set_defaults(func=cmd_feedback, octaves=4, steps=10)


def _load(args: argparse.Namespace) -> tuple[StepModel, DreamParams, Any, Any]:
    from dreamstate.engine.core.images import load_image
    from dreamstate.engine.render.dream import DreamParams, guide_features
    from dreamstate.models.dream import DreamModel

    layers = [name for name, _ in args.layers] if args.layers else None
    model = DreamModel.load(args.model, layers, guide=bool(args.guide), device=args.device,
                            threads=args.threads)
    weights = {name: w for name, w in args.layers} if args.layers else None
    params = DreamParams(layer_weights=weights, step=args.step, octaves=args.octaves,
                         octave_scale=args.octave_scale, steps_per_octave=args.steps,
                         jitter=args.jitter, tile=args.tile)
    _check_sizes(args, model)
    guide = guide_features(model, load_image(args.guide, what="guide image")) \
        if args.guide else None
    return model, params, guide, layers


def _check_sizes(args: argparse.Namespace, model: StepModel) -> None:
    """``--size`` and ``--tile`` against the smallest input the model accepts (its strides,
    kernels and pads; ``DreamModel.min_size``). Raises ``RenderError`` with the fix."""
    from dreamstate.engine.core.errors import RenderError
    from dreamstate.engine.render.dream import model_min_size

    mh, mw = model_min_size(model)
    if args.size is not None and (args.size[0] < mw or args.size[1] < mh):
        raise RenderError(f"--size {args.size[0]}x{args.size[1]} is smaller than model {model.name} accepts "
                          f"({mw}x{mh} px)", hint=f"use --size of at least {mw}x{mh}")
    side = max(mh, mw)
    if args.tile and args.tile < 2 * side:
        raise RenderError(f"--tile {args.tile} is too small for model {model.name}: its smallest input is "
                          f"{mw}x{mh} px and a tile must be at least twice that",
                          hint=f"use --tile {2 * side} or more, or --tile 0 for no tiling")


def _upscale_to_model(rgb: Any, model: StepModel, what: str) -> Any:
    """An image smaller than the model accepts, upscaled (aspect kept) so that it fits, with a
    log line naming it; other images unchanged."""
    import math

    from dreamstate.engine.core.images import resize
    from dreamstate.engine.render.dream import model_min_size

    mh, mw = model_min_size(model)
    h, w = rgb.shape[:2]
    if h >= mh and w >= mw:
        return rgb
    grow = max(mh / h, mw / w)
    size = (max(mw, math.ceil(w * grow)), max(mh, math.ceil(h * grow)))
    log.warning("image is smaller than the model accepts; upscaled",
                extra={"image": what, "size": f"{w}x{h}", "model": model.name, "minimum": f"{mw}x{mh}",
                       "now": f"{size[0]}x{size[1]}", "fix": f"use an image of at least {mw}x{mh} px"})
    return resize(rgb, size)


def cmd_dream(args: argparse.Namespace) -> int:
    from dreamstate.engine.core.images import load_image, save_image
    from dreamstate.engine.render.dream import dream_image
    from dreamstate.engine.render.masks import make_mask

    rgb = load_image(args.image, what="image", size=args.size)
    model, params, guide, _ = _load(args)
    h, w = rgb.shape[:2]
    mask = make_mask(args.mask, h, w) if args.mask else None
    t0 = time.perf_counter()
    with ProgressReporter(f"dreaming {Path(args.image).name} ({w}x{h}, {model.name})",
                          params.octaves * params.steps_per_octave) as bar:
        out = dream_image(model, rgb, params, mask=mask, guide=guide, seed=args.seed, progress=bar.update)
    save_image(args.out, out)
    print(f"wrote {args.out} ({w}x{h}, layers {', '.join(model.layers)}, "  # noqa: T201
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from dreamstate.engine.core.images import load_image
    from dreamstate.engine.render.feedback import VIDEO_SUFFIXES, Motion, render_feedback_video
    from dreamstate.engine.render.masks import make_mask

    source: Any
    if Path(args.image).suffix.lower() in VIDEO_SUFFIXES:
        source = args.image
        if args.size is None:
            from dreamstate.engine.core.errors import RenderError

            raise RenderError("a video source needs --size WxH", hint="add e.g. --size 640x360")
        size = args.size
    else:
        source = load_image(args.image, what="image", size=args.size)
    model, params, guide, _ = _load(args)
    if not isinstance(source, str):
        source = _upscale_to_model(source, model, args.image)
        size = (source.shape[1], source.shape[0])
    mask = make_mask(args.mask, size[1], size[0]) if args.mask else None
    motion = Motion(zoom=args.zoom, rotate_deg=args.rotate, translate=tuple(args.translate),
                    center=tuple(args.center))
    t0 = time.perf_counter()
    with ProgressReporter(f"feedback {Path(args.image).name} ({size[0]}x{size[1]}, {model.name})") as bar:
        n = render_feedback_video(
            model, source, args.out, seconds=args.seconds, fps=args.fps, size=size,
            params=params, motion=motion, blend=args.blend, source_mix=args.source_mix,
            realtime=args.realtime, steps_per_frame=args.steps_per_frame, flow=args.flow,
            mask=mask, guide=guide, seed=args.seed,
            progress=bar.update)
    dt = time.perf_counter() - t0
    print(f"wrote {args.out}: {n} frames {size[0]}x{size[1]} at {args.fps:g} fps "  # noqa: T201
          f"in {dt:.1f} s ({dt / n:.2f} s/frame)")
    return 0
