"""Live analysis over the real server: an ambulance stream whose heart stops raises an ASYSTOLE
alert at the following expert within a second of the sample that settles it, the alert is kept
with the recording, and a garbage stretch does not stop the analysis; a streamed infarct's
STEMI alert says which criteria it met, live and as stored."""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import pytest
import wfdb

from diagnosis.ecg.analysis import analyze
from diagnosis.ecg.formats import read_record
from diagnosis.ecg.frames import Frame, encode
from diagnosis.ecg.ingest import StreamFormat
from diagnosis.ecg.live import LiveAnalysis
from diagnosis.ecg.record import EcgRecord

FS = 360.0
FRAME = 90  # 0.25 s


@pytest.fixture
def arrest(shared_data) -> np.ndarray:
    """30 s of MIT-BIH 100, then 8 s of baseline with electrode noise and no beat, then 10 s of
    its rhythm again: a real trace with an asystole in the middle (stored integers)."""
    record = wfdb.rdrecord(str(shared_data / "ecg" / "mitdb" / "100"), physical=False,
                           sampto=int(FS * 40))
    samples = record.d_signal.astype(np.int16)
    noise = np.random.default_rng(7).normal(0, 2, (int(FS * 8), 2))
    flat = (np.median(samples, axis=0) + noise).astype(np.int16)
    return np.concatenate([samples[:int(FS * 30)], flat, samples[int(FS * 30):]])


async def new_stream(world) -> uuid.UUID:
    created = await world.call("POST", "/api/ecg/streams", "clinician",
                               json={"patient_id": world.patient}, expect=201)
    return uuid.UUID(created["id"])


async def ingest_socket(world, stream: uuid.UUID):
    """The monitor's ingest socket on `stream`, past its "ready"."""
    ingest = await world.client.ws_connect(f"/ecg/ingest/{stream}",
                                           headers=world.auth("clinician"))
    assert (await ingest.receive_json())["type"] == "ready"
    return ingest


async def test_an_asystole_alert_reaches_the_expert_within_a_second(world, arrest):
    stream = await new_stream(world)
    follower = await world.client.ws_connect(f"/ecg/follow/{stream}")
    await follower.send_json({"type": "follow", "token": world.tokens["clinician"]})
    assert (await follower.receive_json(timeout=5))["type"] == "stream"
    alerts: list[tuple[float, dict]] = []

    async def follow() -> None:
        while True:
            message = await follower.receive_json(timeout=20)
            if message["type"] == "analysis":
                alerts.extend((time.monotonic(), {**a, "up_to": message["up_to_sample"]})
                              for a in message["alerts"])
            elif message.get("complete"):
                return

    reading = asyncio.create_task(follow())
    ingest = await ingest_socket(world, stream)
    sent_at: list[float] = []
    count = len(arrest) // FRAME
    for seq in range(count):
        chunk = arrest[seq * FRAME:(seq + 1) * FRAME]
        if seq == 40:  # a garbage frame in the middle: refused, nothing else changes
            await ingest.send_bytes(b"\x00" * 40)
            assert (await ingest.receive_json())["code"] == "bad_frame"
        frame = Frame(stream, seq, seq * FRAME, FS, ("MLII", "V5"), (200.0, 200.0), chunk,
                      end=seq == count - 1)
        await ingest.send_bytes(encode(frame))
        sent_at.append(time.monotonic())
        assert (await ingest.receive_json())["ack"] == seq
        await asyncio.sleep(0.002)
    await asyncio.wait_for(reading, 20)
    await ingest.close()
    await follower.close()

    asystole = [(at, a) for at, a in alerts if a["kind"] == "ASYSTOLE"]
    assert len(asystole) == 1, alerts
    arrived, alert = asystole[0]
    # raised when 4 s have passed without a beat: the last beat came just before 30 s
    assert FS * 32.5 <= alert["sample"] <= FS * 34.5, alert
    settled_by = (alert["up_to"] - 1) // FRAME  # the frame whose samples made it final
    latency = arrived - sent_at[settled_by]
    assert 0 <= latency <= 1.0, latency
    stored = await world.call("GET", f"/api/ecg/streams/{stream}/analysis", "clinician",
                              expect=200)
    assert [(a["kind"], a["sample"]) for a in stored["alerts_raised"]] == [
        ("ASYSTOLE", alert["sample"])]
    assert stored["alerts_raised"][0]["raised_at"]
    assert ("ASYSTOLE", alert["sample"]) in [(a["kind"], a["sample"]) for a in stored["alerts"]]


