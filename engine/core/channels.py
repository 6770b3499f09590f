"""Channels between stages, each with an explicit drop policy.

* ``LatestSlot``: frames and state. The newest value wins; overwritten values are counted.
* ``BoundedQueue``: control. Bounded; when full, the oldest (or the newest) item is dropped
  and counted, never blocking the producer.
* ``Broadcast``: one producer, many subscribers, each with its own ``BoundedQueue``; telemetry
  style, lossy and counted per subscriber.

All are safe to use from one asyncio loop; ``LatestSlot`` is also thread-safe, so the dream
worker thread and the display loop can share one.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Generic, Literal, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds the latest value. ``put`` never blocks; ``version`` grows with every put.

    After ``put(v)``: ``get()`` returns ``v`` and ``version`` is one larger. If the previous
    value was never read, ``overwritten`` is one larger too.
    """

    def __init__(self, initial: T | None = None) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._value: T | None = initial
        self._version = 0 if initial is None else 1
        self._read_version = self._version
        self.overwritten = 0

    def put(self, value: T) -> None:
        with self._lock:
            if self._version != self._read_version:
                self.overwritten += 1
            self._value = value
            self._version += 1
            self._cond.notify_all()

    def get(self) -> T | None:
        with self._lock:
            self._read_version = self._version
            return self._value

    def get_if_newer(self, version: int) -> tuple[T | None, int]:
        """Return ``(value, version)`` when newer than ``version``, else ``(None, version)``."""
        with self._lock:
            if self._version > version:
                self._read_version = self._version
                return self._value, self._version
            return None, version

    def wait_newer(self, version: int, timeout: float) -> tuple[T | None, int]:
        """Block (threads only) up to ``timeout`` s for a value newer than ``version``."""
        with self._cond:
            self._cond.wait_for(lambda: self._version > version, timeout=timeout)
            if self._version > version:
                self._read_version = self._version
                return self._value, self._version
            return None, version

    @property
    def version(self) -> int:
        with self._lock:
            return self._version


class BoundedQueue(Generic[T]):
    """An asyncio queue that never blocks the producer.

    When full, ``drop="oldest"`` evicts the oldest item to make room, ``drop="newest"`` refuses
    the new item; either way ``dropped`` grows by one. ``get`` waits for an item.
    """

    def __init__(self, maxsize: int, *, drop: Literal["oldest", "newest"] = "oldest",
                 name: str = "queue") -> None:
        if maxsize < 1:
            raise ValueError(f"{name}: maxsize must be >= 1, got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.drop = drop
        self.dropped = 0
        self._items: collections.deque[T] = collections.deque()
        self._event = asyncio.Event()

    def put_nowait(self, item: T) -> bool:
        """Add ``item``; return False when something was dropped to keep the bound."""
        ok = True
        if len(self._items) >= self.maxsize:
            self.dropped += 1
            ok = False
            if self.drop == "newest":
                return False
            self._items.popleft()
        self._items.append(item)
        self._event.set()
        return ok

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._event.clear()
        return item

    async def get(self) -> T:
        while not self._items:
            self._event.clear()
            await self._event.wait()
        return self.get_nowait()

    def drain(self) -> list[T]:
        items = list(self._items)
        self._items.clear()
        self._event.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)


class Broadcast(Generic[T]):
    """Fan-out from one producer to many subscribers, each with its own bounded queue."""

    def __init__(self, name: str = "broadcast") -> None:
        self.name = name
        self._subscribers: list[BoundedQueue[T]] = []

    def subscribe(self, maxsize: int = 4096, *, name: str | None = None) -> BoundedQueue[T]:
        q: BoundedQueue[T] = BoundedQueue(maxsize, drop="oldest",
                                          name=name or f"{self.name}.sub{len(self._subscribers)}")
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: BoundedQueue[T]) -> None:
        if q in self._subscribers:
            self._subscribers.remove(q)

    def publish(self, item: T) -> None:
        for q in self._subscribers:
            q.put_nowait(item)

    @property
    def dropped(self) -> dict[str, int]:
        return {q.name: q.dropped for q in self._subscribers}
