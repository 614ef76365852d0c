"""Consults and remote ward rounds: request, accept, schedule, conduct, report, close.

Each function runs on the database thread inside one transaction (Database.write), so the
change and its audit entry land together or not at all.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from telemed import audit, auth
from telemed.audit import AuditEvent
from telemed.caller import Caller, InvalidRequest
from telemed.permissions import may_publish, refusal
from telemed.store import Conflict, NotFound, accounts
from telemed.store import consults as store
from telemed.store.rows import insert
from telemed.store.ties import patient_ties
from telemed.workflow import CONSULT, TransitionError


@dataclass(frozen=True)
class RoomAccess:
    consult_id: str
    patient_id: str
    can_publish: bool


def _presented(conn: sqlite3.Connection, caller: Caller, consult: dict[str, Any]) -> dict[str, Any]:
    """The consult as the API shows it, with what this caller may do next."""
    view = {k: v for k, v in consult.items() if k not in ("participant_ids", "presenter_ids")}
    view["allowed_actions"] = [
        action for action in CONSULT.allowed_actions(consult["state"], consult)
        if refusal(caller.actor, f"consult.{action}", consult) is None]
    view["history"] = store.history(conn, "consult", consult["id"])
    return view


def _load(conn: sqlite3.Connection, caller: Caller, consult_id: str, action: str) -> dict[str, Any]:
    consult = store.get(conn, consult_id)
    caller.require(action, consult, f"consult:{consult_id}", consult["patient_id"])
    return consult


def create(conn: sqlite3.Connection, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
    actor = caller.actor
    patient = accounts.get_patient(conn, request["patient_id"])
    caller.require("consult.create", request, "consult:new", patient["id"])
    caller.require("patient.read", patient, f"patient:{patient['id']}", patient["id"],
                   patient_ties(conn, patient["id"]))
    target = accounts.get_institution(conn, request["target_institution_id"])
    if target["status"] != "approved":
        raise InvalidRequest(f"institution {target['name']!r} is suspended")
    expert_id = request.get("expert_id")
    if expert_id is not None:
        expert = accounts.get_staff(conn, expert_id)
        if expert["role"] != "expert" or expert["institution_id"] != target["id"]:
            raise InvalidRequest("the named expert is not an expert of the target institution")
    consult_id = store.create(conn, {
        "kind": request["kind"], "patient_id": patient["id"],
        "requesting_institution_id": actor.institution_id, "requested_by": actor.id,
        "target_institution_id": target["id"], "specialty": request["specialty"],
        "urgency": request["urgency"], "reason": request["reason"], "expert_id": expert_id,
    })
    if request["kind"] == "round":
        store.add_participant(conn, consult_id, actor.id, "presenter")
    store.record_transition(conn, "consult", consult_id, "request", None, CONSULT.initial, actor.id)
    caller.audit(conn, "consult.create", f"consult:{consult_id}", patient["id"])
    return _presented(conn, caller, store.get(conn, consult_id))


def read(conn: sqlite3.Connection, caller: Caller, consult_id: str) -> dict[str, Any]:
    consult = _load(conn, caller, consult_id, "consult.read")
    caller.audit(conn, "consult.read", f"consult:{consult_id}", consult["patient_id"])
    return _presented(conn, caller, consult)


def list_visible(conn: sqlite3.Connection, caller: Caller, state: str | None) -> list[dict[str, Any]]:
    actor = caller.actor
    visible = []
    for consult_id in store.candidate_ids(conn, actor.id, actor.institution_id):
        consult = store.get(conn, consult_id)
        if state is not None and consult["state"] != state:
            continue
        if refusal(actor, "consult.read", consult) is None:
            caller.audit(conn, "consult.read", f"consult:{consult_id}", consult["patient_id"])
            visible.append(_presented(conn, caller, consult))
    return visible


def act(conn: sqlite3.Connection, caller: Caller, consult_id: str, action: str,
        fields: dict[str, Any]) -> dict[str, Any]:
    """Apply one workflow action; 409 (TransitionError) when the state does not allow it."""
    if action not in CONSULT.actions:
        raise NotFound("consult action", action)
    consult = _load(conn, caller, consult_id, "consult.read")
    target_state = CONSULT.next_state(consult, action)
    caller.require(f"consult.{action}", consult, f"consult:{consult_id}", consult["patient_id"])
    missing = [name for name in CONSULT.transition_for(action).requires if not fields.get(name)]
    if missing:
        raise InvalidRequest(f"{action} needs {', '.join(missing)}")
    changes: dict[str, Any] = {"state": target_state}
    if action in ("accept", "decline"):
        changes["expert_id"] = caller.actor.id
    if action == "schedule":
        changes["scheduled_at"] = fields["scheduled_at"]
    if action == "report":
        changes["report"] = fields["report"]
    if fields.get("note"):
        changes["note"] = fields["note"]
    store.set_fields(conn, consult_id, changes)
    store.record_transition(conn, "consult", consult_id, action, consult["state"], target_state,
                            caller.actor.id, fields.get("note"))
    caller.audit(conn, f"consult.{action}", f"consult:{consult_id}", consult["patient_id"])
    return _presented(conn, caller, store.get(conn, consult_id))


def _require_open(consult: dict[str, Any]) -> None:
    if consult["state"] in CONSULT.final:
        raise TransitionError("consult", consult["state"], "change",
                              f"the consult is {consult['state']}; it can no longer change", [])


def add_participant(conn: sqlite3.Connection, caller: Caller, consult_id: str, staff_id: str,
                    role: str) -> dict[str, Any]:
    consult = _load(conn, caller, consult_id, "consult.participants")
    _require_open(consult)
    accounts.get_staff(conn, staff_id)
    if role == "presenter" and consult["kind"] != "round":
        raise InvalidRequest("presenters exist only in ward rounds")
    store.add_participant(conn, consult_id, staff_id, role)
    caller.audit(conn, "consult.participants", f"consult:{consult_id}", consult["patient_id"])
    return _presented(conn, caller, store.get(conn, consult_id))


def attach(conn: sqlite3.Connection, caller: Caller, consult_id: str, kind: str,
           ref: str) -> dict[str, Any]:
    consult = _load(conn, caller, consult_id, "consult.attach")
    _require_open(consult)
    store.add_attachment(conn, consult_id, kind, ref, caller.actor.id)
    caller.audit(conn, "consult.attach", f"consult:{consult_id}", consult["patient_id"])
    return _presented(conn, caller, store.get(conn, consult_id))


def room_access(conn: sqlite3.Connection, caller: Caller, consult_id: str) -> RoomAccess:
    """What a staff member's room token grants: join, and publish per the consult's kind."""
    consult = _load(conn, caller, consult_id, "consult.read")
    _require_open(consult)
    caller.audit(conn, "consult.join", f"consult:{consult_id}", consult["patient_id"])
    return RoomAccess(consult_id, consult["patient_id"], may_publish(caller.actor.id, consult))


def create_invite(conn: sqlite3.Connection, caller: Caller, consult_id: str, display_name: str,
                  ttl_seconds: int) -> str:
    """A single-use join link for a guest or the patient; only its hash is stored."""
    consult = _load(conn, caller, consult_id, "consult.invite")
    _require_open(consult)
    code = auth.new_join_code()
    insert(conn, "join_links", {"code_hash": auth.join_code_hash(code), "consult_id": consult_id,
                                "created_by": caller.actor.id, "display_name": display_name,
                                "expires_at": time.time() + ttl_seconds, "used_at": None})
    caller.audit(conn, "consult.invite", f"consult:{consult_id}", consult["patient_id"])
    return code


def redeem_invite(conn: sqlite3.Connection, code: str, client: str) -> tuple[RoomAccess, str, str]:
    """Use a join link once; a second use, an unknown or an expired code is refused alike.
    Returns the room access, the guest's display name and a guest id unique to the link."""
    row = conn.execute("SELECT * FROM join_links WHERE code_hash = ?",
                       (auth.join_code_hash(code),)).fetchone()
    if row is None or row["used_at"] is not None or row["expires_at"] < time.time():
        raise Conflict("this join link is unknown, already used or expired")
    consult = store.get(conn, row["consult_id"])
    _require_open(consult)
    conn.execute("UPDATE join_links SET used_at = ? WHERE code_hash = ?",
                 (time.time(), row["code_hash"]))
    guest_id = f"guest-{row['code_hash'][:16]}"
    audit.append(conn, AuditEvent(actor=f"{guest_id}:{row['display_name']}", action="consult.join",
                            object=f"consult:{consult['id']}", client=client,
                            patient_id=consult["patient_id"]))
    access = RoomAccess(consult["id"], consult["patient_id"], may_publish(None, consult))
    return access, row["display_name"], guest_id
