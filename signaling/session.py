"""One signaling WebSocket: the single reader of its socket and the owner of its writer task.

The session turns frames into protocol messages, checks the room token on join, and applies
messages to the room; the room answers through the registry, which hands messages back to the
session's bounded outgoing queue. A slow or flooding client is cut off; the room is not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import WSMsgType, web

from signaling import protocol as p
from signaling.protocol import ErrorCode, ProtocolError, event
from signaling.ratelimit import TokenBucket
from signaling.media import RoomMedia
from signaling.registry import RoomRegistry
from signaling.room import Grant, Participant, Room
from telemed.auth import TokenError, TokenService

log = logging.getLogger(__name__)

CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_POLICY = 1000, 1001, 1008


@dataclass(frozen=True)
class SessionLimits:
    join_timeout: float = 10.0
    rate: float = 20.0
    burst: float = 60.0
    max_rate_errors: int = 50
    outgoing_queue: int = 1000


class Session:
    def __init__(self, ws: web.WebSocketResponse, room_id: str, registry: RoomRegistry,
                 tokens: TokenService, ice_servers: Callable[[str], list[dict[str, Any]]],
                 limits: SessionLimits = SessionLimits()) -> None:
        self.ws = ws
        self.room_id = room_id
        self.registry = registry
        self.tokens = tokens
        self.ice_servers = ice_servers
        self.limits = limits
        self.room: Room | None = None
        self.participant: Participant | None = None
        self._outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(limits.outgoing_queue)
        self._bucket = TokenBucket(limits.rate, limits.burst)
        self._rate_errors = 0
        self._close: tuple[int, str] | None = None
        self._left = False

    # -- Sink, called by the room through the registry ------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._outgoing.put_nowait(message)
        except asyncio.QueueFull:
            self.end(CLOSE_POLICY, "client is not reading its messages")

    def end(self, code: int, reason: str) -> None:
        """Close after what is queued has been written."""
        if self._close is None:
            self._close = (code, reason)
            with contextlib.suppress(asyncio.QueueFull):
                self._outgoing.put_nowait(None)

    # -- lifetime -----------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.room_id}")
        try:
            await self._read_loop()
        finally:
            self._release()
            self.end(CLOSE_NORMAL, "bye")
            try:
                await asyncio.wait_for(writer, 5)
            except (asyncio.TimeoutError, ConnectionError):
                await self.ws.close(code=CLOSE_GOING_AWAY, message=b"write timeout")

    def _release(self) -> None:
        """The socket is gone: keep the seat for resume unless the participant left for good."""
        if self.participant is None or self.room is None:
            return
        if self.registry.sinks.get(self.participant.id) is not self:
            return  # the seat was resumed or replaced by another connection, or it is gone
        self.registry.detach(self.participant.id, self)
        if not self._left:
            self.room.disconnect(self.participant.id, self.registry.clock())
            if self.participant.id not in self.room.participants:
                self.registry.gone(self.room, self.participant, CLOSE_NORMAL, "left")

    async def _write_loop(self) -> None:
        """Write queued messages; on the end marker close the socket, which also wakes the
        reader (it may be waiting for a frame when the room ends this session)."""
        while True:
            message = await self._outgoing.get()
            if message is None or self.ws.closed:
                break
            try:
                await self.ws.send_str(p.encode(message))
            except (ConnectionError, RuntimeError):
                break
        code, reason = self._close or (CLOSE_NORMAL, "bye")
        await self.ws.close(code=code, message=reason.encode()[:120])

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.join_timeout
        while self._close is None:
            timeout = None if self.participant else max(0.0, deadline - loop.time())
            try:
                frame = await self.ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                self._refuse(ProtocolError(ErrorCode.NOT_JOINED, "send 'join' first"))
                return
            if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if not self._bucket.allow(loop.time()):
                self._rate_errors += 1
                if self._rate_errors > self.limits.max_rate_errors:
                    self.end(CLOSE_POLICY, "too many messages")
                    return
                self.send(ProtocolError(ErrorCode.RATE_LIMITED, "slow down").as_message())
                continue
            try:
                if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    raise ProtocolError(ErrorCode.BAD_MESSAGE, "send JSON text frames")
                await self._handle(p.parse(frame.data))
            except ProtocolError as exc:
                self.send(exc.as_message())
            except Exception:
                log.exception("signaling message in room %s failed", self.room_id)
                self.send(ProtocolError(ErrorCode.INTERNAL, "the server failed to handle this "
                                        "message; the room is unchanged").as_message())

    # -- messages -----------------------------------------------------------------------------

    async def _handle(self, message: p.ClientMessage) -> None:
        if isinstance(message, p.Join):
            self._join(message)
            return
        if isinstance(message, p.Ping):
            self.send(event("pong"))
            return
        if self.participant is None or self.room is None:
            raise ProtocolError(ErrorCode.NOT_JOINED, "send 'join' first", message.type)
        room, me = self.room, self.participant.id
        now = self.registry.clock()
        if isinstance(message, p.Leave):
            self._left = True
            room.leave(me)
            self.registry.gone(room, self.participant, CLOSE_NORMAL, "left")
        elif isinstance(message, p.Chat):
            room.chat(me, message.text, at=now)
        elif isinstance(message, p.Annotate):
            room.annotate(me, message.payload)
        elif isinstance(message, p.ShareView):
            room.share_view(me, {k: v for k, v in p.as_dict(message).items() if k != "type"})
        elif isinstance(message, p.Admit):
            room.admit(me, message.participant_id)
        elif isinstance(message, p.Remove):
            removed = room.remove(me, message.participant_id)
            self.registry.gone(room, removed, CLOSE_NORMAL, "removed by the host")
        elif isinstance(message, p.MuteParticipant):
            room.mute_participant(me, message.participant_id, message.kind)
        elif isinstance(message, p.SetPresenter):
            room.set_presenter(me, message.participant_id)
        elif isinstance(message, p.Lock):
            room.lock(me, message.locked)
        elif isinstance(message, p.Record):
            room.set_recording(me, message.on)
        elif isinstance(message, p.Mute):
            room.mute(me, message.track_id, message.muted)
        elif isinstance(message, p.Unpublish):
            room.unpublish(me, message.track_id)
        elif isinstance(message, p.Subscribe):
            added = room.subscribe(me, message.track_ids)
            self.send(event("subscribed", track_ids=[s.track_id for s in added]))
        elif isinstance(message, p.Unsubscribe):
            removed = room.unsubscribe(me, message.track_ids)
            self.send(event("unsubscribed", track_ids=[s.track_id for s in removed]))
        elif isinstance(message, p.Offer):
            self.send(event("answer", sdp=await self._media.publisher_offer(me, message.sdp)))
        elif isinstance(message, p.Answer):
            await self._media.subscriber_answer(me, message.sdp)
        elif isinstance(message, p.Candidate):
            await self._media.candidate(me, message.target, message.candidate, message.sdp_mid,
                                        message.sdp_mline_index)
        self._media.changed()

    @property
    def _media(self) -> RoomMedia:
        media = self.registry.media.get(self.room_id)
        if media is None:
            raise ProtocolError(ErrorCode.ROOM_CLOSED, "this room is closed")
        return media

    def _refuse(self, error: ProtocolError) -> None:
        """Say why, then close: an unauthenticated socket gets no second try."""
        self.send(error.as_message())
        self.end(CLOSE_POLICY, error.code.value)

    def _join(self, message: p.Join) -> None:
        if self.participant is not None:
            raise ProtocolError(ErrorCode.ALREADY_JOINED, "this connection has joined already", "join")
        try:
            claims = self.tokens.decode(message.token, "room")
        except TokenError as exc:
            self._refuse(ProtocolError(ErrorCode.UNAUTHORIZED, str(exc), "join"))
            return
        if self.room_id not in claims.grants.rooms:
            self._refuse(ProtocolError(ErrorCode.FORBIDDEN, "the token does not grant this room", "join"))
            return
        room = self.registry.room(self.room_id, claims.grants.room_kind)
        if message.resume:
            participant = room.resume(message.resume, claims.subject, self.registry.clock())
            stale = self.registry.sinks.get(participant.id)
            if stale is not None:
                self.registry.detach(participant.id, stale)
                stale.end(CLOSE_POLICY, "resumed from another connection")
            replaced = None
        else:
            grant = Grant(identity=claims.subject, name=claims.name, is_host=claims.grants.room_admin,
                          is_guest=claims.role == "guest", can_publish=claims.grants.can_publish,
                          can_subscribe=claims.grants.can_subscribe)
            participant, replaced = room.join(grant)
        if replaced is not None:
            self.registry.gone(room, replaced, CLOSE_POLICY, "joined from another connection")
        self.room, self.participant = room, participant
        self.registry.attach(participant.id, self)
        self.send(event("joined", participant_id=participant.id, resume_token=participant.resume_token,
                        state=participant.state, ice_servers=self.ice_servers(claims.subject),
                        **(room.snapshot() if participant.state == "active" else {"room": room.id})))
        if message.resume:
            self._media.resumed(participant.id)
