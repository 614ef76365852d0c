"""The audit chain: every patient-data access is recorded, and tampering is detected."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from telemed import audit
from telemed.audit import AuditEvent
from telemed.store.database import connect


def _fill(conn: sqlite3.Connection, n: int) -> None:
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        audit.append(conn, AuditEvent(f"user{i}", "patient.read", f"patient:P{i}", "127.0.0.1", f"P{i}"))
        conn.execute("COMMIT")


def _tamper(conn: sqlite3.Connection, sql: str, *params) -> None:
    """What an attacker with the database file can do: drop the guard triggers and edit."""
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    conn.execute(sql, params)


def test_chain_verifies_and_reports_head(tmp_path):
    conn = connect(tmp_path / "db.sqlite3")
    _fill(conn, 5)
    result = audit.verify(conn)
    assert result.ok and result.entries == 5 and result.head_seq == 5
    assert result.head_hash == conn.execute("SELECT hash FROM audit WHERE seq = 5").fetchone()[0]


def test_update_and_delete_are_blocked_by_triggers(tmp_path):
    conn = connect(tmp_path / "db.sqlite3")
    _fill(conn, 2)
    for sql in ("UPDATE audit SET actor = 'x' WHERE seq = 1", "DELETE FROM audit WHERE seq = 1"):
        try:
            conn.execute(sql)
        except sqlite3.IntegrityError as exc:
            assert "append-only" in str(exc)
        else:
            raise AssertionError(f"{sql} was allowed")


def test_edited_row_breaks_the_chain(tmp_path):
    conn = connect(tmp_path / "db.sqlite3")
    _fill(conn, 6)
    _tamper(conn, "UPDATE audit SET actor = 'nobody' WHERE seq = 3")
    result = audit.verify(conn)
    assert not result.ok and result.first_bad_seq == 3 and result.entries == 2
    assert "does not match" in result.problem


def test_edited_row_with_recomputed_hash_breaks_the_next_link(tmp_path):
    conn = connect(tmp_path / "db.sqlite3")
    _fill(conn, 6)
    row = conn.execute("SELECT * FROM audit WHERE seq = 3").fetchone()
    event = AuditEvent("nobody", row["action"], row["object"], row["client"], row["patient_id"])
    forged = audit.entry_hash(3, row["at"], event, row["prev_hash"])
    _tamper(conn, "UPDATE audit SET actor = 'nobody', hash = ? WHERE seq = 3", forged)
    result = audit.verify(conn)
    assert not result.ok and result.first_bad_seq == 4
    assert "link" in result.problem


def test_deleted_row_is_detected(tmp_path):
    conn = connect(tmp_path / "db.sqlite3")
    _fill(conn, 6)
    _tamper(conn, "DELETE FROM audit WHERE seq = 2")
    result = audit.verify(conn)
    assert not result.ok and result.first_bad_seq == 3 and "missing" in result.problem


def _verify_cli(data_dir) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "telemed.cli", "audit", "verify", "--data",
                           str(data_dir)], capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {}


async def test_api_reads_are_audited_and_cli_verify_catches_an_edit(world):
    await world.call("GET", f"/api/patients/{world.patient}", "clinician", expect=200)
    await world.call("GET", f"/api/patients/{world.patient}", "other_clinician", expect=403)
    entries = (await world.call("GET", f"/api/audit?patient={world.patient}", "admin",
                                expect=200))["entries"]
    assert [(e["actor"], e["action"], e["outcome"]) for e in entries] == [
        ("clinician", "patient.read", "ok"), ("other_clinician", "patient.read", "denied")]
    assert all(e["client"] == "127.0.0.1" and e["object"] == f"patient:{world.patient}"
               for e in entries)
    await world.call("GET", "/api/audit", "clinician", expect=403)
    assert (await world.call("GET", "/api/audit/verify", "admin", expect=200))["ok"]

    code, report = _verify_cli(world.data_dir)
    assert code == 0 and report["ok"] and report["entries"] >= 3
    with world.db() as conn:
        _tamper(conn, "UPDATE audit SET client = '10.9.9.9' WHERE seq = 1")
    code, report = _verify_cli(world.data_dir)
    assert code == 1 and not report["ok"] and report["first_bad_seq"] == 1


def test_cli_verify_without_database_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "telemed.cli", "audit", "verify", "--data",
                           str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no database" in proc.stderr


def test_truncated_tail_is_caught_against_a_kept_head(tmp_path):
    conn = connect(tmp_path / "telemed.sqlite3")
    _fill(conn, 6)
    head = audit.verify(conn)
    anchor = f"{head.head_seq}:{head.head_hash}"
    _tamper(conn, "DELETE FROM audit WHERE seq >= 5")
    conn.commit()
    assert audit.verify(conn).ok, "a cut-off tail leaves a valid chain on its own"
    proc = subprocess.run([sys.executable, "-m", "telemed.cli", "audit", "verify", "--data",
                           str(tmp_path), "--head", anchor], capture_output=True, text=True,
                          timeout=60)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["first_bad_seq"] == 6 and "cut short" in report["problem"]
    third = conn.execute("SELECT hash FROM audit WHERE seq = 3").fetchone()[0]
    ok = subprocess.run([sys.executable, "-m", "telemed.cli", "audit", "verify", "--data",
                         str(tmp_path), "--head", f"3:{third}"], capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0
    bad = subprocess.run([sys.executable, "-m", "telemed.cli", "audit", "verify", "--data",
                          str(tmp_path), "--head", "3:nothex"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2
