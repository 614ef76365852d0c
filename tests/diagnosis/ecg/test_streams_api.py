"""ECG streams over the real server: permissions, bad frames, exactly-once delivery through
link drops (a TCP proxy on loopback cuts the connection mid-record), and the stored samples."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import aiohttp
import numpy as np
import pytest
import wfdb

from diagnosis.ecg.frames import Frame, encode
from diagnosis.ecg.sender import Recording, Sender, create_stream


class CuttingProxy:
    """Forwards loopback TCP to the server; cut() drops every connection mid-stream."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.base_events.Server | None = None
        self.cuts = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader, writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, upstream_writer]

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        self.cuts += 1
        self._abort()

    def _abort(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self._abort()
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
def mitdb_minute(shared_data) -> Recording:
    record = wfdb.rdrecord(str(shared_data / "ecg" / "mitdb" / "100"), physical=False,
                           sampto=360 * 60)
    return Recording(record.d_signal.astype(np.int16), float(record.fs), tuple(record.sig_name),
                     tuple(float(g) for g in record.adc_gain))


def base_url(world) -> str:
    return str(world.client.make_url("/")).rstrip("/")


async def test_only_staff_who_see_the_patient_may_stream(world):
    created = await world.call("POST", "/api/ecg/streams", "clinician",
                               json={"patient_id": world.patient}, expect=201)
    assert created["state"] == "open" and created["acknowledged_seq"] == -1
    await world.call("POST", "/api/ecg/streams", "other_clinician",
                     json={"patient_id": world.patient}, expect=403)
    await world.call("POST", "/api/ecg/streams", "clinician",
                     json={"patient_id": "NOPE"}, expect=404)
    await world.call("GET", f"/api/ecg/streams/{created['id']}", "other_clinician", expect=403)
    await world.call("GET", "/api/ecg/streams/nope", "clinician", expect=404)
    response = await world.client.get(f"/ecg/ingest/{created['id']}")
    assert response.status == 401


async def test_stream_attached_to_a_consult(world):
    consult = await world.request_consult()
    created = await world.call("POST", "/api/ecg/streams", "clinician",
                               json={"patient_id": world.patient, "consult_id": consult["id"]},
                               expect=201)
    refreshed = await world.call("GET", f"/api/consults/{consult['id']}", "clinician", expect=200)
    attachment = refreshed["attachments"][0]
    assert (attachment["kind"], attachment["ref"]) == ("ecg", created["id"])
    await world.call("POST", "/api/ecg/streams", "clinician",
                     json={"patient_id": world.other_patient, "consult_id": consult["id"]},
                     expect=403)


async def test_garbage_frames_get_errors_and_lose_nothing(world):
    created = await world.call("POST", "/api/ecg/streams", "clinician",
                               json={"patient_id": world.patient}, expect=201)
    stream = uuid.UUID(created["id"])
    ws = await world.client.ws_connect(f"/ecg/ingest/{stream}", headers=world.auth("clinician"))
    assert (await ws.receive_json())["type"] == "ready"
    good = Frame(stream, 0, 0, 500.0, ("II",), (200.0,), np.arange(250, dtype=np.int16)[:, None])
    await ws.send_bytes(encode(good))
    assert (await ws.receive_json())["ack"] == 0
    for bad, code in ((b"\x00garbage", "bad_frame"), (encode(good)[:-3], "bad_frame"),
                      (encode(Frame(stream, 1, 250, 360.0, ("II",), (200.0,),
                                    np.zeros((90, 1), np.int16))), "format_changed"),
                      (encode(Frame(stream, 900, 0, 500.0, ("II",), (200.0,),
                                    np.zeros((9, 1), np.int16))), "too_far_ahead"),
                      (encode(Frame(uuid.uuid4(), 1, 250, 500.0, ("II",), (200.0,),
                                    np.zeros((9, 1), np.int16))), "wrong_stream")):
        await ws.send_bytes(bad)
        reply = await ws.receive_json()
        assert (reply["type"], reply["code"]) == ("error", code)
    await ws.send_str("text is not a frame")
    assert (await ws.receive_json())["code"] == "bad_frame"
    await ws.send_bytes(encode(good))
    duplicate = await ws.receive_json()
    assert duplicate["duplicate"] and duplicate["ack"] == 0
    await ws.close()
    info = await world.call("GET", f"/api/ecg/streams/{stream}", "clinician", expect=200)
    assert info["samples"] == 250 and info["leads"] == ["II"] and info["fs"] == 500.0


async def test_sender_through_two_link_drops_delivers_every_sample_once(world, mitdb_minute):
    proxy = CuttingProxy(world.client.port)
    port = await proxy.start()
    url = f"http://127.0.0.1:{port}"
    token = world.tokens["clinician"]
    async with aiohttp.ClientSession() as session:
        stream_id = await create_stream(session, url, token, world.patient)
        sender = Sender(url, token, mitdb_minute, stream_id, speed=40.0, frame_seconds=0.25)
        task = asyncio.create_task(sender.run(session))
        for _ in range(2):
            await asyncio.sleep(0.5)
            assert not task.done()
            proxy.cut()
        report = await asyncio.wait_for(task, 30)
    await proxy.close()
    assert proxy.cuts == 2 and report.connections >= 3
    assert report.samples == len(mitdb_minute.samples) == 21600
    info = await world.call("GET", f"/api/ecg/streams/{stream_id}", "clinician", expect=200)
    assert info["state"] == "complete" and info["samples"] == 21600
    assert info["acknowledged_seq"] == report.frames - 1
    response = await world.client.get(f"/api/ecg/streams/{stream_id}/samples",
                                      headers=world.auth("clinician"))
    stored = np.frombuffer(await response.read(), dtype="<i2").reshape(-1, 2)
    assert response.headers["X-ECG-Leads"] == "MLII,V5"
    assert len(stored) == 21600
    assert hashlib.sha256(stored.tobytes()).hexdigest() == hashlib.sha256(
        mitdb_minute.samples.astype("<i2").tobytes()).hexdigest()


async def test_ended_stream_refuses_more_ingest(world, mitdb_minute):
    short = Recording(mitdb_minute.samples[:720], mitdb_minute.fs, mitdb_minute.leads,
                      mitdb_minute.gain)
    async with aiohttp.ClientSession() as session:
        stream_id = await create_stream(session, base_url(world), world.tokens["clinician"],
                                        world.patient)
        await Sender(base_url(world), world.tokens["clinician"], short, stream_id,
                     speed=100.0).run(session)
    response = await world.client.get(f"/ecg/ingest/{stream_id}", headers=world.auth("clinician"))
    assert response.status == 409


async def _follower(world, stream_id: str, **message):
    ws = await world.client.ws_connect(f"/ecg/follow/{stream_id}")
    await ws.send_json({"type": "follow", **message})
    return ws


async def test_expert_follows_a_live_stream_with_backlog(world, mitdb_minute):
    consult = await world.request_consult()
    url, token = base_url(world), world.tokens["clinician"]
    async with aiohttp.ClientSession() as session:
        stream_id = await create_stream(session, url, token, world.patient, consult["id"])
        sender = Sender(url, token, mitdb_minute, stream_id, speed=20.0)
        task = asyncio.create_task(sender.run(session))
        await asyncio.sleep(0.8)
        follower = await _follower(world, stream_id, token=world.tokens["cardiologist"], seconds=5)
        first = await follower.receive_json(timeout=5)
        assert first["type"] == "stream" and first["leads"] == ["MLII", "V5"]
        received: dict[int, list] = {}
        live_beats: list[int] = []
        complete = False
        while True:  # the samples, then the analysis of the end of the stream
            message = await follower.receive_json(timeout=10)
            if message["type"] == "analysis":
                live_beats += [beat["sample"] for beat in message["beats"]]
                if complete:
                    break
                continue
            assert message["type"] == "samples"
            received[message["first_sample"]] = message["samples"]
            complete = message["complete"]
        await task
        await follower.close()
    starts = sorted(received)
    assert starts[0] > 0, "an expert joining late gets a backlog, not the whole record"
    joined = np.concatenate([np.asarray(received[s], dtype=np.int16) for s in starts])
    assert starts[0] + len(joined) == len(mitdb_minute.samples)
    assert np.array_equal(joined, mitdb_minute.samples[starts[0]:])
    # The beats followers were told of live are exactly those of an analysis of the whole
    # recording (up to the moment the follower joined).
    stored = await world.call("GET", f"/api/ecg/streams/{stream_id}/analysis", "cardiologist",
                              expect=200)
    assert stored["n_samples"] == len(mitdb_minute.samples) and len(stored["beats"]) > 60
    whole = [beat["sample"] for beat in stored["beats"]]
    assert live_beats and live_beats == whole[len(whole) - len(live_beats):]


async def test_following_needs_a_valid_token_and_access(world):
    created = await world.call("POST", "/api/ecg/streams", "clinician",
                               json={"patient_id": world.patient}, expect=201)
    for message, code in (({"token": world.tokens["radiologist"]}, "forbidden"),
                          ({"token": "forged"}, "unauthorized"),
                          ({"tokn": "x"}, "bad_message")):
        ws = await _follower(world, created["id"], **message)
        reply = await ws.receive_json(timeout=5)
        assert (reply["type"], reply["code"]) == ("error", code)
        await ws.close()
    ws = await _follower(world, "nope", token=world.tokens["clinician"])
    assert (await ws.receive_json(timeout=5))["code"] == "not_found"
    entries = (await world.call("GET", "/api/audit", "admin", expect=200))["entries"]
    assert ("radiologist", "ecg.follow", "denied") in [
        (e["actor"], e["action"], e["outcome"]) for e in entries]


async def test_a_failed_store_loses_nothing_after_reconnect(world, mitdb_minute, monkeypatch):
    """A disk error once (injected) ends the connection; the stream is rebuilt from what was
    really stored, and the sender's resend completes it exactly once."""
    from diagnosis.ecg import streams
    original = streams.SampleFile.append
    failures = []

    def flaky(self, frames):
        if len(failures) == 0 and frames[0].seq == 10:
            failures.append(frames[0].seq)
            raise OSError("disk full (injected)")
        return original(self, frames)

    monkeypatch.setattr(streams.SampleFile, "append", flaky)
    short = Recording(mitdb_minute.samples[:360 * 10], mitdb_minute.fs, mitdb_minute.leads,
                      mitdb_minute.gain)
    async with aiohttp.ClientSession() as session:
        stream_id = await create_stream(session, base_url(world), world.tokens["clinician"],
                                        world.patient)
        report = await asyncio.wait_for(Sender(base_url(world), world.tokens["clinician"], short,
                                               stream_id, speed=50.0).run(session), 30)
    assert failures == [10] and report.connections >= 2
    response = await world.client.get(f"/api/ecg/streams/{stream_id}/samples",
                                      headers=world.auth("clinician"))
    stored = np.frombuffer(await response.read(), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(stored, short.samples)


async def _streamed(world, recording: Recording) -> str:
    async with aiohttp.ClientSession() as session:
        stream_id = await create_stream(session, base_url(world), world.tokens["clinician"],
                                        world.patient)
        await Sender(base_url(world), world.tokens["clinician"], recording, stream_id,
                     speed=200.0).run(session)
    return stream_id


async def test_a_stored_stream_exports_bit_exact_as_dicom_and_wfdb(world, mitdb_minute,
                                                                   tmp_path):
    """The recording kept with the patient goes out as DICOM General ECG and as WFDB with the
    integers as received, their gains, its rate and leads; every export is audited."""
    import zipfile

    from diagnosis.ecg.formats import read_dicom, read_wfdb

    stream_id = await _streamed(world, mitdb_minute)
    response = await world.client.get(f"/api/ecg/streams/{stream_id}/export?format=dicom",
                                      headers=world.auth("clinician"))
    assert response.status == 200 and response.content_type == "application/dicom"
    assert f'filename="ecg-{stream_id}.dcm"' in response.headers["Content-Disposition"]
    (tmp_path / "ecg.dcm").write_bytes(await response.read())
    dicom = read_dicom(tmp_path / "ecg.dcm")
    response = await world.client.get(f"/api/ecg/streams/{stream_id}/export?format=wfdb",
                                      headers=world.auth("clinician"))
    assert response.status == 200 and response.content_type == "application/zip"
    (tmp_path / "ecg.zip").write_bytes(await response.read())
    with zipfile.ZipFile(tmp_path / "ecg.zip") as zipped:
        assert sorted(zipped.namelist()) == [f"ecg-{stream_id}.dat", f"ecg-{stream_id}.hea"]
        zipped.extractall(tmp_path)
    wfdb_record = read_wfdb(tmp_path / f"ecg-{stream_id}")
    for record in (dicom, wfdb_record):
        assert record.fs == 360.0 and record.leads == ("MLII", "V5")
        assert np.array_equal(record.digital, mitdb_minute.samples)
        assert record.gain.tolist() == [200.0, 200.0]
    import pydicom
    header = pydicom.dcmread(tmp_path / "ecg.dcm")
    assert header.PatientID == world.patient
    entries = (await world.call("GET", "/api/audit", "admin", expect=200))["entries"]
    exports = [(e["actor"], e["action"], e["outcome"]) for e in entries
               if e["action"] == "ecg.export"]
    assert exports == [("clinician", "ecg.export", "ok")] * 2


async def test_samples_the_monitor_did_not_have_stay_missing_in_exports(world, mitdb_minute,
                                                                       tmp_path):
    """An electrode dropout (the monitor's "no sample" value) is exported as missing in both
    formats, never as a -164 mV sample; every other integer comes back as sent."""
    import zipfile

    from diagnosis.ecg.formats import read_dicom, read_wfdb
    from diagnosis.ecg.frames import MISSING_SAMPLE

    samples = mitdb_minute.samples[:3600].copy()
    samples[1000:1720, 1] = MISSING_SAMPLE
    stream_id = await _streamed(world, Recording(samples, mitdb_minute.fs, mitdb_minute.leads,
                                                 mitdb_minute.gain))
    records = []
    for fmt in ("dicom", "wfdb"):
        response = await world.client.get(f"/api/ecg/streams/{stream_id}/export?format={fmt}",
                                          headers=world.auth("clinician"))
        assert response.status == 200
        (tmp_path / fmt).write_bytes(await response.read())
    records.append(read_dicom(tmp_path / "dicom"))
    with zipfile.ZipFile(tmp_path / "wfdb") as zipped:
        zipped.extractall(tmp_path)
    records.append(read_wfdb(tmp_path / f"ecg-{stream_id}"))
    gap = samples == MISSING_SAMPLE
    for record in records:
        assert np.array_equal(np.isnan(record.signal), gap)
        assert np.array_equal(record.digital[~gap], samples[~gap])


async def test_export_refusals_are_clear_and_change_nothing(world, mitdb_minute, shared_data):
    stream_id = await _streamed(world, Recording(mitdb_minute.samples[:720], mitdb_minute.fs,
                                                 mitdb_minute.leads, mitdb_minute.gain))
    path = f"/api/ecg/streams/{stream_id}/export"
    body = await world.call("GET", f"{path}?format=png", "clinician", expect=422)
    assert body["errors"][0]["field"] == "format"
    await world.call("GET", path, "clinician", expect=422)
    await world.call("GET", f"{path}?format=dicom", "other_clinician", expect=403)
    await world.call("GET", f"{path}?format=dicom", None, expect=401)
    await world.call("GET", "/api/ecg/streams/nope/export?format=dicom", "clinician", expect=404)
    empty = await world.call("POST", "/api/ecg/streams", "clinician",
                             json={"patient_id": world.patient}, expect=201)
    body = await world.call("GET", f"/api/ecg/streams/{empty['id']}/export?format=wfdb",
                            "clinician", expect=409)
    assert body["detail"] == "the stream has no samples yet"
    # MIT-BIH SVDB's 128 Hz is below what DICOM General ECG allows: refused with the reason
    # (naming no server path); WFDB takes it.
    svdb = wfdb.rdrecord(str(shared_data / "ecg" / "mitdb" / "800"), physical=False, sampto=640)
    slow = await _streamed(world, Recording(svdb.d_signal.astype(np.int16), float(svdb.fs),
                                            ("ECG1", "ECG2"),
                                            tuple(float(g) for g in svdb.adc_gain)))
    body = await world.call("GET", f"/api/ecg/streams/{slow}/export?format=dicom", "clinician",
                            expect=422)
    assert "128" in body["detail"] and "/tmp" not in body["detail"]
    response = await world.client.get(f"/api/ecg/streams/{slow}/export?format=wfdb",
                                      headers=world.auth("clinician"))
    assert response.status == 200
    info = await world.call("GET", f"/api/ecg/streams/{stream_id}", "clinician", expect=200)
    assert info["samples"] == 720 and info["state"] == "complete"
    entries = (await world.call("GET", "/api/audit", "admin", expect=200))["entries"]
    assert ("other_clinician", "ecg.export", "denied") in [
        (e["actor"], e["action"], e["outcome"]) for e in entries]
