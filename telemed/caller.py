"""Who is asking, and from where: what every audited service call needs."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from telemed import audit
from telemed.audit import AuditEvent
from telemed.permissions import NO_TIES, Actor, Forbidden, PatientTies, Record, refusal


class InvalidRequest(ValueError):
    """The request is well-formed but does not make sense for the records it names (HTTP 422)."""


@dataclass(frozen=True)
class Caller:
    actor: Actor
    client: str

    def event(self, action: str, obj: str, patient_id: str | None = None,
              outcome: str = "ok") -> AuditEvent:
        return AuditEvent(actor=self.actor.username, action=action, object=obj,
                          client=self.client, patient_id=patient_id, outcome=outcome)

    def audit(self, conn: sqlite3.Connection, action: str, obj: str,
              patient_id: str | None = None) -> None:
        audit.append(conn, self.event(action, obj, patient_id))

    def require(self, action: str, record: Record | None, obj: str,
                patient_id: str | None = None, ties: PatientTies = NO_TIES,
                attempted: str | None = None) -> None:
        """Raise Forbidden carrying the 'denied' audit entry the handler writes afterwards;
        `attempted` names what was tried when it differs from the permission checked."""
        reason = refusal(self.actor, action, record, ties)
        if reason is not None:
            raise Forbidden(reason, self.event(attempted or action, obj, patient_id,
                                               outcome="denied"))
