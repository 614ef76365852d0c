"""Two-way referrals over HTTP."""

from __future__ import annotations

from aiohttp import web

from telemed import referrals
from telemed.api.body import Field, parse, read_json, validate
from telemed.api.consults import URGENCIES
from telemed.api.context import DATABASE
from telemed.api.security import authenticated
from telemed.workflow import REFERRAL

STATES = tuple(sorted({t.target for t in REFERRAL.transitions} | {REFERRAL.initial}))
NEW_REFERRAL = [
    Field("patient_id", str, max_length=64), Field("to_institution_id", str, max_length=64),
    Field("urgency", str, choices=URGENCIES), Field("reason", str, max_length=4000),
    Field("consult_id", str, required=False, max_length=64),
]
ACTION_FIELDS = [Field("note", str, required=False, max_length=4000),
                 Field("arranged_for", str, required=False, max_length=400),
                 Field("summary", str, required=False, max_length=100_000)]


async def create(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    body = await parse(request, NEW_REFERRAL)
    referral = await request.app[DATABASE].write(referrals.create, caller, body)
    return web.json_response(referral, status=201)


async def list_(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    query = validate(dict(request.query), [Field("state", str, required=False, choices=STATES)])
    found = await request.app[DATABASE].write(referrals.list_visible, caller, query.get("state"))
    return web.json_response(found)


async def get(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    referral = await request.app[DATABASE].write(referrals.read, caller, request.match_info["id"])
    return web.json_response(referral)


async def act(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    fields = validate(await read_json(request) if request.can_read_body else {}, ACTION_FIELDS)
    referral = await request.app[DATABASE].write(
        referrals.act, caller, request.match_info["id"], request.match_info["action"], fields)
    return web.json_response(referral)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/referrals", list_)
    app.router.add_post("/api/referrals", create)
    app.router.add_get("/api/referrals/{id}", get)
    app.router.add_post("/api/referrals/{id}/{action}", act)
