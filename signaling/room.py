"""Room, Participant, Track and Subscription: who is in a consult's room and what they may do.

I/O-free: the room decides and reports what happened through one `notify(recipient, message)`
callback; sessions own the sockets and the media plane owns the packets. Times are passed in,
so the grace period for resuming a seat is tested without sleeping.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from signaling.protocol import ErrorCode, ProtocolError, event

Notify = Callable[[str, dict[str, Any]], None]
RESUME_GRACE_SECONDS = 30.0


@dataclass
class Track:
    id: str
    participant_id: str
    kind: str
    muted: bool = False
    mid: str | None = None
    """The media section of the publisher's offer that carries it, so the publisher can tell
    which of its own tracks this is."""

    def describe(self) -> dict[str, Any]:
        return {"track_id": self.id, "participant_id": self.participant_id, "kind": self.kind,
                "muted": self.muted, "mid": self.mid}


@dataclass(frozen=True)
class Subscription:
    participant_id: str
    track_id: str


@dataclass
class Participant:
    id: str
    identity: str
    name: str
    is_host: bool
    is_guest: bool
    can_publish: bool
    can_subscribe: bool
    state: str = "active"
    resume_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    disconnected_at: float | None = None
    subscriptions: set[str] = field(default_factory=set)

    def describe(self) -> dict[str, Any]:
        return {"participant_id": self.id, "name": self.name, "is_host": self.is_host,
                "is_guest": self.is_guest, "can_publish": self.can_publish, "state": self.state}


@dataclass(frozen=True)
class Grant:
    """What the join token allows, as the room needs it."""
    identity: str
    name: str
    is_host: bool
    is_guest: bool
    can_publish: bool
    can_subscribe: bool


class Room:
    def __init__(self, room_id: str, kind: str, notify: Notify,
                 resume_grace: float = RESUME_GRACE_SECONDS) -> None:
        self.id = room_id
        self.kind = kind
        self.locked = False
        self.recording = False
        self.recording_by: str | None = None
        """The identity of the host who started the running recording."""
        self.closed = False
        self.resume_grace = resume_grace
        self.participants: dict[str, Participant] = {}
        self.tracks: dict[str, Track] = {}
        self.shared_view: dict[str, Any] | None = None
        self._notify = notify

    # -- delivery -----------------------------------------------------------------------------

    def _active(self) -> Iterable[Participant]:
        return [p for p in self.participants.values() if p.state == "active"]

    def _broadcast(self, message: dict[str, Any], *, exclude: str | None = None,
                   hosts_only: bool = False) -> None:
        for participant in self._active():
            if participant.id != exclude and (participant.is_host or not hosts_only):
                self._notify(participant.id, message)

    def snapshot(self) -> dict[str, Any]:
        return {"room": self.id, "kind": self.kind, "locked": self.locked,
                "recording": self.recording, "shared_view": self.shared_view,
                "participants": [p.describe() for p in self.participants.values()
                                 if p.state != "waiting"],
                "tracks": [t.describe() for t in self.tracks.values()]}

    # -- lookups ------------------------------------------------------------------------------

    def participant(self, participant_id: str) -> Participant:
        found = self.participants.get(participant_id)
        if found is None:
            raise ProtocolError(ErrorCode.UNKNOWN_PARTICIPANT, f"no participant {participant_id!r}")
        return found

    def _host(self, participant_id: str) -> Participant:
        host = self._member(participant_id)
        if not host.is_host:
            raise ProtocolError(ErrorCode.NOT_HOST, "only the host may do this")
        return host

    def _member(self, participant_id: str) -> Participant:
        member = self.participant(participant_id)
        if member.state == "waiting":
            raise ProtocolError(ErrorCode.WAITING, "you are in the waiting room until the host admits you")
        return member

    def _track(self, track_id: str) -> Track:
        track = self.tracks.get(track_id)
        if track is None:
            raise ProtocolError(ErrorCode.UNKNOWN_TRACK, f"no track {track_id!r} in this room")
        return track

    # -- joining and leaving ------------------------------------------------------------------

    def join(self, grant: Grant) -> tuple[Participant, Participant | None]:
        """Seat a new participant; returns it and the older seat of the same identity it
        replaced (the caller closes that session). Guests wait until a host admits them."""
        if self.closed:
            raise ProtocolError(ErrorCode.ROOM_CLOSED, "this room is closed")
        if self.locked and not grant.is_host:
            raise ProtocolError(ErrorCode.ROOM_LOCKED, "the host has locked this room")
        replaced = next((p for p in self.participants.values() if p.identity == grant.identity), None)
        if replaced is not None:
            self._drop(replaced, reason="replaced")
        participant = Participant(
            id=f"PA_{secrets.token_hex(6)}", identity=grant.identity, name=grant.name,
            is_host=grant.is_host, is_guest=grant.is_guest, can_publish=grant.can_publish,
            can_subscribe=grant.can_subscribe, state="waiting" if grant.is_guest else "active")
        self.participants[participant.id] = participant
        if participant.state == "waiting":
            self._broadcast(event("waiting", participant=participant.describe()), hosts_only=True)
        else:
            self._broadcast(event("participant_joined", participant=participant.describe()),
                            exclude=participant.id)
        return participant, replaced

    def admit(self, host_id: str, participant_id: str) -> Participant:
        self._host(host_id)
        guest = self.participant(participant_id)
        if guest.state != "waiting":
            raise ProtocolError(ErrorCode.OUT_OF_ORDER, "that participant is not waiting")
        guest.state = "active"
        self._notify(guest.id, event("admitted", **self.snapshot()))
        self._broadcast(event("participant_joined", participant=guest.describe()), exclude=guest.id)
        return guest

    def disconnect(self, participant_id: str, now: float) -> None:
        """The socket dropped: keep the seat for the grace period so the client can resume."""
        participant = self.participants.get(participant_id)
        if participant is None or participant.state != "active":
            if participant is not None and participant.state == "waiting":
                self._drop(participant, reason="left")
            return
        participant.state = "disconnected"
        participant.disconnected_at = now
        self._broadcast(event("participant_reconnecting", participant_id=participant.id))

    def resume(self, resume_token: str, identity: str, now: float) -> Participant:
        """The same seat and subscriptions, if the token matches within the grace period. A seat
        still marked active is taken over too: its old connection may not know yet it is dead."""
        for participant in self.participants.values():
            in_grace = participant.state == "active" or (
                participant.state == "disconnected" and participant.disconnected_at is not None
                and now - participant.disconnected_at <= self.resume_grace)
            if (participant.resume_token == resume_token and participant.identity == identity
                    and in_grace):
                participant.state = "active"
                participant.disconnected_at = None
                participant.resume_token = secrets.token_urlsafe(24)
                self._broadcast(event("participant_resumed", participant_id=participant.id),
                                exclude=participant.id)
                return participant
        raise ProtocolError(ErrorCode.RESUME_FAILED, "the seat has expired or the resume token is wrong")

    def expire(self, now: float) -> list[Participant]:
        """Drop seats whose grace period has run out; returns them."""
        expired = [p for p in self.participants.values() if p.disconnected_at is not None
                   and now - p.disconnected_at > self.resume_grace]
        for participant in expired:
            self._drop(participant, reason="timeout")
        return expired

    def leave(self, participant_id: str, reason: str = "left") -> None:
        participant = self.participants.get(participant_id)
        if participant is not None:
            self._drop(participant, reason=reason)

    def remove(self, host_id: str, participant_id: str) -> Participant:
        self._host(host_id)
        target = self.participant(participant_id)
        self._notify(target.id, event("removed", reason="removed by the host"))
        self._drop(target, reason="removed")
        return target

    def _drop(self, participant: Participant, reason: str) -> None:
        for track in [t for t in self.tracks.values() if t.participant_id == participant.id]:
            self._unpublish(track)
        self.participants.pop(participant.id, None)
        if participant.state != "waiting":
            self._broadcast(event("participant_left", participant_id=participant.id, reason=reason))

    def close(self) -> list[Participant]:
        """Idempotent; tells everyone and empties the room."""
        if self.closed:
            return []
        self.closed = True
        self._broadcast(event("room_closed"))
        everyone = list(self.participants.values())
        self.participants.clear()
        self.tracks.clear()
        return everyone

    @property
    def empty(self) -> bool:
        return not self.participants

    # -- tracks -------------------------------------------------------------------------------

    def publisher(self, participant_id: str) -> Participant:
        """The participant, if it may publish now; else the reason why not."""
        publisher = self._member(participant_id)
        if not publisher.can_publish:
            reason = "only presenters publish in a ward round" if self.kind == "round" else \
                "your token does not allow publishing"
            raise ProtocolError(ErrorCode.FORBIDDEN, reason)
        return publisher

    def publish(self, participant_id: str, kind: str, track_id: str | None = None,
                mid: str | None = None) -> Track:
        publisher = self.publisher(participant_id)
        track = Track(id=track_id or f"TR_{secrets.token_hex(6)}", participant_id=publisher.id,
                      kind=kind, mid=mid)
        self.tracks[track.id] = track
        self._broadcast(event("track_published", track=track.describe()))
        return track

    def unpublish(self, participant_id: str, track_id: str) -> Track:
        track = self._track(track_id)
        if track.participant_id != participant_id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "you can unpublish only your own tracks")
        self._unpublish(track)
        return track

    def _unpublish(self, track: Track) -> None:
        self.tracks.pop(track.id, None)
        for participant in self.participants.values():
            participant.subscriptions.discard(track.id)
        self._broadcast(event("track_unpublished", track_id=track.id,
                              participant_id=track.participant_id))

    def subscribe(self, participant_id: str, track_ids: Iterable[str]) -> list[Subscription]:
        subscriber = self._member(participant_id)
        if not subscriber.can_subscribe:
            raise ProtocolError(ErrorCode.FORBIDDEN, "your token does not allow subscribing")
        tracks = [self._track(track_id) for track_id in track_ids]
        added = []
        for track in tracks:
            if track.participant_id != subscriber.id and track.id not in subscriber.subscriptions:
                subscriber.subscriptions.add(track.id)
                added.append(Subscription(subscriber.id, track.id))
        return added

    def unsubscribe(self, participant_id: str, track_ids: Iterable[str]) -> list[Subscription]:
        subscriber = self._member(participant_id)
        removed = [Subscription(subscriber.id, t) for t in track_ids if t in subscriber.subscriptions]
        for subscription in removed:
            subscriber.subscriptions.discard(subscription.track_id)
        return removed

    def subscribers(self, track_id: str) -> list[str]:
        return [p.id for p in self.participants.values() if track_id in p.subscriptions]

    def mute(self, participant_id: str, track_id: str, muted: bool) -> Track:
        track = self._track(track_id)
        if track.participant_id != participant_id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "you can mute only your own tracks")
        track.muted = muted
        self._broadcast(event("track_muted", track_id=track.id, muted=muted,
                              participant_id=participant_id))
        return track

    def mute_participant(self, host_id: str, participant_id: str, kind: str) -> list[Track]:
        """The host silences someone: their tracks of that kind stop being forwarded."""
        self._host(host_id)
        target = self._member(participant_id)
        muted = [t for t in self.tracks.values() if t.participant_id == target.id and t.kind == kind]
        for track in muted:
            track.muted = True
            self._broadcast(event("track_muted", track_id=track.id, muted=True,
                                  participant_id=target.id, by_host=True))
        self._notify(target.id, event("mute_requested", kind=kind))
        return muted

    # -- host powers and room-wide events -----------------------------------------------------

    def set_presenter(self, host_id: str, participant_id: str) -> list[Track]:
        """Hand the presenter role over (ward rounds): the old presenters' tracks stop."""
        self._host(host_id)
        presenter = self._member(participant_id)
        withdrawn = []
        if self.kind == "round":
            for other in self._active():
                if other.id != presenter.id and other.can_publish:
                    other.can_publish = False
                    for track in [t for t in self.tracks.values() if t.participant_id == other.id]:
                        self._unpublish(track)
                        withdrawn.append(track)
        presenter.can_publish = True
        self._broadcast(event("presenter_changed", participant_id=presenter.id))
        return withdrawn

    def lock(self, host_id: str, locked: bool) -> None:
        self._host(host_id)
        self.locked = locked
        self._broadcast(event("room_locked", locked=locked))

    def set_recording(self, host_id: str, on: bool) -> None:
        """Everyone is told when recording starts and stops (consent)."""
        host = self._host(host_id)
        self.recording = on
        self.recording_by = host.identity if on else None
        self._broadcast(event("recording", on=on))

    def chat(self, participant_id: str, text: str, at: float) -> None:
        sender = self._member(participant_id)
        self._broadcast(event("chat", participant_id=sender.id, name=sender.name, text=text, at=at))

    def annotate(self, participant_id: str, payload: dict[str, Any]) -> None:
        sender = self._member(participant_id)
        self._broadcast(event("annotation", participant_id=sender.id, payload=payload),
                        exclude=sender.id)

    def share_view(self, participant_id: str, view: dict[str, Any]) -> None:
        """Everyone's viewer follows the sharer's series, slice, window and pointer; the room
        remembers it so late joiners open the same view. A view without a series ends sharing."""
        sharer = self._member(participant_id)
        self.shared_view = {**view, "participant_id": sharer.id} if view.get("series") else None
        self._broadcast(event("view", participant_id=sharer.id, view=self.shared_view),
                        exclude=sharer.id)

    def active_speaker(self, participant_id: str, level: float) -> None:
        if participant_id in self.participants:
            self._broadcast(event("active_speaker", participant_id=participant_id, level=level))
