"""`telemed ecg send` with every supported format: what the frames carry for each kind of stored
calibration, and DICOM, aECG and WFDB files replayed into a real server process, every sample
arriving exactly once (count and checksum) and analysed as the file is."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from diagnosis.ecg.analysis import analyze
from diagnosis.ecg.formats import read_record
from diagnosis.ecg.frames import decode, encode
from diagnosis.ecg.ingest import StreamFormat
from diagnosis.ecg.record import EcgRecord
from diagnosis.ecg.sender import Recording, load_recording, split

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


@pytest.mark.parametrize("name,baseline", [("mitdb/100", (1024, 1024)),
                                           ("cpsc2021/data_8_4", (-199006, -230655))])
def test_baselines_go_with_the_stored_integers(shared_data: Path, name: str,
                                               baseline: tuple[int, int]) -> None:
    """MIT-BIH stores 0 mV as 1024; CPSC 2021 spans the full 16 bits around baselines far
    outside them, with gains no float32 holds. The frames carry the integers as stored with
    their baseline and exact gain, and the server's millivolts are the file's, bit for bit."""
    record = read_record(shared_data / "ecg" / name)
    recording = Recording.from_record(record)
    assert not recording.requantised and recording.baseline == baseline
    assert np.array_equal(recording.samples, record.digital)
    fmt = StreamFormat(recording.fs, recording.leads, recording.gain, recording.baseline)
    sent = [decode(encode(f)) for f in split(recording, uuid.uuid4(), 0.25)[:8]]
    received = np.concatenate([f.samples for f in sent])
    assert {(f.gain, f.baseline) for f in sent} == {(tuple(record.gain), baseline)}
    assert fmt.millivolts(received).tobytes() == record.signal[:len(received)].tobytes()


def test_wide_values_go_less_their_baseline_or_requantised() -> None:
    """24-bit values: less a whole baseline they fit 16 bits exactly; around a fractional
    baseline, or spanning more than 16 bits, they are requantised and said to be."""
    wide = np.array([[100_000, 70_000, 5], [100_300, 70_100, 6], [99_900, 140_000, 7]])
    record = EcgRecord.from_digital(wide, 500, ("I", "II", "III"), [1000, 1000, 1000],
                                    [100_000, 70_000, 0.5])
    recording = Recording.from_record(record)
    assert recording.samples[:, 0].tolist() == [0, 300, -100] and recording.baseline[0] == 0
    assert [note.split(":")[0] for note in recording.requantised] == ["II", "III"]
    assert "beyond 16 bits" in recording.requantised[0]
    assert "not a whole number" in recording.requantised[1]
    gain = np.array(recording.gain)
    assert gain[0] == 1000 and gain[1] < 1000
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
        for name in ("dicom/waveform_ecg.dcm", "aecg/ecg_hl7.xml", "cpsc2021/data_8_4.hea"):
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
            assert info["baseline"] == list(expected.baseline)
            analysis = json.loads(_get(stream + "/analysis", token=token)[2])
            assert analysis.pop("alerts_raised") == []
            assert analysis == json.loads(json.dumps(analyze(read_record(path)).as_json()))
        cut = tmp_path / "cut.dcm"
        cut.write_bytes((shared_data / "ecg" / "dicom" / "waveform_ecg.dcm").read_bytes()[:-10])
        refused = run("ecg", "send", str(cut), "--url", base, "--token", token,
                      "--patient", "DEMO-0001")
        assert refused.returncode == 2
        assert f"cannot read {cut}: truncated DICOM file" in refused.stderr
    finally:
        process.terminate()
        process.wait(timeout=15)
