"""The room's rules without sockets or media: roles, waiting room, lock, presenter, resume."""

from __future__ import annotations

from collections import defaultdict

import pytest

from signaling.protocol import ErrorCode, ProtocolError
from signaling.room import Grant, Room


class Inbox:
    def __init__(self) -> None:
        self.by_participant: dict[str, list[dict]] = defaultdict(list)

    def __call__(self, participant_id: str, message: dict) -> None:
        self.by_participant[participant_id].append(message)

    def types(self, participant_id: str) -> list[str]:
        return [m["type"] for m in self.by_participant[participant_id]]

    def clear(self) -> None:
        self.by_participant.clear()


def grant(identity: str, *, host=False, guest=False, publish=True, subscribe=True) -> Grant:
    return Grant(identity, identity.title(), host, guest, publish, subscribe)


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


def code_of(fn, *args) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        fn(*args)
    return caught.value.code


def test_consult_everyone_publishes_and_subscribes(inbox):
    room = Room("c1", "consult", inbox)
    expert, _ = room.join(grant("expert", host=True))
    cart, _ = room.join(grant("cart"))
    assert inbox.types(expert.id) == ["participant_joined"]
    video = room.publish(cart.id, "video")
    assert "track_published" in inbox.types(expert.id)
    assert room.subscribe(expert.id, [video.id])[0].track_id == video.id
    assert room.subscribe(expert.id, [video.id]) == []
    assert room.subscribers(video.id) == [expert.id]
    assert code_of(room.subscribe, expert.id, ["nope"]) is ErrorCode.UNKNOWN_TRACK
    room.unpublish(cart.id, video.id)
    assert room.subscribers(video.id) == [] and video.id not in room.tracks


def test_round_only_presenter_publishes_and_handover_withdraws_tracks(inbox):
    room = Room("r1", "round", inbox)
    host, _ = room.join(grant("host", host=True, publish=False))
    cart, _ = room.join(grant("cart", publish=True))
    student, _ = room.join(grant("student", publish=False))
    camera = room.publish(cart.id, "video")
    room.subscribe(student.id, [camera.id])
    assert code_of(room.publish, student.id, "video") is ErrorCode.FORBIDDEN
    assert code_of(room.set_presenter, student.id, student.id) is ErrorCode.NOT_HOST
    withdrawn = room.set_presenter(host.id, student.id)
    assert [t.id for t in withdrawn] == [camera.id]
    assert not cart.can_publish and student.can_publish
    assert room.subscribers(camera.id) == []
    assert "presenter_changed" in inbox.types(cart.id)
    room.publish(student.id, "video")


def test_guest_waits_until_admitted_and_sees_nothing_before(inbox):
    room = Room("c1", "consult", inbox)
    host, _ = room.join(grant("host", host=True))
    other, _ = room.join(grant("other"))
    guest, _ = room.join(grant("guest-1", guest=True))
    assert guest.state == "waiting"
    assert inbox.types(host.id)[-1] == "waiting" and "waiting" not in inbox.types(other.id)
    assert code_of(room.chat, guest.id, "hello", 0.0) is ErrorCode.WAITING
    assert code_of(room.publish, guest.id, "video") is ErrorCode.WAITING
    assert code_of(room.admit, other.id, guest.id) is ErrorCode.NOT_HOST
    room.admit(host.id, guest.id)
    assert guest.state == "active"
    assert inbox.types(guest.id) == ["admitted"]
    assert inbox.by_participant[guest.id][0]["participants"]
    assert code_of(room.admit, host.id, guest.id) is ErrorCode.OUT_OF_ORDER


def test_lock_keeps_newcomers_out_but_not_hosts(inbox):
    room = Room("c1", "consult", inbox)
    host, _ = room.join(grant("host", host=True))
    room.lock(host.id, True)
    assert code_of(room.join, grant("late")) is ErrorCode.ROOM_LOCKED
    room.join(grant("cohost", host=True))
    room.lock(host.id, False)
    room.join(grant("late"))


def test_host_mutes_and_removes(inbox):
    room = Room("c1", "consult", inbox)
    host, _ = room.join(grant("host", host=True))
    noisy, _ = room.join(grant("noisy"))
    mic = room.publish(noisy.id, "audio")
    room.publish(noisy.id, "video")
    muted = room.mute_participant(host.id, noisy.id, "audio")
    assert [t.id for t in muted] == [mic.id] and mic.muted
    assert inbox.types(noisy.id)[-1] == "mute_requested"
    room.remove(host.id, noisy.id)
    assert noisy.id not in room.participants and not room.tracks
    assert "removed" in inbox.types(noisy.id)
    assert inbox.by_participant[host.id][-1] == {"type": "participant_left",
                                                 "participant_id": noisy.id, "reason": "removed"}


