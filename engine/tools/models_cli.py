"""``dreamstate models list|layers|compile|fetch|export-torchvision``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    models = sub.add_parser("models", help="dream models: list, layers, compile, fetch, export-torchvision")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    ls = msub.add_parser("list", help="the model registry and which models are present")
    ls.set_defaults(func=_list)

    layers = msub.add_parser("layers", help="layers a dream can use: name, channels, stride, receptive field")
    layers.add_argument("model", help="registry name (e.g. squeezenet1.0, googlenet, starter) or path to .onnx")
    layers.set_defaults(func=_layers)

    comp = msub.add_parser("compile", help="write the dream-step ONNX graph (forward + backward to the image)")
    comp.add_argument("model", help="registry name or path to .onnx")
    comp.add_argument("--layers", help="comma-separated layer names (default: the registry's recommended layers)")
    comp.add_argument("--objective", choices=["layers", "channels", "class"], default="layers")
    comp.add_argument("--guide", action="store_true", help="guide-image objective (best-match features)")
    comp.add_argument("--out", help="where to write step.onnx (default: the compiled-graph cache)")
    comp.set_defaults(func=_compile)

    fetch = msub.add_parser("fetch", help="download a registry model and verify its sha256")
    fetch.add_argument("name", help="registry name (see `dreamstate models list`)")
    fetch.add_argument("--force", action="store_true", help="download again even if present")
    fetch.set_defaults(func=_fetch)

    exp = msub.add_parser(
        "export-torchvision", help="export torchvision GoogLeNet to ONNX (needs the `export` extra: torch)"
    )
    exp.add_argument("arch", choices=["googlenet"])
    exp.add_argument("--weights", required=True, help="torchvision state dict file (googlenet-1378be20.pth)")
    exp.add_argument("--out", help="output .onnx (default: the registry's place for googlenet-torchvision)")
    exp.set_defaults(func=_export)


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from dreamstate.engine.core.errors import ModelError
    from dreamstate.models import registry

    table = Table(title="dream models")
    for col in ("name", "present", "layers", "file", "source"):
        table.add_column(col)
    for name in registry.names():
        try:
            spec = registry.get_spec(name)
        except ModelError as exc:
            table.add_row(name, "no", "-", "-", str(exc))
            continue
        path = registry.model_path(spec)
        present = ("bundled" if name in registry.bundled() else "yes") if path.exists() else "no"
        if name == registry.DEFAULT_MODEL:
            present += " (default)"
        table.add_row(name, present, ", ".join(spec.layers), str(path), spec.url or spec.notes)
    Console(width=200).print(table)
    return 0


def _layers(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from dreamstate.models import registry
    from dreamstate.models.graph import format_layers, load_forward

    path, spec = registry.resolve(args.model)
    fg = load_forward(path, label=str(path))
    recommended = set(spec.layers)
    table = Table(title=f"layers of {spec.name} ({path.name}); * = recommended")
    for col in ("layer", "op", "channels", "stride", "receptive field", "tensor"):
        table.add_column(col)
    for info, row in zip(fg.layers(), format_layers(fg.layers()), strict=True):
        mark = "*" if row[0] in recommended or info.name in recommended else ""
        table.add_row(row[0] + mark, *row[1:], info.name if info.alias else "")
    Console(width=160).print(table)
    return 0


def _compile(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dreamstate.models import cache, compiler, registry
    from dreamstate.models.backward import Lowering
    from dreamstate.models.graph import load_forward

    path, spec = registry.resolve(args.model)
    fg = load_forward(path, label=str(path))
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else list(spec.layers)
    if args.objective == "class" and not args.layers:
        layers = []
    model, info = compiler.compile_step(fg, layers, objective=args.objective, guide=args.guide)
    data = model.SerializeToString()
    if args.out:
        out = Path(args.out)
        cache.write_atomic(out, data)
    else:
        key = cache.cache_key(
            fg.sha256,
            info.layers,
            objective=info.objective,
            guide=info.guide,
            compiler=compiler.COMPILER_VERSION,
            variant=Lowering().key(),
        )
        out = cache.cached_path(spec.name, key)
        cache.write_atomic(out, data)
    Console().print(
        f"[green]compiled[/green] {spec.name}: layers {', '.join(info.layers)} "
        f"(objective {info.objective}{', guide' if info.guide else ''}), {len(model.graph.node)} nodes -> {out}"
    )
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dreamstate.models import fetch, registry

    spec = registry.get_spec(args.name)
    path = fetch.fetch(spec, force=args.force)
    Console().print(f"[green]ok[/green] {spec.name} -> {path} (sha256 verified)" if spec.sha256 else f"ok {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from rich.console import Console

    from dreamstate.engine.tools.export_torchvision import export_googlenet
    from dreamstate.models import registry

    out = Path(args.out) if args.out else registry.model_path(registry.get_spec("googlenet-torchvision"))
    path = export_googlenet(Path(args.weights), out)
    Console().print(f"[green]exported[/green] {path}")
    return 0
