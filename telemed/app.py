"""The composition root: the only place that builds the store, bus and token service and wires
the HTTP API, each entering and leaving through cleanup_ctx in a known order."""

from __future__ import annotations

import os
import secrets
import weakref
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

import diagnosis.dicom.dicomweb
import diagnosis.dicom.ingest
import diagnosis.dicom.scp
import diagnosis.dicom.series_socket
import diagnosis.ecg.routes
import signaling.routes
import signaling.whip
from telemed import recordings
from telemed.api import accounts, audit, consults, health, referrals
from telemed.api.context import (BUS, DATABASE, METRICS, SETTINGS, TOKENS, WEBSOCKETS,
                                 close_websockets)
from telemed.api.problems import problem_middleware
from telemed.auth import TokenService
from telemed.bus import create_bus
from telemed.metrics import Metrics
from telemed.settings import Settings
from telemed.store import Database


def load_or_create_secret(settings: Settings) -> str:
    """The token-signing secret: from settings, else a file in the data folder made once (0600).
    Nodes of a cluster must share it, so set TELEMED_SECRET_KEY there."""
    if settings.secret_key:
        return settings.secret_key
    path: Path = settings.secret_key_path
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret)
    return secret


async def _database(app: web.Application) -> AsyncIterator[None]:
    database = Database(app[SETTINGS].database_path)
    await database.open()
    app[DATABASE] = database
    yield
    await database.close()


async def _bus(app: web.Application) -> AsyncIterator[None]:
    bus = create_bus(app[SETTINGS].redis_url)
    app[BUS] = bus
    yield
    await bus.close()


WEB_ROOT = Path(__file__).resolve().parents[1] / "web"


def _serve_client(app: web.Application) -> None:
    """The browser client: static ES modules from web/, the page at /."""
    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_ROOT / "index.html")

    app.router.add_get("/", index)
    app.router.add_static("/web/", WEB_ROOT)


def create_app(settings: Settings) -> web.Application:
    metrics = Metrics()
    app = web.Application(client_max_size=settings.max_body_bytes,
                          middlewares=[metrics.middleware(), problem_middleware])
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[TOKENS] = TokenService(load_or_create_secret(settings), settings.token_ttl_seconds)
    app[WEBSOCKETS] = weakref.WeakSet()
    app.on_shutdown.append(close_websockets)
    app.cleanup_ctx.extend([_database, _bus])
    for routes in (health, accounts, consults, referrals, audit, recordings, signaling.routes,
                   signaling.whip, diagnosis.ecg.routes, diagnosis.dicom.ingest,
                   diagnosis.dicom.dicomweb, diagnosis.dicom.series_socket, diagnosis.dicom.scp):
        routes.setup(app)
    _serve_client(app)
    return app
