"""Two-way referrals between institutions."""

from __future__ import annotations

import sqlite3
from typing import Any

from telemed.store.rows import fetch_one, insert, new_id, now_iso, update


def create(conn: sqlite3.Connection, values: dict[str, Any]) -> str:
    now = now_iso()
    record = {"id": new_id(), "state": "requested", "created_at": now, "updated_at": now,
              "assignee_id": None, "arranged_for": None, "summary": None, "note": None, **values}
    insert(conn, "referrals", record)
    return record["id"]


def get(conn: sqlite3.Connection, ident: str) -> dict[str, Any]:
    return fetch_one(conn, "referrals", ident, "referral")


def candidate_ids(conn: sqlite3.Connection, staff_id: str, institution_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT id FROM referrals WHERE from_institution_id = ? OR to_institution_id = ?"
        " OR assignee_id = ? OR requested_by = ? ORDER BY created_at DESC",
        (institution_id, institution_id, staff_id, staff_id))
    return [r["id"] for r in rows]


def set_fields(conn: sqlite3.Connection, ident: str, values: dict[str, Any]) -> None:
    update(conn, "referrals", ident, {**values, "updated_at": now_iso()})
