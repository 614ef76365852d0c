"""A real application serving signaling, and clients that join it with minted room tokens."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType

from signaling.routes import LIMITS, ROOMS
from signaling.session import SessionLimits
from telemed.api.context import TOKENS
from telemed.app import create_app
from telemed.auth import Claims, Grants
from telemed.settings import Settings


@dataclass
class Peer:
    ws: ClientWebSocketResponse
    joined: dict[str, Any] | None = None

    async def send(self, **message: Any) -> None:
        await self.ws.send_str(json.dumps(message))

    async def next(self, type_: str | None = None, timeout: float = 3.0) -> dict[str, Any]:
        """The next message (of that type, skipping others)."""
        while True:
            frame = await asyncio.wait_for(self.ws.receive(), timeout)
            if frame.type != WSMsgType.TEXT:
                raise AssertionError(f"socket ended: {frame.type} {frame.data!r} {frame.extra!r}")
            message = json.loads(frame.data)
            if type_ is None or message["type"] == type_:
                return message

    async def closed(self, timeout: float = 3.0) -> int:
        """Drain until the server closes; returns the code of the server's close frame."""
        while True:
            frame = await asyncio.wait_for(self.ws.receive(), timeout)
            if frame.type is WSMsgType.CLOSE:
                return frame.data
            if frame.type in (WSMsgType.CLOSED, WSMsgType.CLOSING):
                return self.ws.close_code


@dataclass
class Signaling:
    client: Any

    def token(self, subject: str, room: str = "room-1", *, host: bool = False, guest: bool = False,
              publish: bool = True, kind: str = "consult", ttl: int | None = None) -> str:
        grants = Grants(rooms=(room,), can_publish=publish, can_subscribe=True, patients=("P-1",),
                        room_admin=host, room_kind=kind)
        claims = Claims(subject=subject, scope="room", role="guest" if guest else "expert",
                        name=subject.title(), institution_id=None, grants=grants)
        return self.client.app[TOKENS].issue(claims, ttl_seconds=ttl)

    async def connect(self, room: str = "room-1") -> Peer:
        return Peer(await self.client.ws_connect(f"/rtc/{room}"))

    async def join(self, subject: str, room: str = "room-1", **grants: Any) -> Peer:
        peer = await self.connect(room)
        await peer.send(type="join", token=self.token(subject, room, **grants))
        peer.joined = await peer.next("joined")
        return peer

    @property
    def rooms(self):
        return self.client.app[ROOMS]


@pytest.fixture
async def signaling(tmp_path, aiohttp_client) -> Signaling:
    app = create_app(Settings(data_dir=tmp_path, secret_key="s" * 48))
    app[LIMITS] = SessionLimits(join_timeout=0.5, rate=50, burst=20, max_rate_errors=30)
    return Signaling(await aiohttp_client(app))
