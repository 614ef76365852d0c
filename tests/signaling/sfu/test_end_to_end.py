"""Real aiortc peers over ICE/DTLS on loopback, through the media plane: one publishing cart,
two decoding subscribers, and the server in between never decoding or encoding."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket, is_rtcp

from signaling.sfu import IceConfig, MediaPlane, SfuConfig, SubscribePeer, Subscription, Track
from signaling.sfu.ice import gather_on
from signaling.sfu.receiver import ForwardingReceiver
from signaling.sfu.sender import ForwardingSender

from .conftest import LOOPBACK, PublisherClient, SubscriberClient, wait_for

pytestmark = pytest.mark.slow


@dataclass
class Room:
    plane: MediaPlane
    publisher: PublisherClient
    tracks: dict[str, Track]
    clients: list[SubscriberClient]
    peers: list[SubscribePeer]
    subscriptions: list[dict[str, Subscription]]
    speakers: list[Track]
    codec_calls: dict[str, int] = field(default_factory=dict)
    keyframe_requests: list[float] = field(default_factory=list)


def count_calls(monkeypatch: pytest.MonkeyPatch, module: object, name: str,
                calls: dict[str, int]) -> None:
    original = getattr(module, name)
    calls[name] = 0

    def counted(*args, **kwargs):
        calls[name] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


async def connect_subscriber(room: Room, name: str) -> None:
    client = SubscriberClient()
    peer = room.plane.subscriber(name)
    subscriptions = {kind: room.plane.subscribe(peer, track) for kind, track in room.tracks.items()}
    await peer.accept(await client.answer(await peer.offer()))
    room.clients.append(client)
    room.peers.append(peer)
    room.subscriptions.append(subscriptions)


@pytest.fixture
async def room(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Room]:
    calls: dict[str, int] = {}
    count_calls(monkeypatch, aiortc.rtcrtpreceiver, "get_decoder", calls)
    count_calls(monkeypatch, aiortc.rtcrtpsender, "get_encoder", calls)
    speakers: list[Track] = []
    plane = MediaPlane(SfuConfig(ice=IceConfig(addresses=(LOOPBACK,))),
                       on_active_speaker=speakers.append)
    publisher = PublisherClient()
    room = Room(plane, publisher, {}, [], [], [], speakers, calls)
    server_publisher = plane.publisher("cart", on_track=lambda t: room.tracks.__setitem__(t.kind, t))
    await publisher.accept(await server_publisher.answer(await publisher.offer()))
    await wait_for(lambda: len(room.tracks) == 2, what="both published tracks live")
    video_sender = next(s for s in publisher.pc.getSenders() if s.kind == "video")
    original = video_sender._send_keyframe

    def keyframe_requested() -> None:
        room.keyframe_requests.append(asyncio.get_running_loop().time())
        original()

    video_sender._send_keyframe = keyframe_requested
    for i in range(2):
        await connect_subscriber(room, f"expert-{i}")
    await wait_for(lambda: all(len(c.counters) > 15 and c.audio_frames > 25 for c in room.clients),
                   timeout=15, what="video and audio decoded at both subscribers")
    yield room
    for client in room.clients:
        await client.close()
    await publisher.pc.close()
    await plane.close()


def assert_consecutive(counters: list[int], sent: int) -> None:
    assert counters == list(range(counters[0], counters[0] + len(counters))), counters
    assert 1 <= counters[0] and counters[-1] <= sent


async def test_both_subscribers_decode_every_frame_and_audio(room: Room) -> None:
    await wait_for(lambda: all(len(c.counters) > 45 for c in room.clients), what="more frames")
    for client in room.clients:
        assert_consecutive(client.counters, room.publisher.video.sent)
        assert client.audio_frames > 50
    assert {t.codec.mimeType for t in room.tracks.values()} == {"audio/opus", "video/VP8"}
    assert all(track.ssrc is not None for track in room.tracks.values())
    for peer, client in zip(room.peers, room.clients):
        assert {track.id for track in client.tracks} == {t.id for t in room.tracks.values()}
        assert all(s.sender.stats.packets > 0 for s in room.subscriptions[room.peers.index(peer)].values())


async def test_server_never_decodes_or_encodes(room: Room) -> None:
    # Only the clients code media: the publisher encodes audio and video, each subscriber
    # decodes both. The server's transceivers hold forwarding objects or idle aiortc ones.
    assert room.codec_calls == {"get_decoder": 4, "get_encoder": 2}
    decoders = [t for t in threading.enumerate() if t.name.endswith("-decoder")]
    assert len(decoders) == 4
    server_pcs = [p.pc for p in room.plane.publishers.values()] + [p.pc for p in room.peers]
    for pc in server_pcs:
        for transceiver in pc.getTransceivers():
            receiver, sender = transceiver.receiver, transceiver.sender
            assert isinstance(receiver, ForwardingReceiver) or (
                isinstance(receiver, RTCRtpReceiver)
                and receiver._RTCRtpReceiver__decoder_thread is None)
            assert isinstance(sender, ForwardingSender) or (
                isinstance(sender, RTCRtpSender) and sender.track is None)


async def test_keyframe_requests_reach_the_publisher_throttled(room: Room) -> None:
    await asyncio.sleep(0.6)
    before = len(room.keyframe_requests)
    pli_targets = []
    for client, subscriptions in zip(room.clients, room.subscriptions):
        transport = client.pc.getTransceivers()[0].receiver.transport
        pli_targets.append((transport, subscriptions["video"].sender._ssrc))
    for _ in range(5):
        for transport, ssrc in pli_targets:
            await transport._send_rtp(bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=ssrc)))
    await wait_for(lambda: len(room.keyframe_requests) > before, what="a PLI at the publisher")
    await asyncio.sleep(0.7)
    assert len(room.keyframe_requests) == before + 1
    transport, ssrc = pli_targets[1]
    await transport._send_rtp(bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=ssrc)))
    await wait_for(lambda: len(room.keyframe_requests) == before + 2, what="the next PLI")


async def test_lost_packets_are_recovered_on_both_legs(room: Room) -> None:
    """Every 8th video packet is dropped from cart to server and every 6th from server to
    subscriber 0; NACK and RTX recover them, so every frame still decodes in order."""
    dropped = {"uplink": 0, "downlink": 0}

    def lossy(transport, leg: str, payload_type: int, every: int) -> None:
        send = transport._send_rtp

        async def maybe_send(data: bytes) -> None:
            seq = int.from_bytes(data[2:4], "big")
            if not is_rtcp(data) and data[1] & 0x7F == payload_type and seq % every == 0:
                dropped[leg] += 1
                return
            await send(data)

        transport._send_rtp = maybe_send

    uplink = next(t for t in room.publisher.pc.getTransceivers() if t.kind == "video")
    lossy(uplink.sender.transport, "uplink", room.tracks["video"].codec.payloadType, 8)
    down_sender = room.subscriptions[0]["video"].sender
    lossy(down_sender.transport, "downlink", down_sender._ForwardingSender__payload_type, 6)
    start = [len(c.counters) for c in room.clients]
    await wait_for(lambda: all(len(c.counters) - n > 60 for c, n in zip(room.clients, start)),
                   timeout=15, what="frames through the lossy links")
    assert dropped["uplink"] >= 5 and dropped["downlink"] >= 5
    assert down_sender.stats.retransmitted >= dropped["downlink"]
    for client, n in zip(room.clients, start):
        assert_consecutive(client.counters[n:], room.publisher.video.sent)


async def test_stream_survives_a_subscriber_leaving(room: Room) -> None:
    leaving, staying = room.clients
    await leaving.close()
    await room.peers[0].close()
    await room.peers[0].close()
    assert not room.tracks["video"].subscriptions.keys() & {s.id for s in room.subscriptions[0].values()}
    assert "expert-0" not in room.plane.subscribers
    count = len(staying.counters)
    await wait_for(lambda: len(staying.counters) > count + 30, what="frames after the leave")
    assert_consecutive(staying.counters, room.publisher.video.sent)

    # Unsubscribing one track renegotiates: audio stops, video goes on.
    peer = room.peers[1]
    await room.subscriptions[1]["audio"].close()
    assert peer.negotiation_needed
    await peer.accept(await staying.answer(await peer.offer()))
    audio = staying.audio_frames
    count = len(staying.counters)
    await asyncio.sleep(0.5)
    assert staying.audio_frames - audio < 5
    assert len(staying.counters) > count + 10


async def test_active_speaker_and_close(room: Room) -> None:
    await wait_for(lambda: room.speakers, what="an active speaker")
    assert room.speakers[0] is room.tracks["audio"]
    tasks = [s.sender._ForwardingSender__rtcp_task for subs in room.subscriptions for s in subs.values()]
    tasks += [t._receiver._ForwardingReceiver__rtcp_task for t in room.tracks.values()]
    await room.plane.close()
    await room.plane.close()
    assert not room.plane.publishers and not room.plane.subscribers
    assert all(task.done() for task in tasks)
    assert all(track.closed and not track.subscriptions for track in room.tracks.values())
    with pytest.raises(ConnectionError):
        room.plane.subscriber("late")


class H264PublisherClient(PublisherClient):
    """Offers H.264 only for video, as a cart with a hardware H.264 encoder would."""

    async def offer(self):
        self.pc.addTransceiver(self.audio, direction="sendonly")
        video = self.pc.addTransceiver(self.video, direction="sendonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType == "video/H264"])
        await gather_on(self.pc, [LOOPBACK])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription


async def test_h264_is_forwarded_as_offered(plane: MediaPlane) -> None:
    publisher = H264PublisherClient()
    tracks: dict[str, Track] = {}
    server = plane.publisher("cart", on_track=lambda t: tracks.__setitem__(t.kind, t))
    await publisher.accept(await server.answer(await publisher.offer()))
    await wait_for(lambda: len(tracks) == 2, what="both tracks live")
    assert tracks["video"].codec.mimeType == "video/H264"
    client = SubscriberClient()
    peer = plane.subscriber("expert")
    plane.subscribe(peer, tracks["video"])
    offer = await peer.offer()
    assert "H264/90000" in offer.sdp and "VP8" not in offer.sdp
    await peer.accept(await client.answer(offer))
    await wait_for(lambda: len(client.counters) > 30, timeout=15, what="H.264 frames decoded")
    assert_consecutive(client.counters, publisher.video.sent)
    await client.close()
    await publisher.pc.close()


async def test_publisher_gets_bandwidth_feedback_under_the_cap() -> None:
    """The server's REMB reaches the publisher's encoder: aiortc starts at 500 kbit/s, and the
    plane's 300 kbit/s ceiling (or a slower subscriber) brings it down."""
    plane = MediaPlane(SfuConfig(ice=IceConfig(addresses=(LOOPBACK,)), max_bitrate=300_000))
    publisher = PublisherClient()
    tracks: dict[str, Track] = {}
    server = plane.publisher("cart", on_track=lambda t: tracks.__setitem__(t.kind, t))
    await publisher.accept(await server.answer(await publisher.offer()))
    video = next(s for s in publisher.pc.getSenders() if s.kind == "video")
    await wait_for(lambda: video._RTCRtpSender__encoder is not None, what="the video encoder")
    encoder = video._RTCRtpSender__encoder
    assert encoder.target_bitrate == 500_000
    await wait_for(lambda: encoder.target_bitrate == 300_000, what="REMB at the publisher")
    assert tracks["video"].bitrate.target() == 300_000
    await publisher.pc.close()
    await plane.close()
