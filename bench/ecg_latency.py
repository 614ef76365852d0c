"""Sample-in to alert-out: how long after an ambulance sends the samples of an alarming event
the expert following the stream gets the alert, through the real server on loopback.

A `telemed serve` process runs on 127.0.0.1 with the demo network; the township clinician asks
the cardiologist for an emergency consult about the demo patient, streams a recording into
`/ecg/ingest/{id}` in 0.25 s frames (as `telemed ecg send` does), and the cardiologist follows
it on `/ecg/follow/{id}`. Three recordings, each with one alert:

  STEMI     CinC 2021 HR06000 (12 leads, 500 Hz) with an injury current that brings the ST
            elevation of II, III and aVF to 0.13 mV (as tests/diagnosis/ecg/test_st.py does)
  VT        MIT-BIH 100 (2 leads, 360 Hz): its last beat before 60 s, then 8 copies at 150 bpm
            of its one ventricular complex (diagnosis/ecg/ventricular_run.py), then its rhythm
  ASYSTOLE  MIT-BIH 100 (2 leads, 360 Hz): 30 s, then 8 s of baseline with electrode noise and
            no beat, then its rhythm again (as tests/diagnosis/ecg/test_live_alerts.py does)

Frames go out as fast as they are acknowledged until `LEAD_IN_S` before the frame that settles
the alert (found beforehand by the same analyzer), then in real time, each when its last sample
would have been recorded. Per alert two times, from `time.perf_counter` before the frame is
sent to the follower receiving the message that carries the alert:

  from its sample   the frame holding the alert's own sample (the event: the beat that
                    completes the VT run or the STEMI criteria, the moment 4 s without a beat
                    are up); includes how long the analysis has to wait for later samples
  from settling     the frame whose samples made the alert final (the message's
                    `up_to_sample`): transport, storage, analysis and delivery only
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import aiohttp
import numpy as np

from diagnosis.ecg.analysis import StreamAnalyzer, analyze
from diagnosis.ecg.formats import read_record
from diagnosis.ecg.frames import encode
from diagnosis.ecg.ingest import StreamFormat
from diagnosis.ecg.injury import with_injury
from diagnosis.ecg.sender import Recording, split
from diagnosis.ecg.qrs import detect_qrs
from diagnosis.ecg.ventricular_run import with_ventricular_run

FRAME_S = 0.25
LEAD_IN_S = 8.0
PATIENT = "DEMO-0001"
VENTRICULAR_BEAT = 546792
"""The R peak of MIT-BIH 100's one ventricular beat (its .atr annotation)."""


class LatencyError(RuntimeError):
    """The measurement could not be made; says why."""


@dataclass(frozen=True)
class Case:
    kind: str
    recording: Recording

    @property
    def frame(self) -> int:
        return max(1, round(self.recording.fs * FRAME_S))


def cases(data: Path) -> list[Case]:
    record = read_record(data / "cinc2021-12lead" / "HR06000.hea")
    elevation = analyze(record).st[-1].elevation_mv
    injured = with_injury(record.signal, record.fs, {
        record.leads.index(lead): 0.13 - elevation[record.leads.index(lead)]
        for lead in ("II", "III", "aVF")})
    gain = np.asarray(record.gain, dtype=np.float64)
    stemi = Recording(np.rint(injured * gain).astype(np.int16), record.fs, record.leads,
                      tuple(gain.tolist()))
    mitdb_record = read_record(data / "mitdb" / "100.hea")
    mitdb = Recording.from_record(mitdb_record)
    fs = mitdb.fs
    last_beat = int(detect_qrs(mitdb_record.signal[:int(60 * fs)], fs)[-1])
    run = with_ventricular_run(mitdb_record.signal, fs, VENTRICULAR_BEAT, last_beat, 8, 150)
    vt = Recording(np.rint(run[:int(fs * 80)] * mitdb_record.gain).astype(np.int16), fs,
                   mitdb.leads, tuple(mitdb_record.gain.tolist()))
    head = mitdb.samples[:int(fs * 40)]
    noise = np.random.default_rng(7).normal(0, 2, (int(fs * 8), head.shape[1]))
    flat = (np.median(head, axis=0) + noise).astype(np.int16)
    arrest = dataclasses.replace(mitdb, samples=np.concatenate(
        [head[:int(fs * 30)], flat, head[int(fs * 30):]]))
    return [Case("STEMI", stemi), Case("VT", vt), Case("ASYSTOLE", arrest)]


