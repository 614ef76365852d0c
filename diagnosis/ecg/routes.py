"""ECG streams over HTTP: create a stream, feed it frames over a WebSocket, read it back.

POST /api/ecg/streams, GET /api/ecg/streams/{id}, GET /api/ecg/streams/{id}/samples,
GET /ecg/ingest/{id} (WebSocket, binary frames in, JSON acknowledgements out).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator

from aiohttp import WSMsgType, web

from diagnosis.ecg import streams
from diagnosis.ecg.frames import MAX_LEADS, MAX_SAMPLES_PER_FRAME, FrameError, decode
from diagnosis.ecg.ingest import Received, StreamError, StreamReceiver
from telemed.api.body import Field, parse, validate
from telemed.api.context import BUS, DATABASE, SETTINGS
from telemed.api.problems import ProblemError
from telemed.api.security import authenticated

log = logging.getLogger(__name__)

NEW_STREAM = [Field("patient_id", str, max_length=64), Field("consult_id", str, required=False,
                                                             max_length=64)]
MAX_FRAME_BYTES = 64 + MAX_LEADS * 260 + MAX_SAMPLES_PER_FRAME * MAX_LEADS * 2
SUPERSEDED = 4000


@dataclass
class LiveStream:
    """One stream being received: its receiver, file and the one socket feeding it."""
    receiver: StreamReceiver
    file: streams.SampleFile
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    socket: web.WebSocketResponse | None = None


class Ingest:
    """The streams this node is receiving; closes their files on shutdown."""

    def __init__(self) -> None:
        self.live: dict[str, LiveStream] = {}

    def open(self, info: streams.StreamInfo, data_dir) -> LiveStream:
        live = self.live.get(info.id)
        if live is None:
            leads = len(info.format.leads) if info.format else 0
            live = LiveStream(streams.receiver_for(info),
                              streams.SampleFile(streams.samples_path(data_dir, info.id), leads,
                                                 info.samples))
            self.live[info.id] = live
        return live

    def close(self) -> None:
        for live in self.live.values():
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


def _reply(result: Received) -> dict:
    return {"type": "ack", "ack": result.ack, "missing": [list(r) for r in result.missing],
            "duplicate": result.duplicate, "complete": result.complete,
            "warnings": result.warnings}


async def _store(request: web.Request, live: LiveStream, result: Received) -> None:
    """Samples to disk (fsynced), then the row: only then is the frame acknowledged."""
    await asyncio.to_thread(live.file.append, result.ready)
    receiver = live.receiver
    assert receiver.format is not None
    await request.app[DATABASE].write(streams.record_progress, receiver.stream_id, receiver.format,
                                      receiver.next_seq, receiver.next_sample, receiver.complete)
    await request.app[BUS].publish(f"ecg:{receiver.stream_id}", {
        "type": "samples", "stream_id": receiver.stream_id, "ack": receiver.ack,
        "samples": receiver.next_sample, "complete": receiver.complete})


async def ingest(request: web.Request) -> web.WebSocketResponse:
    """Binary frames in; after each, an ack of the highest contiguous frame stored."""
    caller = await authenticated(request)
    info = await request.app[DATABASE].write(streams.open_for, caller, request.match_info["id"],
                                             "ecg.ingest")
    if info.state == "complete":
        raise ProblemError(409, "Conflict", "this stream has ended")
    live = request.app[INGEST].open(info, request.app[SETTINGS].data_dir)
    ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=MAX_FRAME_BYTES)
    await ws.prepare(request)
    previous, live.socket = live.socket, ws
    if previous is not None and not previous.closed:
        await previous.close(code=SUPERSEDED, message=b"superseded by a new connection")
    await ws.send_json({"type": "ready", "ack": live.receiver.ack,
                        "missing": [list(r) for r in live.receiver.missing()]})
    async for message in ws:
        if message.type != WSMsgType.BINARY:
            await ws.send_json({"type": "error", "code": "bad_frame",
                                "message": "send binary frames (docs/ecg-stream.md)"})
            continue
        try:
            frame = decode(message.data)
            async with live.lock:
                if live.socket is not ws:
                    break
                result = live.receiver.accept(frame)
                if result.ready:
                    await _store(request, live, result)
        except FrameError as exc:
            await ws.send_json({"type": "error", "code": "bad_frame", "message": str(exc)})
            continue
        except StreamError as exc:
            await ws.send_json({"type": "error", "code": exc.code, "message": exc.message,
                                "seq": frame.seq, "ack": live.receiver.ack})
            continue
        for rejected in result.rejected:
            await ws.send_json({"type": "error", "code": rejected.code, "message": rejected.message})
        await ws.send_str(json.dumps(_reply(result)))
    return ws


async def _ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    app[INGEST] = Ingest()
    yield
    app[INGEST].close()


def setup(app: web.Application) -> None:
    app.router.add_post("/api/ecg/streams", create_stream)
    app.router.add_get("/api/ecg/streams/{id}", get_stream)
    app.router.add_get("/api/ecg/streams/{id}/samples", get_samples)
    app.router.add_get("/ecg/ingest/{id}", ingest)
    app.cleanup_ctx.append(_ingest_ctx)
