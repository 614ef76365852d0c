"""Consults and ward rounds over HTTP, and the room tokens and join links they hand out."""

from __future__ import annotations

from aiohttp import web

from telemed import consults
from telemed.api.body import Field, iso_datetime, parse
from telemed.api.casework import add_case_routes
from telemed.api.context import DATABASE, SETTINGS, TOKENS
from telemed.api.security import authenticated, client_address
from telemed.auth import Claims, Grants
from telemed.consults import RoomAccess

URGENCIES = ("routine", "urgent", "emergency")
ID = {"max_length": 64}

NEW_CONSULT = [
    Field("patient_id", str, **ID), Field("target_institution_id", str, **ID),
    Field("specialty", str, max_length=100), Field("urgency", str, choices=URGENCIES),
    Field("reason", str, max_length=4000), Field("kind", str, required=False, choices=("consult", "round")),
    Field("expert_id", str, required=False, **ID),
]
ACTION_FIELDS = [Field("note", str, required=False, max_length=4000),
                 Field("scheduled_at", str, required=False, check=iso_datetime),
                 Field("report", str, required=False, max_length=100_000)]
PARTICIPANT = [Field("staff_id", str, **ID), Field("role", str, choices=("presenter", "viewer"))]
ATTACHMENT = [Field("kind", str, choices=("study", "ecg")), Field("ref", str, max_length=128)]
INVITE = [Field("display_name", str, max_length=100)]
JOIN = [Field("code", str, max_length=100)]


def _room_token(request: web.Request, access: RoomAccess, subject: str, role: str, name: str,
                institution_id: str | None) -> dict:
    grants = Grants(rooms=(access.consult_id,), can_publish=access.can_publish,
                    can_subscribe=True, patients=(access.patient_id,), room_admin=access.is_host,
                    room_kind=access.kind)
    tokens = request.app[TOKENS]
    token = tokens.issue(Claims(subject=subject, scope="room", role=role, name=name,
                                institution_id=institution_id, grants=grants))
    return {"token": token, "room": access.consult_id, "can_publish": access.can_publish,
            "is_host": access.is_host, "expires_in": tokens.ttl_seconds}


async def add_participant(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    body = await parse(request, PARTICIPANT)
    consult = await request.app[DATABASE].write(
        consults.add_participant, caller, request.match_info["id"], body["staff_id"], body["role"])
    return web.json_response(consult)


async def attach(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    body = await parse(request, ATTACHMENT)
    consult = await request.app[DATABASE].write(
        consults.attach, caller, request.match_info["id"], body["kind"], body["ref"])
    return web.json_response(consult, status=201)


async def room_token(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    access = await request.app[DATABASE].write(consults.room_access, caller, request.match_info["id"])
    actor = caller.actor
    return web.json_response(_room_token(request, access, actor.id, actor.role, actor.username,
                                         actor.institution_id))


async def invite(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    body = await parse(request, INVITE)
    ttl = request.app[SETTINGS].join_link_ttl_seconds
    code = await request.app[DATABASE].write(
        consults.create_invite, caller, request.match_info["id"], body["display_name"], ttl)
    return web.json_response({"code": code, "join_url": f"/join#{code}", "expires_in": ttl},
                             status=201)


async def join(request: web.Request) -> web.Response:
    """Exchange a single-use join link for a room token; no account needed."""
    body = await parse(request, JOIN)
    access, name, guest_id = await request.app[DATABASE].write(
        consults.redeem_invite, body["code"], client_address(request))
    return web.json_response(_room_token(request, access, guest_id, "guest", name, None))


def setup(app: web.Application) -> None:
    app.router.add_post("/api/consults/{id}/participants", add_participant)
    app.router.add_post("/api/consults/{id}/attachments", attach)
    app.router.add_post("/api/consults/{id}/room-token", room_token)
    app.router.add_post("/api/consults/{id}/invites", invite)
    app.router.add_post("/api/join", join)
    add_case_routes(app, "consults", consults.CASES, consults.create, NEW_CONSULT, ACTION_FIELDS,
                    defaults={"kind": "consult"})
