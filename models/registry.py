"""Known models: where to get them, how to verify them, how to feed them, which layers dream well.

Preprocessing is described by :class:`Preprocess`: an RGB image in [0, 1] is scaled to
``[0, scale]`` (``value_range``), then ``(v - mean) / std`` per channel (mean/std given in RGB
order), then reordered to BGR when ``bgr`` is true. A model file given by path is matched to a
registry entry by its SHA-256; otherwise a sidecar ``<model>.json`` (same fields as
``models/starter/model.json``) supplies the preprocessing; otherwise ImageNet RGB [0, 1]
mean/std is assumed and a warning logged.

``kind`` says what a model is for: ``classifier`` (the dream and attribution compilers) or
``style`` (an image-to-image network for the style mode, :mod:`models.style`; its output is read
back with the input's channel order and value range). A sidecar sets it with ``"kind": "style"``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamstate.engine.core.errors import ModelError

log = logging.getLogger("dreamstate.models")

STARTER_DIR = Path(__file__).resolve().parent / "starter"
STARTER_JSON = STARTER_DIR / "model.json"
LITE0_DIR = Path(__file__).resolve().parent / "efficientnet_lite0"
LITE0_JSON = LITE0_DIR / "model.json"
TOON_JSON = Path(__file__).resolve().parent / "toon" / "model.json"
DEFAULT_MODEL = "efficientnet-lite0"
"""The model shows and ``dreamstate dream`` use when none is named: ships with the package."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (123.0, 117.0, 104.0)  # the BGR mean (104, 117, 123) in RGB order


@dataclass(frozen=True)
class Preprocess:
    mean: tuple[float, ...] = IMAGENET_MEAN  # RGB order, in value-range units
    std: tuple[float, ...] = IMAGENET_STD
    bgr: bool = False
    scale: float = 1.0  # RGB [0, 1] is multiplied by this first: value range (0, scale)
    channels: int = 3  # 1 = grayscale model (luminance of the RGB image)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    filename: str
    url: str | None
    sha256: str | None
    preprocess: Preprocess
    layers: tuple[str, ...]
    size: int | None = None  # bytes, when known
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    labels: tuple[str, ...] = field(default=(), compare=False)  # class names, by output index
    step: float | None = None  # recommended step in display levels (0..255), when the model says
    kind: str = "classifier"  # "classifier" (dream, explain) or "style" (image-to-image, models.style)
    input_size: int = 224  # square size in pixels the classifier was trained at (drawing mode scores there)


IMAGENET_LABELS_FILE = Path(__file__).resolve().parent / "imagenet_classes.txt"


