"""Downloading registry models with a progress bar and SHA-256 verification.

``fetch(spec)`` downloads to a temporary file beside the target, verifies the checksum, then
renames it into place; a checksum mismatch deletes the download. When the network cannot be
reached it raises a NetworkError that says where to put the file by hand, under which name,
and which SHA-256 it must have.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from dreamstate.engine.core.errors import ModelError, NetworkError
from dreamstate.models.registry import ModelSpec, model_path, sha256_file

log = logging.getLogger("dreamstate.models")

TIMEOUT_S = 20.0
CHUNK = 1 << 16


def manual_instructions(spec: ModelSpec, target: Path) -> str:
    parts = [f"download {spec.url} on a machine with internet access" if spec.url else "obtain the file"]
    parts.append(f"copy it to {target} (file name {target.name})")
    if spec.sha256:
        parts.append(f"it must have sha256 {spec.sha256} (check with `sha256sum {target.name}`)")
    return "; ".join(parts)


def fetch(spec: ModelSpec, *, force: bool = False, progress: bool = True, timeout_s: float = TIMEOUT_S) -> Path:
    """Make sure the model file of ``spec`` is present and verified; returns its path."""
    target = model_path(spec)
    if target.exists() and not force:
        if spec.sha256 and sha256_file(target) != spec.sha256:
            raise ModelError(
                f"{target} exists but its sha256 is {sha256_file(target)}, expected {spec.sha256}",
                hint=f"delete it and run `dreamstate models fetch {spec.name}` again, or "
                + manual_instructions(spec, target),
            )
        log.info("model already present", extra={"model": spec.name, "file": str(target)})
        return target
    if not spec.url:
        raise ModelError(
            f"model {spec.name!r} has no download URL ({spec.notes})",
            hint=f"create it with `dreamstate models export-torchvision googlenet --weights FILE --out {target}`",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        response = urllib.request.urlopen(spec.url, timeout=timeout_s)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NetworkError(
            f"cannot download {spec.name} from {spec.url}: the network is unreachable or refused ({reason})",
            hint=manual_instructions(spec, target),
        ) from exc
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".download-", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        total = int(response.headers.get("Content-Length") or 0) or spec.size or None
        with os.fdopen(fd, "wb") as out, response:
            _copy_with_progress(response, out, digest, total=total, name=spec.name, progress=progress)
        got = digest.hexdigest()
        if spec.sha256 and got != spec.sha256:
            raise ModelError(
                f"download of {spec.name} has sha256 {got}, expected {spec.sha256}",
                hint="the file changed upstream or the download was corrupted; " + manual_instructions(spec, target),
            )
        os.replace(tmp, target)
    except (OSError, TimeoutError) as exc:
        raise NetworkError(
            f"download of {spec.name} from {spec.url} failed: {exc}", hint=manual_instructions(spec, target)
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    log.info("model downloaded", extra={"model": spec.name, "file": str(target)})
    return target


def _copy_with_progress(
    src: object, out: object, digest: object, *, total: int | None, name: str, progress: bool
) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    read = src.read  # type: ignore[attr-defined]
    write = out.write  # type: ignore[attr-defined]
    update = digest.update  # type: ignore[attr-defined]
    with Progress(
        "[bold]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), disable=not progress
    ) as bar:
        task = bar.add_task(name, total=total)
        while True:
            chunk = read(CHUNK)
            if not chunk:
                break
            write(chunk)
            update(chunk)
            bar.advance(task, len(chunk))
