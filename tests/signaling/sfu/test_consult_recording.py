"""Recording with consent in a real consult: the host turns recording on (everyone is told),
the cart's forwarded media is written without re-encoding, and when recording stops the files
join the consult's record, where staff who may read the consult play them back (audited)."""

from __future__ import annotations

import asyncio
import io
import json

import av
import pytest
from aiortc import RTCSessionDescription

from .conftest import PublisherClient, read_counter

pytestmark = pytest.mark.slow


async def join(world, consult_id: str, who: str):
    grant = await world.call("POST", f"/api/consults/{consult_id}/room-token", who, expect=200)
    ws = await world.client.ws_connect(f"/rtc/{consult_id}")
    await ws.send_str(json.dumps({"type": "join", "token": grant["token"]}))
    return ws


async def next_message(ws, type_: str, timeout: float = 10) -> dict:
    while True:
        message = json.loads((await asyncio.wait_for(ws.receive(), timeout)).data)
        if message["type"] == type_:
            return message


async def test_a_recorded_consult_keeps_its_video_in_the_record(world) -> None:
    consult = await world.request_consult(urgency="emergency")
    cid = consult["id"]
    await world.call("POST", f"/api/consults/{cid}/accept", "cardiologist", expect=200)
    await world.call("POST", f"/api/consults/{cid}/start", "cardiologist", expect=200)
    clinic = await join(world, cid, "clinician")
    expert = await join(world, cid, "cardiologist")
    cart = PublisherClient()
    await clinic.send_str(json.dumps({"type": "offer", "sdp": (await cart.offer()).sdp}))
    answer = await next_message(clinic, "answer")
    await cart.accept(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    for _ in range(2):
        await next_message(expert, "track_published")

    await expert.send_str(json.dumps({"type": "record", "on": True}))
    assert (await next_message(clinic, "recording"))["on"] is True
    await asyncio.sleep(2.5)
    await expert.send_str(json.dumps({"type": "record", "on": False}))
    assert (await next_message(clinic, "recording"))["on"] is False

    async def recordings() -> list[str]:
        record = await world.call("GET", f"/api/consults/{cid}", "cardiologist", expect=200)
        return [a["ref"] for a in record["attachments"] if a["kind"] == "recording"]

    for _ in range(100):
        if len(await recordings()) == 2:
            break
        await asyncio.sleep(0.1)
    files = sorted(await recordings())
    assert len(files) == 2 and files[0].endswith("-audio.webm") and files[1].endswith("-video.webm")
    assert "-clinician-" in files[1]

    response = await world.client.get(f"/api/consults/{cid}/recordings/{files[1]}",
                                      headers=world.auth("cardiologist"))
    assert response.status == 200
    with av.open(io.BytesIO(await response.read())) as container:
        counters = [read_counter(frame) for frame in container.decode(video=0)]
    assert len(counters) > 30
    assert counters == list(range(counters[0], counters[0] + len(counters)))

    # Only those who may read the consult play it; the stranger's refusal is audited too.
    await world.call("GET", f"/api/consults/{cid}/recordings/{files[1]}", "other_clinician",
                     expect=403)
    await world.call("GET", f"/api/consults/{cid}/recordings/nope.webm", "cardiologist",
                     expect=404)
    actions = [row["action"] for row in world.db().execute(
        "SELECT action FROM audit WHERE object LIKE ?", (f"consult:{cid}%",))]
    assert actions.count("consult.recording") == 2
    assert "consult.recording.read" in actions
    for ws in (clinic, expert):
        await ws.close()
    await cart.pc.close()
