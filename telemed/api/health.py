"""Liveness and metrics for operators."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from telemed import __version__
from telemed.api.context import BUS, DATABASE, METRICS, SETTINGS


def _count_staff(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM staff").fetchone()[0]


async def healthz(request: web.Request) -> web.Response:
    """200 while the database answers; the bus is reported, not fatal (a Redis outage must not
    make a load balancer drop every node at once)."""
    try:
        await request.app[DATABASE].read(_count_staff)
    except Exception as exc:
        return web.json_response({"status": "unavailable", "database": str(exc)}, status=503)
    bus_ok = await request.app[BUS].ping()
    return web.json_response({
        "status": "ok" if bus_ok else "degraded", "version": __version__, "database": "ok",
        "bus": ("redis" if request.app[SETTINGS].redis_url else "local") if bus_ok else "unreachable",
    })


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].exposition(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
