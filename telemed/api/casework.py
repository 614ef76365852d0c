"""The four routes every kind of case has: list, create, read, and act on it."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from aiohttp import web

from telemed.api.body import Field, parse, read_json, validate
from telemed.api.context import BUS, DATABASE
from telemed.api.security import authenticated
from telemed.casework import Casework

Create = Callable[..., dict[str, Any]]


def add_case_routes(app: web.Application, path: str, cases: Casework, create: Create,
                    new_fields: list[Field], action_fields: list[Field],
                    defaults: dict[str, Any] | None = None) -> None:
    """Register /api/{path}[/{id}[/{action}]]; every change is announced on the bus channel
    named after the path, so rooms, workers and other nodes can follow it."""
    machine = cases.machine
    states = tuple(sorted({t.target for t in machine.transitions} | {machine.initial}))

    async def announce(request: web.Request, record: dict, action: str) -> None:
        await request.app[BUS].publish(path, {f"{cases.subject}_id": record["id"],
                                              "action": action, "state": record["state"]})

    async def list_(request: web.Request) -> web.Response:
        caller = await authenticated(request)
        query = validate(dict(request.query), [Field("state", str, required=False, choices=states)])
        found = await request.app[DATABASE].write(cases.list_visible, caller, query.get("state"))
        return web.json_response(found)

    async def create_(request: web.Request) -> web.Response:
        caller = await authenticated(request)
        body = {**(defaults or {}), **await parse(request, new_fields)}
        record = await request.app[DATABASE].write(create, caller, body)
        await announce(request, record, "request")
        return web.json_response(record, status=201)

    async def get(request: web.Request) -> web.Response:
        caller = await authenticated(request)
        record = await request.app[DATABASE].write(cases.read, caller, request.match_info["id"])
        return web.json_response(record)

    async def act(request: web.Request) -> web.Response:
        caller = await authenticated(request)
        fields = validate(await read_json(request) if request.can_read_body else {}, action_fields)
        action = request.match_info["action"]
        record = await request.app[DATABASE].write(cases.act, caller, request.match_info["id"],
                                                   action, fields)
        await announce(request, record, action)
        return web.json_response(record)

    handlers: list[tuple[str, str, Callable[[web.Request], Awaitable[web.Response]]]] = [
        ("GET", f"/api/{path}", list_), ("POST", f"/api/{path}", create_),
        ("GET", f"/api/{path}/{{id}}", get), ("POST", f"/api/{path}/{{id}}/{{action}}", act)]
    for method, route, handler in handlers:
        app.router.add_route(method, route, handler)
