"""Cache of compiled dream-step graphs, keyed by model hash + layers + objective + compiler.

Files live in ``<cache root>/compiled/`` (DREAMSTATE_CACHE overrides the root). A file is
written to a temporary name and renamed, so a crash never leaves a half-written graph behind;
an unreadable cached file is recompiled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dreamstate.models.registry import cache_root

log = logging.getLogger("dreamstate.models")


def compiled_dir(base: Path | None = None) -> Path:
    return (base or cache_root()) / "compiled"


def cache_key(
    model_sha: str, layers: Sequence[str], *, objective: str, guide: bool, compiler: str, variant: str = ""
) -> str:
    text = "|".join([model_sha, ",".join(layers), objective, "guide" if guide else "-", compiler, variant])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_path(stem: str, key: str, base: Path | None = None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in stem)[:40]
    return compiled_dir(base) / f"{safe}-{key}.onnx"


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("compiled graph cached", extra={"file": str(path), "bytes": len(data)})
