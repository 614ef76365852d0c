"""Every malformed or unknown frame becomes a typed protocol error, never an exception."""

from __future__ import annotations

import json

import pytest

from signaling.protocol import (MAX_FRAME_BYTES, Annotate, Candidate, ErrorCode, Join, Mute,
                                ProtocolError, Subscribe, parse)

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"


def test_valid_frames_become_frozen_messages():
    assert parse('{"type": "join", "token": "t"}') == Join(token="t")
    assert parse('{"type": "join", "token": "t", "resume": "r"}') == Join("t", "r")
    assert parse(json.dumps({"type": "subscribe", "track_ids": ["a", "b"]})) == Subscribe(("a", "b"))
    assert parse(json.dumps({"type": "candidate", "target": "publisher", "candidate": "c",
                             "sdp_mid": "0", "sdp_mline_index": 0})) == Candidate(
        "publisher", "c", "0", 0)
    assert parse('{"type": "annotate", "payload": {"x": 0.5, "y": 0.25}}') == Annotate(
        {"x": 0.5, "y": 0.25})
    with pytest.raises(AttributeError):
        parse('{"type": "mute", "track_id": "a", "muted": true}').muted = False  # type: ignore


@pytest.mark.parametrize("frame,code", [
    ("{", ErrorCode.BAD_JSON),
    (b"\xff\xfe", ErrorCode.BAD_JSON),
    ("[]", ErrorCode.BAD_MESSAGE),
    ('{"type": 5}', ErrorCode.BAD_MESSAGE),
    ('{"type": "teleport"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type": "join"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "join", "token": 5}', ErrorCode.BAD_MESSAGE),
    ('{"type": "leave", "extra": 1}', ErrorCode.BAD_MESSAGE),
    ('{"type": "offer", "sdp": "hello"}', ErrorCode.BAD_SDP),
    ('{"type": "answer", "sdp": 42}', ErrorCode.BAD_MESSAGE),
    ('{"type": "candidate", "target": "both", "candidate": "c"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "subscribe", "track_ids": []}', ErrorCode.BAD_MESSAGE),
    ('{"type": "subscribe", "track_ids": "a"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "mute", "track_id": "a", "muted": 1}', ErrorCode.BAD_MESSAGE),
    ('{"type": "chat", "text": ""}', ErrorCode.BAD_MESSAGE),
    ('{"type": "mute_participant", "participant_id": "p", "kind": "smell"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "annotate", "payload": {"big": "' + "x" * 5000 + '"}}', ErrorCode.BAD_MESSAGE),
    ('{"type": "candidate", "target": "publisher", "candidate": "c", "sdp_mline_index": true}',
     ErrorCode.BAD_MESSAGE),
])
def test_bad_frames(frame, code):
    with pytest.raises(ProtocolError) as caught:
        parse(frame)
    assert caught.value.code is code
    assert caught.value.as_message()["type"] == "error"


def test_oversized_frame_and_sdp():
    with pytest.raises(ProtocolError, match="limited"):
        parse(" " * (MAX_FRAME_BYTES + 1))
    with pytest.raises(ProtocolError) as caught:
        parse(json.dumps({"type": "offer", "sdp": SDP + "a=x\r\n" * 10000}))
    assert caught.value.code in (ErrorCode.BAD_SDP, ErrorCode.BAD_MESSAGE)


def test_mute_message_round_trip():
    assert parse('{"type": "mute", "track_id": "a", "muted": true}') == Mute("a", True)


def test_share_view_is_validated():
    from signaling.protocol import ShareView
    view = parse('{"type": "share_view", "series": "1.2.3", "slice": 4, "window_center": 40,'
                 ' "window_width": 80.5, "pointer_x": 0.5, "pointer_y": 1}')
    assert view == ShareView("1.2.3", 4, 40.0, 80.5, 0.5, 1.0)
    for bad in ('{"type": "share_view", "slice": -1}', '{"type": "share_view", "pointer_x": 2}',
                '{"type": "share_view", "window_width": 0}', '{"type": "share_view", "slice": 1.5}',
                '{"type": "share_view", "window_center": true}'):
        with pytest.raises(ProtocolError):
            parse(bad)
