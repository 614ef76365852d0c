"""Login, institutions, staff and patients."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from aiohttp import web

from telemed import auth
from telemed.api.body import Field, iso_date, parse
from telemed.api.context import DATABASE, TOKENS
from telemed.api.problems import ProblemError
from telemed.api.security import authenticated
from telemed.auth import Claims
from telemed.caller import Caller
from telemed.permissions import ROLES, Forbidden, refusal
from telemed.store import accounts
from telemed.store.ties import candidate_patient_ids, patient_ties

INSTITUTION_KINDS = ("hospital", "township", "village", "ambulance")
SEXES = ("F", "M", "O", "U")

LOGIN = [Field("username", str, max_length=100), Field("password", str, max_length=1000)]
NEW_INSTITUTION = [Field("name", str), Field("kind", str, choices=INSTITUTION_KINDS),
                   Field("parent_id", str, required=False, max_length=64)]
INSTITUTION_CHANGES = [Field("status", str, required=False, choices=("approved", "suspended")),
                       Field("lossy_imaging", bool, required=False)]
NEW_STAFF = [Field("username", str, max_length=100), Field("password", str, max_length=1000),
             Field("full_name", str), Field("role", str, choices=ROLES),
             Field("institution_id", str, max_length=64),
             Field("specialty", str, required=False, max_length=100)]
STAFF_CHANGES = [Field("password", str, required=False, max_length=1000),
                 Field("full_name", str, required=False), Field("role", str, required=False, choices=ROLES),
                 Field("institution_id", str, required=False, max_length=64),
                 Field("specialty", str, required=False, max_length=100),
                 Field("active", bool, required=False)]
NEW_PATIENT = [Field("id", str, required=False, max_length=64), Field("name", str),
               Field("sex", str, choices=SEXES), Field("birth_date", str, required=False, check=iso_date),
               Field("home_institution_id", str, required=False, max_length=64)]
MIN_PASSWORD = 10


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ProblemError(422, "Unprocessable Content", "the request has invalid fields",
                           errors=[{"field": "password",
                                    "problem": f"must be at least {MIN_PASSWORD} characters"}])


async def login(request: web.Request) -> web.Response:
    body = await parse(request, LOGIN)
    db = request.app[DATABASE]
    found = await db.read(accounts.credentials, body["username"])
    stored = found["password_hash"] if found else auth.DUMMY_HASH
    if not await asyncio.to_thread(auth.verify_password, body["password"], stored) or found is None:
        raise ProblemError(401, "Unauthorized", "unknown username or wrong password")
    actor = await db.read(accounts.load_actor, found["id"])
    if actor is None:
        raise ProblemError(401, "Unauthorized", "unknown username or wrong password")
    if not actor.active or actor.institution_status != "approved":
        raise Forbidden("your account is disabled" if not actor.active
                        else "your institution is suspended")
    tokens = request.app[TOKENS]
    claims = Claims(subject=actor.id, scope="api", role=actor.role, name=actor.username,
                    institution_id=actor.institution_id)
    token = tokens.issue(claims)
    return web.json_response({"token": token, "expires_in": tokens.ttl_seconds,
                              "user": await db.read(accounts.get_staff, actor.id)})


async def me(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    db = request.app[DATABASE]
    staff = await db.read(accounts.get_staff, caller.actor.id)
    staff["institution"] = await db.read(accounts.get_institution, caller.actor.institution_id)
    return web.json_response(staff)


def _manage(caller: Caller) -> None:
    reason = refusal(caller.actor, "account.manage")
    if reason:
        raise Forbidden(reason)


def _audited(action: str, obj: str, fn, *args: Any):
    """Run an account change and record it in the audit trail in the same transaction."""
    def run(conn: sqlite3.Connection, caller: Caller) -> Any:
        result = fn(conn, *args)
        caller.audit(conn, action, obj.format(id=result["id"]))
        return result
    return run


async def list_institutions(request: web.Request) -> web.Response:
    await authenticated(request)
    return web.json_response(await request.app[DATABASE].read(accounts.list_institutions))


async def create_institution(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    _manage(caller)
    body = await parse(request, NEW_INSTITUTION)
    run = _audited("institution.create", "institution:{id}", accounts.create_institution,
                   body["name"], body["kind"], body.get("parent_id"))
    return web.json_response(await request.app[DATABASE].write(run, caller), status=201)


def _change_institution(conn: sqlite3.Connection, caller: Caller, ident: str,
                        changes: dict[str, Any]) -> dict[str, Any]:
    """Status and lossy imaging policy changes, each with its own audit entry, in one
    transaction."""
    institution = accounts.get_institution(conn, ident)
    if "status" in changes:
        institution = accounts.set_institution_status(conn, ident, changes["status"])
        caller.audit(conn, f"institution.{changes['status']}", f"institution:{ident}")
    if "lossy_imaging" in changes:
        institution = accounts.set_lossy_imaging(conn, ident, changes["lossy_imaging"])
        state = "on" if changes["lossy_imaging"] else "off"
        caller.audit(conn, f"institution.lossy_imaging.{state}", f"institution:{ident}")
    return institution


async def update_institution(request: web.Request) -> web.Response:
    """`{"status": "approved"|"suspended"}` and/or `{"lossy_imaging": true|false}`: the
    per-institution policy that lets its staff ask for lossy images (CAR ratio caps); off by
    default."""
    caller = await authenticated(request)
    _manage(caller)
    changes = await parse(request, INSTITUTION_CHANGES)
    if not changes:
        raise ProblemError(422, "Unprocessable Content", "the request has invalid fields",
                           errors=[{"field": name, "problem": "give status or lossy_imaging"}
                                   for name in ("status", "lossy_imaging")])
    return web.json_response(await request.app[DATABASE].write(
        _change_institution, caller, request.match_info["id"], changes))


async def list_staff(request: web.Request) -> web.Response:
    """Administrators see everyone; others see the expert directory, to address requests."""
    caller = await authenticated(request)
    staff = await request.app[DATABASE].read(accounts.list_staff)
    if refusal(caller.actor, "account.manage") is not None:
        staff = [{k: s[k] for k in ("id", "full_name", "role", "specialty", "institution_id")}
                 for s in staff if s["role"] == "expert" and s["active"]]
    return web.json_response(staff)


async def create_staff(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    _manage(caller)
    body = await parse(request, NEW_STAFF)
    _check_password(body["password"])
    password_hash = await asyncio.to_thread(auth.hash_password, body["password"])
    run = _audited("staff.create", "staff:{id}", accounts.create_staff, body["username"],
                   password_hash, body["full_name"], body["role"],
                   body["institution_id"], body.get("specialty"))
    return web.json_response(await request.app[DATABASE].write(run, caller), status=201)


async def update_staff(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    _manage(caller)
    body = await parse(request, STAFF_CHANGES)
    changes = dict(body)
    if "password" in changes:
        _check_password(changes["password"])
        changes["password_hash"] = await asyncio.to_thread(auth.hash_password,
                                                           changes.pop("password"))
    if "active" in changes:
        changes["active"] = int(changes["active"])
    run = _audited("staff.update", "staff:{id}", accounts.update_staff,
                   request.match_info["id"], changes)
    return web.json_response(await request.app[DATABASE].write(run, caller))


def _create_patient(conn: sqlite3.Connection, caller: Caller, body: dict[str, Any]) -> dict:
    values = {"home_institution_id": caller.actor.institution_id, **body}
    caller.require("patient.create", values, "patient:new", values.get("id"))
    patient = accounts.create_patient(conn, values)
    caller.audit(conn, "patient.create", f"patient:{patient['id']}", patient["id"])
    return patient


def _read_patient(conn: sqlite3.Connection, caller: Caller, patient_id: str) -> dict:
    patient = accounts.get_patient(conn, patient_id)
    caller.require("patient.read", patient, f"patient:{patient_id}", patient_id,
                   patient_ties(conn, patient_id))
    caller.audit(conn, "patient.read", f"patient:{patient_id}", patient_id)
    return patient


def _list_patients(conn: sqlite3.Connection, caller: Caller) -> list[dict]:
    actor = caller.actor
    if actor.role == "admin":
        candidates = accounts.list_patients(conn)
    else:
        ids = candidate_patient_ids(conn, actor.id, actor.institution_id)
        candidates = accounts.list_patients(conn, ids=ids)
    visible = []
    for patient in candidates:
        if refusal(actor, "patient.read", patient, patient_ties(conn, patient["id"])) is None:
            caller.audit(conn, "patient.read", f"patient:{patient['id']}", patient["id"])
            visible.append(patient)
    return visible


async def create_patient(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    body = await parse(request, NEW_PATIENT)
    patient = await request.app[DATABASE].write(_create_patient, caller, body)
    return web.json_response(patient, status=201)


async def get_patient(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    patient = await request.app[DATABASE].write(_read_patient, caller, request.match_info["id"])
    return web.json_response(patient)


async def list_patients(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    return web.json_response(await request.app[DATABASE].write(_list_patients, caller))


def setup(app: web.Application) -> None:
    app.router.add_post("/api/login", login)
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/institutions", list_institutions)
    app.router.add_post("/api/institutions", create_institution)
    app.router.add_patch("/api/institutions/{id}", update_institution)
    app.router.add_get("/api/staff", list_staff)
    app.router.add_post("/api/staff", create_staff)
    app.router.add_patch("/api/staff/{id}", update_staff)
    app.router.add_get("/api/patients", list_patients)
    app.router.add_post("/api/patients", create_patient)
    app.router.add_get("/api/patients/{id}", get_patient)
