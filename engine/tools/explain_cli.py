"""``dreamstate explain IMAGE --out heat.png``: what the network sees, as a heat map over the image."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dreamstate.engine.core.params import image_out_arg, size_arg

if TYPE_CHECKING:
    from dreamstate.models.explain import Patterns

METHOD_HELP = (
    "gradient (saliency), gxi (gradient x input), smoothgrad, ig (Integrated Gradients), "
    "lrp-eps (LRP epsilon), lrp-ab (LRP alpha-beta; z+ by default), pattern (PatternAttribution)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from dreamstate.models.explain import COLORMAPS, METHODS

    p = sub.add_parser("explain", help="heat map of what a classifier sees in an image (gradient, SmoothGrad, IG, LRP)")
    p.add_argument("image", help="picture to explain (PNG, JPEG, ...)")
    p.add_argument("--model", default="efficientnet-lite0",
                   help="classifier: registry name or an .onnx path (efficientnet-lite0)")
    p.add_argument("--method", choices=METHODS, default="lrp-ab", help=f"{METHOD_HELP} (lrp-ab)")
    p.add_argument("--class", dest="target", default=None,
                   help="class name or index to explain (default: the top class); `draw --list-classes` lists them")
    p.add_argument("--out", required=True, type=image_out_arg,
                   help="overlay picture (.png or .jpg); the raw map goes beside it as .npy")
    p.add_argument("--size", type=size_arg, default=None,
                   help="WxH the model sees (default: its input size, e.g. 224x224)")
    p.add_argument("--samples", type=int, default=None, help="SmoothGrad copies (16) or IG path steps (64)")
    p.add_argument("--sigma", type=float, default=0.15, help="SmoothGrad noise, share of the input range (0.15)")
    p.add_argument("--epsilon", type=float, default=1e-6, help="LRP stabiliser (1e-6)")
    p.add_argument("--alpha", type=float, default=1.0, help="LRP alpha-beta alpha (1; alpha - beta = 1)")
    p.add_argument("--beta", type=float, default=0.0, help="LRP alpha-beta beta (0; 1 with --alpha 2)")
    p.add_argument("--patterns", default=None,
                   help="pattern: an .npz of fitted patterns; read when it exists, else fitted and written there")
    p.add_argument("--fit-images", default=None,
                   help="pattern: fit on the pictures in this folder (default: scikit-learn's and scikit-image's "
                        "sample photos)")
    p.add_argument("--opacity", type=float, default=0.7, help="overlay opacity at the strongest evidence, 0..1 (0.7)")
    p.add_argument("--colormap", choices=COLORMAPS, default="auto",
                   help="auto: seismic (red for, blue against) for signed maps, inferno otherwise")
    p.add_argument("--smooth", type=float, default=1.0, help="Gaussian blur of the map in model pixels (1; 0 off)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from dreamstate.engine.core.errors import DreamstateError
    from dreamstate.engine.core.images import load_image, resize, save_image
    from dreamstate.models.explain import SIGNED_METHODS, Explainer, overlay

    if not 0.0 <= args.opacity <= 1.0:
        raise DreamstateError(f"--opacity {args.opacity} is outside 0..1", hint="e.g. --opacity 0.7")
    if args.smooth < 0:
        raise DreamstateError(f"--smooth {args.smooth} is negative", hint="0 turns smoothing off")
    samples = args.samples if args.samples is not None else (64 if args.method == "ig" else 16)
    img = load_image(args.image)  # before the model, so a wrong path fails at once
    model = Path(args.model) if args.model.endswith(".onnx") else args.model
    patterns = _patterns(args, model) if args.method == "pattern" else None
    explainer = Explainer.load(model, args.method, device=args.device, samples=samples, sigma=args.sigma,
                               epsilon=args.epsilon, alpha=args.alpha, beta=args.beta, patterns=patterns)
    size = args.size or (explainer.classifier.size, explainer.classifier.size)
    seen = resize(img, size)
    target: str | int | None = args.target
    res = explainer.explain(seen, target)
    signed = args.method in SIGNED_METHODS
    pic = overlay(img, res.heat, signed=signed, opacity=args.opacity, colormap=args.colormap, smooth_px=args.smooth)
    path = save_image(args.out, pic)
    raw = path.with_suffix(".npy")
    np.save(raw, res.heat, allow_pickle=False)
    check = ""
    if res.completeness_error is not None:
        what = "completeness" if args.method == "ig" else "conservation"
        check = f", {what} error {100 * res.completeness_error:.2g} %"
    print(f"{path}: {res.label} (#{res.index}), logit {res.score:.3f}; {args.method} on {explainer.classifier.name} "  # noqa: T201
          f"at {size[0]}x{size[1]}, {res.ms:.0f} ms{check}; raw map {raw}")
    return 0


def _patterns(args: argparse.Namespace, model: str | Path) -> Patterns:
    """Read ``--patterns`` when it exists (and no ``--fit-images``), else fit on the folder or
    the sample photos and write ``--patterns`` when given."""
    from dreamstate.engine.core.errors import DreamstateError
    from dreamstate.engine.core.images import load_image
    from dreamstate.models import registry
    from dreamstate.models.classify import ClassifierModel
    from dreamstate.models.explain import Patterns, fit_patterns_on, sample_images
    from dreamstate.models.graph import load_forward

    target = Path(args.patterns) if args.patterns else None
    if target is not None and target.exists() and not args.fit_images:
        return Patterns.load(target)
    if args.fit_images:
        folder = Path(args.fit_images)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")) \
            if folder.is_dir() else []
        if not files:
            raise DreamstateError(f"--fit-images {folder}: no .jpg or .png pictures there",
                                  hint="give a folder of photos like the ones the installation shows")
        images = [load_image(f) for f in files]
    else:
        images = sample_images()
    path, _ = registry.resolve(model)
    patterns = fit_patterns_on(ClassifierModel.load(model), load_forward(path, label=str(path)), images)
    if target is not None:
        patterns.save(target)
        print(f"{target}: patterns fitted on {len(images)} pictures")  # noqa: T201
    return patterns
