"""A modality pushes a study with DCMTK's storescu to the C-STORE SCP; it is stored byte-exact
in its pixel data and found over QIDO-RS; a file for an unknown patient is refused."""

from __future__ import annotations

import asyncio
import shutil
import socket

import pydicom
import pytest

from diagnosis.dicom import progressive
from telemed.settings import Settings
from telemed.store import accounts
from telemed.store.database import connect


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, secret_key="s" * 48, dicom_port=free_port(),
                    dicom_ae_title="TELEMED", dicom_account="clinician")


async def storescu(port: int, *paths) -> tuple[int, str]:
    binary = shutil.which("storescu")
    if binary is None:
        pytest.fail("storescu (Debian dcmtk) is missing; the README's test command installs it")
    process = await asyncio.create_subprocess_exec(
        binary, "-v", "-aec", "TELEMED", "-aet", "TOWNSHIP_CT", "127.0.0.1", str(port),
        *map(str, paths), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, output.decode(errors="replace")


async def test_storescu_push_is_stored_and_found(world, settings, shared_data, prepared):
    series = sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))[:5]
    conn = connect(world.data_dir / "telemed.sqlite3")
    accounts.create_patient(conn, {"id": "QMNx85rKkkg", "name": "CT", "sex": "U",
                                   "home_institution_id": world.institutions["township"]})
    conn.close()
    code, output = await storescu(settings.dicom_port, *series)
    assert code == 0, output
    found = await (await world.client.get("/dicomweb/studies?PatientID=QMNx85rKkkg",
                                          headers=world.auth("clinician"))).json(content_type=None)
    assert found[0]["00201208"]["Value"] == [5]
    with world.db() as conn:
        rows = conn.execute("SELECT path, sop_instance_uid FROM dicom_instances").fetchall()
    originals = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in series}
    for path, uid in rows:
        stored = pydicom.dcmread(world.data_dir / path)
        assert stored.PixelData == originals[uid].PixelData
        assert stored.PatientID == originals[uid].PatientID
    entries = (await world.call("GET", "/api/audit", "admin", expect=200))["entries"]
    assert any(e["action"] == "dicom.store" and "TOWNSHIP_CT" in e["client"] for e in entries)
    with world.db() as conn:
        digests = [r[0] for r in conn.execute("SELECT sha256 FROM dicom_instances")]
    cache = world.data_dir / "dicom" / "progressive"
    for sha256 in digests:  # the default `dicom_prepare`: HTJ2K streams made as pushed
        assert await prepared(sha256, "htj2k")
        assert progressive.load(sha256, cache, "jxl") is None


async def test_unknown_patient_is_refused_and_nothing_kept(world, settings, shared_data):
    code, output = await storescu(settings.dicom_port,
                                  shared_data / "dicom" / "single" / "MR2_UNCR.dcm")
    assert "Error: CannotUnderstand" in output, output
    with world.db() as conn:
        assert conn.execute("SELECT COUNT(*) FROM dicom_instances").fetchone()[0] == 0
    assert not [p for p in (world.data_dir / "dicom").rglob("*.dcm")]
