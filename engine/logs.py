"""Structured logging. Every stage logs through ``logging.getLogger("dreamstate.<area>")``.

Pass context with ``extra={"port": ..., "count": ...}``: the key=value formatter (default) and
the JSON formatter (``--log-json``, for kiosk journals) both print those fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        base = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            base += " " + " ".join(f"{k}={v!r}" for k, v in extras.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "t": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update({k: v if isinstance(v, int | float | str | bool | None) else repr(v)
                    for k, v in _extras(record).items()})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(verbosity: int = 0, json_lines: bool = False) -> None:
    """Configure the root logger once for a CLI run (tests use pytest's caplog instead).

    Installations log at INFO by default; ``-v`` adds dreamstate's debug lines and ``-vv``
    everyone's.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    logging.getLogger("dreamstate").setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    for noisy in ("matplotlib", "PIL", "numba", "mne", "asyncio"):
        if verbosity < 2:
            logging.getLogger(noisy).setLevel(logging.WARNING)
