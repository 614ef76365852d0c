"""Typed application keys: how handlers reach what app.py set up."""

from __future__ import annotations

import weakref

from aiohttp import web

from telemed.auth import TokenService
from telemed.bus import Bus
from telemed.metrics import Metrics
from telemed.settings import Settings
from telemed.store import Database

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
BUS = web.AppKey("bus", Bus)
TOKENS = web.AppKey("tokens", TokenService)
METRICS = web.AppKey("metrics", Metrics)
WEBSOCKETS = web.AppKey("websockets", weakref.WeakSet)


async def open_websocket(request: web.Request, ws: web.WebSocketResponse) -> web.WebSocketResponse:
    """Prepare a WebSocket and track it, so shutdown can say goodbye instead of waiting."""
    await ws.prepare(request)
    request.app[WEBSOCKETS].add(ws)
    return ws


async def close_websockets(app: web.Application) -> None:
    """Open WebSockets would hold shutdown for the whole grace time (aiohttp #2200)."""
    for ws in list(app[WEBSOCKETS]):
        await ws.close(code=1001, message=b"server shutting down")
