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
from telemed.casework import Casework, Record
from telemed.permissions import may_publish, refusal
from telemed.store import Conflict, NotFound, accounts
from telemed.store import consults as store
from telemed.store.rows import insert
from telemed.workflow import CONSULT, TransitionError


@dataclass(frozen=True)
class RoomAccess:
    consult_id: str
    patient_id: str
    can_publish: bool
    kind: str
    is_host: bool = False


def _changes(caller: Caller, consult: Record, action: str, fields: Record) -> Record:
    if action in ("accept", "decline"):
        return {"expert_id": caller.actor.id}
    if action in ("schedule", "report"):
        name = "scheduled_at" if action == "schedule" else "report"
        return {name: fields[name]}
    return {}


def _decorate(conn: sqlite3.Connection, consult: Record) -> Record:
    return {k: v for k, v in consult.items() if k not in ("participant_ids", "presenter_ids")}


CASES = Casework(CONSULT, store.get, store.candidate_ids, store.set_fields, _changes, _decorate)
read = CASES.read
list_visible = CASES.list_visible
act = CASES.act


def create(conn: sqlite3.Connection, caller: Caller, request: dict[str, Any]) -> Record:
    patient, target = CASES.check_new(conn, caller, request, request["target_institution_id"])
    expert_id = request.get("expert_id")
    if expert_id is not None:
        expert = accounts.get_staff(conn, expert_id)
        if expert["role"] != "expert" or expert["institution_id"] != target["id"]:
            raise InvalidRequest("the named expert is not an expert of the target institution")
    actor = caller.actor
    consult_id = store.create(conn, {
        "kind": request["kind"], "patient_id": patient["id"],
        "requesting_institution_id": actor.institution_id, "requested_by": actor.id,
        "target_institution_id": target["id"], "specialty": request["specialty"],
        "urgency": request["urgency"], "reason": request["reason"], "expert_id": expert_id,
    })
    if request["kind"] == "round":
        store.add_participant(conn, consult_id, actor.id, "presenter")
    return CASES.created(conn, caller, consult_id)


def _require_open(consult: Record) -> None:
    if consult["state"] in CONSULT.final:
        raise TransitionError("consult", consult["state"], "change",
                              f"the consult is {consult['state']}; it can no longer change", [])


def add_participant(conn: sqlite3.Connection, caller: Caller, consult_id: str, staff_id: str,
                    role: str) -> Record:
    consult = CASES.load(conn, caller, consult_id, "participants")
    _require_open(consult)
    accounts.get_staff(conn, staff_id)
    if role == "presenter" and consult["kind"] != "round":
        raise InvalidRequest("presenters exist only in ward rounds")
    store.add_participant(conn, consult_id, staff_id, role)
    caller.audit(conn, "consult.participants", f"consult:{consult_id}", consult["patient_id"])
    return CASES.present(conn, caller, store.get(conn, consult_id))


def attach(conn: sqlite3.Connection, caller: Caller, consult_id: str, kind: str,
           ref: str) -> Record:
    consult = CASES.load(conn, caller, consult_id, "attach")
    _require_open(consult)
    store.add_attachment(conn, consult_id, kind, ref, caller.actor.id)
    caller.audit(conn, "consult.attach", f"consult:{consult_id}", consult["patient_id"])
    return CASES.present(conn, caller, store.get(conn, consult_id))


def add_recording(conn: sqlite3.Connection, staff_id: str, consult_id: str, ref: str) -> None:
    """The media server finished a recording the host started: it joins the consult's record
    (whatever the consult's state by now), in the host's name, audited."""
    consult = store.get(conn, consult_id)
    store.add_attachment(conn, consult_id, "recording", ref, staff_id)
    actor = accounts.load_actor(conn, staff_id)
    audit.append(conn, AuditEvent(actor=actor.username if actor else staff_id,
                                  action="consult.recording", object=f"consult:{consult_id}",
                                  client="media-server", patient_id=consult["patient_id"]))


def open_recording(conn: sqlite3.Connection, caller: Caller, consult_id: str, ref: str) -> None:
    """Whoever may read the consult may play its recordings; each playback is audited."""
    consult = CASES.load(conn, caller, consult_id)
    if not any(a["kind"] == "recording" and a["ref"] == ref for a in consult["attachments"]):
        raise NotFound("recording", f"{consult_id}/{ref}")
    caller.audit(conn, "consult.recording.read", f"consult:{consult_id}/{ref}",
                 consult["patient_id"])


def room_access(conn: sqlite3.Connection, caller: Caller, consult_id: str) -> RoomAccess:
    """What a staff member's room token grants: join, and publish per the consult's kind."""
    consult = CASES.load(conn, caller, consult_id)
    _require_open(consult)
    caller.audit(conn, "consult.join", f"consult:{consult_id}", consult["patient_id"])
    is_host = refusal(caller.actor, "consult.host", consult) is None
    return RoomAccess(consult_id, consult["patient_id"], may_publish(caller.actor.id, consult),
                      consult["kind"], is_host)


def create_invite(conn: sqlite3.Connection, caller: Caller, consult_id: str, display_name: str,
                  ttl_seconds: int) -> str:
    """A single-use join link for a guest or the patient; only its hash is stored."""
    consult = CASES.load(conn, caller, consult_id, "invite")
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
    access = RoomAccess(consult["id"], consult["patient_id"], may_publish(None, consult),
                        consult["kind"])
    return access, row["display_name"], guest_id
