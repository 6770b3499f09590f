"""Show-file checks for the renderer, called by ``engine.runtime.showfile.load_show``.

``check_render(loaded)`` returns ``(key path, message)`` for every problem it finds:

* ``show.images[i]``, ``scenes.<s>.image``, ``scenes.<s>.guide``: the file must decode as an
  image;
* ``scenes.<s>.mask``: a built-in mask (``circle``, ``radial``) or a readable image (also as
  ``luminance:<path>`` / ``edges:<path>``);
* ``show.model``: the model must resolve (a registry name, or a file inside the show folder:
  :func:`model_source`), and its dream step must compile for the scenes' layers (compiled once,
  then cached), so ``run`` never starts with a model it cannot dream;
* ``output.device``: ``"cuda"`` needs onnxruntime's CUDA provider (the ``gpu`` extra);
* ``scenes.<s>.layers.<name>`` and ``scenes.<s>.channels.<name>``: the layer must exist in the
  show's model. Layers are listed from the ONNX graph without compiling anything.
* ``scenes.<s>.draw[i]`` (``mode = "drawing"``): the show's model must be a classifier (one
  score per class) and know the class, by name (closest names offered) or index.
* ``scenes.<s>.seeing`` and ``scenes.<s>.seeing_class``: the show's model must be a
  classifier whose attribution graph for that method compiles (``models.explain``: e.g. LRP
  refuses an LRN layer), and know the class.

Warnings (``loaded.warnings``, printed by ``check`` and logged by ``run``): a scene layer far
from the depth of the model's recommended layers (``models.graph.depth_warning``), the usual
sign of a model swap that kept the old model's layer names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dreamstate.engine.core.errors import DreamstateError, PathEscapeError
from dreamstate.engine.core.show import LoadedShow
from dreamstate.engine.render.masks import BUILTIN, parse_spec
from dreamstate.models.graph import depth_warning

log = logging.getLogger("dreamstate.render")


def _image_problem(loaded: LoadedShow, key: str, value: str) -> str | None:
    from dreamstate.engine.core.images import load_image

    try:
        load_image(loaded.path(value, what=key), what=key)
    except DreamstateError as exc:
        return str(exc)
    return None


def model_source(loaded: LoadedShow) -> str | Path:
    """Where the show's model comes from: a registry name (bundled, or the user's model cache
    through ``dreamstate models fetch``), or else a file inside the show folder (relative to
    it, symlinks checked, like every other path in a show). Nothing else: an absolute path or
    ``../`` is refused, whatever its suffix. Raises ``ShowError``-ready ``DreamstateError``."""
    from dreamstate.models import registry

    if loaded.operator_model is not None:
        return loaded.operator_model
    name = loaded.show.show.model
    if name in registry.names():
        return name
    try:
        path = loaded.path(name, what="show.model")
    except DreamstateError as exc:
        raise PathEscapeError(f"{exc}", hint="name a registry model (`dreamstate models list`) or put the "
                                           ".onnx file in the show folder") from None
    if not path.is_file():
        raise PathEscapeError(
            f"model {name!r} is neither a registry model ({', '.join(registry.names())}) nor a file in the show "
            f"folder ({path} does not exist)",
            hint="fix the name, or put the .onnx file (and its .json) in the show folder")
    return path


def style_source(loaded: LoadedShow, name: str, *, key: str = "style") -> str | Path:
    """Where a scene's style model comes from: a registry name or an .onnx file inside the show
    folder (with its .json sidecar), like ``show.model``. Raises ``PathEscapeError`` with the fix."""
    from dreamstate.models import registry

    if name in registry.names():
        return name
    try:
        path = loaded.path(name, what=key)
    except DreamstateError as exc:
        raise PathEscapeError(f"{exc}", hint="name a registry style model (`toon`, `candy`, `mosaic`) or put the "
                                           ".onnx file in the show folder") from None
    if not path.is_file():
        raise PathEscapeError(
            f"style model {name!r} is neither a registry model nor a file in the show folder ({path} does not exist)",
            hint="fix the name (`dreamstate models list`), `dreamstate models fetch candy`, or put the .onnx file "
                 "(and its .json) in the show folder")
    return path


def _style_problem(loaded: LoadedShow, key: str, name: str, seen: dict[str, str | None]) -> str | None:
    """Why a scene's style model cannot be used (resolved and its graph prepared), or None."""
    from dreamstate.models import registry
    from dreamstate.models.style import prepare_style_graph

    if name in seen:
        return seen[name]
    problem: str | None = None
    try:
        path, spec = registry.resolve(style_source(loaded, name, key=key))
        if spec.kind != "style":
            problem = (f"model {spec.name!r} is a {spec.kind}, not a style model; "
                       "use `toon`, `candy`, `mosaic` or a model whose .json says \"kind\": \"style\"")
        else:
            prepare_style_graph(path, label=str(path))
    except DreamstateError as exc:
        problem = str(exc)
    seen[name] = problem
    return problem


