"""Train, export and check the bundled starter model (needs the ``export`` extra: torch).

Usage::

    pip install -e '.[export]'
    python -m dreamstate.engine.tools.train_starter --out models/starter/starter.onnx
    python -m dreamstate.engine.tools.train_starter --check-dream docs/starter_dream_check.png   # look at it

Training writes ``starter.onnx`` and ``model.json`` beside it. The network is a small VGG-style
CNN: a fixed (not trained) Gaussian blur stem, then 4 blocks of 3x3 Conv + BatchNorm + ReLU
with 2x2 max-pool between blocks, global average pool and one linear layer, trained to tell
apart 25 sources of 64 x 64 crops (see :mod:`models.starter.data`) with pixel-noise
augmentation. The blur stem matters for dreaming: the input gradient passes back through the
same blur, so gradient ascent adds strokes and blobs instead of pixel-level speckle (without
it the dreams were fine diagonal hatching). BatchNorm is folded into the convolutions at
export and the ONNX graph is written node by node with :mod:`onnx.helper`, so it holds only
Sub, Div, Conv, Relu, MaxPool, GlobalAveragePool, Flatten and Gemm, with the dream layers
named ``block1`` .. ``block4`` (the ReLU output of each block).

``--check-dream`` is a development aid: it rebuilds the network in torch from the ONNX weights
and runs a plain DeepDream (octaves, jitter, normalised gradient ascent on mean(a^2)) so that
a person can look at what the layers draw. It is not used at run time; the engine dreams with
the compiled ONNX graph.

Lifecycle: nothing happens on import; :func:`main` runs one command and returns an exit code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dreamstate.models.registry import STARTER_DIR as HERE  # the model's own folder
from dreamstate.models.starter import data

log = logging.getLogger("dreamstate.models.starter")

DEFAULT_OUT = HERE / "starter.onnx"
SEED = 20261122
VAL_SEED = 7
VAL_PER_CLASS = 24
BATCH = 128
STEPS = 560
LR = 3e-3
TRAIN_NOISE = 0.1  # pixel-noise augmentation: smoother, more perceptual input gradients
POOL = "max"  # "avg" was tried: smoother strokes but 9 points less accuracy
BLUR = 1.0  # sigma (px) of the fixed Gaussian stem; it low-passes the dream gradient too
THREADS = 2
OPSET = 18
IR_VERSION = 10
# (name, channels, convs): 3x3 convs, each followed by BatchNorm and ReLU; 2x2 max-pool between
BLOCKS: tuple[tuple[str, int, int], ...] = (
    ("block1", 32, 1),
    ("block2", 64, 1),
    ("block3", 96, 2),
    ("block4", 128, 2),
)
RECOMMENDED_LAYERS = ("block3", "block4", "block2")


def _blur_kernel(sigma: float) -> npt.NDArray[np.float32]:
    """A (3, 3, k, k) Conv weight that blurs each RGB channel on its own (no cross terms)."""
    r = math.ceil(2 * sigma)
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(t**2) / (2 * sigma**2))
    k2 = np.outer(g, g)
    k2 /= k2.sum()
    w = np.zeros((3, 3, 2 * r + 1, 2 * r + 1), dtype=np.float32)
    for c in range(3):
        w[c, c] = k2
    return w


def _receptive_fields(blur: float) -> dict[str, tuple[int, int]]:
    """(receptive field in input pixels, stride) of each block's output."""
    rf, jump = 1 + (2 * math.ceil(2 * blur) if blur > 0 else 0), 1
    out: dict[str, tuple[int, int]] = {}
    for i, (name, _, convs) in enumerate(BLOCKS):
        if i > 0:  # 2x2 max-pool before this block
            rf += jump
            jump *= 2
        rf += 2 * jump * convs
        out[name] = (rf, jump)
    return out


# ----------------------------------------------------------------------------- torch network


