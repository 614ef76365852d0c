"""The signaling endpoint, GET /rtc/{room} (WebSocket), and the lifetime of this node's rooms."""

from __future__ import annotations

import weakref
from typing import AsyncIterator

from aiohttp import web

from signaling.protocol import MAX_FRAME_BYTES
from signaling.registry import RoomRegistry
from signaling.session import CLOSE_GOING_AWAY, Session, SessionLimits
from telemed.api.context import BUS, SETTINGS, TOKENS

ROOMS = web.AppKey("rooms", RoomRegistry)
SOCKETS = web.AppKey("signaling_sockets", weakref.WeakSet)
LIMITS = web.AppKey("signaling_limits", SessionLimits)


def ice_servers(urls: tuple[str, ...]) -> list[dict[str, object]]:
    return [{"urls": [url]} for url in urls]


async def signaling(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=15.0, max_msg_size=MAX_FRAME_BYTES)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    session = Session(ws, request.match_info["room"], request.app[ROOMS], request.app[TOKENS],
                      ice_servers(request.app[SETTINGS].ice_servers), request.app[LIMITS])
    await session.run()
    return ws


async def _rooms(app: web.Application) -> AsyncIterator[None]:
    registry = RoomRegistry()
    app[ROOMS] = registry
    await registry.start(app[BUS])
    yield
    await registry.close()


async def _close_sockets(app: web.Application) -> None:
    """Open WebSockets would hold shutdown for the whole grace time; say goodbye first."""
    for ws in list(app[SOCKETS]):
        await ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")


def setup(app: web.Application) -> None:
    app[SOCKETS] = weakref.WeakSet()
    app[LIMITS] = SessionLimits()
    app.router.add_get("/rtc/{room}", signaling)
    app.cleanup_ctx.append(_rooms)
    app.on_shutdown.append(_close_sockets)
