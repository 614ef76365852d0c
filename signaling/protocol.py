"""Signaling messages: JSON text frames, each an object with a "type".

Client messages are parsed into frozen dataclasses at the edge, so nothing behind this module
sees unchecked input; a bad frame becomes a ProtocolError with a code the client can act on.
See docs/signaling.md for the message catalogue with examples.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar

MAX_FRAME_BYTES = 64 * 1024
MAX_SDP_BYTES = 32 * 1024
MAX_CHAT_CHARS = 2000
MAX_ANNOTATION_BYTES = 4096


class ErrorCode(str, Enum):
    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_HOST = "not_host"
    ROOM_LOCKED = "room_locked"
    ROOM_CLOSED = "room_closed"
    UNKNOWN_TRACK = "unknown_track"
    UNKNOWN_PARTICIPANT = "unknown_participant"
    BAD_SDP = "bad_sdp"
    OUT_OF_ORDER = "out_of_order"
    RATE_LIMITED = "rate_limited"
    RESUME_FAILED = "resume_failed"
    WAITING = "waiting"
    INTERNAL = "internal_error"


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def as_message(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "error", "code": self.code.value, "message": self.message}
        if self.ref is not None:
            body["ref"] = self.ref
        return body


@dataclass(frozen=True)
class ClientMessage:
    type: ClassVar[str]


@dataclass(frozen=True)
class Join(ClientMessage):
    type: ClassVar[str] = "join"
    token: str
    resume: str | None = None


@dataclass(frozen=True)
class Offer(ClientMessage):
    """The client's publisher connection offers its tracks."""
    type: ClassVar[str] = "offer"
    sdp: str


@dataclass(frozen=True)
class Answer(ClientMessage):
    """The client answers the server's offer for its subscriber connection."""
    type: ClassVar[str] = "answer"
    sdp: str


@dataclass(frozen=True)
class Candidate(ClientMessage):
    type: ClassVar[str] = "candidate"
    target: str
    candidate: str
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


@dataclass(frozen=True)
class Subscribe(ClientMessage):
    type: ClassVar[str] = "subscribe"
    track_ids: tuple[str, ...]


@dataclass(frozen=True)
class Unsubscribe(ClientMessage):
    type: ClassVar[str] = "unsubscribe"
    track_ids: tuple[str, ...]


@dataclass(frozen=True)
class Unpublish(ClientMessage):
    type: ClassVar[str] = "unpublish"
    track_id: str


@dataclass(frozen=True)
class Mute(ClientMessage):
    type: ClassVar[str] = "mute"
    track_id: str
    muted: bool


@dataclass(frozen=True)
class Chat(ClientMessage):
    type: ClassVar[str] = "chat"
    text: str


@dataclass(frozen=True)
class Annotate(ClientMessage):
    """A 'look here' pointer or drawing, relayed as given (bounded in size)."""
    type: ClassVar[str] = "annotate"
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShareView(ClientMessage):
    """Reading images together: the series, slice, window/level and pointer everyone follows.
    Sent again on every scroll or window change; `series` null stops sharing."""
    type: ClassVar[str] = "share_view"
    series: str | None = None
    slice: int | None = None
    window_center: float | None = None
    window_width: float | None = None
    pointer_x: float | None = None
    pointer_y: float | None = None


@dataclass(frozen=True)
class Admit(ClientMessage):
    type: ClassVar[str] = "admit"
    participant_id: str


@dataclass(frozen=True)
class Remove(ClientMessage):
    type: ClassVar[str] = "remove"
    participant_id: str


@dataclass(frozen=True)
class MuteParticipant(ClientMessage):
    type: ClassVar[str] = "mute_participant"
    participant_id: str
    kind: str


@dataclass(frozen=True)
class SetPresenter(ClientMessage):
    type: ClassVar[str] = "set_presenter"
    participant_id: str


@dataclass(frozen=True)
class Lock(ClientMessage):
    type: ClassVar[str] = "lock"
    locked: bool


@dataclass(frozen=True)
class Record(ClientMessage):
    type: ClassVar[str] = "record"
    on: bool


