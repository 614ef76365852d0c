"""Institutions, staff and patients."""

from __future__ import annotations

import sqlite3
from typing import Any

from telemed.permissions import Actor
from telemed.store.database import Conflict, NotFound
from telemed.store.rows import fetch_one, insert, new_id, now_iso, update

STAFF_PUBLIC = "id, username, full_name, role, specialty, institution_id, active, created_at"


def _insert_unique(conn: sqlite3.Connection, table: str, values: dict[str, Any], what: str) -> None:
    try:
        insert(conn, table, values)
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"{what} already exists or references a missing record ({exc})") from None


def create_institution(conn: sqlite3.Connection, name: str, kind: str,
                       parent_id: str | None = None) -> dict[str, Any]:
    if parent_id is not None:
        get_institution(conn, parent_id)
    values = {"id": new_id(), "name": name, "kind": kind, "status": "approved",
              "parent_id": parent_id, "created_at": now_iso()}
    _insert_unique(conn, "institutions", values, f"institution {name!r}")
    return get_institution(conn, values["id"])


def _institution(row: dict[str, Any]) -> dict[str, Any]:
    """An institution as the API shows it: the lossy imaging policy as a boolean."""
    row["lossy_imaging"] = bool(row.get("lossy_imaging"))
    return row


def get_institution(conn: sqlite3.Connection, ident: str) -> dict[str, Any]:
    return _institution(fetch_one(conn, "institutions", ident, "institution"))


def list_institutions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [_institution(dict(r)) for r in conn.execute("SELECT * FROM institutions ORDER BY name")]


def set_institution_status(conn: sqlite3.Connection, ident: str, status: str) -> dict[str, Any]:
    get_institution(conn, ident)
    update(conn, "institutions", ident, {"status": status})
    return get_institution(conn, ident)


def set_lossy_imaging(conn: sqlite3.Connection, ident: str, enabled: bool) -> dict[str, Any]:
    """Turn the institution's lossy imaging policy on or off (off is the default)."""
    get_institution(conn, ident)
    update(conn, "institutions", ident, {"lossy_imaging": int(bool(enabled))})
    return get_institution(conn, ident)


def lossy_imaging_allowed(conn: sqlite3.Connection, ident: str) -> bool:
    """Whether staff of the institution may be served lossy images (explicit policy only)."""
    row = conn.execute("SELECT lossy_imaging FROM institutions WHERE id = ?", (ident,)).fetchone()
    return row is not None and row["lossy_imaging"] == 1


def create_staff(conn: sqlite3.Connection, username: str, password_hash: str, full_name: str,
                 role: str, institution_id: str, specialty: str | None = None) -> dict[str, Any]:
    get_institution(conn, institution_id)
    values = {"id": new_id(), "username": username, "password_hash": password_hash,
              "full_name": full_name, "role": role, "specialty": specialty,
              "institution_id": institution_id, "active": 1, "created_at": now_iso()}
    _insert_unique(conn, "staff", values, f"user {username!r}")
    return get_staff(conn, values["id"])


def get_staff(conn: sqlite3.Connection, ident: str) -> dict[str, Any]:
    row = conn.execute(f"SELECT {STAFF_PUBLIC} FROM staff WHERE id = ?", (ident,)).fetchone()
    if row is None:
        raise NotFound("staff", ident)
    return dict(row)


def list_staff(conn: sqlite3.Connection, institution_id: str | None = None) -> list[dict[str, Any]]:
    sql = f"SELECT {STAFF_PUBLIC} FROM staff"
    params: tuple = ()
    if institution_id is not None:
        sql += " WHERE institution_id = ?"
        params = (institution_id,)
    return [dict(r) for r in conn.execute(sql + " ORDER BY username", params)]


def update_staff(conn: sqlite3.Connection, ident: str, values: dict[str, Any]) -> dict[str, Any]:
    get_staff(conn, ident)
    if "institution_id" in values:
        get_institution(conn, values["institution_id"])
    if values:
        update(conn, "staff", ident, values)
    return get_staff(conn, ident)


def credentials(conn: sqlite3.Connection, username: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT id, password_hash FROM staff WHERE username = ?",
                       (username,)).fetchone()
    return dict(row) if row else None


def load_actor(conn: sqlite3.Connection, staff_id: str) -> Actor | None:
    """The actor as stored now, so suspensions and role changes apply to live tokens."""
    row = conn.execute(
        "SELECT s.id, s.username, s.role, s.specialty, s.active, s.institution_id, i.status"
        " FROM staff s JOIN institutions i ON i.id = s.institution_id WHERE s.id = ?",
        (staff_id,)).fetchone()
    if row is None:
        return None
    return Actor(id=row["id"], username=row["username"], role=row["role"],
                 institution_id=row["institution_id"], institution_status=row["status"],
                 specialty=row["specialty"], active=bool(row["active"]))


def create_patient(conn: sqlite3.Connection, values: dict[str, Any]) -> dict[str, Any]:
    get_institution(conn, values["home_institution_id"])
    record = {"id": values.get("id") or new_id(), "name": values["name"], "sex": values["sex"],
              "birth_date": values.get("birth_date"),
              "home_institution_id": values["home_institution_id"], "created_at": now_iso()}
    _insert_unique(conn, "patients", record, f"patient {record['id']!r}")
    return record


def get_patient(conn: sqlite3.Connection, ident: str) -> dict[str, Any]:
    return fetch_one(conn, "patients", ident, "patient")


def list_patients(conn: sqlite3.Connection, home_institution_id: str | None = None,
                  ids: list[str] | None = None) -> list[dict[str, Any]]:
    clauses, params = [], []
    if home_institution_id is not None:
        clauses.append("home_institution_id = ?")
        params.append(home_institution_id)
    if ids is not None:
        clauses.append(f"id IN ({', '.join('?' for _ in ids)})" if ids else "0")
        params.extend(ids)
    where = f" WHERE {' OR '.join(clauses)}" if clauses else ""
    return [dict(r) for r in conn.execute(f"SELECT * FROM patients{where} ORDER BY name", params)]