def build_net(with_bn: bool = True, pool: str = POOL, blur: float = BLUR) -> Any:
    """The network as ``nn.ModuleDict``: optional fixed ``stem`` blur, ``pool``, one
    ``nn.Sequential`` per block, and the linear ``head``."""
    import torch
    from torch import nn

    mods: dict[str, Any] = {}
    if blur > 0:
        w = _blur_kernel(blur)
        stem = nn.Conv2d(3, 3, w.shape[-1], padding=w.shape[-1] // 2, bias=False)
        stem.weight.requires_grad_(False)
        with torch.no_grad():
            stem.weight.copy_(torch.from_numpy(w))
        mods["stem"] = stem
    mods["pool"] = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
    cin = 3
    for name, cout, convs in BLOCKS:
        layers: list[Any] = []
        for k in range(convs):
            layers.append(nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1, bias=not with_bn))
            if with_bn:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU())
        mods[name] = nn.Sequential(*layers)
        cin = cout
    mods["head"] = nn.Linear(cin, len(data.CLASSES))
    return nn.ModuleDict(mods)


def forward(net: Any, x: Any, mean: Any, std: Any) -> dict[str, Any]:
    """Run ``net`` on RGB in [0, 1]; returns every block's activation and ``logits``."""
    h = (x - mean) / std
    if "stem" in net:
        h = net["stem"](h)
    acts: dict[str, Any] = {}
    for i, (name, _, _) in enumerate(BLOCKS):
        if i > 0:
            h = net["pool"](h)
        h = net[name](h)
        acts[name] = h
    acts["logits"] = net["head"](h.mean(dim=(2, 3)))
    return acts


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)  # legacy global generator too, for any library that uses it
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def _channel_stats(sources: data.Sources, seed: int) -> tuple[list[float], list[float]]:
    x, _ = data.make_batch(sources, np.random.default_rng([seed, 999_999]), 1024)
    mean = [round(float(v), 4) for v in x.mean(axis=(0, 2, 3))]
    std = [round(float(v), 4) for v in x.std(axis=(0, 2, 3))]
    return mean, std