def test_recording_is_announced_to_everyone(inbox):
    room = Room("c1", "consult", inbox)
    host, _ = room.join(grant("host", host=True))
    cart, _ = room.join(grant("cart"))
    assert code_of(room.set_recording, cart.id, True) is ErrorCode.NOT_HOST
    room.set_recording(host.id, True)
    assert {"type": "recording", "on": True} in inbox.by_participant[cart.id]
    assert {"type": "recording", "on": True} in inbox.by_participant[host.id]


def test_resume_within_grace_keeps_seat_and_subscriptions(inbox):
    room = Room("c1", "consult", inbox, resume_grace=30)
    cart, _ = room.join(grant("cart"))
    expert, _ = room.join(grant("expert"))
    camera = room.publish(cart.id, "video")
    room.subscribe(expert.id, [camera.id])
    old_token = expert.resume_token
    room.disconnect(expert.id, now=100.0)
    assert "participant_reconnecting" in inbox.types(cart.id)
    assert room.expire(now=120.0) == []
    assert code_of(room.resume, old_token, "someone-else", 125.0) is ErrorCode.RESUME_FAILED
    resumed = room.resume(old_token, "expert", now=125.0)
    assert resumed is expert and expert.subscriptions == {camera.id}
    assert expert.resume_token != old_token
    assert code_of(room.resume, old_token, "expert", 126.0) is ErrorCode.RESUME_FAILED


def test_seat_expires_after_grace_and_its_tracks_go(inbox):
    room = Room("c1", "consult", inbox, resume_grace=30)
    cart, _ = room.join(grant("cart"))
    expert, _ = room.join(grant("expert"))
    camera = room.publish(cart.id, "video")
    room.disconnect(cart.id, now=0.0)
    assert [p.id for p in room.expire(now=31.0)] == [cart.id]
    assert camera.id not in room.tracks
    assert "track_unpublished" in inbox.types(expert.id)
    assert code_of(room.resume, cart.resume_token, "cart", 31.0) is ErrorCode.RESUME_FAILED


def test_same_identity_joining_again_replaces_the_old_seat(inbox):
    room = Room("c1", "consult", inbox)
    first, _ = room.join(grant("cart"))
    second, replaced = room.join(grant("cart"))
    assert replaced is first and list(room.participants) == [second.id]


def test_chat_and_annotation_reach_the_room(inbox):
    room = Room("c1", "consult", inbox)
    a, _ = room.join(grant("a"))
    b, _ = room.join(grant("b"))
    room.chat(a.id, "look at V2", at=1.5)
    room.annotate(a.id, {"x": 0.4, "y": 0.6, "series": "1.2.3"})
    assert inbox.by_participant[b.id][-2] == {"type": "chat", "participant_id": a.id, "name": "A",
                                              "text": "look at V2", "at": 1.5}
    assert inbox.by_participant[b.id][-1]["payload"]["series"] == "1.2.3"
    assert "annotation" not in inbox.types(a.id)


def test_close_is_idempotent_and_refuses_new_joins(inbox):
    room = Room("c1", "consult", inbox)
    a, _ = room.join(grant("a"))
    assert [p.id for p in room.close()] == [a.id]
    assert room.close() == []
    assert inbox.types(a.id)[-1] == "room_closed"
    assert code_of(room.join, grant("b")) is ErrorCode.ROOM_CLOSED


def test_only_owner_mutes_or_unpublishes_a_track(inbox):
    room = Room("c1", "consult", inbox)
    a, _ = room.join(grant("a"))
    b, _ = room.join(grant("b"))
    track = room.publish(a.id, "audio")
    assert code_of(room.mute, b.id, track.id, True) is ErrorCode.FORBIDDEN
    assert code_of(room.unpublish, b.id, track.id) is ErrorCode.FORBIDDEN
    room.mute(a.id, track.id, True)
    assert track.muted


def test_shared_view_reaches_others_and_late_joiners(inbox):
    room = Room("c1", "consult", inbox)
    radiologist, _ = room.join(grant("radiologist"))
    clinician, _ = room.join(grant("clinician"))
    view = {"series": "1.2.840.1", "slice": 14, "window_center": 40.0, "window_width": 80.0,
            "pointer_x": 0.31, "pointer_y": 0.62}
    room.share_view(radiologist.id, view)
    assert inbox.by_participant[clinician.id][-1] == {
        "type": "view", "participant_id": radiologist.id,
        "view": {**view, "participant_id": radiologist.id}}
    assert "view" not in inbox.types(radiologist.id)
    assert room.snapshot()["shared_view"]["slice"] == 14
    room.share_view(radiologist.id, {"series": None})
    assert room.shared_view is None and inbox.by_participant[clinician.id][-1]["view"] is None
