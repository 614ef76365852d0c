"""The audit trail: append-only, each entry chained to the previous one by SHA-256.

Editing, inserting or deleting a row in the middle breaks the chain, which `verify`
finds. Truncating the tail is detected by comparing the head (seq, hash) that
`verify` reports against a copy kept elsewhere (an operator's log, a backup).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEvent:
    actor: str
    action: str
    object: str
    client: str
    patient_id: str | None = None
    outcome: str = "ok"


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def entry_hash(seq: int, at: str, event: AuditEvent, prev_hash: str) -> str:
    canonical = json.dumps(
        [seq, at, event.actor, event.action, event.object, event.patient_id, event.client,
         event.outcome, prev_hash],
        separators=(",", ":"), ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def append(conn: sqlite3.Connection, event: AuditEvent) -> int:
    """Add one entry; call inside the write transaction of the change it records."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev_hash = (last["seq"] + 1, last["hash"]) if last else (1, GENESIS)
    at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    conn.execute(
        "INSERT INTO audit (seq, at, actor, action, object, patient_id, client, outcome, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at, event.actor, event.action, event.object, event.patient_id, event.client,
         event.outcome, prev_hash, entry_hash(seq, at, event, prev_hash)),
    )
    return seq


def verify(conn: sqlite3.Connection) -> Verification:
    """Recompute the chain from the first entry; report the first entry that does not fit."""
    prev_hash, expected_seq, count = GENESIS, 1, 0
    for row in conn.execute("SELECT * FROM audit ORDER BY seq"):
        event = AuditEvent(row["actor"], row["action"], row["object"], row["client"],
                           row["patient_id"], row["outcome"])
        problem = None
        if row["seq"] != expected_seq:
            problem = f"entry {expected_seq} is missing"
        elif row["prev_hash"] != prev_hash:
            problem = "link to the previous entry is broken"
        elif row["hash"] != entry_hash(row["seq"], row["at"], event, prev_hash):
            problem = "entry content does not match its hash"
        if problem:
            return Verification(False, count, expected_seq - 1, prev_hash, row["seq"], problem)
        prev_hash, expected_seq, count = row["hash"], expected_seq + 1, count + 1
    return Verification(True, count, expected_seq - 1, prev_hash)


def check_head(conn: sqlite3.Connection, result: Verification, seq: int, digest: str) -> Verification:
    """Compare with a head recorded earlier (seq:hash): the chain must still hold that entry
    unchanged, which also catches entries cut off the end."""
    if not result.ok:
        return result
    row = conn.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        return Verification(False, result.entries, result.head_seq, result.head_hash, seq,
                            f"entry {seq} recorded earlier is gone (the trail was cut short)")
    if row["hash"] != digest:
        return Verification(False, result.entries, result.head_seq, result.head_hash, seq,
                            f"entry {seq} differs from the one recorded earlier")
    return result


def query(conn: sqlite3.Connection, *, patient_id: str | None = None, actor: str | None = None,
          after_seq: int = 0, limit: int = 100) -> list[dict]:
    clauses, params = ["seq > ?"], [after_seq]
    if patient_id is not None:
        clauses.append("patient_id = ?")
        params.append(patient_id)
    if actor is not None:
        clauses.append("actor = ?")
        params.append(actor)
    sql = f"SELECT * FROM audit WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?"
    return [dict(row) for row in conn.execute(sql, (*params, limit))]