def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in output order, one a line in ``imagenet_classes.txt``
    (torchvision's ``_IMAGENET_CATEGORIES``, BSD-3-Clause). Raises ``ModelError`` when the file is
    missing or does not hold 1000 distinct names."""
    try:
        names = tuple(line.strip() for line in IMAGENET_LABELS_FILE.read_text(encoding="utf-8").splitlines())
    except OSError as exc:
        raise ModelError(f"the ImageNet class names {IMAGENET_LABELS_FILE} cannot be read: {exc}",
                         hint="reinstall dreamstate") from exc
    if len(names) != 1000 or len(set(names)) != 1000:
        raise ModelError(f"{IMAGENET_LABELS_FILE} holds {len(names)} names ({len(set(names))} distinct), not 1000",
                         hint="reinstall dreamstate")
    return names


IMAGENET = imagenet_labels()


REGISTRY: dict[str, ModelSpec] = {
    "googlenet": ModelSpec(
        labels=IMAGENET,
        name="googlenet",
        title="GoogLeNet / Inception-v1 (ONNX Model Zoo, Caffe BVLC weights, opset 7)",
        filename="googlenet-7.onnx",
        url="https://github.com/onnx/models/raw/main/validated/vision/classification/"
        "inception_and_googlenet/googlenet/model/googlenet-7.onnx",
        sha256="5725ccfd90845735ce5897faf7843c3f9b13acda3c4f3bff82cb21c9337c9de8",
        size=28020232,
        preprocess=Preprocess(mean=CAFFE_MEAN_RGB, std=(1.0, 1.0, 1.0), bgr=True, scale=255.0),
        layers=("inception_4c/output", "inception_4d/output", "inception_3b/output"),
        notes="the classic DeepDream network; inception_4c/output is Google's default layer",
    ),
    "squeezenet1.0": ModelSpec(
        labels=IMAGENET,
        name="squeezenet1.0",
        title="SqueezeNet 1.0 (ONNX Model Zoo, Caffe2 export, opset 8)",
        filename="squeezenet1.0-8.onnx",
        url="https://github.com/onnx/models/raw/main/validated/vision/classification/"
        "squeezenet/model/squeezenet1.0-8.onnx",
        sha256="3c0bff2f7c984350d3ffa98e0167dc08c15da88f05d0c31989ebeba6fbb5e025",
        size=4952222,
        preprocess=Preprocess(mean=CAFFE_MEAN_RGB, std=(1.0, 1.0, 1.0), bgr=True, scale=255.0),
        layers=("fire5/concat", "fire7/concat", "fire3/concat"),
        notes="small and fast; fire modules dream as fine textures",
    ),
    "squeezenet1.0-fp16": ModelSpec(
        labels=IMAGENET,
        name="squeezenet1.0-fp16",
        title="SqueezeNet 1.0 fp16 (microsoft/Windows-Machine-Learning, Caffe2 export, opset 7)",
        filename="SqueezeNet_fp16.onnx",
        url="https://github.com/microsoft/Windows-Machine-Learning/raw/master/"
        "SharedContent/models/SqueezeNet_fp16.onnx",
        sha256="21f25e3d9254af93e6218a359469fac714a017b3f9035c0f5c4acbf9a3ff7233",
        preprocess=Preprocess(mean=CAFFE_MEAN_RGB, std=(1.0, 1.0, 1.0), bgr=True, scale=255.0),
        layers=("fire5/concat", "fire7/concat", "fire3/concat"),
        notes="fp16 weights are cast to fp32 when compiled",
    ),
    "squeezenet1.1": ModelSpec(
        labels=IMAGENET,
        name="squeezenet1.1",
        title="SqueezeNet 1.1 (ONNX Model Zoo, MXNet export, opset 7)",
        filename="squeezenet1.1-7.onnx",
        url="https://github.com/onnx/models/raw/main/validated/vision/classification/"
        "squeezenet/model/squeezenet1.1-7.onnx",
        sha256="1eeff551a67ae8d565ca33b572fc4b66e3ef357b0eb2863bb9ff47a918cc4088",
        preprocess=Preprocess(),
        layers=("squeezenet0_concat3", "squeezenet0_concat5", "squeezenet0_concat1"),
        notes="RGB, ImageNet mean/std on [0, 1]",
    ),
    "mnist": ModelSpec(
        name="mnist",
        title="MNIST digit classifier (CNTK export, opset 7; microsoft/Windows-Machine-Learning)",
        filename="mnist.onnx",
        url=None,
        sha256="bd5891fdd7987910bfc3d8fc9a697a88e48309e26e529faa87931fba52904fe8",
        preprocess=Preprocess(mean=(0.0,), std=(1.0,), scale=255.0, channels=1),
        layers=("Plus214_Output_0",),
        notes="a test model: grayscale 28x28, 0..255; dreams class logits (objective 'class')",
        labels=tuple(str(d) for d in range(10)),
        input_size=28,
    ),
    "googlenet-torchvision": ModelSpec(
        labels=IMAGENET,
        name="googlenet-torchvision",
        title="GoogLeNet (torchvision weights, exported by `dreamstate models export-torchvision`)",
        filename="googlenet-torchvision.onnx",
        url=None,  # made locally from the weights below; the ONNX bytes depend on the torch version
        sha256=None,
        # torchvision's transform_input maps ImageNet-normalised input to (rgb - 0.5) / 0.5; the
        # exporter leaves it out of the graph, so that is the preprocessing here
        preprocess=Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        layers=("inception4c", "inception4d", "inception3b"),
        notes="weights: https://download.pytorch.org/models/googlenet-1378be20.pth "
        "(torchvision's file name carries the first 8 hex digits of its SHA-256)",
        extra={
            "weights_url": "https://download.pytorch.org/models/googlenet-1378be20.pth",
            "weights_sha256_prefix": "1378be20",
        },
    ),
    "candy": ModelSpec(
        name="candy",
        title="Fast neural style 'candy' (Johnson et al. 2016; Windows-Machine-Learning sample, OnnxMLTools, opset 7)",
        filename="candy.onnx",
        url="https://github.com/microsoft/Windows-Machine-Learning/raw/master/"
        "Samples/FNSCandyStyleTransfer/UWP/cs/Assets/candy.onnx",
        sha256="4cc994e51bc371584fe38d91ac66015909d8e06eec5b22de9a6b969ad091c2c0",
        size=1712395,
        # BGR 0..255 in; the graph's ImageScaler subtracts the BGR means itself; BGR 0..255 out
        preprocess=Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), bgr=True, scale=255.0),
        layers=(),
        notes="style model: bright candy-coloured strokes (declares 720x720; relaxed to any size when loaded). "
        "The URL was not checked from an offline machine; the SHA-256 check refuses any other file",
        kind="style",
    ),
    "mosaic": ModelSpec(
        name="mosaic",
        title="Fast neural style 'mosaic' (Johnson et al. 2016; Windows-Machine-Learning sample, OnnxMLTools, opset 7)",
        filename="mosaic.onnx",
        url="https://github.com/microsoft/Windows-Machine-Learning/raw/master/Samples/StyleTransfer/Assets/mosaic.onnx",
        sha256="88bae7a0b1df776190c0edceb94878dc9d39178a06df97ca44d08dfb5b56e035",
        size=1712530,
        preprocess=Preprocess(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), bgr=True, scale=255.0),
        layers=(),
        notes="style model: stained-glass tiles (declares 720x720; relaxed to any size when loaded). "
        "The URL was not checked from an offline machine; the SHA-256 check refuses any other file",
        kind="style",
    ),
}


def cache_root() -> Path:
    """DREAMSTATE_CACHE, else $XDG_CACHE_HOME/dreamstate, else ~/.cache/dreamstate."""
    env = os.environ.get("DREAMSTATE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dreamstate"


def models_dir() -> Path:
    return cache_root() / "models"


def bundled() -> dict[str, Path]:
    """Models that ship inside the package: name -> its model.json (read at call time)."""
    return {DEFAULT_MODEL: LITE0_JSON, "starter": STARTER_JSON, "toon": TOON_JSON}


def _bundled_spec(name: str) -> ModelSpec:
    where = bundled()[name]
    if not where.exists():
        raise ModelError(
            f"the bundled model {name!r} is missing its description {where}",
            hint="reinstall dreamstate, or use another model (`dreamstate models list`)",
        )
    try:
        doc = json.loads(where.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{where} cannot be read: {exc}", hint="reinstall dreamstate") from exc
    return spec_from_json(name, doc, where)


def spec_from_json(name: str, doc: dict[str, Any], where: Path) -> ModelSpec:
    """A ModelSpec from a model.json document (starter model or a sidecar file)."""
    pre = doc.get("preprocessing", doc.get("preprocess", {}))
    if not isinstance(pre, dict):
        raise ModelError(f"{where}: 'preprocessing' must be a table", hint="see models/starter/model.json")
    try:
        vr: Any = pre.get("value_range", pre.get("range", [0.0, float(pre.get("scale", 1.0))]))
        mean = tuple(float(v) for v in pre.get("mean", (0.0, 0.0, 0.0)))
        std = tuple(float(v) for v in pre.get("std", (1.0, 1.0, 1.0)))
        prep = Preprocess(
            mean=mean,
            std=std,
            bgr=bool(pre.get("bgr", False)),
            scale=float(vr[1]),
            channels=int(doc.get("channels", pre.get("channels", 3)) or 3),
        )
        # "recommended_layers" (list) wins; "layers" may be a list or a {name: info} table
        rec = doc.get("recommended_layers", doc.get("layers", ()))
        layers = tuple(str(v) for v in (list(rec) if isinstance(rec, dict | list | tuple) else ()))
    except (TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"{where}: bad preprocessing fields: {exc}", hint="see models/starter/model.json") from exc
    file = str(doc.get("file", doc.get("onnx", f"{name}.onnx")))
    labels = doc.get("labels", doc.get("classes", ()))
    step = doc.get("recommended_step")
    kind = str(doc.get("kind", "classifier"))
    if kind not in ("classifier", "style"):
        raise ModelError(f"{where}: 'kind' must be \"classifier\" or \"style\", not {kind!r}",
                         hint="use \"style\" for an image-to-image network")
    input_size = doc.get("input_size", 224)
    if not isinstance(input_size, int) or isinstance(input_size, bool) or not 8 <= input_size <= 4096:
        raise ModelError(f"{where}: 'input_size' must be a whole number of pixels in 8..4096", hint="e.g. 224")
    if not isinstance(labels, list | tuple) or not all(isinstance(v, str) for v in labels):
        raise ModelError(f"{where}: 'labels' must be a list of class names", hint="see models/efficientnet_lite0")
    if step is not None and (not isinstance(step, int | float) or not 0 < float(step) <= 20):
        raise ModelError(f"{where}: 'recommended_step' must be a number in (0, 20]", hint="e.g. 1.5")
    return ModelSpec(
        name=name,
        title=str(doc.get("title", name)),
        filename=file,
        url=doc.get("url"),
        sha256=doc.get("sha256"),
        preprocess=prep,
        layers=layers,
        notes=str(doc.get("notes", "")),
        extra={"dir": str(where.parent)},
        labels=tuple(labels),
        step=None if step is None else float(step),
        kind=kind,
        input_size=input_size,
    )


def names() -> list[str]:
    return [*bundled(), *REGISTRY]


def get_spec(name: str) -> ModelSpec:
    if name in bundled():
        return _bundled_spec(name)
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"unknown model {name!r}",
            hint=f"use a path to an .onnx file or one of: {', '.join(names())}",
        ) from None


def model_path(spec: ModelSpec) -> Path:
    """Where the model file of ``spec`` lives (bundled models ship inside the package)."""
    if spec.name in bundled():
        return Path(spec.extra["dir"]) / spec.filename
    return models_dir() / spec.filename


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(model: str | Path) -> tuple[Path, ModelSpec]:
    """Registry name or file path -> (existing file, spec). Raises ModelError with the fix."""
    text = str(model)
    if isinstance(model, Path) or text.endswith(".onnx") or os.sep in text:
        path = Path(model).expanduser()
        if not path.exists():
            raise ModelError(f"model file {path} does not exist", hint="check the path or use a registry name")
        return path, spec_for_file(path)
    spec = get_spec(text)
    path = model_path(spec)
    if not path.exists():
        if spec.name == "starter":
            raise ModelError(
                f"the starter model file {path} is missing",
                hint="rebuild it with `python -m dreamstate.engine.tools.train_starter`",
            )
        if spec.name in bundled():
            raise ModelError(
                f"the bundled model file {path} is missing",
                hint="reinstall dreamstate (or rebuild it: see models/efficientnet_lite0/export.py)",
            )
        how = (
            f"run `dreamstate models fetch {spec.name}`"
            if spec.url
            else f"run `dreamstate models export-torchvision googlenet --weights FILE --out {path}`"
        )
        raise ModelError(f"model {spec.name!r} is not downloaded yet (expected at {path})", hint=how)
    return path, spec


def spec_for_file(path: Path) -> ModelSpec:
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        try:
            doc = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"sidecar {sidecar} cannot be read: {exc}", hint="fix or delete it") from exc
        return spec_from_json(path.stem, doc, sidecar)
    digest = sha256_file(path)
    specs = [*REGISTRY.values()]
    specs += [_bundled_spec(name) for name, where in bundled().items() if where.exists()]
    for spec in specs:
        if spec.sha256 and spec.sha256 == digest:
            return spec
    log.warning(
        "unknown model file: assuming RGB [0,1] with ImageNet mean/std",
        extra={"model": str(path), "fix": f"write {sidecar.name} with a 'preprocessing' table"},
    )
    return ModelSpec(
        name=path.stem,
        title=path.name,
        filename=path.name,
        url=None,
        sha256=digest,
        preprocess=Preprocess(),
        layers=(),
    )
