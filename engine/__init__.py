"""dreamstate's engine: the core, the stages (signal, scenes, render, output, control), the show
runtime and the tools. Import it as ``dreamstate.engine``."""

if __name__ != "dreamstate.engine":  # pragma: no cover - a packaging or sys.path slip
    raise ImportError(f"import dreamstate.engine, not {__name__!r}: the engine/ folder installs inside the "
                      "dreamstate package (run from a checkout after `pip install -e .`)")
