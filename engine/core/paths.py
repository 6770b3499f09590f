"""Paths from show files and OSC stay inside the show's folder."""

from __future__ import annotations

from pathlib import Path

from dreamstate.engine.core.errors import PathEscapeError


def resolve_inside(base: Path, value: str | Path, *, what: str = "path") -> Path:
    """Resolve ``value`` against ``base`` and refuse anything that ends up outside ``base``.

    Symlinks are resolved first, so a link pointing out of the folder is refused too.
    """
    base = base.resolve()
    candidate = Path(value)
    full = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if full != base and base not in full.parents:
        raise PathEscapeError(
            f"{what} {str(value)!r} resolves to {full}, outside the show folder {base}",
            hint="put the file inside the show's folder and use a relative path",
        )
    return full
