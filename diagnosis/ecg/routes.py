"""ECG streams over HTTP: create a stream, feed it frames over a WebSocket, read it back.

POST /api/ecg/streams, GET /api/ecg/streams/{id}, GET /api/ecg/streams/{id}/samples,
GET /api/ecg/streams/{id}/export,
GET /ecg/ingest/{id} (WebSocket, binary frames in, JSON acknowledgements out).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import AsyncIterator

import numpy as np
from aiohttp import WSMsgType, web

from diagnosis.ecg import streams
from diagnosis.ecg.formats import EXPORT_FORMATS, EcgFormatError, exported
from diagnosis.ecg.frames import MAX_LEADS, MAX_SAMPLES_PER_FRAME, Frame, FrameError, decode
from diagnosis.ecg.ingest import Received, StreamError, StreamReceiver
from diagnosis.ecg.live import LiveAnalysis, report_for, stored_record
from telemed.api.body import Field, parse, validate
from telemed.api.context import BUS, DATABASE, SETTINGS, open_websocket
from telemed.api.problems import ProblemError, audit_refusal
from telemed.api.security import authenticated, caller_for_token
from telemed.auth import TokenError
from telemed.permissions import Forbidden
from telemed.store import NotFound
from telemed.store.accounts import get_patient

log = logging.getLogger(__name__)

FOLLOW = [Field("type", str, choices=("follow",)), Field("token", str, max_length=4096),
          Field("seconds", int, required=False)]
EXPORT = [Field("format", str, choices=EXPORT_FORMATS)]
NEW_STREAM = [Field("patient_id", str, max_length=64), Field("consult_id", str, required=False,
                                                             max_length=64)]
MAX_FRAME_BYTES = 64 + MAX_LEADS * 260 + MAX_SAMPLES_PER_FRAME * MAX_LEADS * 2
SUPERSEDED = 4000


@dataclass
class LiveStream:
    """One stream being received: its receiver, file and the one socket feeding it. The lock
    orders frames; `storing` holds the tasks that file them (see `_take`)."""
    receiver: StreamReceiver
    file: streams.SampleFile
    patient_id: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    analysis: LiveAnalysis | None = None
    analysis_failed: bool = False
    socket: web.WebSocketResponse | None = None
    storing: set[asyncio.Task] = field(default_factory=set)


class Ingest:
    """The streams this node is receiving; finishes their stores and closes their files on
    shutdown."""

    def __init__(self) -> None:
        self.live: dict[str, LiveStream] = {}

    def discard(self, stream_id: str) -> None:
        """Forget the in-memory state after a failed store; the next connection rebuilds it
        from the database, which (with the file trimmed to it) is the truth."""
        live = self.live.pop(stream_id, None)
        if live is not None:
            live.file.close()

    def open(self, info: streams.StreamInfo, data_dir) -> LiveStream:
        live = self.live.get(info.id)
        if live is None:
            leads = len(info.format.leads) if info.format else 0
            live = LiveStream(streams.receiver_for(info),
                              streams.SampleFile(streams.samples_path(data_dir, info.id), leads,
                                                 info.samples), info.patient_id)
            self.live[info.id] = live
        return live

    async def close(self) -> None:
        for live in self.live.values():
            await asyncio.gather(*live.storing, return_exceptions=True)
            live.file.close()
        self.live.clear()


INGEST = web.AppKey("ecg_ingest", Ingest)


async def create_stream(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    body = await parse(request, NEW_STREAM)
    info = await request.app[DATABASE].write(streams.create, caller, body["patient_id"],
                                             body.get("consult_id"))
    return web.json_response(info, status=201)


async def get_stream(request: web.Request) -> web.Response:
    caller = await authenticated(request)
    info = await request.app[DATABASE].write(streams.open_for, caller, request.match_info["id"],
                                             "ecg.read")
    return web.json_response(info.public())


async def get_samples(request: web.Request) -> web.Response:
    """The acknowledged samples as sent: little-endian int16, interleaved by sample."""
    caller = await authenticated(request)
    query = {k: int(v) if v.isdigit() else v for k, v in request.query.items()}
    window = validate(query, [Field("start", int, required=False), Field("count", int, required=False)])
    info = await request.app[DATABASE].write(streams.open_for, caller, request.match_info["id"],
                                             "ecg.read")
    leads = len(info.format.leads) if info.format else 1
    count = min(window.get("count", info.samples), info.samples - window.get("start", 0))
    samples = await asyncio.to_thread(
        streams.read_samples, streams.samples_path(request.app[SETTINGS].data_dir, info.id),
        leads, window.get("start", 0), max(0, count))
    return web.Response(body=samples.astype("<i2").tobytes(), content_type="application/octet-stream",
                        headers={"X-ECG-Leads": ",".join(info.format.leads) if info.format else "",
                                 "X-ECG-Fs": str(info.format.fs if info.format else ""),
                                 "X-ECG-Samples": str(len(samples))})


async def get_export(request: web.Request) -> web.Response:
    """The stored recording as a file for a PACS or an analysis tool: DICOM General ECG, or
    WFDB (`.hea` and `.dat` in a zip); the integers as received, with their gains and
    baselines, so nothing is rounded on the way out. An open stream gives what is stored so
    far."""
    caller = await authenticated(request)
    asked = validate(dict(request.query), EXPORT)
    database = request.app[DATABASE]
    info = await database.write(streams.open_for, caller, request.match_info["id"], "ecg.export")
    if info.format is None or not info.samples:
        raise ProblemError(409, "Nothing to export", "the stream has no samples yet")
    patient = await database.read(get_patient, info.patient_id)
    sex, age = streams.demographics(patient)
    path = streams.samples_path(request.app[SETTINGS].data_dir, info.id)
    record = await asyncio.to_thread(stored_record, info.format, sex, age, path, info.samples)
    options = {} if asked["format"] == "wfdb" else {
        "patient_id": info.patient_id, "patient_name": patient["name"],
        "acquired": datetime.fromisoformat(info.created_at)}
    try:
        body, media_type, filename = await asyncio.to_thread(
            exported, record, asked["format"], f"ecg-{info.id}", **options)
    except EcgFormatError as exc:
        raise ProblemError(422, "Cannot export in this format", str(exc),
                           formats=list(EXPORT_FORMATS)) from exc
    return web.Response(body=body, content_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-ECG-Samples": str(info.samples)})


def _reply(result: Received) -> dict:
    return {"type": "ack", "ack": result.ack, "missing": [list(r) for r in result.missing],
            "duplicate": result.duplicate, "complete": result.complete,
            "warnings": result.warnings}


def channel(stream_id: str) -> str:
    return f"ecg:{stream_id}"


async def _store(request: web.Request, live: LiveStream, result: Received) -> None:
    """Samples to disk (fsynced), then the row: only then is the frame acknowledged; then
    followers (on any node) get the new samples through the bus."""
    await asyncio.to_thread(live.file.append, result.ready)
    receiver = live.receiver
    assert receiver.format is not None
    await request.app[DATABASE].write(streams.record_progress, receiver.stream_id, receiver.format,
                                      receiver.next_seq, receiver.next_sample, receiver.complete)
    samples = np.concatenate([frame.samples for frame in result.ready])
    await request.app[BUS].publish(channel(receiver.stream_id), {
        "type": "samples", "first_sample": result.ready[0].first_sample,
        "samples": samples.tolist(), "complete": receiver.complete})
    await _analyse(request, live, result.ready[0].first_sample, samples)


async def _analyse(request: web.Request, live: LiveStream, first_sample: int,
                   samples: np.ndarray) -> None:
    """The live analysis of the samples just stored: followers get what became final, alerts
    are kept with the recording. Its failure is logged and ends the analysis of this stream,
    never the ingest (the samples are stored and acknowledged already)."""
    receiver = live.receiver
    if live.analysis_failed or receiver.format is None:
        return
    try:
        if live.analysis is None:
            sex, age = streams.demographics(
                await request.app[DATABASE].read(get_patient, live.patient_id))
            live.analysis = await asyncio.to_thread(LiveAnalysis.resume, receiver.format, sex, age,
                                                    live.file.path, first_sample)
        message = await asyncio.to_thread(live.analysis.push, samples)
        if receiver.complete:
            final = await asyncio.to_thread(live.analysis.finish)
            # The last values stand unless the finish made newer ones (it usually makes none).
            message = final if message is None else {
                **final, "beats": message["beats"] + final["beats"],
                "rhythms": message["rhythms"] + final["rhythms"],
                "alerts": message["alerts"] + final["alerts"],
                "st_mv": final["st_mv"] or message["st_mv"],
                "quality": final["quality"] or message["quality"]}
    except Exception:
        log.exception("live analysis of ECG stream %s failed; it stops", receiver.stream_id)
        live.analysis_failed = True
        return
    if message is None:
        return
    try:
        if message["alerts"]:
            await request.app[DATABASE].write(streams.record_alerts, receiver.stream_id,
                                              message["alerts"])
        await request.app[BUS].publish(channel(receiver.stream_id), message)
    except Exception:
        log.exception("delivering the analysis of ECG stream %s failed", receiver.stream_id)


async def _take(request: web.Request, live: LiveStream, frame: Frame) -> Received:
    """Accept one frame and store what it makes contiguous, holding the stream's lock
    throughout. Runs as its own task so a dropped connection cannot cancel it half way (the
    receiver would then be ahead of the disk and a frame acknowledged but never written)."""
    async with live.lock:
        result = live.receiver.accept(frame)
        if result.ready:
            try:
                await _store(request, live, result)
            except Exception:
                log.exception("storing ECG stream %s failed", live.receiver.stream_id)
                request.app[INGEST].discard(live.receiver.stream_id)
                raise StreamError("storage_failed", "the server could not store the frame; "
                                  "reconnect and resend from the last acknowledgement") from None
        return result


async def ingest(request: web.Request) -> web.WebSocketResponse:
    """Binary frames in; after each, an ack of the highest contiguous frame stored."""
    caller = await authenticated(request)
    info = await request.app[DATABASE].write(streams.open_for, caller, request.match_info["id"],
                                             "ecg.ingest")
    if info.state == "complete":
        raise ProblemError(409, "Conflict", "this stream has ended")
    live = request.app[INGEST].open(info, request.app[SETTINGS].data_dir)
    ws = await open_websocket(request, web.WebSocketResponse(heartbeat=10.0,
                                                             max_msg_size=MAX_FRAME_BYTES))
    previous, live.socket = live.socket, ws
    if previous is not None and not previous.closed:
        await previous.close(code=SUPERSEDED, message=b"superseded by a new connection")
    async with live.lock:
        ready = {"type": "ready", "ack": live.receiver.ack,
                 "missing": [list(r) for r in live.receiver.missing()]}
    await ws.send_json(ready)
    async for message in ws:
        if message.type != WSMsgType.BINARY:
            await ws.send_json({"type": "error", "code": "bad_frame",
                                "message": "send binary frames (docs/ecg-stream.md)"})
            continue
        if live.socket is not ws:
            break
        try:
            frame = decode(message.data)
            task = asyncio.create_task(_take(request, live, frame))
            live.storing.add(task)
            task.add_done_callback(live.storing.discard)
            result = await asyncio.shield(task)
        except FrameError as exc:
            await ws.send_json({"type": "error", "code": "bad_frame", "message": str(exc)})
            continue
        except StreamError as exc:
            await ws.send_json({"type": "error", "code": exc.code, "message": exc.message,
                                "seq": frame.seq, "ack": live.receiver.ack})
            if exc.code == "storage_failed":
                break
            continue
        for rejected in result.rejected:
            await ws.send_json({"type": "error", "code": rejected.code,
                                "message": rejected.message})
        await ws.send_str(json.dumps(_reply(result)))
    return ws


async def follow(request: web.Request) -> web.WebSocketResponse:
    """An expert follows a stream live: recent history first, then samples as they arrive.
    The first message must be {"type": "follow", "token": ..., "seconds": optional backlog}."""
    ws = await open_websocket(request, web.WebSocketResponse(heartbeat=15.0, max_msg_size=4096))
    try:
        asked = validate(await ws.receive_json(timeout=10), FOLLOW)
    except (asyncio.TimeoutError, TypeError, ValueError, ProblemError) as exc:
        detail = getattr(exc, "extensions", {}).get("errors") or str(exc) or "no follow message"
        return await _refuse(ws, "bad_message", f"send a follow message first: {detail}")
    try:
        caller = await caller_for_token(request, asked["token"])
        info = await request.app[DATABASE].write(streams.open_for, caller,
                                                 request.match_info["id"], "ecg.follow")
    except TokenError as exc:
        return await _refuse(ws, "unauthorized", str(exc))
    except Forbidden as exc:
        await audit_refusal(request.app[DATABASE], exc)
        return await _refuse(ws, "forbidden", exc.reason)
    except NotFound as exc:
        return await _refuse(ws, "not_found", str(exc))
    subscription = await request.app[BUS].subscribe(channel(info.id))
    async with subscription:
        current = await request.app[DATABASE].read(streams.progress, info.id)
        raised = await request.app[DATABASE].read(streams.alerts, info.id)
        await ws.send_json({"type": "stream", **current.public(), "alerts": raised})
        fs, leads = (current.format.fs, len(current.format.leads)) if current.format else (0.0, 1)
        start = max(0, current.samples - round(asked.get("seconds", 10) * fs))
        backlog = await asyncio.to_thread(
            streams.read_samples, streams.samples_path(request.app[SETTINGS].data_dir, info.id),
            leads, start, current.samples - start)
        await ws.send_json({"type": "samples", "first_sample": start, "samples": backlog.tolist(),
                            "complete": current.state == "complete"})
        relay = asyncio.create_task(_relay(ws, subscription, current.samples))
        try:
            async for _ in ws:
                pass
        finally:
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
    return ws


async def _relay(ws: web.WebSocketResponse, subscription, sent_up_to: int) -> None:
    while True:
        message = await subscription.get()
        if message is None:
            continue
        if message["type"] == "analysis":
            await ws.send_json(message)
            continue
        if message["first_sample"] < sent_up_to:
            continue
        sent_up_to = message["first_sample"] + len(message["samples"])
        await ws.send_json(message)


async def get_analysis(request: web.Request) -> web.Response:
    """The analysis of everything stored (the same as the live one: it does not depend on how
    the samples arrived) and the alerts raised while it was received, with their times."""
    caller = await authenticated(request)
    info = await request.app[DATABASE].write(streams.open_for, caller, request.match_info["id"],
                                             "ecg.read")
    raised = await request.app[DATABASE].read(streams.alerts, info.id)
    if info.format is None or not info.samples:
        return web.json_response({"samples": 0, "alerts_raised": raised})
    sex, age = streams.demographics(await request.app[DATABASE].read(get_patient, info.patient_id))
    report = await asyncio.to_thread(
        report_for, info.format, sex, age,
        streams.samples_path(request.app[SETTINGS].data_dir, info.id), info.samples)
    return web.json_response({**report, "alerts_raised": raised})


async def _refuse(ws: web.WebSocketResponse, code: str, message: str) -> web.WebSocketResponse:
    await ws.send_json({"type": "error", "code": code, "message": message})
    await ws.close(code=1008)
    return ws


async def _ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    app[INGEST] = Ingest()
    yield
    await app[INGEST].close()


def setup(app: web.Application) -> None:
    app.router.add_post("/api/ecg/streams", create_stream)
    app.router.add_get("/api/ecg/streams/{id}", get_stream)
    app.router.add_get("/api/ecg/streams/{id}/samples", get_samples)
    app.router.add_get("/api/ecg/streams/{id}/analysis", get_analysis)
    app.router.add_get("/api/ecg/streams/{id}/export", get_export)
    app.router.add_get("/ecg/ingest/{id}", ingest)
    app.router.add_get("/ecg/follow/{id}", follow)
    app.cleanup_ctx.append(_ingest_ctx)
