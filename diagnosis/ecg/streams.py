"""ECG streams on disk: samples appended to one raw int16 file per stream, progress in SQLite.

A frame is acknowledged only after its samples are fsynced and the stream's row says so, so an
acknowledged sample survives a crash; bytes written past the row's count (a crash between the
two steps) are cut off when the stream is opened again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from diagnosis.ecg.frames import Frame
from diagnosis.ecg.ingest import StreamFormat, StreamReceiver
from telemed.caller import Caller, InvalidRequest
from telemed.store import accounts
from telemed.store import consults as consult_store
from telemed.store.rows import fetch_one, insert, now_iso, update
from telemed.store.ties import patient_ties


@dataclass(frozen=True)
class StreamInfo:
    id: str
    patient_id: str
    consult_id: str | None
    format: StreamFormat | None
    next_seq: int
    samples: int
    state: str
    created_at: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "StreamInfo":
        fmt = None
        if row["fs"] is not None:
            fmt = StreamFormat(row["fs"], tuple(json.loads(row["leads"])),
                               tuple(json.loads(row["gain"])),
                               tuple(json.loads(row["baseline"] or "[]")))
        return cls(row["id"], row["patient_id"], row["consult_id"], fmt, row["next_seq"],
                   row["samples"], row["state"], row["created_at"])

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "patient_id": self.patient_id, "consult_id": self.consult_id,
                "fs": self.format.fs if self.format else None,
                "leads": list(self.format.leads) if self.format else [],
                "gain": list(self.format.gain) if self.format else [],
                "baseline": list(self.format.baseline) if self.format else [],
                "acknowledged_seq": self.next_seq - 1, "samples": self.samples, "state": self.state,
                "created_at": self.created_at}


def samples_path(data_dir: Path, stream_id: str) -> Path:
    return data_dir / "ecg" / f"{stream_id}.i16"


def create(conn: sqlite3.Connection, caller: Caller, patient_id: str,
           consult_id: str | None) -> dict[str, Any]:
    """A new stream for a patient the caller may see, optionally attached to their consult."""
    patient = accounts.get_patient(conn, patient_id)
    caller.require("patient.read", patient, f"patient:{patient_id}", patient_id,
                   patient_ties(conn, patient_id), attempted="ecg.create")
    stream_id = str(uuid.uuid4())
    if consult_id is not None:
        consult = consult_store.get(conn, consult_id)
        if consult["patient_id"] != patient_id:
            raise InvalidRequest("the consult is about another patient")
        caller.require("consult.attach", consult, f"consult:{consult_id}", patient_id)
    now = now_iso()
    insert(conn, "ecg_streams", {"id": stream_id, "patient_id": patient_id,
                                 "consult_id": consult_id, "created_by": caller.actor.id,
                                 "created_at": now, "updated_at": now})
    if consult_id is not None:
        consult_store.add_attachment(conn, consult_id, "ecg", stream_id, caller.actor.id)
    caller.audit(conn, "ecg.create", f"ecg:{stream_id}", patient_id)
    return StreamInfo.from_row(fetch_one(conn, "ecg_streams", stream_id, "ECG stream")).public()


def open_for(conn: sqlite3.Connection, caller: Caller, stream_id: str, action: str) -> StreamInfo:
    """The stream if the caller may see its patient; the access is audited."""
    row = fetch_one(conn, "ecg_streams", stream_id, "ECG stream")
    patient = accounts.get_patient(conn, row["patient_id"])
    caller.require("patient.read", patient, f"ecg:{stream_id}", row["patient_id"],
                   patient_ties(conn, row["patient_id"]), attempted=action)
    caller.audit(conn, action, f"ecg:{stream_id}", row["patient_id"])
    return StreamInfo.from_row(row)


def progress(conn: sqlite3.Connection, stream_id: str) -> StreamInfo:
    return StreamInfo.from_row(fetch_one(conn, "ecg_streams", stream_id, "ECG stream"))


def record_progress(conn: sqlite3.Connection, stream_id: str, fmt: StreamFormat, next_seq: int,
                    samples: int, complete: bool) -> None:
    update(conn, "ecg_streams", stream_id, {
        "fs": fmt.fs, "leads": json.dumps(list(fmt.leads)), "gain": json.dumps(list(fmt.gain)),
        "baseline": json.dumps(list(fmt.baseline)),
        "next_seq": next_seq, "samples": samples, "state": "complete" if complete else "open",
        "updated_at": now_iso()})


def demographics(patient: dict[str, Any]) -> tuple[str | None, float | None]:
    """A patient row's sex ("M"/"F" or None) and age in years, for the STEMI cut-points."""
    sex = patient["sex"] if patient["sex"] in ("M", "F") else None
    age = None
    if patient.get("birth_date"):
        born = date.fromisoformat(patient["birth_date"])
        age = (date.today() - born).days / 365.25
    return sex, age


def record_alerts(conn: sqlite3.Connection, stream_id: str, alerts: list[dict[str, Any]]) -> None:
    for alert in alerts:
        conn.execute("INSERT OR IGNORE INTO ecg_alerts"
                     " (stream_id, kind, sample, leads, criterion, raised_at)"
                     " VALUES (?, ?, ?, ?, ?, ?)",
                     (stream_id, alert["kind"], alert["sample"], json.dumps(alert["leads"]),
                      alert["criterion"], now_iso()))


def alerts(conn: sqlite3.Connection, stream_id: str) -> list[dict[str, Any]]:
    """Alerts raised while the stream was received, with when they were raised."""
    return [{"kind": r["kind"], "sample": r["sample"], "leads": json.loads(r["leads"]),
             "criterion": r["criterion"], "raised_at": r["raised_at"]} for r in conn.execute(
        "SELECT kind, sample, leads, criterion, raised_at FROM ecg_alerts WHERE stream_id = ?"
        " ORDER BY sample, kind", (stream_id,))]


class SampleFile:
    """Append-only raw samples of one stream, trimmed to what the database acknowledged."""

    def __init__(self, path: Path, leads: int, acknowledged_samples: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(self._fd, acknowledged_samples * leads * 2)
        os.lseek(self._fd, 0, os.SEEK_END)

    def append(self, frames: list[Frame]) -> None:
        for frame in frames:
            os.write(self._fd, np.ascontiguousarray(frame.samples, dtype="<i2").tobytes())
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_samples(path: Path, leads: int, start: int = 0, count: int | None = None) -> np.ndarray:
    """Stored samples as int16 (n, leads), exactly as received."""
    if not path.exists():
        return np.zeros((0, leads), dtype=np.int16)
    data = np.memmap(path, dtype="<i2", mode="r")
    frames = data.reshape(-1, leads)
    end = len(frames) if count is None else min(len(frames), start + count)
    return np.array(frames[start:end], dtype=np.int16)


def receiver_for(info: StreamInfo, window: int = 512) -> StreamReceiver:
    return StreamReceiver(info.id, info.format, info.next_seq, info.samples, window,
                          complete=info.state == "complete")
