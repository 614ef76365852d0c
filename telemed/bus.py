"""The message bus: pub/sub for events, streams with consumer groups for work that must not
be lost. One interface, an in-process implementation (the embedded default) and a Redis one
(scale-out, as LiveKit routes rooms across nodes); the same contract tests run on both.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import redis.asyncio as aioredis

Message = dict[str, Any]


class Subscription(ABC):
    """Messages of one channel from the moment subscribe() returned, in publish order."""

    @abstractmethod
    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None when timeout (seconds) passes first."""

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[Message]:
        while True:
            message = await self.get()
            if message is not None:
                yield message


class Bus(ABC):
    @abstractmethod
    async def publish(self, channel: str, message: Message) -> None: ...

    @abstractmethod
    async def subscribe(self, channel: str) -> Subscription: ...

    @abstractmethod
    async def append(self, stream: str, message: Message) -> str:
        """Add durable work; returns its id."""

    @abstractmethod
    async def read_group(self, stream: str, group: str, consumer: str, count: int = 10,
                         block_ms: int = 0, pending: bool = False) -> list[tuple[str, Message]]:
        """New messages for this group (each goes to one consumer), or with pending=True the
        ones this consumer was given and has not acknowledged (re-delivery after a crash)."""

    @abstractmethod
    async def ack(self, stream: str, group: str, *ids: str) -> int: ...

    @abstractmethod
    async def ping(self) -> bool: ...

    @abstractmethod
    async def close(self) -> None: ...


class _LocalSubscription(Subscription):
    def __init__(self, bus: "LocalBus", channel: str) -> None:
        self._bus = bus
        self._channel = channel
        self._queue: asyncio.Queue[Message] = asyncio.Queue()

    def deliver(self, message: Message) -> None:
        self._queue.put_nowait(message)

    async def get(self, timeout: float | None = None) -> Message | None:
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        self._bus._subscribers[self._channel].discard(self)


@dataclass
class _Group:
    next_index: int = 0
    pending: dict[str, str] = field(default_factory=dict)


@dataclass
class _Stream:
    entries: list[tuple[str, Message]] = field(default_factory=list)
    groups: dict[str, _Group] = field(default_factory=dict)
    grown: asyncio.Event = field(default_factory=asyncio.Event)


class LocalBus(Bus):
    """In-process: messages are JSON round-tripped so both implementations carry the same data."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[_LocalSubscription]] = defaultdict(set)
        self._streams: dict[str, _Stream] = defaultdict(_Stream)
        self._ids = itertools.count(1)

    async def publish(self, channel: str, message: Message) -> None:
        encoded = json.dumps(message)
        for subscription in list(self._subscribers[channel]):
            subscription.deliver(json.loads(encoded))

    async def subscribe(self, channel: str) -> Subscription:
        subscription = _LocalSubscription(self, channel)
        self._subscribers[channel].add(subscription)
        return subscription

    async def append(self, stream: str, message: Message) -> str:
        entry_id = f"{next(self._ids)}-0"
        state = self._streams[stream]
        state.entries.append((entry_id, json.loads(json.dumps(message))))
        state.grown.set()
        state.grown = asyncio.Event()
        return entry_id

    async def read_group(self, stream: str, group: str, consumer: str, count: int = 10,
                         block_ms: int = 0, pending: bool = False) -> list[tuple[str, Message]]:
        state = self._streams[stream]
        cursor = state.groups.setdefault(group, _Group())
        if pending:
            return [(i, m) for i, m in state.entries if cursor.pending.get(i) == consumer][:count]
        if cursor.next_index >= len(state.entries) and block_ms > 0:
            try:
                await asyncio.wait_for(state.grown.wait(), block_ms / 1000)
            except asyncio.TimeoutError:
                return []
        batch = state.entries[cursor.next_index:cursor.next_index + count]
        cursor.next_index += len(batch)
        for entry_id, _ in batch:
            cursor.pending[entry_id] = consumer
        return batch

    async def ack(self, stream: str, group: str, *ids: str) -> int:
        cursor = self._streams[stream].groups.setdefault(group, _Group())
        return sum(cursor.pending.pop(i, None) is not None for i in ids)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._subscribers.clear()


class _RedisSubscription(Subscription):
    def __init__(self, pubsub: aioredis.client.PubSub) -> None:
        self._pubsub = pubsub

    async def get(self, timeout: float | None = None) -> Message | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            raw = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                 timeout=remaining if remaining is not None else 1.0)
            if raw is not None and raw["type"] == "message":
                return json.loads(raw["data"])
            if deadline is not None and loop.time() >= deadline:
                return None

    async def close(self) -> None:
        await self._pubsub.aclose()


class RedisBus(Bus):
    def __init__(self, url: str) -> None:
        self._redis = aioredis.Redis.from_url(url, decode_responses=True,
                                              health_check_interval=15)

    async def publish(self, channel: str, message: Message) -> None:
        await self._redis.publish(channel, json.dumps(message))

    async def subscribe(self, channel: str) -> Subscription:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(channel)
        while True:
            confirmation = await pubsub.get_message(timeout=5.0)
            if confirmation is None:
                await pubsub.aclose()
                raise ConnectionError(f"redis did not confirm the subscription to {channel!r}")
            if confirmation["type"] == "subscribe":
                return _RedisSubscription(pubsub)

    async def append(self, stream: str, message: Message) -> str:
        return await self._redis.xadd(stream, {"json": json.dumps(message)})

    async def _ensure_group(self, stream: str, group: str) -> None:
        try:
            await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_group(self, stream: str, group: str, consumer: str, count: int = 10,
                         block_ms: int = 0, pending: bool = False) -> list[tuple[str, Message]]:
        await self._ensure_group(stream, group)
        reply = await self._redis.xreadgroup(group, consumer, {stream: "0" if pending else ">"},
                                             count=count, block=None if pending else block_ms or None)
        return [(entry_id, json.loads(fields["json"]))
                for _, entries in reply or [] for entry_id, fields in entries if fields]

    async def ack(self, stream: str, group: str, *ids: str) -> int:
        return await self._redis.xack(stream, group, *ids) if ids else 0

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def create_bus(redis_url: str | None) -> Bus:
    """The bus the settings ask for, chosen once at start-up."""
    return RedisBus(redis_url) if redis_url else LocalBus()
