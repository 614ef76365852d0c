"""State machines of the consult (and ward round) and of the two-way referral.

Pure: they say which action leads where and why an action is refused; who may act is
permissions.py's job, storing the result is the repositories'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

Guard = Callable[[Mapping[str, object]], "str | None"]


class TransitionError(Exception):
    """The action is not allowed from the record's current state (HTTP 409)."""

    def __init__(self, machine: str, state: str, action: str, reason: str,
                 allowed: list[str]) -> None:
        super().__init__(reason)
        self.machine = machine
        self.state = state
        self.action = action
        self.reason = reason
        self.allowed = allowed


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[str]
    target: str
    guard: Guard | None = None
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class StateMachine:
    name: str
    initial: str
    transitions: tuple[Transition, ...]
    final: frozenset[str] = field(default_factory=frozenset)

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(t.action for t in self.transitions)

    def allowed_actions(self, state: str, record: Mapping[str, object]) -> list[str]:
        return sorted({t.action for t in self.transitions
                       if state in t.sources and (t.guard is None or t.guard(record) is None)})

    def transition_for(self, action: str) -> Transition:
        for transition in self.transitions:
            if transition.action == action:
                return transition
        raise KeyError(action)

    def next_state(self, record: Mapping[str, object], action: str) -> str:
        """The state after action, or TransitionError saying why it cannot happen now."""
        state = str(record["state"])
        transition = self.transition_for(action)
        allowed = self.allowed_actions(state, record)
        if state not in transition.sources:
            if state in self.final:
                reason = f"the {self.name} is {state}; nothing more can be done with it"
            else:
                reason = (f"cannot {action} a {self.name} that is {state}; "
                          f"it must be {' or '.join(sorted(transition.sources))}")
            raise TransitionError(self.name, state, action, reason, allowed)
        if transition.guard is not None:
            refusal = transition.guard(record)
            if refusal:
                raise TransitionError(self.name, state, action, refusal, allowed)
        return transition.target


def _start_guard(record: Mapping[str, object]) -> str | None:
    if record["state"] == "accepted" and record.get("urgency") == "routine":
        return "a routine consult must be scheduled before it starts"
    return None


CONSULT = StateMachine(
    name="consult",
    initial="requested",
    transitions=(
        Transition("accept", frozenset({"requested"}), "accepted"),
        Transition("decline", frozenset({"requested"}), "declined", requires=("note",)),
        Transition("schedule", frozenset({"accepted", "scheduled"}), "scheduled",
                   requires=("scheduled_at",)),
        Transition("start", frozenset({"accepted", "scheduled"}), "live", guard=_start_guard),
        Transition("report", frozenset({"live"}), "reported", requires=("report",)),
        Transition("close", frozenset({"reported"}), "closed"),
        Transition("cancel", frozenset({"requested", "accepted", "scheduled"}), "cancelled",
                   requires=("note",)),
    ),
    final=frozenset({"closed", "declined", "cancelled"}),
)

REFERRAL = StateMachine(
    name="referral",
    initial="requested",
    transitions=(
        Transition("review", frozenset({"requested"}), "under_review"),
        Transition("accept", frozenset({"requested", "under_review"}), "accepted"),
        Transition("decline", frozenset({"requested", "under_review"}), "declined",
                   requires=("note",)),
        Transition("arrange", frozenset({"accepted", "arranged"}), "arranged",
                   requires=("arranged_for",)),
        Transition("admit", frozenset({"arranged"}), "in_progress"),
        Transition("return", frozenset({"in_progress"}), "returned", requires=("summary",)),
        Transition("confirm", frozenset({"returned"}), "confirmed"),
        Transition("cancel", frozenset({"requested", "under_review", "accepted", "arranged"}),
                   "cancelled", requires=("note",)),
    ),
    final=frozenset({"confirmed", "declined", "cancelled"}),
)
