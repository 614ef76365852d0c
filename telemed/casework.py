"""What consults and referrals share: a stored record moved through a state machine, each read
and each step checked by permissions and written to the audit trail in the same transaction."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Callable

from telemed.caller import Caller, InvalidRequest
from telemed.permissions import refusal
from telemed.store import NotFound, accounts
from telemed.store import consults as history_store
from telemed.store.ties import patient_ties
from telemed.workflow import StateMachine

Record = dict[str, Any]


@dataclass(frozen=True)
class Casework:
    machine: StateMachine
    get: Callable[[sqlite3.Connection, str], Record]
    candidate_ids: Callable[[sqlite3.Connection, str, str], list[str]]
    set_fields: Callable[[sqlite3.Connection, str, Record], None]
    changes: Callable[[Caller, Record, str, Record], Record]
    """Which stored fields an action sets, beyond the new state."""
    decorate: Callable[[sqlite3.Connection, Record], Record] = lambda conn, record: dict(record)
    """The record as the API shows it (derived fields added, internal ones dropped)."""

    @property
    def subject(self) -> str:
        return self.machine.name

    def _object(self, record_id: str) -> str:
        return f"{self.subject}:{record_id}"

    def present(self, conn: sqlite3.Connection, caller: Caller, record: Record) -> Record:
        """The record with what this caller may do next and how it got here."""
        view = self.decorate(conn, record)
        view["allowed_actions"] = [
            action for action in self.machine.allowed_actions(record["state"], record)
            if refusal(caller.actor, f"{self.subject}.{action}", record) is None]
        view["history"] = history_store.history(conn, self.subject, record["id"])
        return view

    def load(self, conn: sqlite3.Connection, caller: Caller, record_id: str,
             action: str = "read") -> Record:
        record = self.get(conn, record_id)
        caller.require(f"{self.subject}.{action}", record, self._object(record_id),
                       record["patient_id"])
        return record

    def check_new(self, conn: sqlite3.Connection, caller: Caller, request: Record,
                  target_institution_id: str) -> tuple[Record, Record]:
        """A new case needs a patient the caller may see and an approved target institution."""
        patient = accounts.get_patient(conn, request["patient_id"])
        caller.require(f"{self.subject}.create", request, f"{self.subject}:new", patient["id"])
        caller.require("patient.read", patient, f"patient:{patient['id']}", patient["id"],
                       patient_ties(conn, patient["id"]))
        target = accounts.get_institution(conn, target_institution_id)
        if target["status"] != "approved":
            raise InvalidRequest(f"institution {target['name']!r} is suspended")
        return patient, target

    def created(self, conn: sqlite3.Connection, caller: Caller, record_id: str) -> Record:
        """Record the creation in the history and the audit trail; return the new record."""
        record = self.get(conn, record_id)
        history_store.record_transition(conn, self.subject, record_id, "request", None,
                                        self.machine.initial, caller.actor.id)
        caller.audit(conn, f"{self.subject}.create", self._object(record_id), record["patient_id"])
        return self.present(conn, caller, record)

    def read(self, conn: sqlite3.Connection, caller: Caller, record_id: str) -> Record:
        record = self.load(conn, caller, record_id)
        caller.audit(conn, f"{self.subject}.read", self._object(record_id), record["patient_id"])
        return self.present(conn, caller, record)

    def list_visible(self, conn: sqlite3.Connection, caller: Caller,
                     state: str | None) -> list[Record]:
        actor = caller.actor
        visible = []
        for record_id in self.candidate_ids(conn, actor.id, actor.institution_id):
            record = self.get(conn, record_id)
            if state is not None and record["state"] != state:
                continue
            if refusal(actor, f"{self.subject}.read", record) is None:
                caller.audit(conn, f"{self.subject}.read", self._object(record_id),
                             record["patient_id"])
                visible.append(self.present(conn, caller, record))
        return visible

    def act(self, conn: sqlite3.Connection, caller: Caller, record_id: str, action: str,
            fields: Record) -> Record:
        """Apply one workflow action: 404 unknown action, 403 not yours, 409 wrong state,
        422 a required field missing."""
        if action not in self.machine.actions:
            raise NotFound(f"{self.subject} action", action)
        record = self.load(conn, caller, record_id)
        target_state = self.machine.next_state(record, action)
        caller.require(f"{self.subject}.{action}", record, self._object(record_id),
                       record["patient_id"])
        missing = [name for name in self.machine.transition_for(action).requires
                   if not fields.get(name)]
        if missing:
            raise InvalidRequest(f"{action} needs {', '.join(missing)}")
        changes = {"state": target_state, **self.changes(caller, record, action, fields)}
        if fields.get("note"):
            changes["note"] = fields["note"]
        self.set_fields(conn, record_id, changes)
        history_store.record_transition(conn, self.subject, record_id, action, record["state"],
                                        target_state, caller.actor.id, fields.get("note"))
        caller.audit(conn, f"{self.subject}.{action}", self._object(record_id),
                     record["patient_id"])
        return self.present(conn, caller, self.get(conn, record_id))
