"""Operators manage institutions and staff; suspension stops a whole institution at once."""

from __future__ import annotations

from telemed import auth


async def test_admin_adds_institution_and_staff_who_can_sign_in(world):
    inst = await world.call("POST", "/api/institutions", "admin", json={
        "name": "Eastbank Village Post", "kind": "village",
        "parent_id": world.institutions["township"]}, expect=201)
    staff = await world.call("POST", "/api/staff", "admin", json={
        "username": "dr.new", "password": "a long password", "full_name": "Dr New",
        "role": "clinician", "institution_id": inst["id"]}, expect=201)
    assert "password_hash" not in staff and "password" not in staff
    login = await world.call("POST", "/api/login", json={"username": "dr.new",
                                                         "password": "a long password"}, expect=200)
    me = await world.client.get("/api/me", headers={"Authorization": f"Bearer {login['token']}"})
    assert (await me.json())["institution"]["name"] == "Eastbank Village Post"
    with world.db() as conn:
        stored = conn.execute("SELECT password_hash FROM staff WHERE username = 'dr.new'").fetchone()[0]
    assert stored.startswith("scrypt$") and auth.verify_password("a long password", stored)
    actions = [e["action"] for e in (await world.call("GET", "/api/audit", "admin",
                                                      expect=200))["entries"]]
    assert actions[:2] == ["institution.create", "staff.create"]


async def test_non_admins_cannot_manage_accounts_but_see_the_expert_directory(world):
    await world.call("POST", "/api/institutions", "cardiologist",
                     json={"name": "X", "kind": "village"}, expect=403)
    await world.call("PATCH", f"/api/staff/{world.staff['clinician']}", "clinician",
                     json={"role": "admin"}, expect=403)
    directory = await world.call("GET", "/api/staff", "clinician", expect=200)
    assert {s["role"] for s in directory} == {"expert"}
    assert all("username" not in s for s in directory)
    everyone = await world.call("GET", "/api/staff", "admin", expect=200)
    assert len(everyone) == 8


async def test_suspended_institution_cannot_act_until_approved_again(world):
    consult = await world.request_consult()
    township = world.institutions["township"]
    await world.call("PATCH", f"/api/institutions/{township}", "admin",
                     json={"status": "suspended"}, expect=200)
    problem = await world.call("GET", f"/api/consults/{consult['id']}", "clinician", expect=403)
    assert "suspended" in problem["detail"]
    await world.call("POST", "/api/login", json={"username": "clinician",
                                                 "password": "correct horse battery"}, expect=403)
    await world.call("PATCH", f"/api/institutions/{township}", "admin",
                     json={"status": "approved"}, expect=200)
    await world.call("GET", f"/api/consults/{consult['id']}", "clinician", expect=200)


async def test_disabled_account_is_refused_with_a_live_token(world):
    await world.call("PATCH", f"/api/staff/{world.staff['radiologist']}", "admin",
                     json={"active": False}, expect=200)
    await world.call("GET", "/api/consults", "radiologist", expect=403)


async def test_wrong_password_and_unknown_user_look_the_same(world):
    wrong = await world.call("POST", "/api/login", json={"username": "clinician",
                                                         "password": "nope nope nope"}, expect=401)
    unknown = await world.call("POST", "/api/login", json={"username": "ghost",
                                                           "password": "nope nope nope"}, expect=401)
    assert wrong["detail"] == unknown["detail"]


async def test_clinicians_see_only_their_institutions_patients(world):
    mine = await world.call("GET", "/api/patients", "clinician", expect=200)
    assert [p["id"] for p in mine] == [world.patient]
    theirs = await world.call("GET", "/api/patients", "other_clinician", expect=200)
    assert [p["id"] for p in theirs] == [world.other_patient]
    assert await world.call("GET", "/api/patients", "cardiologist", expect=200) == []
    await world.call("GET", f"/api/patients/{world.other_patient}", "clinician", expect=403)
    await world.call("POST", "/api/patients", "clinician", json={
        "name": "Elsewhere", "sex": "F", "home_institution_id": world.institutions["other_township"]},
        expect=403)
    everyone = await world.call("GET", "/api/patients", "admin", expect=200)
    assert len(everyone) == 2


async def test_expert_sees_patient_only_through_assignment(world):
    await world.call("GET", f"/api/patients/{world.patient}", "cardiologist", expect=403)
    consult = await world.request_consult()
    await world.call("GET", f"/api/patients/{world.patient}", "cardiologist", expect=200)
    await world.call("GET", f"/api/patients/{world.patient}", "radiologist", expect=403)
    await world.call("POST", f"/api/consults/{consult['id']}/accept", "cardiologist", expect=200)
    await world.call("GET", f"/api/patients/{world.patient}", "cardiologist", expect=200)
    await world.call("GET", f"/api/patients/{world.patient}", "cardiologist2", expect=403)