def _model_graph(loaded: LoadedShow) -> tuple[Any | None, Any | None, str | None]:
    """The show model's forward graph (cheap: parsed, not compiled) and spec, or an error."""
    from dreamstate.models import registry
    from dreamstate.models.graph import load_forward

    try:
        path, spec = registry.resolve(model_source(loaded))
        return load_forward(path, label=str(path)), spec, None
    except DreamstateError as exc:
        return None, None, str(exc)


def _compile_problem(loaded: LoadedShow) -> tuple[str, str] | None:
    """Compile the dream step ``run`` will use (the union of the scenes' layers; and the guide
    variant when a scene has a guide), or take it from the cache: an op without a backward rule
    must stop ``check``, not crash-loop the render stage of ``run``."""
    from dreamstate.models.dream import compile_cached

    show = loaded.show
    layers = list(dict.fromkeys(k for s in show.scenes.values() for k in s.layers))
    try:
        source = model_source(loaded)
        # what run will compile: fp16 converts as well as compiles where it can run; on a machine
        # without CUDA it is fp32 (run's model load says so, once)
        from dreamstate.models.precision import runnable_precision

        precision = runnable_precision(show.output.precision, show.output.device, warn=False)
        compile_cached(source, layers or None, precision=precision)
        if any(s.guide for s in show.scenes.values()):
            compile_cached(source, layers or None, guide=True, precision=precision)
    except DreamstateError as exc:
        return ("show.model", f"the dream step cannot be compiled for the scenes' layers: {exc}")
    return None


def _size_problem(graph: Any, spec: Any, show: Any) -> tuple[str, str] | None:
    """``output.dream_size`` against the smallest input the model accepts for the scenes' layers."""
    from dreamstate.models.graph import min_input_size

    try:
        names = list(dict.fromkeys(k for s in show.scenes.values() for k in s.layers)) or list(spec.layers)
        mh, mw = min_input_size(graph, [graph.resolve_layer(n) for n in names])
    except DreamstateError:
        return None  # an unknown layer is reported on its own key
    w, h = show.output.dream_size
    if w < mw or h < mh:
        return ("output.dream_size", f"{w}x{h} is smaller than model {spec.name} accepts for these layers "
                                     f"({mw}x{mh} px); use at least {mw}x{mh}")
    return None


def _drawing_problems(loaded: LoadedShow, graph: Any, spec: Any) -> list[tuple[str, str]]:
    """Drawing scenes: the model is a classifier and knows every class they name."""
    from dreamstate.models.classify import classifier_classes, resolve_class

    scenes = [(name, s) for name, s in loaded.show.scenes.items() if s.mode == "drawing"]
    if not scenes:
        return []
    try:
        classes = classifier_classes(graph, model=spec.name)
    except DreamstateError as exc:
        return [("show.model", f"drawing scenes ({', '.join(n for n, _ in scenes)}) need a classifier: {exc}")]
    problems: list[tuple[str, str]] = []
    for name, scene in scenes:
        for i, target in enumerate(scene.draw):
            try:
                resolve_class(target, spec.labels, classes, model=spec.name)
            except DreamstateError as exc:
                problems.append((f"scenes.{name}.draw[{i}]", str(exc)))
    return problems


