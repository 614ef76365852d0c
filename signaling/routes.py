"""The signaling endpoint, GET /rtc/{room} (WebSocket), and the lifetime of this node's rooms."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from functools import partial
from typing import AsyncIterator

from aiohttp import web

from signaling.protocol import MAX_FRAME_BYTES
from signaling.media import RecordingPlace
from signaling.registry import RoomRegistry
from signaling.session import Session, SessionLimits
from signaling.sfu import IceConfig, SfuConfig
from telemed.api.context import BUS, SETTINGS, TOKENS, open_websocket
from telemed.settings import Settings

ROOMS = web.AppKey("rooms", RoomRegistry)
LIMITS = web.AppKey("signaling_limits", SessionLimits)


def ice_servers(settings: Settings, identity: str,
                now: float | None = None) -> list[dict[str, object]]:
    """STUN/TURN servers for one participant. With `turn_secret` set, TURN entries carry
    time-limited credentials in coturn's use-auth-secret scheme (the TURN REST API draft):
    username "expiry:identity", credential base64(HMAC-SHA1(secret, username))."""
    expiry = int((time.time() if now is None else now) + settings.turn_credential_ttl_seconds)
    servers: list[dict[str, object]] = []
    for url in settings.ice_servers:
        server: dict[str, object] = {"urls": [url]}
        if url.startswith(("turn:", "turns:")) and settings.turn_secret:
            username = f"{expiry}:{identity}"
            digest = hmac.new(settings.turn_secret.encode(), username.encode(), hashlib.sha1)
            server.update(username=username, credential=base64.b64encode(digest.digest()).decode())
        servers.append(server)
    return servers


async def signaling(request: web.Request) -> web.WebSocketResponse:
    ws = await open_websocket(request, web.WebSocketResponse(heartbeat=15.0,
                                                             max_msg_size=MAX_FRAME_BYTES))
    session = Session(ws, request.match_info["room"], request.app[ROOMS], request.app[TOKENS],
                      partial(ice_servers, request.app[SETTINGS]), request.app[LIMITS])
    await session.run()
    return ws


def media_config(settings: Settings) -> SfuConfig:
    return SfuConfig(ice=IceConfig(addresses=settings.media_addresses),
                     max_bitrate=settings.rtc_max_bitrate)


RECORDINGS = "recordings"
"""Bus channel: a room's recording is complete; the consult workflow attaches its files."""


def recordings_folder(settings: Settings) -> Path:
    return settings.data_dir / "recordings"


async def _rooms(app: web.Application) -> AsyncIterator[None]:
    bus = app[BUS]

    async def recorded(room_id: str, started_by: str, files: list[str]) -> None:
        await bus.publish(RECORDINGS, {"consult_id": room_id, "started_by": started_by,
                                       "files": files})

    registry = RoomRegistry(media_config=media_config(app[SETTINGS]),
                            recordings=RecordingPlace(recordings_folder(app[SETTINGS]), recorded))
    app[ROOMS] = registry
    await registry.start(app[BUS])
    yield
    await registry.close()


def setup(app: web.Application) -> None:
    app[LIMITS] = SessionLimits()
    app.router.add_get("/rtc/{room}", signaling)
    app.cleanup_ctx.append(_rooms)
