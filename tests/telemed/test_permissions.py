"""The permission matrix: every role against every kind of record relation, in one table."""

from __future__ import annotations

import pytest

from telemed.permissions import RULES, Actor, Forbidden, PatientTies, check, refusal

HOSPITAL, TOWNSHIP, OTHER, AMBULANCE = "hosp", "town", "other", "amb"

ACTORS = {
    "admin": Actor("a", "admin", "admin", HOSPITAL, "approved"),
    "cardiologist": Actor("e1", "cardiologist", "expert", HOSPITAL, "approved", "Cardiology"),
    "radiologist": Actor("e2", "radiologist", "expert", HOSPITAL, "approved", "radiology"),
    "clinician": Actor("c1", "clinician", "clinician", TOWNSHIP, "approved"),
    "other_clinician": Actor("c2", "other", "clinician", OTHER, "approved"),
    "medic": Actor("m1", "medic", "ambulance", AMBULANCE, "approved"),
    "suspended_clinician": Actor("c3", "sus", "clinician", TOWNSHIP, "suspended"),
    "disabled_expert": Actor("e3", "dis", "expert", HOSPITAL, "approved", "cardiology", active=False),
}

PATIENT = {"id": "P", "home_institution_id": TOWNSHIP}
NO_TIES = PatientTies()
ASSIGNED = PatientTies(consult_staff=frozenset({"e1"}), consult_institutions=frozenset({TOWNSHIP}))
OFFERED = PatientTies(offered_consults=frozenset({(HOSPITAL, "cardiology")}),
                      consult_institutions=frozenset({TOWNSHIP}))
REFERRED_TO_OTHER = PatientTies(referral_institutions=frozenset({TOWNSHIP, OTHER}))

REQUESTED = {"id": "C", "kind": "consult", "state": "requested", "requesting_institution_id": TOWNSHIP,
             "requested_by": "c1", "target_institution_id": HOSPITAL, "specialty": "cardiology",
             "expert_id": None, "participant_ids": [], "presenter_ids": []}
ACCEPTED = {**REQUESTED, "state": "accepted", "expert_id": "e1"}
REFERRAL = {"id": "R", "state": "requested", "from_institution_id": TOWNSHIP,
            "to_institution_id": HOSPITAL, "requested_by": "c1", "assignee_id": None}
ASSIGNED_REFERRAL = {**REFERRAL, "state": "accepted", "assignee_id": "e2"}

# (action, record, ties) -> set of actors allowed; everyone else is refused.
MATRIX = [
    ("account.manage", None, NO_TIES, {"admin"}),
    ("audit.read", None, NO_TIES, {"admin"}),
    ("patient.create", PATIENT, NO_TIES, {"admin", "clinician"}),
    ("patient.read", PATIENT, NO_TIES, {"admin", "clinician"}),
    ("patient.read", PATIENT, ASSIGNED, {"admin", "clinician", "cardiologist"}),
    ("patient.read", PATIENT, OFFERED, {"admin", "clinician", "cardiologist"}),
    ("patient.read", PATIENT, REFERRED_TO_OTHER, {"admin", "clinician", "other_clinician"}),
    ("consult.create", REQUESTED, NO_TIES,
     {"cardiologist", "radiologist", "clinician", "other_clinician", "medic"}),
    ("consult.read", REQUESTED, NO_TIES, {"clinician", "cardiologist"}),
    ("consult.read", ACCEPTED, NO_TIES, {"clinician", "cardiologist"}),
    ("consult.accept", REQUESTED, NO_TIES, {"cardiologist"}),
    ("consult.decline", REQUESTED, NO_TIES, {"cardiologist"}),
    ("consult.accept", ACCEPTED, NO_TIES, set()),
    ("consult.schedule", ACCEPTED, NO_TIES, {"clinician", "cardiologist"}),
    ("consult.start", ACCEPTED, NO_TIES, {"clinician", "cardiologist"}),
    ("consult.report", ACCEPTED, NO_TIES, {"cardiologist"}),
    ("consult.close", ACCEPTED, NO_TIES, {"clinician", "cardiologist"}),
    ("consult.cancel", ACCEPTED, NO_TIES, {"clinician"}),
    ("consult.invite", ACCEPTED, NO_TIES, {"clinician", "cardiologist"}),
    ("consult.host", ACCEPTED, NO_TIES, {"clinician", "cardiologist"}),
    ("referral.create", REFERRAL, NO_TIES,
     {"cardiologist", "radiologist", "clinician", "other_clinician", "medic"}),
    ("referral.read", REFERRAL, NO_TIES, {"clinician", "cardiologist", "radiologist"}),
    ("referral.read", ASSIGNED_REFERRAL, NO_TIES, {"clinician", "radiologist"}),
    ("referral.accept", REFERRAL, NO_TIES, {"cardiologist", "radiologist"}),
    ("referral.return", ASSIGNED_REFERRAL, NO_TIES, {"radiologist"}),
    ("referral.confirm", ASSIGNED_REFERRAL, NO_TIES, {"clinician"}),
    ("referral.cancel", REFERRAL, NO_TIES, {"clinician"}),
]


@pytest.mark.parametrize("action,record,ties,allowed", MATRIX,
                         ids=[f"{row[0]}-{i}" for i, row in enumerate(MATRIX)])
def test_matrix(action, record, ties, allowed):
    decided = {name for name, actor in ACTORS.items() if refusal(actor, action, record, ties) is None}
    assert decided == allowed


def test_every_rule_appears_in_the_matrix():
    assert {row[0] for row in MATRIX} >= set(RULES) - {
        "consult.attach", "consult.participants", "referral.review", "referral.decline",
        "referral.arrange", "referral.admit"}


@pytest.mark.parametrize("who,reason", [("suspended_clinician", "suspended"),
                                        ("disabled_expert", "disabled")])
def test_suspended_or_disabled_staff_cannot_act_at_all(who, reason):
    for action in RULES:
        message = refusal(ACTORS[who], action, ACCEPTED, ASSIGNED)
        assert message is not None and reason in message


def test_check_raises_forbidden_and_unknown_action_is_a_bug():
    with pytest.raises(Forbidden):
        check(ACTORS["clinician"], "audit.read")
    with pytest.raises(KeyError):
        check(ACTORS["admin"], "audit.erase")
