"""Named counters. Each stage owns a ``Counters``; nothing is global."""

from __future__ import annotations

import threading
from collections.abc import Mapping


class Counters:
    """Thread-safe named integer counters.

    After ``inc(name, n)``, ``get(name)`` is larger by ``n``. ``snapshot()`` returns a copy that
    later increments do not change.
    """

    __slots__ = ("_lock", "_values")

    def __init__(self, initial: Mapping[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict(initial or {})

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def total(self, prefix: str) -> int:
        """The sum of every counter whose name starts with ``prefix`` (``"malformed."``)."""
        with self._lock:
            return sum(v for k, v in self._values.items() if k.startswith(prefix))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def __repr__(self) -> str:
        return f"Counters({self.snapshot()!r})"
