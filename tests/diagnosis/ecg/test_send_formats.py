"""`telemed ecg send` with every supported format: what the frames carry for each kind of stored
calibration, and the DICOM and aECG files replayed into a real server process, every sample
arriving exactly once (count and checksum)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from diagnosis.ecg.formats import read_record
from diagnosis.ecg.record import EcgRecord
from diagnosis.ecg.sender import Recording, load_recording

pytestmark = pytest.mark.filterwarnings(
    "ignore:The inplace keyword in DataFrame.drop is deprecated")  # inside wfdb-python's reader

TELEMED = [sys.executable, "-m", "telemed.cli"]


def test_zero_baseline_records_are_sent_as_stored(shared_data: Path) -> None:
    for name in ("dicom/waveform_ecg.dcm", "aecg/ecg_hl7.xml", "ptb/s0010_re.hea"):
        record = read_record(shared_data / "ecg" / name)
        recording = Recording.from_record(record)
        assert recording.samples.dtype == np.int16 and not recording.requantised
        assert np.array_equal(recording.samples, record.digital)
        assert recording.gain == tuple(record.gain) and recording.leads == record.leads


def test_whole_baselines_are_shifted_without_loss(shared_data: Path) -> None:
    """MIT-BIH 100 stores 0 mV as 1024; frames carry mV = sample / gain, so the sample is the
    stored integer less 1024 and the millivolts are exactly the record's."""
    record = read_record(shared_data / "ecg" / "mitdb" / "100")
    recording = Recording.from_record(record)
    assert not recording.requantised
    assert np.array_equal(recording.samples, record.digital - 1024)
    assert np.array_equal(recording.samples / np.array(recording.gain), record.signal)


def test_only_what_cannot_fit_is_requantised(shared_data: Path) -> None:
    """CPSC 2021 spans the full 16 bits around baselines far outside them (-199006, -230655)."""
    record = read_record(shared_data / "ecg" / "cpsc2021" / "data_8_4")
    recording = Recording.from_record(record)
    assert [note.split(":")[0] for note in recording.requantised] == ["I", "II"]
    assert "requantised to gain" in recording.requantised[0]
    gain = np.array(recording.gain)
    assert np.all(gain < record.gain)
    assert np.all(np.abs(recording.samples / gain - record.signal) <= 0.5 / gain * (1 + 1e-9))


def test_missing_samples_are_sent_as_the_missing_marker() -> None:
    digital = np.array([[5, -2048], [-2048, 7], [1, 2]])
    record = EcgRecord.from_digital(digital, 360, ("MLII", "V5"), [200, 200], [0, 0],
                                    missing=digital == -2048)
    recording = Recording.from_record(record)
    assert np.array_equal(recording.samples, [[5, -32768], [-32768, 7], [1, 2]])


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TELEMED, *args], capture_output=True, text=True, timeout=120)


def _get(url: str, data: bytes | None = None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, dict(response.headers), response.read()


def test_dicom_and_aecg_files_replay_into_a_server(tmp_path: Path, telemed_server,
                                                   shared_data: Path) -> None:
    users = json.loads(run("demo", "--data", str(tmp_path)).stdout)["users"]
    medic = next(u for u in users if u["role"] == "clinician")
    process, base = telemed_server(tmp_path)
    try:
        login = json.dumps({"username": medic["username"], "password": medic["password"]})
        token = json.loads(_get(base + "/api/login", login.encode())[2])["token"]
        for name in ("dicom/waveform_ecg.dcm", "aecg/ecg_hl7.xml"):
            path = shared_data / "ecg" / name
            sent = run("ecg", "send", str(path), "--url", base, "--token", token,
                       "--patient", "DEMO-0001", "--speed", "50")
            assert sent.returncode == 0, sent.stderr
            report = json.loads(sent.stdout)
            expected = load_recording(path)
            assert report["samples"] == len(expected.samples) and report["requantised"] == []
            stream = f"{base}/api/ecg/streams/{report['stream_id']}"
            info = json.loads(_get(stream, token=token)[2])
            assert info["state"] == "complete" and info["samples"] == report["samples"]
            assert info["fs"] == expected.fs and info["leads"] == list(expected.leads)
            _, headers, body = _get(stream + "/samples", token=token)
            stored = np.frombuffer(body, dtype="<i2").reshape(-1, len(expected.leads))
            assert headers["X-ECG-Samples"] == str(len(expected.samples))
            assert len(stored) == len(expected.samples)
            assert (hashlib.sha256(stored.tobytes()).hexdigest()
                    == hashlib.sha256(expected.samples.astype("<i2").tobytes()).hexdigest())
            assert np.array_equal(stored, read_record(path).digital)  # as stored in the file
        cut = tmp_path / "cut.dcm"
        cut.write_bytes((shared_data / "ecg" / "dicom" / "waveform_ecg.dcm").read_bytes()[:-10])
        refused = run("ecg", "send", str(cut), "--url", base, "--token", token,
                      "--patient", "DEMO-0001")
        assert refused.returncode == 2
        assert f"cannot read {cut}: truncated DICOM file" in refused.stderr
    finally:
        process.terminate()
        process.wait(timeout=15)
