"""``dreamstate style IMAGE --model M --out OUT.png``: repaint a still with a style model."""

from __future__ import annotations

import argparse
from pathlib import Path

from dreamstate.engine.core.params import size_arg


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("style", help="repaint an image with a feed-forward style model (toon, candy, mosaic, ...)")
    p.add_argument("image", help="picture to repaint (PNG, JPEG, ...)")
    p.add_argument("--model", default="toon",
                   help="registry name (toon ships; candy, mosaic after `models fetch`) or an .onnx path (toon)")
    p.add_argument("--out", required=True, help="output picture (.png or .jpg)")
    p.add_argument("--size", type=size_arg, default=None, help="resize to WxH first (default: as it is)")
    p.add_argument("--mix", type=float, default=1.0, help="share of the styled picture, 0..1 (1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from dreamstate.engine.core.errors import DreamstateError
    from dreamstate.engine.core.images import load_image, resize, save_image
    from dreamstate.models.style import StyleModel

    if not 0.0 <= args.mix <= 1.0:
        raise DreamstateError(f"--mix {args.mix} is outside 0..1", hint="e.g. --mix 0.7")
    img = load_image(args.image)
    if args.size is not None:
        img = resize(img, args.size)
    model = StyleModel.load(Path(args.model) if args.model.endswith(".onnx") else args.model, device=args.device)
    out = model.stylize(img)
    out = (args.mix * out + (1.0 - args.mix) * img).astype(np.float32)
    path = save_image(args.out, out)
    print(f"{path}: {model.name} on {model.provider}, {img.shape[1]}x{img.shape[0]}")  # noqa: T201
    return 0
