"""The one place that says who may do what.

Every API handler calls `check(actor, action, record)`; the rules are a table of small
predicates, each returning None (allowed) or the reason for refusing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

Record = Mapping[str, object]
Rule = Callable[["Actor", Record, "PatientTies"], "str | None"]

ROLES = ("admin", "expert", "clinician", "ambulance")
FRONTLINE = ("clinician", "ambulance")
OPEN_REFERRAL_STATES = ("requested", "under_review")


class Forbidden(Exception):
    """The actor may not do this (HTTP 403); `audit_event` records the refusal."""

    def __init__(self, reason: str, audit_event: object | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.audit_event = audit_event


@dataclass(frozen=True)
class Actor:
    id: str
    username: str
    role: str
    institution_id: str
    institution_status: str
    specialty: str | None = None
    active: bool = True


@dataclass(frozen=True)
class PatientTies:
    """How a patient reaches staff beyond their home institution: consults and referrals."""

    consult_staff: frozenset[str] = field(default_factory=frozenset)
    consult_institutions: frozenset[str] = field(default_factory=frozenset)
    offered_consults: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    referral_institutions: frozenset[str] = field(default_factory=frozenset)
    referral_staff: frozenset[str] = field(default_factory=frozenset)
    offered_referral_institutions: frozenset[str] = field(default_factory=frozenset)


NO_TIES = PatientTies()


def _same(a: object, b: object) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.casefold() == b.casefold()


def _admin(actor: Actor, record: Record, ties: PatientTies) -> str | None:
    return None if actor.role == "admin" else "only administrators may do this"


def _staff_not_admin(actor: Actor, record: Record, ties: PatientTies) -> str | None:
    return "administrators do not handle clinical records" if actor.role == "admin" else None


def _read_patient(actor: Actor, patient: Record, ties: PatientTies) -> str | None:
    if actor.role == "admin":
        return None
    if actor.role in FRONTLINE:
        if (patient.get("home_institution_id") == actor.institution_id
                or actor.institution_id in ties.consult_institutions
                or actor.institution_id in ties.referral_institutions):
            return None
        return "this patient is not registered at your institution"
    if actor.role == "expert":
        if actor.id in ties.consult_staff or actor.id in ties.referral_staff:
            return None
        if any(inst == actor.institution_id and _same(spec, actor.specialty)
               for inst, spec in ties.offered_consults):
            return None
        if actor.institution_id in ties.offered_referral_institutions:
            return None
        return "experts see a patient only through a consult or referral assigned to them"
    return "your role cannot see patients"


def _create_patient(actor: Actor, patient: Record, ties: PatientTies) -> str | None:
    if actor.role == "admin":
        return None
    if actor.role in FRONTLINE and patient.get("home_institution_id") == actor.institution_id:
        return None
    return "patients are registered by administrators or by their own institution's staff"


def _consult_offered_to(actor: Actor, consult: Record) -> bool:
    if consult.get("state") != "requested" or actor.role != "expert":
        return False
    if consult.get("expert_id"):
        return consult["expert_id"] == actor.id
    return (consult.get("target_institution_id") == actor.institution_id
            and _same(consult.get("specialty"), actor.specialty))


def _is_requester_side(actor: Actor, consult: Record) -> bool:
    return (actor.role in FRONTLINE + ("expert",)
            and consult.get("requesting_institution_id") == actor.institution_id
            and (actor.role != "expert" or consult.get("requested_by") == actor.id))


def _is_assigned_expert(actor: Actor, consult: Record) -> bool:
    return actor.role == "expert" and consult.get("expert_id") == actor.id


def _is_participant(actor: Actor, consult: Record) -> bool:
    return actor.id in consult.get("participant_ids", ())  # type: ignore[operator]


def _read_consult(actor: Actor, consult: Record, ties: PatientTies) -> str | None:
    if (_is_requester_side(actor, consult) or _is_assigned_expert(actor, consult)
            or _is_participant(actor, consult) or _consult_offered_to(actor, consult)):
        return None
    return "this consult is neither from your institution nor assigned to you"


def _answer_request(actor: Actor, consult: Record, ties: PatientTies) -> str | None:
    if _consult_offered_to(actor, consult):
        return None
    return "only an expert of the requested institution and specialty may answer this request"


def _run_consult(actor: Actor, consult: Record, ties: PatientTies) -> str | None:
    if _is_assigned_expert(actor, consult) or _is_requester_side(actor, consult):
        return None
    return "only the assigned expert or the requesting clinic may do this"


def _report_consult(actor: Actor, consult: Record, ties: PatientTies) -> str | None:
    return None if _is_assigned_expert(actor, consult) else "only the assigned expert may report"


def _cancel_consult(actor: Actor, consult: Record, ties: PatientTies) -> str | None:
    return None if _is_requester_side(actor, consult) else "only the requesting clinic may cancel"


def _read_referral(actor: Actor, referral: Record, ties: PatientTies) -> str | None:
    if actor.role in FRONTLINE and actor.institution_id in (
            referral.get("from_institution_id"), referral.get("to_institution_id")):
        return None
    if actor.role == "expert":
        if actor.id in (referral.get("assignee_id"), referral.get("requested_by")):
            return None
        if (referral.get("assignee_id") is None
                and referral.get("state") in OPEN_REFERRAL_STATES
                and referral.get("to_institution_id") == actor.institution_id):
            return None
    return "this referral is neither from nor to you"


def _receiving_side(actor: Actor, referral: Record, ties: PatientTies) -> str | None:
    if actor.institution_id != referral.get("to_institution_id") or actor.role == "admin":
        return "only staff of the receiving institution may do this"
    return _read_referral(actor, referral, ties)


def _sending_side(actor: Actor, referral: Record, ties: PatientTies) -> str | None:
    if actor.institution_id != referral.get("from_institution_id") or actor.role == "admin":
        return "only staff of the referring institution may do this"
    return None


RULES: dict[str, Rule] = {
    "account.manage": _admin,
    "audit.read": _admin,
    "patient.create": _create_patient,
    "patient.read": _read_patient,
    "consult.create": _staff_not_admin,
    "consult.read": _read_consult,
    "consult.accept": _answer_request,
    "consult.decline": _answer_request,
    "consult.schedule": _run_consult,
    "consult.start": _run_consult,
    "consult.report": _report_consult,
    "consult.close": _run_consult,
    "consult.cancel": _cancel_consult,
    "consult.attach": _read_consult,
    "consult.invite": _run_consult,
    "consult.host": _run_consult,
    "consult.participants": _run_consult,
    "referral.create": _staff_not_admin,
    "referral.read": _read_referral,
    "referral.review": _receiving_side,
    "referral.accept": _receiving_side,
    "referral.decline": _receiving_side,
    "referral.arrange": _receiving_side,
    "referral.admit": _receiving_side,
    "referral.return": _receiving_side,
    "referral.confirm": _sending_side,
    "referral.cancel": _sending_side,
}


def refusal(actor: Actor, action: str, record: Record | None = None,
            ties: PatientTies = NO_TIES) -> str | None:
    """Why actor may not do action on record, or None if allowed."""
    if not actor.active:
        return "your account is disabled"
    if actor.institution_status != "approved":
        return "your institution is suspended"
    rule = RULES.get(action)
    if rule is None:
        raise KeyError(f"no permission rule for {action!r}")
    return rule(actor, record or {}, ties)


def check(actor: Actor, action: str, record: Record | None = None,
          ties: PatientTies = NO_TIES) -> None:
    reason = refusal(actor, action, record, ties)
    if reason is not None:
        raise Forbidden(reason)


def may_publish(staff_id: str | None, consult: Record) -> bool:
    """In a consult everyone in it publishes (guests too); in a ward round only presenters do."""
    if consult.get("kind") == "round":
        return staff_id is not None and staff_id in consult.get("presenter_ids", ())  # type: ignore[operator]
    return True
