"""Fixtures shared by every test package: real data, a real redis-server, and a small regional
network served by the real application on a real socket."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from aiohttp import MultipartWriter, hdrs
from aiohttp.test_utils import TestClient

from telemed import auth
from telemed.app import create_app
from telemed.settings import Settings
from telemed.store import accounts
from telemed.store.database import connect

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real recordings in ../shared/data, read in place (never copied)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder missing: {SHARED_DATA}")
    return SHARED_DATA


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of our own on a free loopback port (never the machine's 6379)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; run the README's test command, which installs it")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


PASSWORD = "correct horse battery"

NETWORK = {
    "hospital": ("City Hospital", "hospital"),
    "township": ("Riverside Township", "township"),
    "other_township": ("Lakeside Township", "township"),
    "village": ("Hilltop Village", "village"),
    "ambulance": ("County Ambulance", "ambulance"),
}
STAFF = {
    "admin": ("admin", "hospital", None),
    "cardiologist": ("expert", "hospital", "cardiology"),
    "cardiologist2": ("expert", "hospital", "cardiology"),
    "radiologist": ("expert", "hospital", "radiology"),
    "clinician": ("clinician", "township", None),
    "other_clinician": ("clinician", "other_township", None),
    "village_doctor": ("clinician", "village", None),
    "medic": ("ambulance", "ambulance", None),
}


@dataclass
class World:
    client: TestClient
    data_dir: Path
    institutions: dict[str, str] = field(default_factory=dict)
    staff: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    patient: str = "P-1"
    other_patient: str = "P-2"
    password: str = PASSWORD

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def call(self, method: str, path: str, who: str | None = None,
                   json: Any = None, expect: int | None = None, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if who is not None:
            headers.update(self.auth(who))
        response = await self.client.request(method, path, json=json, headers=headers, **kwargs)
        body = await response.json(content_type=None)
        if expect is not None:
            assert response.status == expect, (response.status, body)
        return body

    async def stow(self, blobs: list[bytes | Path], who: str = "clinician", query: str = "",
                   part_type: str = "application/dicom",
                   expect: int | None = None) -> tuple[int, Any]:
        """A STOW-RS request of `blobs` (DICOM bytes or files), each part of `part_type`;
        the status and the JSON body."""
        body, headers = await self.stow_body(blobs, part_type)
        response = await self.client.post(f"/dicomweb/studies{query}", data=body,
                                          headers={**headers, **self.auth(who)})
        answer = await response.json(content_type=None)
        if expect is not None:
            assert response.status == expect, (response.status, answer)
        return response.status, answer

    @staticmethod
    async def stow_body(blobs: list[bytes | Path],
                        part_type: str = "application/dicom") -> tuple[bytes, dict[str, str]]:
        """A STOW-RS multipart/related body and its Content-Type header."""
        writer = MultipartWriter("related")
        for blob in blobs:
            writer.append(blob.read_bytes() if isinstance(blob, Path) else blob,
                          {hdrs.CONTENT_TYPE: part_type})
        return await writer.as_bytes(), {hdrs.CONTENT_TYPE: (
            f'multipart/related; type="application/dicom"; boundary={writer.boundary}')}

    async def request_consult(self, who: str = "clinician", **overrides: Any) -> dict:
        body = {"patient_id": self.patient, "target_institution_id": self.institutions["hospital"],
                "specialty": "cardiology", "urgency": "routine", "reason": "chest pain, ST changes?"}
        body.update(overrides)
        return await self.call("POST", "/api/consults", who, json=body, expect=201)

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.data_dir / "telemed.sqlite3")
        conn.row_factory = sqlite3.Row
        return conn


def seed_network(data_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    conn = connect(data_dir / "telemed.sqlite3")
    institutions = {}
    for key, (name, kind) in NETWORK.items():
        institutions[key] = accounts.create_institution(conn, name, kind)["id"]
    password_hash = auth.hash_password(PASSWORD)
    staff = {}
    for username, (role, where, specialty) in STAFF.items():
        staff[username] = accounts.create_staff(conn, username, password_hash, username.title(),
                                                role, institutions[where], specialty)["id"]
    accounts.create_patient(conn, {"id": "P-1", "name": "Li Na", "sex": "F",
                                   "birth_date": "1961-04-12",
                                   "home_institution_id": institutions["township"]})
    accounts.create_patient(conn, {"id": "P-2", "name": "Ma Jun", "sex": "M",
                                   "home_institution_id": institutions["other_township"]})
    conn.close()
    return institutions, staff


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    marker = request.node.get_closest_marker("settings")
    return Settings(data_dir=tmp_path, max_body_bytes=64 * 1024, secret_key="s" * 48,
                    **(marker.kwargs if marker else {}))


@pytest.fixture
async def world(settings: Settings, aiohttp_client) -> World:
    institutions, staff = seed_network(settings.data_dir)
    client = await aiohttp_client(create_app(settings))
    world = World(client, settings.data_dir, institutions, staff)
    for username in STAFF:
        body = await world.call("POST", "/api/login", json={"username": username,
                                                            "password": PASSWORD}, expect=200)
        world.tokens[username] = body["token"]
    return world



TELEMED = [sys.executable, "-m", "telemed.cli"]
"""The `telemed` command, run as a subprocess of this interpreter."""


@pytest.fixture
def telemed_server(unused_tcp_port: int) -> Iterator[Callable[..., tuple[subprocess.Popen, str]]]:
    """Start `telemed serve --data DIR [flags]` as a real process on a free port; returns the
    process and its base URL once /healthz answers. Whatever is still running at the end of the
    test is stopped."""
    started: list[subprocess.Popen] = []

    def start(data_dir: Path, *flags: str) -> tuple[subprocess.Popen, str]:
        process = subprocess.Popen(
            [*TELEMED, "serve", "--data", str(data_dir), "--port", str(unused_tcp_port), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(process)
        base = f"http://127.0.0.1:{unused_tcp_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                    if response.status == 200:
                        return process, base
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.1)
        process.kill()
        pytest.fail(f"server did not start: {process.stdout.read()}")

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
