"""Guest and patient join links: single-use, unguessable, expiring; they grant one room."""

from __future__ import annotations

import asyncio

from telemed.api.context import TOKENS


async def test_join_link_is_single_use_and_grants_the_room(world):
    consult = await world.request_consult()
    invite = await world.call("POST", f"/api/consults/{consult['id']}/invites", "clinician",
                              json={"display_name": "Patient's daughter"}, expect=201)
    assert invite["join_url"].endswith(invite["code"])
    joined = await world.call("POST", "/api/join", json={"code": invite["code"]}, expect=200)
    claims = world.client.app[TOKENS].decode(joined["token"], "room")
    assert claims.role == "guest" and claims.name == "Patient's daughter"
    assert claims.grants.rooms == (consult["id"],) and claims.grants.patients == (world.patient,)
    assert claims.grants.can_publish and claims.grants.can_subscribe
    again = await world.call("POST", "/api/join", json={"code": invite["code"]}, expect=409)
    assert "already used" in again["detail"]
    with world.db() as conn:
        stored = [r[0] for r in conn.execute("SELECT code_hash FROM join_links")]
    assert stored and invite["code"] not in stored
    entries = (await world.call("GET", "/api/audit", "admin", expect=200))["entries"]
    assert any(e["actor"].startswith("guest-") and e["action"] == "consult.join" for e in entries)


async def test_unknown_and_expired_links_are_refused(world, settings):
    await world.call("POST", "/api/join", json={"code": "x" * 43}, expect=409)
    consult = await world.request_consult()
    with world.db() as conn:
        conn.execute("UPDATE join_links SET expires_at = 0")
    invite = await world.call("POST", f"/api/consults/{consult['id']}/invites", "clinician",
                              json={"display_name": "Guest"}, expect=201)
    with world.db() as conn:
        conn.execute("UPDATE join_links SET expires_at = 1")
    await world.call("POST", "/api/join", json={"code": invite["code"]}, expect=409)


async def test_concurrent_redemptions_admit_exactly_one(world):
    consult = await world.request_consult()
    invite = await world.call("POST", f"/api/consults/{consult['id']}/invites", "clinician",
                              json={"display_name": "Guest"}, expect=201)
    responses = await asyncio.gather(*[
        world.client.post("/api/join", json={"code": invite["code"]}) for _ in range(8)])
    assert sorted(r.status for r in responses) == [200] + [409] * 7


async def test_only_the_consults_people_may_invite_and_closed_consults_refuse(world):
    consult = await world.request_consult()
    await world.call("POST", f"/api/consults/{consult['id']}/invites", "other_clinician",
                     json={"display_name": "x"}, expect=403)
    await world.call("POST", f"/api/consults/{consult['id']}/cancel", "clinician",
                     json={"note": "not needed"}, expect=200)
    await world.call("POST", f"/api/consults/{consult['id']}/invites", "clinician",
                     json={"display_name": "x"}, expect=409)
    await world.call("POST", f"/api/consults/{consult['id']}/room-token", "clinician", expect=409)