def train(
    *,
    seed: int = SEED,
    steps: int = STEPS,
    batch: int = BATCH,
    noise: float = TRAIN_NOISE,
    pool: str = POOL,
    blur: float = BLUR,
) -> dict[str, Any]:
    """Train from scratch; returns the net, normalisation, timings and accuracy."""
    import torch
    import torch.nn.functional as F

    _seed_everything(seed)
    t0 = time.perf_counter()
    sources = data.load_sources()
    mean_l, std_l = _channel_stats(sources, seed)
    mean = torch.tensor(mean_l).view(1, 3, 1, 1)
    std = torch.tensor(std_l).view(1, 3, 1, 1)
    net = build_net(pool=pool, blur=blur)
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.15)
    net.train()
    running = 0.0
    for step in range(steps):
        rng = np.random.default_rng([seed, step])
        xb, yb = data.make_batch(sources, rng, batch, noise_max=noise)
        out = forward(net, torch.from_numpy(xb), mean, std)["logits"]
        loss: Any = F.cross_entropy(out, torch.from_numpy(yb), label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.95 * running + 0.05 * float(loss.item()) if step else float(loss.item())
        if step % 40 == 0 or step == steps - 1:
            log.info(
                "step %d/%d loss %.3f (%.0f s)", step, steps, running, time.perf_counter() - t0
            )
    train_seconds = time.perf_counter() - t0
    net.eval()
    xv, yv = data.validation_set(sources, VAL_PER_CLASS, VAL_SEED)
    with torch.no_grad():
        pred = forward(net, torch.from_numpy(xv), mean, std)["logits"].argmax(1).numpy()
    acc = float((pred == yv).mean())
    log.info("trained in %.0f s; held-out accuracy (torch) %.3f", train_seconds, acc)
    return {
        "net": net,
        "mean": mean_l,
        "std": std_l,
        "train_seconds": train_seconds,
        "torch_accuracy": acc,
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "noise": noise,
        "pool": pool,
        "blur": blur,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------- ONNX export


def _folded(net: Any) -> list[tuple[str, npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """Every conv with its BatchNorm folded in: (tensor name, weight OIHW, bias)."""
    from torch import nn

    out = []
    for name, _, _ in BLOCKS:
        mods = list(net[name])
        k = 0
        for i, m in enumerate(mods):
            if not isinstance(m, nn.Conv2d):
                continue
            k += 1
            w = m.weight.detach().double().numpy()
            b = (
                m.bias.detach().double().numpy()
                if m.bias is not None
                else np.zeros(w.shape[0], dtype=np.float64)
            )
            bn = mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(bn, nn.BatchNorm2d):
                assert bn.running_mean is not None and bn.running_var is not None
                scale = bn.weight.detach().double().numpy() / np.sqrt(
                    bn.running_var.double().numpy() + bn.eps
                )
                w = w * scale[:, None, None, None]
                b = (b - bn.running_mean.double().numpy()) * scale + bn.bias.detach().double().numpy()
            out.append((f"{name}_conv{k}", w.astype(np.float32), b.astype(np.float32)))
    return out


def to_onnx(net: Any, mean: list[float], std: list[float]) -> bytes:
    """Serialise the trained net as an ONNX graph built op by op (no exporter)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from torch import nn

    inits = [
        numpy_helper.from_array(np.array(mean, np.float32).reshape(1, 3, 1, 1), "rgb_mean"),
        numpy_helper.from_array(np.array(std, np.float32).reshape(1, 3, 1, 1), "rgb_std"),
    ]
    nodes = [
        helper.make_node("Sub", ["image", "rgb_mean"], ["centred"], name="normalise_sub"),
        helper.make_node("Div", ["centred", "rgb_std"], ["normalised"], name="normalise_div"),
    ]
    convs = iter(_folded(net))
    h = "normalised"
    if "stem" in net:
        w = net["stem"].weight.detach().numpy().astype(np.float32)
        r = w.shape[-1] // 2
        inits.append(numpy_helper.from_array(w, "blur.weight"))
        nodes.append(
            helper.make_node(
                "Conv",
                [h, "blur.weight"],
                ["blurred"],
                name="blur",
                kernel_shape=list(w.shape[2:]),
                pads=[r, r, r, r],
            )
        )
        h = "blurred"
    max_pool = isinstance(net["pool"], nn.MaxPool2d)
    for i, (name, _, n_convs) in enumerate(BLOCKS):
        if i > 0:
            pooled = f"pool{i}"
            nodes.append(
                helper.make_node(
                    "MaxPool" if max_pool else "AveragePool",
                    [h],
                    [pooled],
                    name=pooled,
                    kernel_shape=[2, 2],
                    strides=[2, 2],
                )
            )
            h = pooled
        for k in range(1, n_convs + 1):
            cname, w, b = next(convs)
            inits += [
                numpy_helper.from_array(w, f"{cname}.weight"),
                numpy_helper.from_array(b, f"{cname}.bias"),
            ]
            nodes.append(
                helper.make_node(
                    "Conv",
                    [h, f"{cname}.weight", f"{cname}.bias"],
                    [cname],
                    name=cname,
                    kernel_shape=[3, 3],
                    pads=[1, 1, 1, 1],
                )
            )
            relu_out = name if k == n_convs else f"{name}_relu{k}"
            nodes.append(helper.make_node("Relu", [cname], [relu_out], name=relu_out))
            h = relu_out
    head = net["head"]
    inits += [
        numpy_helper.from_array(head.weight.detach().numpy().astype(np.float32), "head.weight"),
        numpy_helper.from_array(head.bias.detach().numpy().astype(np.float32), "head.bias"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [h], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["features"], name="flatten", axis=1),
        helper.make_node(
            "Gemm", ["features", "head.weight", "head.bias"], ["logits"], name="head", transB=1
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "starter",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(data.CLASSES)])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="dreamstate models.starter.train",
        doc_string="dreamstate starter model: toy texture/source classifier for DeepDream.",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


def onnx_accuracy(path: Path, per_class: int = VAL_PER_CLASS, seed: int = VAL_SEED) -> float:
    """Held-out accuracy of the ONNX file, run in onnxruntime."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xv, yv = data.validation_set(data.load_sources(), per_class, seed)
    logits = sess.run(["logits"], {"image": xv})[0]
    return float((np.argmax(logits, axis=1) == yv).mean())


def export(result: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``out`` (ONNX) and ``model.json`` beside it; returns the model.json content."""
    import torch

    blob = to_onnx(result["net"], result["mean"], result["std"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(blob)
    # the ONNX graph must compute what torch computes
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probe = np.random.default_rng(0).uniform(0, 1, (2, 3, 80, 112)).astype(np.float32)
    mean = torch.tensor(result["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(result["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = forward(result["net"], torch.from_numpy(probe), mean, std)["logits"].numpy()
    got = sess.run(["logits"], {"image": probe})[0]
    diff = float(np.abs(ref - got).max())
    if diff > 1e-3:
        raise RuntimeError(f"ONNX export of {out} differs from torch by {diff:.2e}")
    acc = onnx_accuracy(out)
    rfs = _receptive_fields(result["blur"])
    meta: dict[str, Any] = {
        "name": "starter",
        "file": out.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "input": "image",
        "output": "logits",
        "input_size": data.CROP,  # the drawing mode scores at the size it was trained at
        "preprocess": {
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "bgr": False,
            "range": [0, 1],
            "layout": "NCHW",
            "dtype": "float32",
            "note": (
                "feed RGB float32 in [0, 1] as is; the graph normalises internally with "
                "in_graph_mean / in_graph_std (its first Sub and Div nodes)"
            ),
            "in_graph_mean": result["mean"],
            "in_graph_std": result["std"],
        },
        "layers": {
            name: {"channels": ch, "stride": rfs[name][1], "receptive_field": rfs[name][0]}
            for name, ch, _ in BLOCKS
        },
        "recommended_layers": list(RECOMMENDED_LAYERS),
        "classes": list(data.CLASSES),
        "accuracy": round(acc, 4),
        "accuracy_task": (
            f"held-out {data.CROP}x{data.CROP} crops, {VAL_PER_CLASS} per class "
            f"(models.starter.data.validation_set(seed={VAL_SEED})); chance is "
            f"{1 / len(data.CLASSES):.3f}"
        ),
        "val_seed": VAL_SEED,
        "val_per_class": VAL_PER_CLASS,
        "seed": result["seed"],
        "steps": result["steps"],
        "batch": result["batch"],
        "train_noise": result["noise"],
        "pool": result["pool"],
        "input_blur_sigma": result["blur"],
        "train_seconds": round(result["train_seconds"], 1),
        "train_threads": result["threads"],
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "licence": "MIT (weights trained by this project on images bundled in scikit-image "
        "and scikit-learn)",
    }
    (out.parent / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %s (%d bytes, held-out accuracy %.3f, max |torch-onnx| %.1e)",
             out, len(blob), acc, diff)
    return meta


# ------------------------------------------------------------------------------ dream check


def net_from_onnx(path: Path) -> tuple[Any, Any, Any]:
    """Rebuild the torch network (BN folded) from the ONNX file: (net, mean, std)."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load(str(path))
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    pool = "avg" if any(n.op_type == "AveragePool" for n in model.graph.node) else "max"
    net = build_net(with_bn=False, pool=pool, blur=0.0)
    if "blur.weight" in w:
        k = w["blur.weight"].shape[-1]
        net["stem"] = torch.nn.Conv2d(3, 3, k, padding=k // 2, bias=False)
        net["stem"].weight.data = torch.from_numpy(w["blur.weight"].copy())
    for name, _, n_convs in BLOCKS:
        convs: list[Any] = [m for m in net[name] if isinstance(m, torch.nn.Conv2d)]
        for k in range(n_convs):
            convs[k].weight.data = torch.from_numpy(w[f"{name}_conv{k + 1}.weight"].copy())
            convs[k].bias.data = torch.from_numpy(w[f"{name}_conv{k + 1}.bias"].copy())
    net["head"].weight.data = torch.from_numpy(w["head.weight"].copy())
    net["head"].bias.data = torch.from_numpy(w["head.bias"].copy())
    net.eval()
    mean = torch.from_numpy(w["rgb_mean"].copy())
    std = torch.from_numpy(w["rgb_std"].copy())
    return net, mean, std


def dream(
    net: Any,
    mean: Any,
    std: Any,
    img: npt.NDArray[np.float32],
    layers: tuple[str, ...],
    *,
    octaves: int = 4,
    scale: float = 1.4,
    steps: int = 15,
    step: float = 0.012,
    jitter: int = 16,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """Classic DeepDream on an HxWx3 RGB image in [0, 1]; returns the dreamed image."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    base = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
    h0, w0 = base.shape[2:]
    sizes = [
        (round(h0 / scale**o), round(w0 / scale**o)) for o in range(octaves - 1, -1, -1)
    ]
    shrunk = [F.interpolate(base, size=s, mode="bilinear", align_corners=False) for s in sizes]
    detail = torch.zeros_like(shrunk[0])
    for o, (size, octave_base) in enumerate(zip(sizes, shrunk, strict=True)):
        if o > 0:
            detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
        x = (octave_base + detail).clone()
        for _ in range(steps):
            dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, 2))
            xr = torch.roll(x, (dy, dx), (2, 3)).requires_grad_(True)
            acts = forward(net, xr, mean, std)
            obj = sum(acts[name].pow(2).mean() for name in layers)
            (g,) = torch.autograd.grad(obj, xr)
            g = torch.roll(g, (-dy, -dx), (2, 3))
            x = (x + step * g / (g.abs().mean() + 1e-8)).clamp(0.0, 1.0).detach()
        detail = x - octave_base
    out: npt.NDArray[np.float32] = x[0].numpy().transpose(1, 2, 0).astype(np.float32)
    return out


def check_dream(onnx_path: Path, out_png: Path, side: int = 224) -> None:
    """Dream on a photo (block3, block4) and on grey noise (block4); save a 2x2 PNG grid:
    input | block3 on top, block4 | block4-from-noise below (256 colours, about 200 KB)."""
    import cv2
    from skimage import data as sk_data

    sk: Any = sk_data  # skimage's loaders are untyped
    net, mean, std = net_from_onnx(onnx_path)
    for p in net.parameters():
        p.requires_grad_(False)
    photo = cv2.resize(sk.coffee(), (side * 3 // 2, side), interpolation=cv2.INTER_AREA)
    photo_f = photo.astype(np.float32) / 255.0
    noise = (
        0.5 + 0.08 * np.random.default_rng(1).standard_normal((side, side * 3 // 2, 3))
    ).astype(np.float32)
    panels = [
        photo_f,
        dream(net, mean, std, photo_f, ("block3",)),
        dream(net, mean, std, photo_f, ("block4",)),
        dream(net, mean, std, noise, ("block4",), steps=25),
    ]
    grid = np.concatenate(
        [np.concatenate(panels[:2], axis=1), np.concatenate(panels[2:], axis=1)], axis=0
    )
    out_png.parent.mkdir(parents=True, exist_ok=True)
    rgb = (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)
    from PIL import Image  # pillow comes with matplotlib; a 256-colour PNG keeps it small

    Image.fromarray(rgb).quantize(256).save(out_png, optimize=True)
    log.info("dream check written to %s (top: photo, block3; bottom: block4, block4 from noise)",
             out_png)


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dreamstate.engine.tools.train_starter", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="ONNX file to write")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--noise", type=float, default=TRAIN_NOISE, help="max pixel-noise std")
    parser.add_argument("--pool", choices=("max", "avg"), default=POOL)
    parser.add_argument("--blur", type=float, default=BLUR, help="input blur sigma; 0 = none")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch CPU threads")
    parser.add_argument(
        "--check-dream",
        type=Path,
        metavar="PNG",
        help="do not train: dream with the ONNX file at --out and save a preview PNG",
    )
    parser.add_argument(
        "--samples", type=Path, metavar="PNG", help="do not train: save a montage of val crops"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    if args.samples is not None:
        import cv2

        xv, _ = data.validation_set(data.load_sources(), 8, VAL_SEED)
        grid = data.montage(xv, 16)
        cv2.imwrite(str(args.samples), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        return 0
    if args.check_dream is not None:
        check_dream(args.out, args.check_dream)
        return 0
    t0 = time.perf_counter()
    result = train(
        seed=args.seed,
        steps=args.steps,
        batch=args.batch,
        noise=args.noise,
        pool=args.pool,
        blur=args.blur,
    )
    meta = export(result, args.out)
    log.info(
        "done in %.0f s: accuracy %.3f, train %.0f s",
        time.perf_counter() - t0,
        meta["accuracy"],
        meta["train_seconds"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