def _seeing_problems(loaded: LoadedShow, graph: Any, spec: Any) -> list[tuple[str, str]]:
    """Seeing scenes: each method compiles for the model (once per method) and the class exists."""
    from dreamstate.models.classify import classifier_classes, resolve_class
    from dreamstate.models.explain import compile_attribution

    scenes = [(name, s) for name, s in loaded.show.scenes.items() if s.seeing != "off"]
    if not scenes:
        return []
    try:
        classes = classifier_classes(graph, model=spec.name)
    except DreamstateError as exc:
        return [("show.model", f"seeing scenes ({', '.join(n for n, _ in scenes)}) need a classifier: {exc}")]
    problems: list[tuple[str, str]] = []
    compiled: dict[str, str | None] = {}
    for name, scene in scenes:
        if scene.seeing not in compiled:
            try:
                compile_attribution(graph, scene.seeing)
                compiled[scene.seeing] = None
            except DreamstateError as exc:
                compiled[scene.seeing] = str(exc)
        if compiled[scene.seeing]:
            problems.append((f"scenes.{name}.seeing", str(compiled[scene.seeing])))
        if scene.seeing_class is not None:
            try:
                resolve_class(scene.seeing_class, spec.labels, classes, model=spec.name)
            except DreamstateError as exc:
                problems.append((f"scenes.{name}.seeing_class", str(exc)))
    return problems


def check_device(loaded: LoadedShow, asked_by: str = "output.device = \"cuda\"") -> list[tuple[str, str]]:
    """``output.device = "cuda"`` (or ``run --device cuda``: ``asked_by``) where onnxruntime has no
    CUDA provider: refused before the show starts, since a render stage that cannot open its
    session would only fail and retry for the whole run with no picture."""
    from dreamstate.models.session import cuda_missing

    if loaded.show.output.device != "cuda":
        return []
    missing = cuda_missing(asked_by)
    if missing is None:
        return []
    return [("output.device", str(missing))]


def check_render(loaded: LoadedShow) -> list[tuple[str, str]]:
    """Every render problem in the show (see the module docstring)."""
    show = loaded.show
    problems: list[tuple[str, str]] = check_device(loaded)
    for i, img in enumerate(show.show.images):
        msg = _image_problem(loaded, f"show.images[{i}]", img)
        if msg:
            problems.append((f"show.images[{i}]", msg))
    graph = spec = None
    if show.scenes:
        graph, spec, err = _model_graph(loaded)
        if err:
            problems.append(("show.model", err))
    styles: dict[str, str | None] = {}
    for name, scene in show.scenes.items():
        base = f"scenes.{name}"
        if scene.mode == "style" and scene.style:
            msg = _style_problem(loaded, f"{base}.style", scene.style, styles)
            if msg:
                problems.append((f"{base}.style", msg))
        for field in ("image", "guide"):
            value = getattr(scene, field)
            if value:
                msg = _image_problem(loaded, f"{base}.{field}", value)
                if msg:
                    problems.append((f"{base}.{field}", msg))
        if scene.mask and scene.mask not in BUILTIN:
            _mode, path = parse_spec(scene.mask)
            if path:
                msg = _image_problem(loaded, f"{base}.mask", path)
                if msg:
                    problems.append((f"{base}.mask", msg))
        if graph is not None:
            for section, names in (("layers", scene.layers), ("channels", scene.channels)):
                for layer in names:
                    try:
                        graph.resolve_layer(layer)
                    except DreamstateError as exc:
                        problems.append((f"{base}.{section}.{layer}", str(exc)))
                        continue
                    warning = depth_warning(graph, layer, spec.layers, model=spec.name) if spec else None
                    if warning:
                        loaded.warnings.append((f"{base}.{section}.{layer}", warning))
    if graph is not None and spec is not None:
        problems += _drawing_problems(loaded, graph, spec)
        problems += _seeing_problems(loaded, graph, spec)
    if graph is not None and spec is not None and show.scenes:
        problem = _size_problem(graph, spec, show)
        if problem:
            problems.append(problem)
    if graph is not None and not problems:
        compile_problem = _compile_problem(loaded)
        if compile_problem:
            problems.append(compile_problem)
    return problems
