"""The signaling endpoint, GET /rtc/{room} (WebSocket), and the lifetime of this node's rooms."""

from __future__ import annotations

from typing import AsyncIterator

from aiohttp import web

from signaling.protocol import MAX_FRAME_BYTES
from signaling.registry import RoomRegistry
from signaling.session import Session, SessionLimits
from telemed.api.context import BUS, SETTINGS, TOKENS, open_websocket

ROOMS = web.AppKey("rooms", RoomRegistry)
LIMITS = web.AppKey("signaling_limits", SessionLimits)


def ice_servers(urls: tuple[str, ...]) -> list[dict[str, object]]:
    return [{"urls": [url]} for url in urls]


async def signaling(request: web.Request) -> web.WebSocketResponse:
    ws = await open_websocket(request, web.WebSocketResponse(heartbeat=15.0,
                                                             max_msg_size=MAX_FRAME_BYTES))
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


def setup(app: web.Application) -> None:
    app[LIMITS] = SessionLimits()
    app.router.add_get("/rtc/{room}", signaling)
    app.cleanup_ctx.append(_rooms)
