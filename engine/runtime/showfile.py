"""Loading a show for ``dreamstate check`` and ``dreamstate run``: the schema, then every stage's
own checks, called here explicitly (no registry filled by import side effects).

``load_show(path)`` validates the whole show and raises one ``ShowError`` listing every
problem: types and ranges, paths and scene references (``engine.core.show``), then feature and
rule names (``engine.signal.check``) and images, models, layers and sizes
(``engine.render.checks``), and that a show sending NDI has the ``ndi`` extra installed
(``engine.output.ndi.check_ndi``). ``deep=False`` skips the stage checks (the monitor and the offline
tools only need the schema).
"""

from __future__ import annotations

from pathlib import Path

from dreamstate.engine.core.show import LoadedShow, ShowCheck, read_show
from dreamstate.engine.output.ndi import check_ndi
from dreamstate.engine.render.checks import check_render
from dreamstate.engine.signal.check import check_signal

STAGE_CHECKS: tuple[ShowCheck, ...] = (check_signal, check_render, check_ndi)


def load_show(path: str | Path | None, *, deep: bool = True) -> LoadedShow:
    """The show at ``path`` (None: the embedded demo show), validated completely; see the
    module docstring. Raises ``ShowError``."""
    return read_show(path, checks=STAGE_CHECKS if deep else ())
