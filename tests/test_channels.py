"""Drop policies: latest wins for slots; bounded queues count what they drop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dreamstate.engine.core.channels import BoundedQueue, Broadcast, LatestSlot


def test_latest_slot_counts_overwrites_and_versions() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.get() is None
    slot.put(1)
    slot.put(2)  # 1 was never read
    assert slot.overwritten == 1
    assert slot.get() == 2
    slot.put(3)
    assert slot.overwritten == 1
    value, version = slot.get_if_newer(0)
    assert (value, version) == (3, 3)
    assert slot.get_if_newer(version) == (None, 3)


def test_latest_slot_wakes_a_waiting_thread() -> None:
    slot: LatestSlot[str] = LatestSlot()
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(slot.wait_newer(0, timeout=2)[0]))
    t.start()
    slot.put("frame")
    t.join(timeout=2)
    assert got == ["frame"]
    assert slot.wait_newer(slot.version, timeout=0.01) == (None, 1)


async def test_bounded_queue_drops_oldest_and_counts() -> None:
    q: BoundedQueue[int] = BoundedQueue(3, name="control")
    for i in range(5):
        q.put_nowait(i)
    assert q.dropped == 2
    assert [await q.get() for _ in range(3)] == [2, 3, 4]


async def test_bounded_queue_drop_newest_keeps_old_items() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, drop="newest")
    assert q.put_nowait(1) and q.put_nowait(2)
    assert not q.put_nowait(3)
    assert q.drain() == [1, 2]
    assert q.dropped == 1


async def test_bounded_queue_get_waits_for_an_item() -> None:
    q: BoundedQueue[str] = BoundedQueue(1)
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    q.put_nowait("x")
    assert await asyncio.wait_for(waiter, 1) == "x"


def test_bounded_queue_rejects_zero_size() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        BoundedQueue(0)


async def test_broadcast_gives_each_subscriber_its_own_lossy_queue() -> None:
    b: Broadcast[int] = Broadcast("readings")
    fast = b.subscribe(10, name="fast")
    slow = b.subscribe(2, name="slow")
    for i in range(5):
        b.publish(i)
    assert fast.drain() == [0, 1, 2, 3, 4]
    assert slow.drain() == [3, 4]
    assert b.dropped == {"fast": 0, "slow": 3}
