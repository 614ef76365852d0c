"""Two-way referral: a clinic refers a patient up to the city hospital and back down.

request -> (review) -> accept -> arrange -> admit (in progress) -> return -> confirm,
plus decline and cancel. Runs inside Database.write like consults.py.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from telemed.caller import Caller, InvalidRequest
from telemed.casework import Casework, Record
from telemed.store import accounts
from telemed.store import consults as consult_store
from telemed.store import referrals as store
from telemed.workflow import REFERRAL

LEVEL = {"hospital": 3, "township": 2, "village": 1, "ambulance": 1}


def direction(conn: sqlite3.Connection, referral: Record) -> str:
    """'up' towards the city hospital, 'down' back towards the clinic, else 'across'."""
    source = LEVEL[accounts.get_institution(conn, referral["from_institution_id"])["kind"]]
    target = LEVEL[accounts.get_institution(conn, referral["to_institution_id"])["kind"]]
    return "up" if target > source else "down" if target < source else "across"


def _changes(caller: Caller, referral: Record, action: str, fields: Record) -> Record:
    changes = {name: fields[name] for name in ("arranged_for", "summary") if fields.get(name)}
    if action in ("review", "accept") and referral["assignee_id"] is None:
        changes["assignee_id"] = caller.actor.id
    return changes


def _decorate(conn: sqlite3.Connection, referral: Record) -> Record:
    return {**referral, "direction": direction(conn, referral)}


CASES = Casework(REFERRAL, store.get, store.candidate_ids, store.set_fields, _changes, _decorate)
read = CASES.read
list_visible = CASES.list_visible
act = CASES.act


def create(conn: sqlite3.Connection, caller: Caller, request: dict[str, Any]) -> Record:
    actor = caller.actor
    patient, target = CASES.check_new(conn, caller, request, request["to_institution_id"])
    if target["id"] == actor.institution_id:
        raise InvalidRequest("a referral must go to another institution")
    if request.get("consult_id"):
        consult = consult_store.get(conn, request["consult_id"])
        if consult["patient_id"] != patient["id"]:
            raise InvalidRequest("the consult is about another patient")
    referral_id = store.create(conn, {
        "patient_id": patient["id"], "from_institution_id": actor.institution_id,
        "to_institution_id": target["id"], "requested_by": actor.id,
        "consult_id": request.get("consult_id"), "urgency": request["urgency"],
        "reason": request["reason"],
    })
    return CASES.created(conn, caller, referral_id)
