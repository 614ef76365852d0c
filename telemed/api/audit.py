"""The audit trail for administrators: entries, and a check that the chain is intact."""

from __future__ import annotations

import sqlite3

from aiohttp import web

from telemed import audit
from telemed.api.body import Field, validate
from telemed.api.context import DATABASE
from telemed.api.security import authenticated
from telemed.caller import Caller

QUERY = [Field("patient", str, required=False, max_length=64),
         Field("actor", str, required=False, max_length=100),
         Field("after", int, required=False), Field("limit", int, required=False)]


def _numbers(query: dict[str, str]) -> dict[str, object]:
    """Query strings are text; turn the numeric ones into ints so validation can judge them."""
    parsed: dict[str, object] = dict(query)
    for name in ("after", "limit"):
        if name in parsed and str(parsed[name]).lstrip("-").isdigit():
            parsed[name] = int(str(parsed[name]))
    return parsed


def _read(conn: sqlite3.Connection, caller: Caller, query: dict) -> dict:
    caller.require("audit.read", None, "audit", query.get("patient"))
    entries = audit.query(conn, patient_id=query.get("patient"), actor=query.get("actor"),
                          after_seq=max(0, query.get("after", 0)),
                          limit=min(max(1, query.get("limit", 100)), 1000))
    caller.audit(conn, "audit.read", "audit", query.get("patient"))
    return {"entries": entries}


async def entries(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    query = validate(_numbers(dict(request.query)), QUERY)
    return web.json_response(await request.app[DATABASE].write(_read, caller, query))


def _verify(conn: sqlite3.Connection, caller: Caller) -> dict:
    caller.require("audit.read", None, "audit")
    return audit.verify(conn).as_dict()


async def verify(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    return web.json_response(await request.app[DATABASE].read(_verify, caller))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/audit", entries)
    app.router.add_get("/api/audit/verify", verify)
