"""WHIP (RFC 9725) publishing and WHEP playing: one HTTP request puts a device or a player into a
consult's room.

`POST /whip/{room}` takes an SDP offer of a device's audio and video and answers 201 with the
server's SDP and a `Location` to DELETE to hang up; `POST /whep/{room}` does the same for a
player that only receives. Both carry a room token as `Authorization: Bearer`. The device or
player becomes a participant of the room without a socket, for as long as its connection lives.
The server's answer holds all its candidates, so trickle ICE (PATCH) is not offered.
"""

from __future__ import annotations

from aiohttp import web
from aiortc.sdp import SessionDescription

from signaling.protocol import MAX_SDP_BYTES, ErrorCode, ProtocolError
from signaling.room import Grant
from signaling.routes import ROOMS, ice_servers
from telemed.api.context import SETTINGS
from telemed.api.problems import ProblemError
from telemed.api.security import bearer_claims
from telemed.auth import Claims

SDP = "application/sdp"
STATUS = {ErrorCode.BAD_SDP: 400, ErrorCode.FORBIDDEN: 403, ErrorCode.ROOM_LOCKED: 403,
          ErrorCode.ROOM_CLOSED: 404, ErrorCode.UNKNOWN_TRACK: 409, ErrorCode.OUT_OF_ORDER: 409}


def _room_claims(request: web.Request) -> Claims:
    claims = bearer_claims(request, "room")
    if request.match_info["room"] not in claims.grants.rooms:
        raise ProblemError(403, "Forbidden", "the token does not grant this room")
    if claims.role == "guest":
        raise ProblemError(403, "Forbidden", "guests join through the waiting room, not WHIP/WHEP")
    return claims


async def _offer(request: web.Request) -> str:
    if request.content_type != SDP:
        raise ProblemError(415, "Unsupported Media Type", f"send the offer as {SDP}")
    if (request.content_length or 0) > MAX_SDP_BYTES:
        raise ProblemError(413, "Content Too Large", f"an offer is at most {MAX_SDP_BYTES} bytes")
    body = await request.content.read(MAX_SDP_BYTES + 1)
    if len(body) > MAX_SDP_BYTES:
        raise ProblemError(413, "Content Too Large", f"an offer is at most {MAX_SDP_BYTES} bytes")
    try:
        sdp = body.decode()
    except UnicodeDecodeError:
        raise ProblemError(400, "Bad Request", "the offer is not UTF-8 text") from None
    try:
        media = SessionDescription.parse(sdp).media if sdp.startswith("v=0") else []
    except Exception as exc:
        raise ProblemError(400, "Bad Request", f"the offer is not valid SDP: {exc}") from None
    if not any(m.kind in ("audio", "video") for m in media):
        raise ProblemError(400, "Bad Request", "the offer is not SDP with audio or video")
    return sdp


async def _connect(request: web.Request, publish: bool) -> web.Response:
    claims = _room_claims(request)
    if publish and not claims.grants.can_publish:
        raise ProblemError(403, "Forbidden", "the token does not allow publishing")
    if not publish and not claims.grants.can_subscribe:
        raise ProblemError(403, "Forbidden", "the token does not allow subscribing")
    sdp = await _offer(request)
    registry = request.app[ROOMS]
    room = registry.room(request.match_info["room"], claims.grants.room_kind)
    if not publish and not room.tracks:
        raise ProblemError(409, "Conflict", "nothing is published in this room yet")
    endpoint = "whip" if publish else "whep"
    grant = Grant(identity=f"{claims.subject}/{endpoint}", name=f"{claims.name} ({endpoint.upper()})",
                  is_host=False, is_guest=False, can_publish=publish and claims.grants.can_publish,
                  can_subscribe=not publish)
    try:
        resource, participant = registry.join_http(room, grant)
    except ProtocolError as exc:
        raise _problem(exc) from None
    media = registry.media[room.id]
    try:
        if publish:
            answer = await media.publisher_offer(participant.id, sdp)
        else:
            answer = await media.player_offer(participant.id, sdp)
    except ProtocolError as exc:
        registry.leave(room, participant.id)
        raise _problem(exc) from None
    location = f"/{endpoint}/{room.id}/{resource}"
    return web.Response(status=201, text=answer, content_type=SDP,
                        headers={"Location": location, **_ice_links(request)})


def _problem(error: ProtocolError) -> ProblemError:
    return ProblemError(STATUS.get(error.code, 400), "Refused", error.message, code=error.code.value)


def _ice_links(request: web.Request) -> dict[str, str]:
    """STUN/TURN servers as RFC 9725 Link headers (none unless configured)."""
    links = []
    for server in ice_servers(request.app[SETTINGS], "whip"):
        for url in server["urls"]:
            extra = "".join(f'; {k}="{server[k]}"' for k in ("username", "credential") if k in server)
            links.append(f'<{url}>; rel="ice-server"{extra}')
    return {"Link": ", ".join(links)} if links else {}


async def whip(request: web.Request) -> web.Response:
    return await _connect(request, publish=True)


async def whep(request: web.Request) -> web.Response:
    return await _connect(request, publish=False)


async def hang_up(request: web.Request) -> web.Response:
    _room_claims(request)
    registry = request.app[ROOMS]
    found = registry.http_resources.get(request.match_info["resource"])
    if found is None or found[0] != request.match_info["room"]:
        raise ProblemError(404, "Not Found", "no such session (it may have ended already)")
    room = registry.rooms.get(found[0])
    if room is not None:
        registry.leave(room, found[1])
    return web.Response(status=200)


async def no_trickle(request: web.Request) -> web.Response:
    raise web.HTTPMethodNotAllowed("PATCH", ["DELETE"], text="trickle ICE and ICE restarts are "
                                   "not offered: the answer carries all the server's candidates")


def setup(app: web.Application) -> None:
    for endpoint, handler in (("whip", whip), ("whep", whep)):
        app.router.add_post(f"/{endpoint}/{{room}}", handler)
        app.router.add_delete(f"/{endpoint}/{{room}}/{{resource}}", hang_up)
        app.router.add_patch(f"/{endpoint}/{{room}}/{{resource}}", no_trickle)
