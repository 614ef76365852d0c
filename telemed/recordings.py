"""Room recordings in the consult record: the media server announces each finished recording
on the bus, this attaches its files to the consult, and staff who may read the consult play
them back through `GET /api/consults/{id}/recordings/{file}`, audited."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

from aiohttp import web

from signaling.routes import RECORDINGS, recordings_folder
from telemed import consults
from telemed.api.context import BUS, DATABASE, SETTINGS
from telemed.api.security import authenticated
from telemed.bus import Subscription
from telemed.store import Conflict, Database

log = logging.getLogger(__name__)


async def attach_recordings(database: Database, message: dict[str, Any]) -> None:
    for name in message.get("files", []):
        try:
            await database.write(consults.add_recording, str(message["started_by"]),
                                 str(message["consult_id"]), str(name))
        except Conflict:
            pass  # announced twice (a redelivery): attached already


async def _attach_next(subscription: Subscription, database: Database,
                       timeout: float | None = None) -> bool:
    message = await subscription.get(timeout)
    if message is None:
        return False
    try:
        await attach_recordings(database, message)
    except Exception:
        log.exception("attaching recording %r failed", message)
    return True


async def _follow(subscription: Subscription, database: Database) -> None:
    while True:
        await _attach_next(subscription, database)


async def play(request: web.Request) -> web.FileResponse:
    caller = await authenticated(request)
    consult_id, name = request.match_info["id"], request.match_info["file"]
    await request.app[DATABASE].write(consults.open_recording, caller, consult_id, name)
    return web.FileResponse(recordings_folder(request.app[SETTINGS]) / consult_id / name)


async def _follower(app: web.Application) -> AsyncIterator[None]:
    """Set up before the rooms and torn down after them: recordings that rooms finish while
    the server shuts down are still attached (drained after the follower task stops)."""
    database = app[DATABASE]
    async with await app[BUS].subscribe(RECORDINGS) as subscription:
        task = asyncio.create_task(_follow(subscription, database), name="recordings-follow")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while await _attach_next(subscription, database, timeout=0.2):
            pass


def setup(app: web.Application) -> None:
    app.router.add_get("/api/consults/{id}/recordings/{file}", play)
    app.cleanup_ctx.append(_follower)
