"""The state machines alone, without HTTP."""

from __future__ import annotations

import pytest

from telemed.workflow import CONSULT, REFERRAL, TransitionError


def walk(machine, record, actions):
    states = []
    for action in actions:
        record["state"] = machine.next_state(record, action)
        states.append(record["state"])
    return states


def test_consult_happy_path():
    assert walk(CONSULT, {"state": "requested", "urgency": "routine"},
                ["accept", "schedule", "schedule", "start", "report", "close"]) == [
        "accepted", "scheduled", "scheduled", "live", "reported", "closed"]


@pytest.mark.parametrize("urgency,allowed", [("routine", False), ("urgent", True),
                                             ("emergency", True)])
def test_only_urgent_consults_start_unscheduled(urgency, allowed):
    record = {"state": "accepted", "urgency": urgency}
    if allowed:
        assert CONSULT.next_state(record, "start") == "live"
        assert "start" in CONSULT.allowed_actions("accepted", record)
    else:
        with pytest.raises(TransitionError, match="scheduled before"):
            CONSULT.next_state(record, "start")
        assert "start" not in CONSULT.allowed_actions("accepted", record)


@pytest.mark.parametrize("state", sorted(CONSULT.final))
def test_final_states_allow_nothing(state):
    assert CONSULT.allowed_actions(state, {"state": state, "urgency": "routine"}) == []
    with pytest.raises(TransitionError, match="nothing more"):
        CONSULT.next_state({"state": state, "urgency": "urgent"}, "accept")


def test_refusal_names_the_state_needed_and_what_is_possible():
    with pytest.raises(TransitionError) as caught:
        CONSULT.next_state({"state": "requested", "urgency": "routine"}, "report")
    assert caught.value.reason == "cannot report a consult that is requested; it must be live"
    assert caught.value.allowed == ["accept", "cancel", "decline"]


def test_referral_round_trip_and_cancel_window():
    assert walk(REFERRAL, {"state": "requested"},
                ["review", "accept", "arrange", "admit", "return", "confirm"]) == [
        "under_review", "accepted", "arranged", "in_progress", "returned", "confirmed"]
    with pytest.raises(TransitionError):
        REFERRAL.next_state({"state": "in_progress"}, "cancel")


def test_every_state_is_reachable_and_actions_are_unique():
    for machine in (CONSULT, REFERRAL):
        actions = [t.action for t in machine.transitions]
        assert len(actions) == len(set(actions))
        reachable = {machine.initial} | {t.target for t in machine.transitions}
        sources = set().union(*(t.sources for t in machine.transitions))
        assert sources <= reachable
        assert machine.final <= reachable