def settling_frame(case: Case) -> int:
    """The frame whose samples make the case's alert final, found by the analyzer the server
    runs (fed the frames' samples in mV)."""
    rec = case.recording
    analyzer = StreamAnalyzer(rec.fs, rec.leads)
    millivolts = StreamFormat(rec.fs, rec.leads, rec.gain, rec.baseline).millivolts(rec.samples)
    for seq, start in enumerate(range(0, len(millivolts), case.frame)):
        alerts = analyzer.push(millivolts[start:start + case.frame]).alerts
        if any(a.kind == case.kind for a in alerts):
            return seq
    raise LatencyError(f"no {case.kind} alert in the {case.kind} recording")


# -- the server --------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TELEMED = [sys.executable, "-m", "telemed.cli"]


@contextlib.contextmanager
def server() -> Iterator[tuple[str, dict[str, str]]]:
    """`telemed serve` on a free 127.0.0.1 port over a fresh demo network: its URL and the
    demo users' passwords; stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="ecg-latency-") as data:
        demo = subprocess.run([*TELEMED, "demo", "--data", data], capture_output=True, text=True,
                              check=True, timeout=120)
        users = json.loads(demo.stdout)["users"]
        port = _free_port()
        process = subprocess.Popen([*TELEMED, "serve", "--host", "127.0.0.1", "--port", str(port),
                                    "--data", data], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(base + "/healthz", timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise LatencyError("telemed serve did not start") from None
                    time.sleep(0.1)
            yield base, {u["username"]: u["password"] for u in users}
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


async def _call(session: aiohttp.ClientSession, method: str, url: str, token: str | None = None,
                **body) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=body or None, headers=headers) as response:
        payload = await response.json(content_type=None)
        if response.status >= 300:
            raise LatencyError(f"{method} {url}: {response.status} {payload}")
        return payload


async def _network(session: aiohttp.ClientSession, base: str,
                   passwords: dict[str, str]) -> tuple[str, str, str]:
    """Tokens of the clinician and the cardiologist, and an emergency consult between them
    about the demo patient (which lets the cardiologist follow the patient's streams)."""
    tokens, ids = {}, {}
    for username in ("clinician.wang", "dr.chen"):
        login = await _call(session, "POST", f"{base}/api/login", username=username,
                            password=passwords[username])
        tokens[username], ids[username] = login["token"], login["user"]["id"]
    institutions = await _call(session, "GET", f"{base}/api/institutions", tokens["dr.chen"])
    hospital = next(i["id"] for i in institutions if i["name"] == "City Central Hospital")
    consult = await _call(session, "POST", f"{base}/api/consults", tokens["clinician.wang"],
                          patient_id=PATIENT, target_institution_id=hospital,
                          specialty="cardiology", urgency="emergency", expert_id=ids["dr.chen"],
                          reason="ambulance ECG, chest pain")
    return tokens["clinician.wang"], tokens["dr.chen"], consult["id"]


# -- one run -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Latency:
    kind: str
    from_sample_s: float
    from_settling_s: float


async def _follow(ws: aiohttp.ClientWebSocketResponse, kind: str) -> tuple[float, dict, int]:
    """Wait for the analysis message with a `kind` alert: arrival time, alert, up_to_sample."""
    while True:
        message = await ws.receive()
        arrived = time.perf_counter()
        if message.type != aiohttp.WSMsgType.TEXT:
            raise LatencyError(f"follow socket closed before the {kind} alert")
        payload = json.loads(message.data)
        if payload["type"] == "analysis":
            for alert in payload["alerts"]:
                if alert["kind"] == kind:
                    return arrived, alert, payload["up_to_sample"]


async def run_once(session: aiohttp.ClientSession, base: str, sender: str, expert: str,
                   consult: str, case: Case, settles: int) -> Latency:
    rec, frame = case.recording, case.frame
    created = await _call(session, "POST", f"{base}/api/ecg/streams", sender,
                          patient_id=PATIENT, consult_id=consult)
    stream = uuid.UUID(created["id"])
    frames = split(rec, stream, FRAME_S)
    follower = await session.ws_connect(f"{base}/ecg/follow/{stream}")
    await follower.send_json({"type": "follow", "token": expert, "seconds": 0})
    for _ in range(2):  # the stream's state, then its (empty) backlog
        await follower.receive_json(timeout=10)
    alert_task = asyncio.create_task(_follow(follower, case.kind))
    ingest = await session.ws_connect(f"{base}/ecg/ingest/{stream}",
                                      headers={"Authorization": f"Bearer {sender}"})
    await ingest.receive_json(timeout=10)
    acked: asyncio.Queue[int] = asyncio.Queue()

    async def read_acks() -> None:
        async for message in ingest:
            reply = json.loads(message.data)
            if reply["type"] == "ack":
                acked.put_nowait(reply["ack"])

    ack_task = asyncio.create_task(read_acks())
    sent: dict[int, float] = {}
    real_time_from = max(0, settles - round(LEAD_IN_S / FRAME_S))
    last = min(settles + 4, (len(rec.samples) - 1) // frame)
    try:
        started = None
        for seq in range(last + 1):
            if seq >= real_time_from:
                started = started if started is not None else time.perf_counter()
                due = started + (seq - real_time_from + 1) * FRAME_S
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            data = encode(frames[seq])
            sent[seq] = time.perf_counter()
            await ingest.send_bytes(data)
            if seq < real_time_from:
                while await acked.get() < seq:
                    pass
        arrived, alert, up_to = await asyncio.wait_for(alert_task, 20)
    finally:
        for task in (alert_task, ack_task):
            task.cancel()
        await asyncio.gather(alert_task, ack_task, return_exceptions=True)
        await ingest.close()
        await follower.close()
    return Latency(case.kind, arrived - sent[alert["sample"] // frame],
                   arrived - sent[(up_to - 1) // frame])


async def _measure(data: Path, runs: int) -> list[Latency]:
    chosen = cases(data)
    settles = {case.kind: settling_frame(case) for case in chosen}
    results: list[Latency] = []
    with server() as (base, passwords):
        async with aiohttp.ClientSession() as session:
            sender, expert, consult = await _network(session, base, passwords)
            await run_once(session, base, sender, expert, consult, chosen[0],
                           settles[chosen[0].kind])          # warm-up, not counted
            for _ in range(runs):
                for case in chosen:
                    results.append(await run_once(session, base, sender, expert, consult, case,
                                                  settles[case.kind]))
    return results


def measure(data: Path, runs: int) -> list[Latency] | str:
    """`runs` alerts of each kind, or the reason none were measured."""
    try:
        return asyncio.run(_measure(data, runs))
    except (OSError, LatencyError, asyncio.TimeoutError, aiohttp.ClientError,
            subprocess.SubprocessError) as exc:
        return f"not measured ({type(exc).__name__}: {exc})"


def print_latency(results: list[Latency] | str, target_s: float) -> None:
    print("== Alert latency: sample-in to alert-out through telemed serve on 127.0.0.1"
          " (0.25 s frames) ==")
    if isinstance(results, str):
        print(f"latency: {results}\n")
        return
    print(f"{'':<12}{'runs':>5} | {'from its sample: median':>24} {'p95':>7} {'max':>7}"
          f" | {'from settling: median':>22} {'p95':>7} {'max':>7}   (ms)")
    for kind in [*dict.fromkeys(r.kind for r in results), "all"]:
        chosen = [r for r in results if kind in ("all", r.kind)]
        event = 1000 * np.array([r.from_sample_s for r in chosen])
        settle = 1000 * np.array([r.from_settling_s for r in chosen])
        print(f"{kind:<12}{len(chosen):>5} | {np.median(event):24.1f}"
              f" {np.percentile(event, 95):7.1f} {event.max():7.1f} | {np.median(settle):22.1f}"
              f" {np.percentile(settle, 95):7.1f} {settle.max():7.1f}")
    print(f"  target: {1000 * target_s:.0f} ms. 'From its sample' includes the samples the"
          " analysis must wait for\n  after the event (see diagnosis/ecg/analysis.py);"
          " 'from settling' is the server's path alone.")
    print()