@dataclass(frozen=True)
class Leave(ClientMessage):
    type: ClassVar[str] = "leave"


@dataclass(frozen=True)
class Ping(ClientMessage):
    type: ClassVar[str] = "ping"


MESSAGES: dict[str, type[ClientMessage]] = {
    cls.type: cls for cls in (Join, Offer, Answer, Candidate, Subscribe, Unsubscribe, Unpublish,
                              Mute, Chat, Annotate, ShareView, Admit, Remove, MuteParticipant,
                              SetPresenter, Lock, Record, Leave, Ping)
}
CANDIDATE_TARGETS = ("publisher", "subscriber")
MEDIA_KINDS = ("audio", "video")
_SCALARS = {"str": str, "bool": bool, "int": int, "float": (int, float)}


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_MESSAGE, message)


def _check_value(name: str, annotation: str, value: Any) -> Any:
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None:
        if optional:
            return None
        raise _bad(f"'{name}' is required")
    if base == "tuple[str, ...]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(f"'{name}' must be a list of strings")
        if not value or len(value) > 64:
            raise _bad(f"'{name}' must name 1 to 64 items")
        return tuple(value)
    if base == "dict[str, Any]":
        if not isinstance(value, dict):
            raise _bad(f"'{name}' must be an object")
        if len(json.dumps(value)) > MAX_ANNOTATION_BYTES:
            raise _bad(f"'{name}' is larger than {MAX_ANNOTATION_BYTES} bytes")
        return value
    kind = _SCALARS[base]
    if not isinstance(value, kind) or (base in ("int", "float") and isinstance(value, bool)):
        raise _bad(f"'{name}' must be {'a string' if kind is str else 'a ' + base}")
    return float(value) if base == "float" else value


def _validate(message: ClientMessage) -> None:
    if isinstance(message, (Offer, Answer)):
        if len(message.sdp) > MAX_SDP_BYTES or not message.sdp.startswith("v=0"):
            raise ProtocolError(ErrorCode.BAD_SDP, "the SDP must start with 'v=0' and be under 32 KiB")
    if isinstance(message, Candidate) and message.target not in CANDIDATE_TARGETS:
        raise _bad("'target' must be 'publisher' or 'subscriber'")
    if isinstance(message, Chat) and not 0 < len(message.text) <= MAX_CHAT_CHARS:
        raise _bad(f"'text' must be 1 to {MAX_CHAT_CHARS} characters")
    if isinstance(message, MuteParticipant) and message.kind not in MEDIA_KINDS:
        raise _bad("'kind' must be 'audio' or 'video'")
    if isinstance(message, ShareView):
        _validate_view(message)


def _validate_view(view: ShareView) -> None:
    if view.series is not None and not 0 < len(view.series) <= 64:
        raise _bad("'series' must be a series instance UID")
    if view.slice is not None and view.slice < 0:
        raise _bad("'slice' must not be negative")
    if view.window_width is not None and view.window_width <= 0:
        raise _bad("'window_width' must be positive")
    for name in ("pointer_x", "pointer_y"):
        value = getattr(view, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise _bad(f"'{name}' is a fraction of the image, 0 to 1")


def parse(frame: str | bytes) -> ClientMessage:
    """One client frame into its message, or ProtocolError saying what is wrong with it."""
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        data = json.loads(frame)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"the frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise _bad("a message is a JSON object with a string 'type'")
    cls = MESSAGES.get(data["type"])
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {data['type']!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known) - {"type"})
    if unknown:
        raise _bad(f"unknown field(s) {', '.join(unknown)} in {cls.type!r}")
    values = {name: _check_value(name, str(f.type), data.get(name)) for name, f in known.items()
              if name in data or not _has_default(f)}
    message = cls(**values)
    _validate(message)
    return message


def _has_default(f: Any) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


def event(message_type: str, /, **body: Any) -> dict[str, Any]:
    """A server-to-client message."""
    return {"type": message_type, **body}


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def as_dict(message: ClientMessage) -> dict[str, Any]:
    return {"type": message.type, **asdict(message)}
