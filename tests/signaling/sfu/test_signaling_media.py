"""Media through signaling: real aiortc clients join a room over the real WebSocket endpoint,
publish with an offer, subscribe to announced tracks and answer the server's offers; the
server forwards without decoding, and bad or out-of-order media messages leave the room and
the streams as they were."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import RTCSessionDescription

from .conftest import PublisherClient, SubscriberClient, wait_for
from .test_end_to_end import assert_consecutive, count_calls

pytestmark = pytest.mark.slow


@dataclass
class Member:
    """One participant: its signaling socket and, when it publishes or subscribes, its peers."""

    peer: Any
    publisher: PublisherClient | None = None
    subscriber: SubscriberClient = field(default_factory=SubscriberClient)
    offers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.peer.joined["participant_id"]

    async def publish(self) -> None:
        self.publisher = PublisherClient()
        offer = await self.publisher.offer()
        await self.peer.send(type="offer", sdp=offer.sdp)
        answer = await self.peer.next("answer")
        await self.publisher.accept(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    async def answer_next_offer(self) -> dict[str, Any]:
        offer = await self.peer.next("offer", timeout=10)
        self.offers.append(offer)
        answer = await self.subscriber.answer(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await self.peer.send(type="answer", sdp=answer.sdp)
        return offer

    async def close(self) -> None:
        await self.subscriber.close()
        if self.publisher is not None:
            await self.publisher.pc.close()


async def published_tracks(member: Member, publisher_id: str, count: int = 2) -> dict[str, str]:
    """kind -> track id, from the track_published events this member sees."""
    tracks: dict[str, str] = {}
    while len(tracks) < count:
        track = (await member.peer.next("track_published", timeout=10))["track"]
        if track["participant_id"] == publisher_id:
            tracks[track["kind"]] = track["track_id"]
    return tracks


@pytest.fixture
async def consult(signaling, monkeypatch):
    """A cart publishing audio and video, two experts subscribed to both and decoding."""
    calls: dict[str, int] = {}
    count_calls(monkeypatch, aiortc.rtcrtpreceiver, "get_decoder", calls)
    count_calls(monkeypatch, aiortc.rtcrtpsender, "get_encoder", calls)
    cart = Member(await signaling.join("cart", host=True))
    experts = [Member(await signaling.join(f"expert-{i}")) for i in range(2)]
    await cart.publish()
    tracks = {}
    for expert in experts:
        tracks = await published_tracks(expert, cart.id)
        await expert.peer.send(type="subscribe", track_ids=list(tracks.values()))
        assert (await expert.peer.next("subscribed"))["track_ids"] == list(tracks.values())
        offer = await expert.answer_next_offer()
        assert sorted(offer["tracks"].values()) == sorted(tracks.values())
    await wait_for(lambda: all(len(e.subscriber.counters) > 15 and e.subscriber.audio_frames > 25
                               for e in experts), timeout=15, what="both experts decoding")
    yield cart, experts, tracks, calls
    for member in (cart, *experts):
        await member.close()


async def test_experts_see_and_hear_the_cart_through_the_sfu(consult, signaling) -> None:
    cart, experts, tracks, calls = consult
    await wait_for(lambda: all(len(e.subscriber.counters) > 45 for e in experts), what="frames")
    for expert in experts:
        assert_consecutive(expert.subscriber.counters, cart.publisher.video.sent)
        assert expert.subscriber.audio_frames > 50
    # Only clients code media: the cart encodes two tracks, each expert decodes two.
    assert calls == {"get_decoder": 4, "get_encoder": 2}
    assert len([t for t in threading.enumerate() if t.name.endswith("-decoder")]) == 4
    mids = {t["mid"] for t in cart.peer.joined["tracks"]} if cart.peer.joined["tracks"] else set()
    assert not mids  # nothing was published when the cart joined
    room = signaling.rooms.rooms["room-1"]
    assert {t.mid for t in room.tracks.values()} == {"0", "1"}
    speaker = await experts[0].peer.next("active_speaker", timeout=10)
    assert speaker["participant_id"] == cart.id and 0 < speaker["level"] <= 1


async def test_bad_media_messages_leave_the_streams_alone(consult, signaling) -> None:
    cart, experts, tracks, _ = consult
    expert = experts[0]
    for message, code in (
            ({"type": "answer", "sdp": "v=0\r\n"}, "out_of_order"),
            ({"type": "offer", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\ngarbage"}, "bad_sdp"),
            ({"type": "candidate", "target": "publisher", "candidate": "candidate:1 1 udp"},
             "bad_message"),
            ({"type": "subscribe", "track_ids": ["TR_gone"]}, "unknown_track"),
            ({"type": "candidate", "target": "subscriber", "candidate": "nonsense"}, "out_of_order")):
        await cart.peer.send(**message)
        error = await cart.peer.next("error")
        assert error["code"] == code, (message, error)
    await expert.peer.send(type="answer", sdp=expert.offers[-1]["sdp"].replace("offer", "x"))
    assert (await expert.peer.next("error"))["code"] == "out_of_order"
    before = [len(e.subscriber.counters) for e in experts]
    await wait_for(lambda: all(len(e.subscriber.counters) > n + 20 for e, n in zip(experts, before)),
                   what="frames after the bad messages")
    for member in experts:
        assert_consecutive(member.subscriber.counters, cart.publisher.video.sent)
    # A trickled candidate of the client's is taken.
    candidate = cart.publisher.pc.localDescription.sdp.split("a=candidate:")[1].split("\r\n")[0]
    await cart.peer.send(type="candidate", target="publisher", candidate="candidate:" + candidate,
                         sdp_mid="0")
    await cart.peer.send(type="ping")
    assert (await cart.peer.next())["type"] == "pong"


async def test_viewers_of_a_round_cannot_publish(signaling) -> None:
    presenter = Member(await signaling.join("cart", kind="round", host=True))
    student = Member(await signaling.join("student", kind="round", publish=False))
    student.publisher = PublisherClient()
    offer = await student.publisher.offer()
    await student.peer.send(type="offer", sdp=offer.sdp)
    error = await student.peer.next("error")
    assert error["code"] == "forbidden" and "presenters" in error["message"]
    await presenter.publish()
    tracks = await published_tracks(student, presenter.id)
    await student.peer.send(type="subscribe", track_ids=[tracks["video"]])
    await student.answer_next_offer()
    await wait_for(lambda: len(student.subscriber.counters) > 10, what="the presenter's video")
    for member in (presenter, student):
        await member.close()


async def test_resume_keeps_subscriptions_and_renegotiation_works(consult, signaling) -> None:
    cart, experts, tracks, _ = consult
    expert = experts[0]
    resume_token = expert.peer.joined["resume_token"]
    await expert.peer.ws.close()
    await cart.peer.next("participant_reconnecting")
    count = len(expert.subscriber.counters)
    await wait_for(lambda: len(expert.subscriber.counters) > count + 15,
                   what="media while the socket is down")
    expert.peer = await signaling.connect()
    await expert.peer.send(type="join", token=signaling.token("expert-0"), resume=resume_token)
    expert.peer.joined = await expert.peer.next("joined")
    await expert.peer.send(type="unsubscribe", track_ids=[tracks["audio"]])
    assert (await expert.peer.next("unsubscribed"))["track_ids"] == [tracks["audio"]]
    offer = await expert.answer_next_offer()
    assert list(offer["tracks"].values()) == [tracks["video"]]
    await asyncio.sleep(0.5)
    audio, count = expert.subscriber.audio_frames, len(expert.subscriber.counters)
    await asyncio.sleep(0.6)
    assert expert.subscriber.audio_frames - audio < 5
    assert len(expert.subscriber.counters) > count + 10


async def test_host_mute_and_removal_stop_forwarding(consult, signaling) -> None:
    cart, experts, tracks, _ = consult
    host = experts[0]
    # the cart is the host of this room; it silences its own video, then an expert leaves
    await cart.peer.send(type="mute_participant", participant_id=cart.id, kind="video")
    await host.peer.next("track_muted")
    await asyncio.sleep(0.5)
    count = len(host.subscriber.counters)
    await asyncio.sleep(0.6)
    assert len(host.subscriber.counters) - count <= 1
    await cart.peer.send(type="mute", track_id=tracks["video"], muted=False)
    await wait_for(lambda: len(host.subscriber.counters) > count + 10, what="video after unmute")
    await cart.peer.send(type="remove", participant_id=experts[1].id)
    await host.peer.next("participant_left")
    await wait_for(lambda: experts[1].id not in signaling.rooms.media["room-1"].plane.subscribers,
                   what="the removed expert's connection closed")
    await cart.peer.send(type="unpublish", track_id=tracks["audio"])
    await host.peer.next("track_unpublished")
    offer = await host.answer_next_offer()
    assert list(offer["tracks"].values()) == [tracks["video"]]
    count = len(host.subscriber.counters)
    await wait_for(lambda: len(host.subscriber.counters) > count + 10, what="video goes on")


async def test_an_offer_from_a_new_connection_replaces_the_old_one(consult) -> None:
    """A reloaded cart page offers from a fresh RTCPeerConnection while the server still holds
    the old one: the old tracks leave the room and the new ones are forwarded."""
    cart, experts, tracks, _ = consult
    expert = experts[0]
    old = cart.publisher
    await cart.publish()
    unpublished = {(await expert.peer.next("track_unpublished", timeout=10))["track_id"]
                   for _ in range(2)}
    assert unpublished == set(tracks.values())
    # the old tracks' sections turn inactive in a new offer; the new tracks are announced
    fresh: dict[str, str] = {}
    answered = False
    while len(fresh) < 2 or not answered:
        message = await expert.peer.next(timeout=10)
        if message["type"] == "track_published":
            fresh[message["track"]["kind"]] = message["track"]["track_id"]
        elif message["type"] == "offer":
            answer = await expert.subscriber.answer(
                RTCSessionDescription(sdp=message["sdp"], type="offer"))
            await expert.peer.send(type="answer", sdp=answer.sdp)
            answered = True
    assert not set(fresh.values()) & unpublished
    await expert.peer.send(type="subscribe", track_ids=[fresh["video"]])
    await expert.answer_next_offer()
    count = len(expert.subscriber.counters)
    await wait_for(lambda: len(expert.subscriber.counters) > count + 20, timeout=15,
                   what="video from the new connection")
    await old.pc.close()
