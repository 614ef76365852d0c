"""GET /dicomweb/studies/{study}/series/{series}/progressive: the WebSocket a viewer opens to
receive a series progressively (docs/imaging-delivery.md). It authenticates (header, or a first
`auth` message since browsers cannot set headers), resolves the series' frames (audited),
reads the viewer's `view` and `have` messages, and leaves the sending to `delivery.Delivery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from diagnosis.dicom import archive, plan, progressive, qido
from diagnosis.dicom.delivery import HEADER, Delivery, SeriesFrame
from diagnosis.dicom.ingest import DERIVER
from telemed.api.context import DATABASE, SETTINGS, open_websocket
from telemed.api.problems import audit_refusal
from telemed.api.security import authenticated, caller_for_token
from telemed.auth import TokenError
from telemed.caller import Caller
from telemed.permissions import Forbidden
from telemed.store import NotFound

AUTH_TIMEOUT_S = 10.0
CLOSE_POLICY = 1008
ORDERS = plan.ORDERS
""""auto" (default): the rest of the view's stream before the other previews on fast links,
after them otherwise; "view": always before; "previews": always after."""
CODECS = progressive.MODES
""""htj2k" (default): HTJ2K RPCL streams; "jxl": JPEG XL pairs, or HTJ2K where smaller."""


async def series_frames(request: web.Request, caller: Caller) -> list[SeriesFrame]:
    """The series' image frames in instance order, numbered 0..n-1; the read is audited."""
    scope = {k: request.match_info[k] for k in ("study", "series")}
    where, params = qido.scope_clause(scope)
    rows = await request.app[DATABASE].write(archive.visible_instances, caller, where, params)
    root, frames = request.app[SETTINGS].data_dir, []
    for row in rows:
        if row["is_image"]:
            for number in range(1, (row["frames"] or 1) + 1):
                frames.append(SeriesFrame(len(frames), row["sop_instance_uid"], number,
                                          root / row["path"], row["sha256"]))
    if not frames:
        raise NotFound("DICOM series with image frames", "/".join(scope.values()))
    return frames



async def _refuse(ws: web.WebSocketResponse, code: str, message: str) -> web.WebSocketResponse:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_json({"type": "error", "code": code, "message": message})
    await ws.close(code=CLOSE_POLICY, message=code.encode())
    return ws


