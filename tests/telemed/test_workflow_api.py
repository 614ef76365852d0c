"""The consult and referral workflows end to end over HTTP, as the users would go through them."""

from __future__ import annotations

from telemed.bus import LocalBus


async def test_consult_from_request_to_close(world):
    consult = await world.request_consult()
    assert consult["state"] == "requested"
    assert consult["allowed_actions"] == ["cancel"]

    offered = await world.call("GET", "/api/consults?state=requested", "cardiologist", expect=200)
    assert [c["id"] for c in offered] == [consult["id"]]
    assert await world.call("GET", "/api/consults", "radiologist", expect=200) == []

    cid = consult["id"]
    accepted = await world.call("POST", f"/api/consults/{cid}/accept", "cardiologist", expect=200)
    assert accepted["state"] == "accepted"
    assert accepted["expert_id"] == world.staff["cardiologist"]
    scheduled = await world.call("POST", f"/api/consults/{cid}/schedule", "clinician",
                                 json={"scheduled_at": "2026-11-24T09:30:00+08:00"}, expect=200)
    assert scheduled["scheduled_at"] == "2026-11-24T09:30:00+08:00"
    live = await world.call("POST", f"/api/consults/{cid}/start", "cardiologist", expect=200)
    assert live["state"] == "live"
    reported = await world.call("POST", f"/api/consults/{cid}/report", "cardiologist",
                                json={"report": "Inferior STEMI. Transfer for PCI."}, expect=200)
    assert reported["report"] == "Inferior STEMI. Transfer for PCI."
    await world.call("POST", f"/api/consults/{cid}/report", "clinician", json={"report": "x"},
                     expect=409)
    await world.call("POST", f"/api/consults/{cid}/close", "radiologist", expect=403)
    closed = await world.call("POST", f"/api/consults/{cid}/close", "clinician", expect=200)
    assert closed["state"] == "closed"
    assert [h["action"] for h in closed["history"]] == [
        "request", "accept", "schedule", "start", "report", "close"]

    # the second expert of the same specialty no longer sees it once assigned
    await world.call("GET", f"/api/consults/{cid}", "cardiologist2", expect=403)


async def test_transition_not_allowed_answers_409_with_reason(world):
    consult = await world.request_consult()
    cid = consult["id"]
    problem = await world.call("POST", f"/api/consults/{cid}/report", "clinician",
                               json={"report": "x"}, expect=409)
    assert "must be live" in problem["detail"]
    await world.call("POST", f"/api/consults/{cid}/accept", "cardiologist", expect=200)
    problem = await world.call("POST", f"/api/consults/{cid}/report", "cardiologist",
                               json={"report": "too early"}, expect=409)
    assert problem["state"] == "accepted"
    assert "must be live" in problem["detail"]
    assert "schedule" in problem["allowed_actions"]
    problem = await world.call("POST", f"/api/consults/{cid}/start", "cardiologist", expect=409)
    assert "routine consult must be scheduled" in problem["detail"]
    problem = await world.call("POST", f"/api/consults/{cid}/fly", "cardiologist", expect=404)
    assert "fly" in problem["detail"]


async def test_emergency_consult_starts_without_scheduling(world):
    patient = await world.call("POST", "/api/patients", "medic",
                               json={"name": "Unknown male ~60", "sex": "M"}, expect=201)
    assert patient["home_institution_id"] == world.institutions["ambulance"]
    consult = await world.request_consult(who="medic", patient_id=patient["id"],
                                          urgency="emergency", reason="STEMI suspected en route")
    cid = consult["id"]
    await world.call("POST", f"/api/consults/{cid}/accept", "cardiologist", expect=200)
    live = await world.call("POST", f"/api/consults/{cid}/start", "cardiologist", expect=200)
    assert live["state"] == "live"


async def test_decline_and_cancel_need_a_reason_and_are_final(world):
    first = await world.request_consult()
    problem = await world.call("POST", f"/api/consults/{first['id']}/decline", "cardiologist",
                               expect=422)
    assert "note" in problem["detail"]
    declined = await world.call("POST", f"/api/consults/{first['id']}/decline", "cardiologist",
                                json={"note": "please send an ECG first"}, expect=200)
    assert declined["state"] == "declined"
    problem = await world.call("POST", f"/api/consults/{first['id']}/accept", "cardiologist",
                               expect=409)
    assert "nothing more can be done" in problem["detail"]

    second = await world.request_consult()
    await world.call("POST", f"/api/consults/{second['id']}/cancel", "cardiologist",
                     json={"note": "x"}, expect=403)
    cancelled = await world.call("POST", f"/api/consults/{second['id']}/cancel", "clinician",
                                 json={"note": "patient recovered"}, expect=200)
    assert cancelled["state"] == "cancelled"


async def test_named_expert_only_they_may_accept(world):
    consult = await world.request_consult(expert_id=world.staff["cardiologist2"])
    cid = consult["id"]
    await world.call("POST", f"/api/consults/{cid}/accept", "cardiologist", expect=403)
    await world.call("POST", f"/api/consults/{cid}/accept", "cardiologist2", expect=200)


