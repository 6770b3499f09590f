"""Timeouts and cancellation that cannot be lost on Python 3.11.

Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives in the same loop
iteration as the awaited result (CPython gh-86296, fixed in 3.12 by rebuilding ``wait_for`` on
``asyncio.timeout``): the task gets the result instead of ``CancelledError`` and goes on. A loop
around such an await (an MQTT writer publishing with QoS 1, whose PUBACK lands as SIGTERM arrives)
then never ends, its ``TaskGroup`` waits for it forever and the show's shutdown hangs until the
hard exit (seen in CI: ``test_systemctl_stop_of_a_show_says_offline``, exit 143).

* :func:`wait_for` is ``asyncio.wait_for`` built on ``asyncio.timeout`` (as 3.12 does); every
  timeout in dreamstate goes through it.
* :func:`cancellable` awaits a library's coroutine in a task of its own and the caller in
  ``asyncio.wait``, so a cancellation of the caller always arrives, whatever the library does
  with it (aiomqtt's ``publish`` and ``subscribe`` use 3.11's ``wait_for`` inside). Checking
  ``Task.cancelling()`` instead is not reliable on 3.11: a ``TaskGroup`` whose child failed
  while it waited leaves its parent's count raised for good (fixed in 3.12).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await ``aw`` for at most ``timeout`` seconds (None: no limit).

    Raises ``TimeoutError`` after ``timeout`` (``aw`` is cancelled first, as with
    ``asyncio.wait_for``), and ``CancelledError`` whenever the caller is cancelled, even when
    ``aw`` finished in the same loop iteration (unlike ``asyncio.wait_for`` on Python 3.11)."""
    async with asyncio.timeout(timeout):
        return await aw


async def cancellable(aw: Awaitable[T]) -> T:
    """Await ``aw`` (a coroutine or future) so that cancelling the caller always raises
    ``CancelledError`` in the caller, and cancels ``aw`` too.

    ``aw`` runs as its own task; the caller waits in ``asyncio.wait``, whose internal future
    carries the caller's cancellation even when ``aw`` swallows its own. Returns ``aw``'s
    result or raises its exception."""
    inner = asyncio.ensure_future(aw)
    try:
        await asyncio.wait({inner})
    finally:
        if not inner.done():
            inner.cancel()
    return inner.result()
