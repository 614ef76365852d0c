"""Signaling over real WebSockets: joining, errors that leave the room intact, resume, hosts."""

from __future__ import annotations

import asyncio

from telemed.api.context import BUS


async def test_join_snapshot_and_presence_events(signaling):
    first = await signaling.join("expert", host=True)
    assert first.joined["state"] == "active" and first.joined["resume_token"]
    assert first.joined["participants"][0]["participant_id"] == first.joined["participant_id"]
    second = await signaling.join("cart")
    assert {p["name"] for p in second.joined["participants"]} == {"Expert", "Cart"}
    event = await first.next("participant_joined")
    assert event["participant"]["participant_id"] == second.joined["participant_id"]
    await second.send(type="chat", text="can you see the wound?")
    chat = await first.next("chat")
    assert chat["text"] == "can you see the wound?" and chat["name"] == "Cart"


async def test_bad_tokens_are_refused_and_the_socket_closed(signaling):
    for token, code in (("garbage", "unauthorized"),
                        (signaling.token("x", room="other-room"), "forbidden"),
                        (signaling.token("x", ttl=-5), "unauthorized")):
        peer = await signaling.connect()
        await peer.send(type="join", token=token)
        error = await peer.next()
        assert (error["type"], error["code"]) == ("error", code)
        assert await peer.closed() == 1008
    assert not signaling.rooms.rooms


async def test_api_token_is_not_a_room_token(signaling):
    from telemed.auth import Claims
    from telemed.api.context import TOKENS
    api_token = signaling.client.app[TOKENS].issue(Claims("u", "api", "expert", "u", None))
    peer = await signaling.connect()
    await peer.send(type="join", token=api_token)
    assert (await peer.next())["code"] == "unauthorized"


async def test_no_join_in_time_is_cut_off(signaling):
    peer = await signaling.connect()
    assert (await peer.next())["code"] == "not_joined"
    assert await peer.closed() == 1008


async def test_malformed_and_out_of_order_messages_leave_the_room_intact(signaling):
    host = await signaling.join("expert", host=True)
    cart = await signaling.join("cart")
    await host.next("participant_joined")
    before_join = await signaling.connect()
    await before_join.send(type="chat", text="hi")
    assert (await before_join.next())["code"] == "not_joined"
    for frame, code in (("{oops", "bad_json"), ('{"type": "fly"}', "unknown_type"),
                        ('{"type": "chat"}', "bad_message"),
                        ('{"type": "offer", "sdp": "nonsense"}', "bad_sdp"),
                        ('{"type": "subscribe", "track_ids": ["TR_nope"]}', "unknown_track"),
                        ('{"type": "lock", "locked": true}', "not_host"),
                        ('{"type": "admit", "participant_id": "PA_x"}', "not_host"),
                        ('{"type": "join", "token": "again"}', "already_joined")):
        await cart.ws.send_str(frame)
        assert (await cart.next("error"))["code"] == code
    await cart.ws.send_bytes(b"\x00\x01binary")
    assert (await cart.next("error"))["code"] == "bad_json"
    await cart.send(type="chat", text="still here")
    assert (await host.next("chat"))["text"] == "still here"
    assert len(signaling.rooms.rooms["room-1"].participants) == 2


async def test_flooding_client_is_limited_then_cut_off_and_others_unaffected(signaling):
    host = await signaling.join("expert", host=True)
    flooder = await signaling.join("flooder")
    await host.next("participant_joined")
    for i in range(120):
        await flooder.send(type="chat", text=f"spam {i}")
    limited = 0
    while True:
        message = await flooder.next()
        if message["type"] == "error":
            assert message["code"] == "rate_limited"
            limited += 1
        if limited >= 30:
            break
    assert await flooder.closed() == 1008
    received = 0
    while True:
        message = await host.next()
        if message["type"] == "chat":
            received += 1
        if message["type"] == "participant_reconnecting":
            break
    assert 15 <= received <= 25
    await host.send(type="ping")
    assert (await host.next("pong"))["type"] == "pong"


async def test_resume_after_a_dropped_socket_keeps_the_seat(signaling):
    host = await signaling.join("expert", host=True)
    cart = await signaling.join("cart")
    await host.next("participant_joined")
    seat, token = cart.joined["participant_id"], cart.joined["resume_token"]
    await cart.ws.close()
    assert (await host.next("participant_reconnecting"))["participant_id"] == seat
    back = await signaling.connect()
    await back.send(type="join", token=signaling.token("cart"), resume=token)
    joined = await back.next("joined")
    assert joined["participant_id"] == seat and joined["resume_token"] != token
    assert (await host.next("participant_resumed"))["participant_id"] == seat
    stranger = await signaling.connect()
    await stranger.send(type="join", token=signaling.token("someone"), resume=joined["resume_token"])
    assert (await stranger.next())["code"] == "resume_failed"


