"""Consults and ward rounds: records, participants, attachments, transition history."""

from __future__ import annotations

import sqlite3
from typing import Any

from telemed.store.database import Conflict
from telemed.store.rows import fetch_one, insert, new_id, now_iso, update


def create(conn: sqlite3.Connection, values: dict[str, Any]) -> str:
    now = now_iso()
    record = {"id": new_id(), "state": "requested", "created_at": now, "updated_at": now,
              "expert_id": None, "scheduled_at": None, "report": None, "note": None, **values}
    insert(conn, "consults", record)
    return record["id"]


def get(conn: sqlite3.Connection, ident: str) -> dict[str, Any]:
    """The consult with its participants and attachments, as permissions and the API see it."""
    consult = fetch_one(conn, "consults", ident, "consult")
    people = conn.execute("SELECT staff_id, role FROM consult_participants WHERE consult_id = ?"
                          " ORDER BY role, staff_id", (ident,)).fetchall()
    consult["participants"] = [dict(p) for p in people]
    consult["participant_ids"] = [p["staff_id"] for p in people]
    consult["presenter_ids"] = [p["staff_id"] for p in people if p["role"] == "presenter"]
    consult["attachments"] = [dict(a) for a in conn.execute(
        "SELECT kind, ref, added_by, added_at FROM consult_attachments WHERE consult_id = ?"
        " ORDER BY added_at, ref", (ident,))]
    return consult


def candidate_ids(conn: sqlite3.Connection, staff_id: str, institution_id: str) -> list[str]:
    """Consults that may concern this staff member; permissions make the final cut."""
    rows = conn.execute(
        "SELECT id FROM consults WHERE requesting_institution_id = ? OR expert_id = ?"
        " OR (target_institution_id = ? AND state = 'requested')"
        " OR id IN (SELECT consult_id FROM consult_participants WHERE staff_id = ?)"
        " ORDER BY created_at DESC",
        (institution_id, staff_id, institution_id, staff_id))
    return [r["id"] for r in rows]


def set_fields(conn: sqlite3.Connection, ident: str, values: dict[str, Any]) -> None:
    update(conn, "consults", ident, {**values, "updated_at": now_iso()})


def add_participant(conn: sqlite3.Connection, consult_id: str, staff_id: str, role: str) -> None:
    conn.execute("INSERT INTO consult_participants (consult_id, staff_id, role) VALUES (?, ?, ?)"
                 " ON CONFLICT (consult_id, staff_id) DO UPDATE SET role = excluded.role",
                 (consult_id, staff_id, role))


def add_attachment(conn: sqlite3.Connection, consult_id: str, kind: str, ref: str,
                   staff_id: str) -> None:
    try:
        insert(conn, "consult_attachments", {"consult_id": consult_id, "kind": kind, "ref": ref,
                                             "added_by": staff_id, "added_at": now_iso()})
    except sqlite3.IntegrityError:
        raise Conflict(f"{kind} {ref!r} is already attached") from None


def record_transition(conn: sqlite3.Connection, subject: str, subject_id: str, action: str,
                      from_state: str | None, to_state: str, actor_id: str,
                      note: str | None = None) -> None:
    insert(conn, "transitions", {"subject": subject, "subject_id": subject_id, "action": action,
                                 "from_state": from_state, "to_state": to_state,
                                 "actor_id": actor_id, "note": note, "at": now_iso()})


def history(conn: sqlite3.Connection, subject: str, subject_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(
        "SELECT action, from_state, to_state, actor_id, note, at FROM transitions"
        " WHERE subject = ? AND subject_id = ? ORDER BY id", (subject, subject_id))]
