"""Bad input gets a clear 4xx problem document and changes nothing."""

from __future__ import annotations

import time

import jwt
import pytest

from telemed.auth import Claims, TokenService

TABLES = ("institutions", "staff", "patients", "consults", "referrals", "audit", "transitions")


def counts(world) -> dict[str, int]:
    with world.db() as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


async def raw(world, method, path, who="clinician", data=None, headers=None):
    all_headers = {"Content-Type": "application/json", **world.auth(who), **(headers or {})}
    response = await world.client.request(method, path, data=data, headers=all_headers)
    return response.status, response.headers.get("Content-Type", ""), await response.json(
        content_type=None)


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (b'"just a string"', 422, "JSON object"),
])
async def test_malformed_bodies(world, body, status, needle):
    before = counts(world)
    code, content_type, problem = await raw(world, "POST", "/api/consults", data=body)
    assert code == status and content_type.startswith("application/problem+json")
    assert needle in problem["detail"] and problem["status"] == status
    assert counts(world) == before


async def test_wrong_types_missing_and_unknown_fields_are_all_reported(world):
    before = counts(world)
    problem = await world.call("POST", "/api/consults", "clinician", json={
        "patient_id": 7, "urgency": "whenever", "reason": "", "specialty": ["x"],
        "priority": "high"}, expect=422)
    problems = {e["field"]: e["problem"] for e in problem["errors"]}
    assert problems == {
        "patient_id": "must be a string", "urgency": "must be one of routine, urgent, emergency",
        "reason": "must not be empty", "specialty": "must be a string",
        "target_institution_id": "is required", "priority": "is not a known field"}
    problem = await world.call("POST", "/api/patients", "clinician", json={
        "name": "A", "sex": "X", "birth_date": "yesterday"}, expect=422)
    assert {e["field"] for e in problem["errors"]} == {"sex", "birth_date"}
    problem = await world.call("POST", "/api/consults/any/schedule", "clinician",
                               json={"scheduled_at": "2026-11-24 09:00"}, expect=422)
    assert "UTC offset" in problem["errors"][0]["problem"]
    assert counts(world) == before


async def test_wrong_media_type_is_415(world):
    code, _, problem = await raw(world, "POST", "/api/patients", data=b"name=x",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert code == 415


async def test_unknown_ids_are_404_and_change_nothing(world):
    before = counts(world)
    await world.call("GET", "/api/patients/NOPE", "clinician", expect=404)
    await world.call("GET", "/api/consults/NOPE", "clinician", expect=404)
    await world.call("POST", "/api/consults/NOPE/accept", "cardiologist", expect=404)
    await world.call("GET", "/api/referrals/NOPE", "clinician", expect=404)
    problem = await world.call("POST", "/api/consults", "clinician", json={
        "patient_id": "NOPE", "target_institution_id": world.institutions["hospital"],
        "specialty": "cardiology", "urgency": "routine", "reason": "x"}, expect=404)
    assert "patient 'NOPE' not found" in problem["detail"]
    await world.call("POST", "/api/consults", "clinician", json={
        "patient_id": world.patient, "target_institution_id": "NOPE",
        "specialty": "cardiology", "urgency": "routine", "reason": "x"}, expect=404)
    await world.call("POST", "/api/staff", "admin", json={
        "username": "new", "password": "long enough pw", "full_name": "N", "role": "expert",
        "institution_id": "NOPE"}, expect=404)
    await world.call("PATCH", "/api/institutions/NOPE", "admin", json={"status": "suspended"},
                     expect=404)
    after = counts(world)
    assert {k: v for k, v in after.items() if k != "audit"} == {
        k: v for k, v in before.items() if k != "audit"}


async def test_token_problems_are_401(world, settings):
    path = "/api/patients"
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer not.a.token"}):
        response = await world.client.get(path, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await response.json(content_type=None))["title"] == "Unauthorized"
    claims = Claims(subject=world.staff["clinician"], scope="api", role="clinician",
                    name="clinician", institution_id=world.institutions["township"])
    expired = TokenService(settings.secret_key, 60).issue(claims, ttl_seconds=-1)
    forged = TokenService("f" * 48, 60).issue(claims)
    unsigned = jwt.encode({"sub": claims.subject, "scope": "api", "iss": "telemed",
                           "exp": time.time() + 60, "iat": time.time(), "jti": "j"}, None, "none")
    for token, needle in ((expired, "expired"), (forged, "invalid"), (unsigned, "invalid")):
        response = await world.client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert response.status == 401
        assert needle in (await response.json(content_type=None))["detail"]


async def test_room_token_cannot_call_the_api(world):
    consult = await world.request_consult()
    token = (await world.call("POST", f"/api/consults/{consult['id']}/room-token", "clinician",
                              expect=200))["token"]
    response = await world.client.get("/api/patients", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401


async def test_oversized_body_is_413_and_changes_nothing(world, settings):
    before = counts(world)
    big = b'{"name": "' + b"x" * (settings.max_body_bytes + 10) + b'", "sex": "F"}'
    code, content_type, problem = await raw(world, "POST", "/api/patients", data=big)
    assert code == 413 and content_type.startswith("application/problem+json")
    assert "exceeded" in problem["detail"]
    assert counts(world) == before


async def test_too_long_field_is_422(world):
    problem = await world.call("POST", "/api/patients", "clinician",
                               json={"name": "x" * 201, "sex": "F"}, expect=422)
    assert "at most 200" in problem["errors"][0]["problem"]


async def test_sql_looking_strings_are_plain_data(world):
    evil = "Robert'); DROP TABLE patients;--"
    created = await world.call("POST", "/api/patients", "clinician",
                               json={"name": evil, "sex": "M", "id": "P-'OR'1'='1"}, expect=201)
    assert created["name"] == evil
    fetched = await world.call("GET", "/api/patients/P-'OR'1'='1", "clinician", expect=200)
    assert fetched["name"] == evil
    await world.call("GET", "/api/patients/1%20OR%201=1", "clinician", expect=404)
    listed = await world.call("GET", "/api/consults?state=requested'%20OR%20'1'='1", "clinician",
                              expect=422)
    assert listed["errors"][0]["field"] == "state"
    with world.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM patients").fetchone()[0] == 3


async def test_duplicate_username_is_409_and_short_password_422(world):
    body = {"username": "clinician", "password": "long enough pw", "full_name": "Dup",
            "role": "clinician", "institution_id": world.institutions["township"]}
    await world.call("POST", "/api/staff", "admin", json=body, expect=409)
    body.update(username="fresh", password="short")
    await world.call("POST", "/api/staff", "admin", json=body, expect=422)
    await world.call("POST", "/api/staff", "clinician", json=body, expect=403)


async def test_duplicate_patient_id_is_409(world):
    await world.call("POST", "/api/patients", "clinician",
                     json={"id": world.patient, "name": "Again", "sex": "F"}, expect=409)


async def test_wrong_method_is_405_problem(world):
    response = await world.client.delete("/api/patients")
    assert response.status == 405
    assert (await response.json(content_type=None))["title"] == "Method Not Allowed"