async def test_a_failing_analysis_never_stops_the_ingest(world, arrest, monkeypatch):
    """The analysis breaks on the first frame: every frame is still acknowledged and stored."""
    from diagnosis.ecg.live import LiveAnalysis

    def broken(self, samples):
        raise RuntimeError("injected analysis failure")

    monkeypatch.setattr(LiveAnalysis, "push", broken)
    stream = await new_stream(world)
    ingest = await ingest_socket(world, stream)
    count = 20
    for seq in range(count):
        frame = Frame(stream, seq, seq * FRAME, FS, ("MLII", "V5"), (200.0, 200.0),
                      arrest[seq * FRAME:(seq + 1) * FRAME])
        await ingest.send_bytes(encode(frame))
        reply = await ingest.receive_json()
        assert (reply["type"], reply["ack"]) == ("ack", seq)
    await ingest.close()
    response = await world.client.get(f"/api/ecg/streams/{stream}/samples",
                                      headers=world.auth("clinician"))
    stored = np.frombuffer(await response.read(), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(stored, arrest[:count * FRAME])


def test_followers_are_told_the_rhythm_while_it_lasts(shared_data):
    """The rhythm now (`rhythm_now`) is in the live messages long before any episode closes:
    a follower of an AF record reads "AF" while the AF goes on, and the episodes reported at
    the end are unchanged by it."""
    record = read_record(shared_data / "ecg" / "cpsc2021" / "data_101_8.hea")
    fmt = StreamFormat(record.fs, record.leads, tuple(float(g) for g in record.gain))
    stored = np.round(record.signal * record.gain).astype(np.int32)  # stored: no baseline
    live, frame = LiveAnalysis(fmt, None, None), int(record.fs / 4)
    seen = []
    for start in range(0, record.n_samples, frame):
        message = live.push(stored[start:start + frame])
        if message and message["rhythm_now"]:
            seen.append((start, message["rhythm_now"]["label"], bool(message["rhythms"])))
    final = live.finish()
    assert seen and seen[0][0] < 30 * record.fs, "called within the first half minute"
    assert "AF" in {label for _, label, _ in seen}
    first_af = next(start for start, label, _ in seen if label == "AF")
    reported = live.analyzer.report().rhythms
    af = [e for e in reported if e.label == "AF"]
    assert af and any(e.start <= first_af <= e.end for e in af)
    assert final["rhythm_now"] is None
    batch = EcgRecord.from_digital(stored, fmt.fs, fmt.leads, np.asarray(fmt.gain),
                                   np.zeros(len(fmt.leads)))
    assert reported == analyze(batch).rhythms


def test_the_rhythm_shown_agrees_with_the_heart_rate_shown(shared_data):
    """CPSC 2021 35_6 (flutter with variable block, ~48 bpm): the settled rate calls wait
    ~16 beats for the AF windows, and a follower read "48 bpm, SINUS" for 20 s. Now the
    rhythm is called from the first beats, and whenever the rate shown with the last
    `rate_min_beats` beats was under the brady limit the rhythm shown is BRADY."""
    record = read_record(shared_data / "ecg" / "cpsc2021" / "data_35_6.hea")
    fmt = StreamFormat(record.fs, record.leads, tuple(float(g) for g in record.gain))
    stored = np.round(record.signal * record.gain).astype(np.int32)
    live, frame = LiveAnalysis(fmt, None, None), int(record.fs / 4)
    conf = live.analyzer.conf.rhythm
    rates, now, first_call, checked = [], None, None, 0
    for start in range(0, record.n_samples, frame):
        message = live.push(stored[start:start + frame])
        if message:
            rates += [b["hr_avg_bpm"] for b in message["beats"] if b["hr_avg_bpm"] is not None]
            now = message["rhythm_now"]
        if now is not None and first_call is None:
            first_call = start + frame
        recent = rates[-conf.rate_min_beats:]
        if len(recent) == conf.rate_min_beats and max(recent) < conf.brady_bpm:
            assert now["label"] == "BRADY", (start, recent, now)
            checked += 1
    assert first_call is not None and first_call <= 6 * record.fs
    assert checked > 200


def test_samples_the_monitor_marks_missing_are_missing_to_the_analysis(shared_data, tmp_path):
    """A monitor that loses its electrodes for 2 s sends the "no sample" marker (-32768): the
    live analysis and the stored recording's report treat it as missing (NaN), as a file's
    reader does, so no beat is found there (as -164 mV it made giant steps that passed for
    beats) and both agree with the analysis of the file."""
    from diagnosis.ecg import streams
    from diagnosis.ecg.frames import MISSING_SAMPLE
    from diagnosis.ecg.live import report_for

    record = wfdb.rdrecord(str(shared_data / "ecg" / "mitdb" / "100"), physical=False,
                           sampto=int(FS * 40))
    stored = (record.d_signal - 1024).astype(np.int16)
    gone = slice(int(FS * 20), int(FS * 22))
    stored[gone] = MISSING_SAMPLE
    fmt = StreamFormat(FS, ("MLII", "V5"), (200.0, 200.0))
    live = LiveAnalysis(fmt, None, None)
    for start in range(0, len(stored), FRAME):
        live.push(stored[start:start + FRAME])
    live.finish()
    got = live.analyzer.report()
    expected = analyze(EcgRecord.from_digital(stored, FS, fmt.leads, np.asarray(fmt.gain),
                                              np.zeros(2), stored == MISSING_SAMPLE))
    assert [b.sample for b in got.beats] == [b.sample for b in expected.beats]
    assert not [b for b in got.beats if gone.start - FS * 0.1 <= b.sample < gone.stop]
    assert 45 <= len(got.beats) <= 50                  # 40 s at ~75 bpm, 2 s without samples
    path = tmp_path / "stream.i16"
    path.write_bytes(stored.astype("<i2").tobytes())
    assert report_for(fmt, None, None, path, len(stored)) == expected.as_json()
    assert streams.read_samples(path, 2).tolist() == stored.tolist()   # kept as sent


async def test_a_streamed_infarct_raises_a_posterior_stemi_alert(world, shared_data):
    """The first 8 s of PTB s0010_re (the posterior STEMI equivalent, see test_st) as a
    monitor sends them: the expert is told it is the posterior criterion, in V2 and V3, and
    the stored alert says so too."""
    record = wfdb.rdrecord(str(shared_data / "ecg" / "ptb" / "s0010_re"), physical=False,
                           sampto=8000)
    samples = record.d_signal.astype(np.int16)
    leads = tuple(record.sig_name)
    stream = await new_stream(world)
    follower = await world.client.ws_connect(f"/ecg/follow/{stream}")
    await follower.send_json({"type": "follow", "token": world.tokens["clinician"]})
    assert (await follower.receive_json(timeout=5))["type"] == "stream"
    ingest = await ingest_socket(world, stream)
    per_frame = 250
    count = len(samples) // per_frame
    for seq in range(count):
        frame = Frame(stream, seq, seq * per_frame, 1000.0, leads, tuple(record.adc_gain),
                      samples[seq * per_frame:(seq + 1) * per_frame], end=seq == count - 1)
        await ingest.send_bytes(encode(frame))
        assert (await ingest.receive_json())["ack"] == seq
    alerts = []
    while True:
        message = await follower.receive_json(timeout=20)
        if message["type"] == "analysis":
            alerts += message["alerts"]
        elif message.get("complete"):
            break
    await ingest.close()
    await follower.close()
    assert [(a["kind"], a["leads"], a["criterion"]) for a in alerts] == [
        ("STEMI", ["V2", "V3"], "posterior")]
    stored = await world.call("GET", f"/api/ecg/streams/{stream}/analysis", "clinician",
                              expect=200)
    assert [(a["kind"], a["sample"], a["criterion"]) for a in stored["alerts_raised"]] == [
        ("STEMI", alerts[0]["sample"], "posterior")]
