"""WHIP publishing and WHEP playing over real HTTP and real ICE/DTLS on loopback: a device
publishes with one request, a player receives it with another, both hang up with DELETE; bad
requests get problem documents and leave the room as it was."""

from __future__ import annotations

import pytest
from aiortc import RTCSessionDescription

from .conftest import LOOPBACK, PublisherClient, SubscriberClient, loopback_candidates, wait_for
from .test_end_to_end import assert_consecutive

pytestmark = pytest.mark.slow

SDP = "application/sdp"


class Player(SubscriberClient):
    """A WHEP player: it offers to receive audio and video."""

    async def offer(self) -> RTCSessionDescription:
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        from signaling.sfu.ice import gather_on
        await gather_on(self.pc, [LOOPBACK])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription

    async def accept(self, sdp: str) -> None:
        loopback_candidates(sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))


async def post_sdp(client, path: str, token: str | None, sdp: str, content_type: str = SDP):
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await client.post(path, data=sdp.encode(), headers=headers)


async def test_whip_device_is_played_by_a_whep_player_and_hangs_up(signaling) -> None:
    client = signaling.client
    expert = await signaling.join("expert")
    device = PublisherClient()
    response = await post_sdp(client, "/whip/room-1", signaling.token("cart-camera"),
                              (await device.offer()).sdp)
    assert response.status == 201, await response.text()
    assert response.content_type == SDP
    whip_location = response.headers["Location"]
    assert whip_location.startswith("/whip/room-1/")
    await device.accept(RTCSessionDescription(sdp=await response.text(), type="answer"))
    published = {(await expert.next("track_published", timeout=10))["track"]["kind"]
                 for _ in range(2)}
    assert published == {"audio", "video"}

    player = Player()
    response = await post_sdp(client, "/whep/room-1", signaling.token("student", publish=False),
                              (await player.offer()).sdp)
    assert response.status == 201, await response.text()
    whep_location = response.headers["Location"]
    await player.accept(await response.text())
    await wait_for(lambda: len(player.counters) > 30 and player.audio_frames > 30, timeout=15,
                   what="the player decoding the device")
    assert_consecutive(player.counters, device.video.sent)
    names = {p.name for p in signaling.rooms.rooms["room-1"].participants.values()}
    assert names == {"Expert", "Cart-Camera (WHIP)", "Student (WHEP)"}

    headers = {"Authorization": f"Bearer {signaling.token('cart-camera')}"}
    assert (await client.patch(whip_location, headers=headers)).status == 405
    assert (await client.delete(whip_location, headers=headers)).status == 200
    assert (await expert.next("track_unpublished"))["participant_id"]
    assert (await client.delete(whip_location, headers=headers)).status == 404
    student = {"Authorization": f"Bearer {signaling.token('student', publish=False)}"}
    assert (await client.delete(whep_location, headers=student)).status == 200
    await wait_for(lambda: len(signaling.rooms.rooms["room-1"].participants) == 1,
                   what="only the expert left")
    await player.close()
    await device.pc.close()


async def test_bad_whip_and_whep_requests_get_problems(signaling) -> None:
    client = signaling.client
    expert = await signaling.join("expert")
    device = PublisherClient()
    offer = (await device.offer()).sdp
    cases = [
        ("/whip/room-1", None, offer, SDP, 401),
        ("/whip/room-1", signaling.token("cam", room="other"), offer, SDP, 403),
        ("/whip/room-1", signaling.token("cam", publish=False), offer, SDP, 403),
        ("/whip/room-1", signaling.token("cam", guest=True), offer, SDP, 403),
        ("/whip/room-1", signaling.token("cam"), offer, "application/json", 415),
        ("/whip/room-1", signaling.token("cam"), "hello", SDP, 400),
        ("/whip/room-1", signaling.token("cam"), "v=0\r\nm=video 9 RTP/AVP 96\r\nx", SDP, 400),
        ("/whip/room-1", signaling.token("cam"), "v=0\r\n" + "a=x\r\n" * 10_000, SDP, 413),
        ("/whep/room-1", signaling.token("viewer"), offer.replace("sendonly", "recvonly"), SDP, 409),
    ]
    for path, token, sdp, content_type, status in cases:
        response = await post_sdp(client, path, token, sdp, content_type)
        assert response.status == status, (path, status, await response.text())
        assert response.content_type == "application/problem+json"
    assert (await client.delete("/whip/room-1/nope", headers={
        "Authorization": f"Bearer {signaling.token('cam')}"})).status == 404
    room = signaling.rooms.rooms["room-1"]
    assert [p.name for p in room.participants.values()] == ["Expert"]
    assert not signaling.rooms.http_resources
    # An offer that parses but cannot be applied seats the device for a moment; nothing stays.
    await expert.send(type="ping")
    seen = []
    while (message := await expert.next())["type"] != "pong":
        seen.append(message["type"])
    assert seen == ["participant_joined", "participant_left"]
    await device.pc.close()


async def test_a_device_whose_connection_dies_leaves_the_room(signaling) -> None:
    expert = await signaling.join("expert")
    device = PublisherClient()
    response = await post_sdp(signaling.client, "/whip/room-1", signaling.token("cam"),
                              (await device.offer()).sdp)
    await device.accept(RTCSessionDescription(sdp=await response.text(), type="answer"))
    await expert.next("track_published", timeout=10)
    await device.pc.close()
    left = await expert.next("participant_left", timeout=40)
    assert left["reason"] == "connection_failed"
    assert not signaling.rooms.http_resources