def _frame_index(value: Any, count: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise ValueError(f"frame_index must be a whole number from 0 to {count - 1}")
    return value


async def _message_auth(request: web.Request, ws: web.WebSocketResponse
                        ) -> tuple[Caller, dict] | None:
    """Browsers cannot set headers: the first message is {"type": "auth", "token": ...}."""
    try:
        first = await ws.receive(timeout=AUTH_TIMEOUT_S)
        if first.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        body = json.loads(first.data) if first.type == WSMsgType.TEXT else None
    except (asyncio.TimeoutError, ValueError):
        body = None
    if not isinstance(body, dict) or body.get("type") != "auth" or not isinstance(body.get("token"), str):
        await _refuse(ws, "unauthorized", 'send {"type": "auth", "token": ...} first '
                      "(or an Authorization: Bearer header)")
        return None
    try:
        return await caller_for_token(request, body["token"]), body
    except TokenError as exc:
        await _refuse(ws, "unauthorized", str(exc))
    except Forbidden as exc:
        await audit_refusal(request.app[DATABASE], exc)
        await _refuse(ws, "forbidden", exc.reason)
    return None


def _order(value: Any) -> str:
    if value not in ORDERS:
        raise TypeError(f"order is one of {', '.join(ORDERS)}")
    return value


def _initial_view(hello: dict, count: int) -> tuple[int, str, str, list[str]]:
    """The view, order and codec asked for with the request (?frame_index=&order=&codec=) or in
    the auth message; frame 0, "auto" and "htj2k" (with what was wrong) when they are not
    valid."""
    value, problems = hello.get("frame_index", 0), []
    order, codec = hello.get("order", plan.AUTO), hello.get("codec", progressive.HTJ2K)
    try:
        view = _frame_index(int(value) if isinstance(value, str) and value.isdigit() else value,
                            count)
    except ValueError as exc:
        view = 0
        problems.append(str(exc))
    if order not in ORDERS:
        order = plan.AUTO
        problems.append(f"order is one of {', '.join(ORDERS)}")
    if codec not in CODECS:
        codec = progressive.HTJ2K
        problems.append(f"codec is one of {', '.join(CODECS)}")
    return view, order, codec, problems


async def progressive_series(request: web.Request) -> web.WebSocketResponse:
    """The WebSocket endpoint. With an Authorization header, refusals (401, 403, 404) are HTTP
    problem documents before the upgrade, as on every DICOMweb route; with the token in the
    first message they are error messages and the socket closes with 1008."""
    caller = await authenticated(request) if "Authorization" in request.headers else None
    frames = await series_frames(request, caller) if caller is not None else None
    ws = web.WebSocketResponse(heartbeat=15.0, max_msg_size=1024 * 1024, compress=False,
                               writer_limit=1)
    await open_websocket(request, ws)
    hello: dict = dict(request.query)
    if caller is None:
        found = await _message_auth(request, ws)
        if found is None:
            return ws
        caller, hello = found
        try:
            frames = await series_frames(request, caller)
        except NotFound as exc:
            return await _refuse(ws, "not_found", str(exc))
    assert frames is not None
    view, order, codec, problems = _initial_view(hello, len(frames))
    delivery = Delivery(ws, frames, request.app[DERIVER], view, request.transport, order, codec)
    await ws.send_json({"type": "series", "count": len(frames), "view": view, "order": order,
                        "codec": codec, "header": {"struct": HEADER.format, "size": HEADER.size}})
    for problem in problems:
        delivery.tell({"type": "error", "code": "bad_frame_index" if "frame_index" in problem
                       else "bad_message", "message": problem})
    if isinstance(hello.get("have"), list):
        _handle(delivery, {"type": "have", "frames": hello["have"]}, len(frames))
    delivery.start()
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                delivery.tell({"type": "error", "code": "bad_message",
                               "message": "send JSON text messages (docs/imaging-delivery.md)"})
                continue
            try:
                body = json.loads(message.data)
            except ValueError:
                delivery.tell({"type": "error", "code": "bad_message",
                               "message": "the message is not JSON"})
                continue
            _handle(delivery, body, len(frames))
    finally:
        await delivery.stop()
    return ws


def _handle(delivery: Delivery, body: Any, count: int) -> None:
    kind = body.get("type") if isinstance(body, dict) else None
    try:
        if kind == "view":
            order = _order(body["order"]) if "order" in body else None
            delivery.set_view(_frame_index(body.get("frame_index"), count), order)
        elif kind == "have":
            for entry in body.get("frames") or []:
                try:
                    _have(delivery, entry, count)
                except (ValueError, TypeError, AttributeError) as exc:
                    _answer_mistake(delivery, exc)  # a bad entry costs only its own frame
        else:
            raise TypeError(f"unknown message type {kind!r}; send view or have")
    except (ValueError, TypeError, AttributeError) as exc:
        _answer_mistake(delivery, exc)


def _have(delivery: Delivery, entry: Any, count: int) -> None:
    index = _frame_index(entry.get("frame_index"), count)
    size, digest = entry.get("bytes"), entry.get("sha256")
    if isinstance(size, bool) or not isinstance(size, int) or not isinstance(digest, str):
        raise TypeError("each have entry is {frame_index, bytes, sha256}")
    delivery.have(index, size, digest)


def _answer_mistake(delivery: Delivery, exc: Exception) -> None:
    """A mistake in the viewer's message is answered; the stream goes on."""
    code = "bad_frame_index" if isinstance(exc, ValueError) else "bad_message"
    delivery.tell({"type": "error", "code": code, "message": str(exc) or "malformed message"})


def setup(app: web.Application) -> None:
    app.router.add_get("/dicomweb/studies/{study}/series/{series}/progressive", progressive_series)
