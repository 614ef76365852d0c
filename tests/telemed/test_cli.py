"""The command a newcomer runs: demo seeding, a real server process, health and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

import aiohttp
import pytest

from telemed.auth import Claims, Grants, TokenService


TELEMED = [sys.executable, "-m", "telemed.cli"]
ROLES = {"admin", "expert", "clinician", "ambulance"}


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*TELEMED, *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_demo_prints_users_for_every_role_and_is_repeatable(tmp_path):
    first = json.loads(run("demo", "--data", str(tmp_path)).stdout)
    assert {u["role"] for u in first["users"]} == ROLES
    assert {"username", "password", "role", "institution"} <= set(first["users"][0])
    kinds = {i["kind"] for i in first["institutions"]}
    assert kinds == {"hospital", "township", "village", "ambulance"}
    assert len(first["patients"]) == 1
    second = json.loads(run("demo", "--data", str(tmp_path)).stdout)
    assert [u["username"] for u in second["users"]] == [u["username"] for u in first["users"]]
    assert second["users"][0]["password"] != first["users"][0]["password"]


def test_user_create_bootstraps_an_admin(tmp_path):
    created = run("user", "create", "root", "--institution", "Regional Health Bureau",
                  "--password", "a very long secret", "--data", str(tmp_path))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["role"] == "admin"
    again = run("user", "create", "root", "--institution", "Regional Health Bureau",
                "--password", "a very long secret", "--data", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr
    short = run("user", "create", "x", "--institution", "R", "--password", "short",
                "--data", str(tmp_path))
    assert short.returncode == 2


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("bus", ["local", "redis"])
def test_serve_answers_health_metrics_and_demo_login(tmp_path, bus, request, telemed_server):
    users = json.loads(run("demo", "--data", str(tmp_path)).stdout)["users"]
    extra = ("--redis", request.getfixturevalue("redis_url")) if bus == "redis" else ()
    process, base = telemed_server(tmp_path, *extra)
    try:
        status, body = _get(base + "/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok" and health["bus"] == bus
        admin = next(u for u in users if u["role"] == "admin")
        status, body = _get(base + "/api/login", json.dumps(
            {"username": admin["username"], "password": admin["password"]}).encode())
        assert status == 200 and json.loads(body)["token"]
        status, body = _get(base + "/metrics")
        assert status == 200
        assert b'telemed_http_requests_total{method="POST",route="/api/login",status="200"} 1.0' in body
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0


def test_serve_refuses_a_bad_setting(tmp_path):
    result = run("serve", "--data", str(tmp_path), env={**os.environ, "TELEMED_PORT": "eighty"})
    assert result.returncode == 2 and "port" in result.stderr


async def test_shutdown_with_open_sockets_is_prompt_and_clean(tmp_path, telemed_server):
    """Open WebSockets must not hold shutdown for the whole grace period (aiohttp #2200)."""
    users = json.loads(run("demo", "--data", str(tmp_path)).stdout)["users"]
    process, base = telemed_server(tmp_path)
    try:
        secret = (tmp_path / "secret.key").read_text().strip()
        room_token = TokenService(secret, 60).issue(Claims(
            "u1", "room", "expert", "dr", None, Grants(rooms=("r1",), can_subscribe=True)))
        clinician = next(u for u in users if u["role"] == "clinician")
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/api/login", json={
                    "username": clinician["username"], "password": clinician["password"]}) as r:
                api_token = (await r.json())["token"]
            signaling = await session.ws_connect(base + "/rtc/r1")
            await signaling.send_json({"type": "join", "token": room_token})
            assert (await signaling.receive_json(timeout=5))["type"] == "joined"
            headers = {"Authorization": f"Bearer {api_token}"}
            async with session.post(base + "/api/ecg/streams", headers=headers,
                                    json={"patient_id": "DEMO-0001"}) as r:
                stream_id = (await r.json())["id"]
            follower = await session.ws_connect(base + f"/ecg/follow/{stream_id}")
            await follower.send_json({"type": "follow", "token": api_token})
            assert (await follower.receive_json(timeout=5))["type"] == "stream"
            ingest = await session.ws_connect(base + f"/ecg/ingest/{stream_id}", headers=headers)
            assert (await ingest.receive_json(timeout=5))["type"] == "ready"
            started = time.monotonic()
            process.terminate()
            for ws in (signaling, ingest):
                closing = await ws.receive(timeout=10)
                while closing.type == aiohttp.WSMsgType.TEXT:
                    closing = await ws.receive(timeout=10)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
            await asyncio.to_thread(process.wait, 15)
            assert time.monotonic() - started < 5
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_ecg_send_replays_a_record_into_a_server(tmp_path, telemed_server, shared_data):
    users = json.loads(run("demo", "--data", str(tmp_path)).stdout)["users"]
    medic = next(u for u in users if u["role"] == "clinician")
    process, base = telemed_server(tmp_path)
    try:
        status, body = _get(base + "/api/login", json.dumps(
            {"username": medic["username"], "password": medic["password"]}).encode())
        token = json.loads(body)["token"]
        record = shared_data / "ecg" / "cpsc2021"
        header = sorted(record.glob("*.hea"))[0]
        sent = run("ecg", "send", str(header), "--url", base, "--token", token,
                   "--patient", "DEMO-0001", "--speed", "200")
        assert sent.returncode == 0, sent.stderr
        report = json.loads(sent.stdout)
        request = urllib.request.Request(base + f"/api/ecg/streams/{report['stream_id']}",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            info = json.loads(response.read())
        assert info["state"] == "complete" and info["samples"] == report["samples"]
        missing = run("ecg", "send", str(tmp_path / "nope.hea"), "--url", base, "--token", token,
                      "--patient", "DEMO-0001")
        assert missing.returncode == 2 and "cannot read" in missing.stderr
    finally:
        process.terminate()
        process.wait(timeout=15)
