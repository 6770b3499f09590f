"""Structured logging. Every stage logs through ``logging.getLogger("dreamstate.<area>")``.

Pass context with ``extra={"port": ..., "count": ...}``: the key=value formatter (default) and
the JSON formatter (``--log-json``, for kiosk journals) both print those fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
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


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as ``logging.lastResort``
    does), not the stream that was current at setup: an embedding program or a test harness
    that swaps and closes stderr then never gets "I/O operation on closed file"."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging(verbosity: int = 0, json_lines: bool = False, *, log_file: str | None = None,
                  max_bytes: int = 10_000_000, backups: int = 5) -> None:
    """Configure the root logger once for a CLI run (tests use pytest's caplog instead).

    Installations log at INFO by default; ``-v`` adds dreamstate's debug lines and ``-vv``
    everyone's. Lines go to stderr, which systemd hands to journald. ``log_file`` adds a
    rotated file for runs outside systemd (``max_bytes`` each, ``backups`` old files kept, so
    weeks of logging take at most about 60 MB).
    """
    formatter = JsonFormatter() if json_lines else KeyValueFormatter()
    handlers: list[logging.Handler] = [_StderrHandler()]
    if log_file:
        from logging.handlers import RotatingFileHandler

        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(DependencyLogFilter())
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
    logging.getLogger("dreamstate").setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    # openTSNE says "Precomputed initialization provided. Ignoring initalization-related
    # parameters." at INFO at every map refit (once a minute): only with -vv
    logging.getLogger("openTSNE").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    for noisy in ("matplotlib", "PIL", "numba", "mne", "asyncio"):
        if verbosity < 2:
            logging.getLogger(noisy).setLevel(logging.WARNING)


def truncate(value: object, limit: int = 80) -> str:
    """``value`` as text for a log line, cut to ``limit`` characters with the original length
    noted: a printable string as it is (no extra quotes), anything else (bytes, a string with
    control characters) as its ``repr`` so nothing hidden reaches the log."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


class LogLimiter:
    """Logging for input that can arrive in floods (OSC, MQTT): one line per kind per interval.

    ``report(kind, message, **extra)``: the first event of a kind in an interval is logged at
    once (extra values truncated with :func:`truncate`); later ones in the same interval are
    only counted. ``flush()`` (call it from a periodic task; ``report`` calls it too) logs, for
    every kind whose events were held back, one summary line with the count and the first
    example, once the interval has passed. The logger, level and clock are injectable.
    """

    def __init__(self, logger: logging.Logger, *, interval_s: float = 10.0, level: int = logging.WARNING,
                 clock: Any = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.level = level
        self.clock = clock
        self._window_start: float | None = None
        self._held: dict[str, tuple[int, str]] = {}
        self._seen: set[str] = set()

    def report(self, kind: str, message: str, **extra: object) -> None:
        now = self.clock()
        self.flush(now)
        if self._window_start is None:
            self._window_start = now
        if kind not in self._seen:
            self._seen.add(kind)
            fields = {k: truncate(v) if not isinstance(v, int | float) else v for k, v in extra.items()}
            if len(message) > 300:
                message = f"{message[:300]}... ({len(message)} chars)"
            self.logger.log(self.level, message, extra={"kind": kind, **fields})
            return
        count, example = self._held.get(kind, (0, ""))
        self._held[kind] = (count + 1, example or truncate(extra.get("example", message)))

    def flush(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if self._window_start is None or now - self._window_start < self.interval_s:
            return
        for kind, (count, example) in sorted(self._held.items()):
            self.logger.log(self.level, "%d more %s in the last %.0f s (one: %s)", count, kind,
                            now - self._window_start, example, extra={"kind": kind, "count": count})
        self._held.clear()
        self._seen.clear()
        self._window_start = None


class DependencyLogFilter(logging.Filter):
    """Contain libraries that log per bad input on the root logger (python-osc logs a warning
    per unknown type tag): their records pass at most once per ``interval_s``, the rest are
    counted in ``suppressed``."""

    PACKAGES = ("/pythonosc/",)

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.suppressed = 0
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(p in record.pathname for p in self.PACKAGES):
            return True
        now = time.monotonic()
        if self._last is None or now - self._last >= self.interval_s:
            self._last = now
            return True
        self.suppressed += 1
        return False
