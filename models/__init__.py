"""Dream models: registry, loading, the dream-step compiler and the bundled models."""

if __name__ != "dreamstate.models":  # pragma: no cover - a packaging or sys.path slip
    raise ImportError(f"import dreamstate.models, not {__name__!r}: the models/ folder installs inside the "
                      "dreamstate package (run from a checkout after `pip install -e .`)")
