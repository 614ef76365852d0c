"""The shared DICOM files, and a network in which every patient they name is registered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydicom
import pytest

from diagnosis.dicom import progressive
from telemed.store import accounts
from telemed.store.database import connect

ECG_PATIENT = "642341"
"""The Patient ID of ../shared/data/ecg/dicom/waveform_ecg.dcm."""


@pytest.fixture
def files(shared_data) -> dict[str, Path]:
    return {p.name: p for p in sorted((shared_data / "dicom").glob("*/*.dcm"))}


@pytest.fixture
def imaging(world, files):
    """Every DICOM Patient ID in the data (and the ECG's) registered at the township, the
    clinician's institution; files without a Patient ID go to ANON-1."""
    conn = connect(world.data_dir / "telemed.sqlite3")
    named = {pydicom.dcmread(p, stop_before_pixels=True).get("PatientID") or "ANON-1"
             for p in files.values()}
    for patient_id in named | {ECG_PATIENT}:
        try:
            accounts.get_patient(conn, patient_id)
        except LookupError:
            accounts.create_patient(conn, {"id": patient_id, "name": patient_id, "sex": "U",
                                           "home_institution_id": world.institutions["township"]})
    conn.close()
    return world


@pytest.fixture
def prepared(world):
    """Waits until an instance's streams for a codec are in the cache; False after `timeout`."""
    root = world.data_dir / "dicom" / "progressive"

    async def wait(sha256: str, mode: str, timeout: float = 60.0) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while progressive.load(sha256, root, mode) is None:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    return wait
