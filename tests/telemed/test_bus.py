"""One contract, two buses: the in-process one and Redis (a real redis-server)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from telemed.bus import Bus, LocalBus, RedisBus, create_bus


@pytest.fixture(params=["local", "redis"])
async def bus(request) -> Bus:
    if request.param == "local":
        instance: Bus = LocalBus()
    else:
        instance = RedisBus(request.getfixturevalue("redis_url"))
    yield instance
    await instance.close()


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_publish_reaches_every_subscriber_in_order(bus):
    channel = name("room")
    first, second = await bus.subscribe(channel), await bus.subscribe(channel)
    other = await bus.subscribe(name("elsewhere"))
    for i in range(20):
        await bus.publish(channel, {"n": i, "text": "ST elevation ✓"})
    for subscription in (first, second):
        got = [await subscription.get(2.0) for _ in range(20)]
        assert [m["n"] for m in got] == list(range(20))
        assert got[0]["text"] == "ST elevation ✓"
    assert await other.get(0.2) is None
    for subscription in (first, second, other):
        await subscription.close()


async def test_closed_subscription_stops_receiving(bus):
    channel = name("room")
    staying, leaving = await bus.subscribe(channel), await bus.subscribe(channel)
    await leaving.close()
    await bus.publish(channel, {"n": 1})
    assert (await staying.get(2.0)) == {"n": 1}
    await staying.close()


async def test_subscription_iterates_as_async_for(bus):
    channel = name("room")
    async with await bus.subscribe(channel) as subscription:
        await bus.publish(channel, {"n": 1})
        async for message in subscription:
            assert message == {"n": 1}
            break


async def test_stream_work_goes_to_one_consumer_per_group(bus):
    stream = name("work")
    ids = [await bus.append(stream, {"job": i}) for i in range(6)]
    assert len(set(ids)) == 6
    a = await bus.read_group(stream, "workers", "a", count=4)
    b = await bus.read_group(stream, "workers", "b", count=4)
    assert [m["job"] for _, m in a] == [0, 1, 2, 3] and [m["job"] for _, m in b] == [4, 5]
    audit = await bus.read_group(stream, "auditors", "x", count=10)
    assert [m["job"] for _, m in audit] == list(range(6))
    assert await bus.read_group(stream, "workers", "a", count=4) == []


async def test_unacknowledged_work_is_redelivered_to_its_consumer(bus):
    stream = name("work")
    for i in range(3):
        await bus.append(stream, {"job": i})
    taken = await bus.read_group(stream, "workers", "w1", count=3)
    assert await bus.ack(stream, "workers", taken[0][0]) == 1
    pending = await bus.read_group(stream, "workers", "w1", pending=True)
    assert [m["job"] for _, m in pending] == [1, 2]
    assert await bus.ack(stream, "workers", *[i for i, _ in pending]) == 2
    assert await bus.read_group(stream, "workers", "w1", pending=True) == []


async def test_blocking_read_wakes_on_append(bus):
    stream = name("work")
    await bus.read_group(stream, "workers", "w", count=1)
    reader = asyncio.create_task(bus.read_group(stream, "workers", "w", count=1, block_ms=3000))
    await asyncio.sleep(0.1)
    await bus.append(stream, {"job": "late"})
    got = await asyncio.wait_for(reader, 5)
    assert [m for _, m in got] == [{"job": "late"}]
    assert await bus.read_group(stream, "workers", "w", count=1, block_ms=100) == []


async def test_ping(bus):
    assert await bus.ping()


async def test_unreachable_redis_pings_false_and_factory_picks_by_url(redis_url):
    assert isinstance(create_bus(None), LocalBus)
    dead = create_bus("redis://127.0.0.1:1/0")
    assert isinstance(dead, RedisBus) and not await dead.ping()
    await dead.close()
