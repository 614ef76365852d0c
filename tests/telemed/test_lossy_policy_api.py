"""The per-institution lossy imaging policy: off by default, shown in the institution list,
changed only by administrators with a JSON boolean, and every change audited."""

from __future__ import annotations


async def test_the_policy_is_off_by_default_and_listed(world):
    institutions = await world.call("GET", "/api/institutions", "clinician", expect=200)
    assert institutions and all(i["lossy_imaging"] is False for i in institutions)
    created = await world.call("POST", "/api/institutions", "admin", json={
        "name": "New Post", "kind": "village"}, expect=201)
    assert created["lossy_imaging"] is False and created["status"] == "approved"
    me = await world.call("GET", "/api/me", "clinician", expect=200)
    assert me["institution"]["lossy_imaging"] is False


async def test_only_admins_turn_it_on_and_off_and_the_audit_shows_it(world):
    township = world.institutions["township"]
    path = f"/api/institutions/{township}"
    for who in ("clinician", "radiologist", "medic"):
        problem = await world.call("PATCH", path, who, json={"lossy_imaging": True}, expect=403)
        assert "administrators" in problem["detail"]
    on = await world.call("PATCH", path, "admin", json={"lossy_imaging": True}, expect=200)
    assert on["lossy_imaging"] is True and on["status"] == "approved"
    listed = {i["id"]: i for i in await world.call("GET", "/api/institutions", "clinician",
                                                    expect=200)}
    assert listed[township]["lossy_imaging"] is True
    assert listed[world.institutions["hospital"]]["lossy_imaging"] is False, "per institution"
    off = await world.call("PATCH", path, "admin", json={"lossy_imaging": False}, expect=200)
    assert off["lossy_imaging"] is False
    both = await world.call("PATCH", path, "admin",
                            json={"status": "suspended", "lossy_imaging": True}, expect=200)
    assert both["status"] == "suspended" and both["lossy_imaging"] is True
    entries = (await world.call("GET", "/api/audit", "admin", expect=200))["entries"]
    changes = [(e["actor"], e["action"], e["object"]) for e in entries
               if e["object"] == f"institution:{township}"]
    assert changes == [("admin", "institution.lossy_imaging.on", f"institution:{township}"),
                       ("admin", "institution.lossy_imaging.off", f"institution:{township}"),
                       ("admin", "institution.suspended", f"institution:{township}"),
                       ("admin", "institution.lossy_imaging.on", f"institution:{township}")]
    verified = await world.call("GET", "/api/audit/verify", "admin", expect=200)
    assert verified["ok"] is True


async def test_bad_values_are_422_with_the_field_and_nothing_changes(world):
    path = f"/api/institutions/{world.institutions['township']}"
    for value in ("yes", 1, 0, "true", [True], {"on": True}):
        problem = await world.call("PATCH", path, "admin", json={"lossy_imaging": value},
                                   expect=422)
        assert problem["errors"] == [{"field": "lossy_imaging", "problem": "must be of type bool"}]
    problem = await world.call("PATCH", path, "admin", json={}, expect=422)
    assert {e["field"] for e in problem["errors"]} == {"status", "lossy_imaging"}
    problem = await world.call("PATCH", path, "admin", json={"lossy_imaging": True,
                                                             "status": "closed"}, expect=422)
    assert [e["field"] for e in problem["errors"]] == ["status"], "all or nothing"
    await world.call("PATCH", path, "admin", json={"lossy": True}, expect=422)
    await world.call("PATCH", "/api/institutions/nope", "admin", json={"lossy_imaging": True},
                     expect=404)
    listed = await world.call("GET", "/api/institutions", "admin", expect=200)
    assert all(i["lossy_imaging"] is False for i in listed)
    entries = (await world.call("GET", "/api/audit", "admin", expect=200))["entries"]
    assert not [e for e in entries if e["action"].startswith("institution.lossy")]
