"""Cancellation that cannot be lost (``engine.core.aio``, CPython gh-86296).

The show's shutdown hung in CI (``test_systemctl_stop_of_a_show_says_offline``, exit 143 after
the 10 s hard exit): the MQTT writer's QoS-1 publish got its PUBACK in the same loop iteration
as SIGTERM's cancel, Python 3.11's ``asyncio.wait_for`` inside aiomqtt returned the result
instead of ``CancelledError``, the writer looped on, and its TaskGroup and the supervisor waited
for it forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dreamstate.engine.core.aio import cancellable, wait_for
from dreamstate.engine.runtime import Stage, Supervisor


async def _cancel_as_the_result_lands(wait: Callable[[Awaitable[Any], float], Awaitable[Any]]) -> Any:
    """Start ``wait(fut, 10)``, then resolve ``fut`` and cancel the waiting task in one step."""
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(wait(fut, 10.0))
    await asyncio.sleep(0)  # the task now waits
    fut.set_result(1)
    task.cancel()
    return await task


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the race was fixed in CPython 3.12")
async def test_the_race_is_real_with_the_stdlib_wait_for_on_311() -> None:
    assert await _cancel_as_the_result_lands(asyncio.wait_for) == 1  # the cancellation was lost


async def test_our_wait_for_keeps_a_cancel_that_lands_with_the_result() -> None:
    with pytest.raises(asyncio.CancelledError):
        await _cancel_as_the_result_lands(wait_for)


async def test_our_wait_for_times_out_and_returns_like_the_stdlib() -> None:
    assert await wait_for(asyncio.sleep(0, result=7), 1.0) == 7
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.sleep(10), 0.05)


async def test_cancellable_delivers_the_cancel_a_library_swallows() -> None:
    """aiomqtt's publish waits with 3.11's wait_for: wrapped in ``cancellable``, the caller is
    cancelled even when the inner wait_for keeps the result."""

    async def library_call(fut: Awaitable[Any], timeout: float) -> Any:
        return await cancellable(asyncio.wait_for(fut, timeout))  # the library's own wait

    with pytest.raises(asyncio.CancelledError):
        await _cancel_as_the_result_lands(library_call)


async def test_cancellable_cancels_and_delivers_even_for_a_deaf_coroutine() -> None:
    events: list[str] = []

    async def deaf() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:  # swallowed on purpose
            events.append("inner cancelled")
        return 5

    task = asyncio.create_task(cancellable(deaf()))
    for _ in range(3):
        await asyncio.sleep(0)  # the inner task now sleeps
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert events == ["inner cancelled"]
    assert await cancellable(asyncio.sleep(0, result=3)) == 3


async def test_a_stage_that_lost_its_cancellation_does_not_hang_the_shutdown(
        caplog: pytest.LogCaptureFixture) -> None:
    """The supervisor cancels a stage's task once and waits a bounded time; before, it waited in
    ``wait_for`` forever for a task that had lost the cancellation."""
    release = asyncio.Event()

    class Deaf(Stage):
        name = "deaf"

        async def run(self) -> None:
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):  # as 3.11's wait_for may do
                    await asyncio.sleep(10)

    sup = Supervisor([Deaf()], shutdown_timeout=0.4)
    task = asyncio.create_task(sup.run(handle_signals=False))
    await asyncio.sleep(0.05)
    try:
        with caplog.at_level(logging.WARNING, "dreamstate.runtime"):
            sup.request_stop()
            await asyncio.wait_for(task, timeout=3.0)
    finally:
        release.set()  # the deaf task ends at its next wake-up
    assert sup.counters.get("deaf.cancel_ignored") == 1
    assert any("stage deaf did not end" in r.getMessage() and "test_aio.py" in r.getMessage()
               for r in caplog.records)
