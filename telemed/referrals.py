"""Two-way referral: a clinic refers a patient up to the city hospital and back down.

request -> (review) -> accept -> arrange -> admit (in progress) -> return -> confirm,
plus decline and cancel. Runs inside Database.write like consults.py.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from telemed.caller import Caller, InvalidRequest
from telemed.permissions import refusal
from telemed.store import NotFound, accounts
from telemed.store import consults as consult_store
from telemed.store import referrals as store
from telemed.store.ties import patient_ties
from telemed.workflow import REFERRAL

RANK = {"hospital": 3, "township": 2, "village": 1, "ambulance": 1}


def _presented(conn: sqlite3.Connection, caller: Caller, referral: dict[str, Any]) -> dict[str, Any]:
    view = dict(referral)
    view["direction"] = direction(conn, referral)
    view["allowed_actions"] = [
        action for action in REFERRAL.allowed_actions(referral["state"], referral)
        if refusal(caller.actor, f"referral.{action}", referral) is None]
    view["history"] = consult_store.history(conn, "referral", referral["id"])
    return view


def _load(conn: sqlite3.Connection, caller: Caller, referral_id: str, action: str) -> dict[str, Any]:
    referral = store.get(conn, referral_id)
    caller.require(action, referral, f"referral:{referral_id}", referral["patient_id"])
    return referral


def create(conn: sqlite3.Connection, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
    actor = caller.actor
    patient = accounts.get_patient(conn, request["patient_id"])
    caller.require("referral.create", request, "referral:new", patient["id"])
    caller.require("patient.read", patient, f"patient:{patient['id']}", patient["id"],
                   patient_ties(conn, patient["id"]))
    source = accounts.get_institution(conn, actor.institution_id)
    target = accounts.get_institution(conn, request["to_institution_id"])
    if target["id"] == source["id"]:
        raise InvalidRequest("a referral must go to another institution")
    if target["status"] != "approved":
        raise InvalidRequest(f"institution {target['name']!r} is suspended")
    if request.get("consult_id"):
        consult = consult_store.get(conn, request["consult_id"])
        if consult["patient_id"] != patient["id"]:
            raise InvalidRequest("the consult is about another patient")
    referral_id = store.create(conn, {
        "patient_id": patient["id"], "from_institution_id": source["id"],
        "to_institution_id": target["id"], "requested_by": actor.id,
        "consult_id": request.get("consult_id"), "urgency": request["urgency"],
        "reason": request["reason"],
    })
    consult_store.record_transition(conn, "referral", referral_id, "request", None,
                                    REFERRAL.initial, actor.id)
    caller.audit(conn, "referral.create", f"referral:{referral_id}", patient["id"])
    return _presented(conn, caller, store.get(conn, referral_id))


def direction(conn: sqlite3.Connection, referral: dict[str, Any]) -> str:
    """'up' towards the city hospital, 'down' back towards the clinic, else 'across'."""
    source = RANK[accounts.get_institution(conn, referral["from_institution_id"])["kind"]]
    target = RANK[accounts.get_institution(conn, referral["to_institution_id"])["kind"]]
    return "up" if target > source else "down" if target < source else "across"


def read(conn: sqlite3.Connection, caller: Caller, referral_id: str) -> dict[str, Any]:
    referral = _load(conn, caller, referral_id, "referral.read")
    caller.audit(conn, "referral.read", f"referral:{referral_id}", referral["patient_id"])
    return _presented(conn, caller, referral)


def list_visible(conn: sqlite3.Connection, caller: Caller, state: str | None) -> list[dict[str, Any]]:
    actor = caller.actor
    visible = []
    for referral_id in store.candidate_ids(conn, actor.id, actor.institution_id):
        referral = store.get(conn, referral_id)
        if state is not None and referral["state"] != state:
            continue
        if refusal(actor, "referral.read", referral) is None:
            caller.audit(conn, "referral.read", f"referral:{referral_id}", referral["patient_id"])
            visible.append(_presented(conn, caller, referral))
    return visible


def act(conn: sqlite3.Connection, caller: Caller, referral_id: str, action: str,
        fields: dict[str, Any]) -> dict[str, Any]:
    if action not in REFERRAL.actions:
        raise NotFound("referral action", action)
    referral = _load(conn, caller, referral_id, "referral.read")
    target_state = REFERRAL.next_state(referral, action)
    caller.require(f"referral.{action}", referral, f"referral:{referral_id}", referral["patient_id"])
    missing = [name for name in REFERRAL.transition_for(action).requires if not fields.get(name)]
    if missing:
        raise InvalidRequest(f"{action} needs {', '.join(missing)}")
    changes: dict[str, Any] = {"state": target_state}
    if action in ("review", "accept") and referral["assignee_id"] is None:
        changes["assignee_id"] = caller.actor.id
    for name in ("arranged_for", "summary", "note"):
        if fields.get(name):
            changes[name] = fields[name]
    store.set_fields(conn, referral_id, changes)
    consult_store.record_transition(conn, "referral", referral_id, action, referral["state"],
                                    target_state, caller.actor.id, fields.get("note"))
    caller.audit(conn, f"referral.{action}", f"referral:{referral_id}", referral["patient_id"])
    return _presented(conn, caller, store.get(conn, referral_id))
