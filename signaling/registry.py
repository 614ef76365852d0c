"""The rooms of this node: made on first join, reaped when empty, closed when their consult ends.

The registry owns two tasks (the reaper and the consult follower) and each room's media;
`close()` cancels and awaits the tasks, then closes every room so each participant is told,
and waits until every room's media connections are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from functools import partial
from typing import Any, Callable, Protocol

from signaling.media import RecordingPlace, RoomMedia
from signaling.room import RESUME_GRACE_SECONDS, Grant, Participant, Room
from signaling.sfu import SfuConfig
from telemed.bus import Bus

log = logging.getLogger(__name__)

CONSULT_EVENTS = "consults"
ROOM_ENDING_STATES = frozenset({"reported", "closed", "cancelled", "declined"})


class Sink(Protocol):
    """Where a participant's messages go: its live session."""

    def send(self, message: dict[str, Any]) -> None: ...

    def end(self, code: int, reason: str) -> None: ...


class RoomRegistry:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 resume_grace: float = RESUME_GRACE_SECONDS, reap_interval: float = 1.0,
                 media_config: SfuConfig | None = None,
                 recordings: RecordingPlace | None = None) -> None:
        self.rooms: dict[str, Room] = {}
        self.media: dict[str, RoomMedia] = {}
        self.sinks: dict[str, Sink] = {}
        self.clock = clock
        self.resume_grace = resume_grace
        self.reap_interval = reap_interval
        self.media_config = media_config or SfuConfig()
        self.recordings = recordings
        self._tasks: list[asyncio.Task] = []
        self._closing: set[asyncio.Task] = set()
        self.http_resources: dict[str, tuple[str, str]] = {}
        """WHIP/WHEP resource id -> (room id, participant id): participants without a socket,
        who stay as long as their connection does or until the client deletes the resource."""

    def room(self, room_id: str, kind: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            room = Room(room_id, kind, self.deliver, self.resume_grace)
            self.rooms[room_id] = room
            self.media[room_id] = RoomMedia(room, self.media_config, self.deliver,
                                            on_failed=partial(self._connection_failed, room),
                                            recordings=self.recordings)
        return room

    def join_http(self, room: Room, grant: Grant) -> tuple[str, Participant]:
        """Seat a WHIP publisher or WHEP player; returns its unguessable resource id."""
        participant, replaced = room.join(grant)
        if replaced is not None:
            self.gone(room, replaced, 1008, "joined from another connection")
        resource = secrets.token_urlsafe(18)
        self.http_resources[resource] = (room.id, participant.id)
        return resource, participant

    def leave(self, room: Room, participant_id: str, reason: str = "left") -> None:
        """A participant without a socket goes; `reason` is told to the room."""
        participant = room.participants.get(participant_id)
        if participant is not None:
            room.leave(participant_id, reason)
            self.gone(room, participant, 1000, reason)

    def _connection_failed(self, room: Room, participant_id: str) -> None:
        if (room.id, participant_id) in self.http_resources.values():
            self.leave(room, participant_id, "connection_failed")

    def _forget(self, room_id: str) -> None:
        """The room is over: its media closes in a task the registry awaits on shutdown."""
        self.rooms.pop(room_id, None)
        media = self.media.pop(room_id, None)
        if media is not None:
            task = asyncio.create_task(media.close(), name=f"media-close-{room_id}")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def deliver(self, participant_id: str, message: dict[str, Any]) -> None:
        sink = self.sinks.get(participant_id)
        if sink is not None:
            sink.send(message)

    def attach(self, participant_id: str, sink: Sink) -> None:
        self.sinks[participant_id] = sink

    def detach(self, participant_id: str, sink: Sink) -> None:
        if self.sinks.get(participant_id) is sink:
            del self.sinks[participant_id]

    def gone(self, room: Room, participant: Participant, code: int, reason: str) -> None:
        """A participant left the room for good: end its session and free its media."""
        sink = self.sinks.pop(participant.id, None)
        if sink is not None:
            sink.end(code, reason)
        for resource, (_, participant_id) in list(self.http_resources.items()):
            if participant_id == participant.id:
                del self.http_resources[resource]
        if room.empty:
            self._forget(room.id)
        elif room.id in self.media:
            self.media[room.id].changed()

    def close_room(self, room_id: str, reason: str) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        for participant in room.close():
            self.gone(room, participant, 1000, reason)
        self._forget(room_id)

    def reap(self) -> None:
        now = self.clock()
        for room in list(self.rooms.values()):
            for participant in room.expire(now):
                self.gone(room, participant, 1000, "seat expired")
            if room.empty:
                self._forget(room.id)

    async def start(self, bus: Bus) -> None:
        subscription = await bus.subscribe(CONSULT_EVENTS)
        self._tasks = [asyncio.create_task(self._reap_forever(), name="rooms-reaper"),
                       asyncio.create_task(self._follow_consults(subscription), name="rooms-follow")]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for room_id in list(self.rooms):
            self.close_room(room_id, "server shutting down")
        for room_id in list(self.media):
            self._forget(room_id)
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                self.reap()
            except Exception:
                log.exception("reaping rooms failed")

    async def _follow_consults(self, subscription: Any) -> None:
        """Close a consult's room when the consult is reported, closed or called off."""
        async with subscription:
            while True:
                message = await subscription.get()
                if message is None:
                    continue
                try:
                    if message.get("state") in ROOM_ENDING_STATES:
                        self.close_room(str(message.get("consult_id")),
                                        f"the consult is {message['state']}")
                except Exception:
                    log.exception("handling consult event %r failed", message)