async def test_named_expert_must_belong_to_target(world):
    problem = await world.call("POST", "/api/consults", "clinician", json={
        "patient_id": world.patient, "target_institution_id": world.institutions["hospital"],
        "specialty": "cardiology", "urgency": "routine", "reason": "x",
        "expert_id": world.staff["clinician"]}, expect=422)
    assert "named expert" in problem["detail"]


async def test_attachments_and_round_participants(world):
    consult = await world.request_consult(kind="round", reason="ward round bed 3")
    cid = consult["id"]
    assert consult["participants"] == [{"staff_id": world.staff["clinician"], "role": "presenter"}]
    attached = await world.call("POST", f"/api/consults/{cid}/attachments", "clinician",
                                json={"kind": "ecg", "ref": "ecg-123"}, expect=201)
    assert attached["attachments"][0]["ref"] == "ecg-123"
    await world.call("POST", f"/api/consults/{cid}/attachments", "clinician",
                     json={"kind": "ecg", "ref": "ecg-123"}, expect=409)
    await world.call("POST", f"/api/consults/{cid}/accept", "cardiologist", expect=200)
    await world.call("POST", f"/api/consults/{cid}/participants", "cardiologist",
                     json={"staff_id": world.staff["radiologist"], "role": "viewer"}, expect=200)
    # the viewer now sees the round and its patient, but only the presenter publishes
    await world.call("GET", f"/api/consults/{cid}", "radiologist", expect=200)
    await world.call("GET", f"/api/patients/{world.patient}", "radiologist", expect=200)
    viewer = await world.call("POST", f"/api/consults/{cid}/room-token", "radiologist", expect=200)
    presenter = await world.call("POST", f"/api/consults/{cid}/room-token", "clinician", expect=200)
    assert (viewer["can_publish"], presenter["can_publish"]) == (False, True)
    assert (viewer["is_host"], presenter["is_host"]) == (False, True)
    expert = await world.call("POST", f"/api/consults/{cid}/room-token", "cardiologist", expect=200)
    assert expert["is_host"] and expert["can_publish"] is False


async def test_referral_up_and_back_down(world):
    referral = await world.call("POST", "/api/referrals", "clinician", json={
        "patient_id": world.patient, "to_institution_id": world.institutions["hospital"],
        "urgency": "urgent", "reason": "needs PCI"}, expect=201)
    rid = referral["id"]
    assert referral["direction"] == "up"
    assert referral["allowed_actions"] == ["cancel"]
    # the hospital's cardiologists see the open referral and the patient before assignment
    await world.call("GET", f"/api/patients/{world.patient}", "cardiologist", expect=200)
    reviewed = await world.call("POST", f"/api/referrals/{rid}/review", "cardiologist", expect=200)
    assert reviewed["assignee_id"] == world.staff["cardiologist"]
    await world.call("GET", f"/api/referrals/{rid}", "cardiologist2", expect=403)
    await world.call("POST", f"/api/referrals/{rid}/accept", "clinician", expect=403)
    await world.call("POST", f"/api/referrals/{rid}/accept", "cardiologist", expect=200)
    await world.call("POST", f"/api/referrals/{rid}/admit", "cardiologist", expect=409)
    await world.call("POST", f"/api/referrals/{rid}/arrange", "cardiologist",
                     json={"arranged_for": "bed 12, cath lab 14:00"}, expect=200)
    await world.call("POST", f"/api/referrals/{rid}/admit", "cardiologist", expect=200)
    returned = await world.call("POST", f"/api/referrals/{rid}/return", "cardiologist",
                                json={"summary": "stented RCA; aspirin, clopidogrel"}, expect=200)
    assert returned["state"] == "returned"
    await world.call("POST", f"/api/referrals/{rid}/confirm", "cardiologist", expect=403)
    confirmed = await world.call("POST", f"/api/referrals/{rid}/confirm", "clinician", expect=200)
    assert confirmed["state"] == "confirmed"
    assert [h["to_state"] for h in confirmed["history"]] == [
        "requested", "under_review", "accepted", "arranged", "in_progress", "returned", "confirmed"]

    down = await world.call("POST", "/api/referrals", "cardiologist", json={
        "patient_id": world.patient, "to_institution_id": world.institutions["township"],
        "urgency": "routine", "reason": "follow-up rehabilitation"}, expect=201)
    assert down["direction"] == "down"
    await world.call("POST", f"/api/referrals/{down['id']}/accept", "clinician", expect=200)


async def test_referral_to_own_institution_is_refused(world):
    problem = await world.call("POST", "/api/referrals", "clinician", json={
        "patient_id": world.patient, "to_institution_id": world.institutions["township"],
        "urgency": "routine", "reason": "x"}, expect=422)
    assert "another institution" in problem["detail"]


async def test_consult_changes_are_published_on_the_bus(world):
    from telemed.api.context import BUS
    bus = world.client.app[BUS]
    assert isinstance(bus, LocalBus)
    async with await bus.subscribe("consults") as events:
        consult = await world.request_consult()
        await world.call("POST", f"/api/consults/{consult['id']}/accept", "cardiologist", expect=200)
        first, second = await events.get(1.0), await events.get(1.0)
    assert (first["action"], first["state"]) == ("request", "requested")
    assert (second["action"], second["state"], second["consult_id"]) == (
        "accept", "accepted", consult["id"])