async def test_resume_takes_over_a_half_open_connection(signaling):
    cart = await signaling.join("cart")
    again = await signaling.connect()
    await again.send(type="join", token=signaling.token("cart"), resume=cart.joined["resume_token"])
    assert (await again.next("joined"))["participant_id"] == cart.joined["participant_id"]
    assert await cart.closed() == 1008
    await again.send(type="ping")
    await again.next("pong")
    assert len(signaling.rooms.rooms["room-1"].participants) == 1


async def test_expired_seat_is_released(signaling):
    signaling.rooms.resume_grace = 0.0
    signaling.rooms.rooms.clear()
    host = await signaling.join("expert", host=True)
    cart = await signaling.join("cart")
    await host.next("participant_joined")
    await cart.ws.close()
    await host.next("participant_reconnecting")
    left = await host.next("participant_left", timeout=5)
    assert left["reason"] == "timeout"


async def test_guest_waits_and_the_host_admits(signaling):
    host = await signaling.join("expert", host=True)
    guest = await signaling.join("guest-abc", guest=True)
    assert guest.joined["state"] == "waiting" and "participants" not in guest.joined
    waiting = await host.next("waiting")
    await host.send(type="admit", participant_id=waiting["participant"]["participant_id"])
    admitted = await guest.next("admitted")
    assert len(admitted["participants"]) == 2


async def test_host_removes_a_participant_and_leave_is_announced(signaling):
    host = await signaling.join("expert", host=True)
    other = await signaling.join("other")
    third = await signaling.join("third")
    await host.send(type="remove", participant_id=other.joined["participant_id"])
    assert (await other.next("removed"))["reason"] == "removed by the host"
    assert await other.closed() == 1000
    await third.send(type="leave")
    assert await third.closed() == 1000
    left = await host.next("participant_left")
    assert left["reason"] == "removed"
    left = await host.next("participant_left")
    assert left["reason"] == "left"


async def test_recording_notice_and_lock(signaling):
    host = await signaling.join("expert", host=True)
    cart = await signaling.join("cart")
    await host.send(type="record", on=True)
    assert (await cart.next("recording"))["on"] is True
    await host.send(type="lock", locked=True)
    assert (await cart.next("room_locked"))["locked"] is True
    late = await signaling.connect()
    await late.send(type="join", token=signaling.token("late"))
    assert (await late.next())["code"] == "room_locked"


async def test_room_closes_when_its_consult_is_reported(signaling):
    host = await signaling.join("expert", room="consult-9", host=True)
    await signaling.client.app[BUS].publish("consults", {"consult_id": "consult-9",
                                                         "action": "report", "state": "reported"})
    assert (await host.next("room_closed"))["type"] == "room_closed"
    assert await host.closed() == 1000
    await asyncio.sleep(0.05)
    assert "consult-9" not in signaling.rooms.rooms


async def test_reading_together_over_the_socket(signaling):
    radiologist = await signaling.join("radiologist", host=True)
    clinician = await signaling.join("clinician")
    await radiologist.send(type="share_view", series="1.2.840.99", slice=7, window_center=40,
                           window_width=80)
    view = await clinician.next("view")
    assert view["view"]["slice"] == 7 and view["view"]["window_width"] == 80.0
    late = await signaling.join("student")
    assert late.joined["shared_view"]["series"] == "1.2.840.99"


def test_turn_credentials_follow_coturn_rest_scheme():
    import base64
    import hashlib
    import hmac

    from signaling.routes import ice_servers
    from telemed.settings import Settings
    settings = Settings(ice_servers=("stun:stun.example.org:3478", "turn:turn.example.org:3478"),
                        turn_secret="shared-with-coturn", turn_credential_ttl_seconds=600)
    stun, turn = ice_servers(settings, "PA_1", now=1_000_000)
    assert stun == {"urls": ["stun:stun.example.org:3478"]}
    assert turn["username"] == "1000600:PA_1"
    expected = hmac.new(b"shared-with-coturn", b"1000600:PA_1", hashlib.sha1).digest()
    assert base64.b64decode(turn["credential"]) == expected
    plain = ice_servers(Settings(ice_servers=("turn:t.example.org",)), "PA_1")
    assert plain == [{"urls": ["turn:t.example.org"]}]


async def test_joined_carries_no_ice_servers_unless_configured(signaling):
    peer = await signaling.join("expert")
    assert peer.joined["ice_servers"] == []
