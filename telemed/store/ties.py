"""What links a patient to staff outside their home institution."""

from __future__ import annotations

import sqlite3

from telemed.permissions import OPEN_REFERRAL_STATES, PatientTies

CLOSED_WITHOUT_CARE = ("declined", "cancelled")


def patient_ties(conn: sqlite3.Connection, patient_id: str) -> PatientTies:
    consult_staff: set[str] = set()
    consult_institutions: set[str] = set()
    offered: set[tuple[str, str]] = set()
    for row in conn.execute("SELECT id, state, expert_id, requesting_institution_id,"
                            " target_institution_id, specialty FROM consults WHERE patient_id = ?",
                            (patient_id,)):
        consult_institutions.add(row["requesting_institution_id"])
        if row["expert_id"]:
            consult_staff.add(row["expert_id"])
        elif row["state"] == "requested":
            offered.add((row["target_institution_id"], row["specialty"]))
    consult_staff.update(r["staff_id"] for r in conn.execute(
        "SELECT p.staff_id FROM consult_participants p JOIN consults c ON c.id = p.consult_id"
        " WHERE c.patient_id = ?", (patient_id,)))
    referral_institutions: set[str] = set()
    referral_staff: set[str] = set()
    offered_institutions: set[str] = set()
    for row in conn.execute("SELECT state, from_institution_id, to_institution_id, assignee_id,"
                            " requested_by FROM referrals WHERE patient_id = ?", (patient_id,)):
        if row["state"] in CLOSED_WITHOUT_CARE:
            continue
        referral_institutions.update((row["from_institution_id"], row["to_institution_id"]))
        referral_staff.add(row["requested_by"])
        if row["assignee_id"]:
            referral_staff.add(row["assignee_id"])
        elif row["state"] in OPEN_REFERRAL_STATES:
            offered_institutions.add(row["to_institution_id"])
    return PatientTies(frozenset(consult_staff), frozenset(consult_institutions),
                       frozenset(offered), frozenset(referral_institutions),
                       frozenset(referral_staff), frozenset(offered_institutions))


def candidate_patient_ids(conn: sqlite3.Connection, staff_id: str, institution_id: str) -> list[str]:
    """Patients that may concern this staff member; permissions make the final cut."""
    rows = conn.execute(
        "SELECT id FROM patients WHERE home_institution_id = :inst"
        " UNION SELECT patient_id FROM consults WHERE requesting_institution_id = :inst"
        "   OR expert_id = :staff OR target_institution_id = :inst"
        " UNION SELECT c.patient_id FROM consults c JOIN consult_participants p"
        "   ON p.consult_id = c.id WHERE p.staff_id = :staff"
        " UNION SELECT patient_id FROM referrals WHERE from_institution_id = :inst"
        "   OR to_institution_id = :inst OR assignee_id = :staff OR requested_by = :staff",
        {"inst": institution_id, "staff": staff_id})
    return [r[0] for r in rows]
