"""Demo records so a newcomer can sign in at once: a small regional network."""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

from telemed import audit, auth
from telemed.audit import AuditEvent
from telemed.store import accounts

INSTITUTIONS = [
    ("City Central Hospital", "hospital", None),
    ("Riverside Township Health Centre", "township", "City Central Hospital"),
    ("Hilltop Village Clinic", "village", "Riverside Township Health Centre"),
    ("County Ambulance Station", "ambulance", "City Central Hospital"),
]
USERS = [
    ("admin", "Network Administrator", "admin", "City Central Hospital", None),
    ("dr.chen", "Dr. Chen Hua", "expert", "City Central Hospital", "cardiology"),
    ("dr.liu", "Dr. Liu Min", "expert", "City Central Hospital", "radiology"),
    ("clinician.wang", "Wang Fang", "clinician", "Riverside Township Health Centre", None),
    ("medic.zhao", "Zhao Lei", "ambulance", "County Ambulance Station", None),
]
PATIENT = {"id": "DEMO-0001", "name": "Li Na", "sex": "F", "birth_date": "1961-04-12",
           "institution": "Riverside Township Health Centre"}


def seed(conn: sqlite3.Connection) -> dict[str, Any]:
    """Create what is missing and give every demo user a fresh password (printed once)."""
    by_name = {i["name"]: i["id"] for i in accounts.list_institutions(conn)}
    for name, kind, parent in INSTITUTIONS:
        if name not in by_name:
            by_name[name] = accounts.create_institution(conn, name, kind, by_name.get(parent))["id"]
    users = []
    for username, full_name, role, institution, specialty in USERS:
        password = secrets.token_urlsafe(12)
        password_hash = auth.hash_password(password)
        existing = accounts.credentials(conn, username)
        if existing:
            accounts.update_staff(conn, existing["id"], {"password_hash": password_hash, "active": 1})
        else:
            accounts.create_staff(conn, username, password_hash, full_name, role,
                                  by_name[institution], specialty)
        users.append({"username": username, "password": password, "role": role,
                      "institution": institution, "specialty": specialty})
    patient = dict(PATIENT)
    try:
        accounts.get_patient(conn, PATIENT["id"])
    except LookupError:
        accounts.create_patient(conn, {**PATIENT, "home_institution_id": by_name[PATIENT["institution"]]})
    audit.append(conn, AuditEvent(actor="system", action="demo.seed", object="demo", client="cli"))
    return {"users": users, "patients": [patient],
            "institutions": [{"name": n, "kind": k, "id": by_name[n]} for n, k, _ in INSTITUTIONS]}
