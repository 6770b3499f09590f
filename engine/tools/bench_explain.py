"""``dreamstate bench explain``: milliseconds per attribution map, per method.

For ``--model`` (default: ``../shared/models/SqueezeNet_fp16.onnx`` beside the checkout when it
is there, else the bundled ``starter``) it compiles every method of :mod:`models.explain`
(SmoothGrad with ``--samples`` noisy copies, IG with ``--steps`` path points, each one batch;
PatternAttribution with patterns fitted on the sample photos first, not timed),
then times :meth:`Explainer.explain` (RGB in, map out; preprocessing included) at each
``--size`` (224x224 and 640x360) with ``--threads`` (2) onnxruntime threads, after one warm-up
map, and prints the median of ``--repeats`` in ms. The reference in the same run is one dream
step of the same model at the same size (the model's recommended layers), which is what the
live loop pays per frame, so ``x step`` says how many dream steps a map costs. The IG
completeness error and the LRP conservation error of the last map are printed beside them.

With the ``export`` extra (torch and captum) it also times the peer, side by side in the same
run: captum's ``LRP`` (epsilon rule) and ``InputXGradient`` on a torch SqueezeNet 1.0 (the same
architecture, seeded random weights: timing does not depend on the weights), against
dreamstate's ``lrp-eps`` and ``gxi`` graphs compiled from that very network exported to ONNX,
both on ``--threads`` CPU threads, and prints the ratio ours/captum (lower is better). Without
torch the peer table says so and is skipped (``--no-peer`` skips it always).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamstate.engine.core.params import size_arg

SHARED_SQUEEZENET = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "SqueezeNet_fp16.onnx"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dreamstate.models.explain import METHODS

    parser.add_argument("--model", default=None,
                        help="registry name or .onnx path (default: ../shared/models/SqueezeNet_fp16.onnx, "
                             "else starter)")
    parser.add_argument("--size", nargs="+", type=size_arg, default=[(224, 224), (640, 360)])
    parser.add_argument("--method", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--samples", type=int, default=16, help="SmoothGrad copies (16)")
    parser.add_argument("--steps", type=int, default=32, help="IG path steps (32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed maps per method and size (3)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (2)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--no-peer", action="store_true", help="skip the captum peer (needs torch and captum)")


def _time(fn: Any, repeats: int) -> float:
    from dreamstate.engine.tools.loadgen import median_seconds

    return median_seconds(fn, repeats)


def main(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from dreamstate.models.dream import DreamModel
    from dreamstate.models.explain import Explainer

    console = Console()
    if not console.is_terminal:  # a log file or a pipe: full tables, not cut at 80 columns
        console.width = 200
    model: str | Path = args.model or (SHARED_SQUEEZENET if SHARED_SQUEEZENET.exists() else "starter")
    if isinstance(model, str) and model.endswith(".onnx"):
        model = Path(model)
    dream = DreamModel.load(model, device=args.device, threads=args.threads)
    table = Table(title=f"attribution maps, {Path(str(model)).name}, {args.device}, {args.threads} threads")
    for col in ("size", "method", "ms/map", "x step", "check"):
        table.add_column(col)
    rng = np.random.default_rng(0)
    explainers = {m: Explainer.load(model, m, device=args.device, threads=args.threads,
                                    samples=args.steps if m == "ig" else args.samples) for m in args.method}
    for w, h in args.size:
        img = rng.uniform(0, 1, size=(h, w, 3)).astype(np.float32)
        x = dream.to_model_space(img)
        step = _time(lambda x=x: dream.step(x), args.repeats)
        table.add_row(f"{w}x{h}", "dream step", f"{step * 1000:.0f}", "1.0", "")
        for m, e in explainers.items():
            s = _time(lambda e=e, img=img: e.explain(img), args.repeats)
            err = e.explain(img).completeness_error
            check = "" if err is None else f"{'completeness' if m == 'ig' else 'conservation'} {100 * err:.2g} %"
            table.add_row(f"{w}x{h}", m, f"{s * 1000:.0f}", f"{s / step:.1f}", check)
    console.print(table)
    if not args.no_peer:
        _peer(args, console)
    return 0


def torch_squeezenet(torch: Any) -> Any:
    """SqueezeNet 1.0 (Iandola et al. 2016) in torch, as torchvision builds it (conv 96 7x7/2,
    eight Fire modules, 1x1 conv classifier, global average pool), with seeded random weights."""
    nn = torch.nn
    module: Any = nn.Module

    class Fire(module):  # type: ignore[misc]  # torch is untyped here (an optional extra)
        def __init__(self, cin: int, squeeze: int, expand: int) -> None:
            super().__init__()
            self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
            self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
            self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

        def forward(self, x: Any) -> Any:
            s = self.squeeze(x)
            return torch.cat([self.e1(s), self.e3(s)], 1)

    class SqueezeNet(module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            pool = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.features = nn.Sequential(
                nn.Conv2d(3, 96, 7, stride=2), nn.ReLU(), pool, Fire(96, 16, 64), Fire(128, 16, 64),
                Fire(128, 32, 128), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(256, 32, 128), Fire(256, 48, 192),
                Fire(384, 48, 192), Fire(384, 64, 256), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(512, 64, 256))
            self.classifier = nn.Sequential(nn.Conv2d(512, 1000, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

        def forward(self, x: Any) -> Any:
            return torch.flatten(self.classifier(self.features(x)), 1)

    torch.manual_seed(0)
    return SqueezeNet().eval()


def _peer(args: argparse.Namespace, console: Any) -> None:
    """captum beside dreamstate on the same torch network (see the module docstring)."""
    import io
    import warnings

    import numpy as np
    import onnxruntime as ort
    from rich.table import Table

    from dreamstate.models.explain import compile_attribution
    from dreamstate.models.graph import load_forward

    try:
        import torch
        from captum.attr import LRP, InputXGradient
    except ImportError as exc:
        console.print(f"captum peer skipped: {exc.name} is not installed (pip install 'dreamstate[export]')",
                      markup=False)
        return
    torch.set_num_threads(args.threads)
    net = torch_squeezenet(torch)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but needs no onnxscript
        torch.onnx.export(net, torch.zeros(1, 3, 224, 224), buf, input_names=["image"], output_names=["logits"],
                          opset_version=18, dynamo=False, dynamic_axes={"image": {2: "h", 3: "w"}})
    fg = load_forward(buf.getvalue(), label="torch squeezenet")
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.log_severity_level = 3
    table = Table(title=f"attribution maps against captum {__import__('captum').__version__} (torch "
                        f"{torch.__version__}), torch SqueezeNet 1.0, CPU, {args.threads} threads")
    for col in ("size", "method", "ours ms", "captum ms", "ours/captum", "max |ours - captum| / max |map|",
                "torch f32 vs f64, same"):
        table.add_column(col)
    rng = np.random.default_rng(0)
    for method, peer in (("gxi", InputXGradient(net)), ("lrp-eps", LRP(net))):
        model, _ = compile_attribution(fg, method, epsilon=1e-9)  # captum's EpsilonRule default
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for w, h in args.size:
            x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
            target = np.zeros((1, 1000), np.float32)
            with torch.no_grad():
                cls = int(net(torch.from_numpy(x)).argmax())
            target[0, cls] = 1.0
            ours_map: list[np.ndarray] = []
            peer_map: list[np.ndarray] = []

            def ours(x: np.ndarray = x, target: np.ndarray = target, out: list[np.ndarray] = ours_map,
                     sess: Any = sess) -> None:
                out[:] = [sess.run(["attribution"], {"image": x, "target": target})[0]]

            def theirs(x: np.ndarray = x, cls: int = cls, peer: Any = peer, out: list[np.ndarray] = peer_map) -> None:
                t = torch.from_numpy(x).requires_grad_(True)
                out[:] = [peer.attribute(t, target=cls).detach().numpy()]

            a, b = _time(ours, args.repeats), _time(theirs, args.repeats)
            diff = float(np.abs(ours_map[0] - peer_map[0]).max() / max(1e-30, float(np.abs(peer_map[0]).max())))
            # the noise floor: captum's own map in float64 against its float32 one (near-ties in the max
            # pools flip with rounding, so two correct float32 maps of a deep net differ this much)
            net.double()
            t64 = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
            m64 = peer.attribute(t64, target=cls).detach().numpy()
            net.float()
            floor = float(np.abs(peer_map[0] - m64).max() / max(1e-30, float(np.abs(m64).max())))
            table.add_row(f"{w}x{h}", method, f"{a * 1000:.0f}", f"{b * 1000:.0f}", f"{a / b:.2f}", f"{diff:.1e}",
                          f"{floor:.1e}")
    console.print(table)
    console.print("ours/captum < 1: dreamstate's compiled graph is faster. A map difference near the float32 vs "
                  "float64 noise floor is rounding, not a different rule (tests/test_explain_peer.py checks the "
                  "rules exactly on a network without max pools).", markup=False)
