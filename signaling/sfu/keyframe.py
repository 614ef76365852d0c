"""Keyframes, without decoding: spotting their first packet in VP8 and H.264 payloads, and
throttling subscribers' requests for them (PLI/FIR) before they reach the publisher."""

from __future__ import annotations

from dataclasses import dataclass

H264_IDR = 5
H264_SPS = 7
H264_STAP_A = 24
H264_FU_A = 28


def is_keyframe_start(codec_name: str, payload: bytes) -> bool:
    """Whether this RTP payload starts a keyframe (so a new subscriber can start here)."""
    name = codec_name.upper()
    if name == "VP8":
        return _vp8_keyframe_start(payload)
    if name == "H264":
        return _h264_keyframe_start(payload)
    return False


def _vp8_keyframe_start(payload: bytes) -> bool:
    """RFC 7741 section 4.2: a payload descriptor, then the VP8 header whose P bit is 0."""
    if len(payload) < 2 or not payload[0] & 0x10 or payload[0] & 0x07:
        return False
    pos = 1
    if payload[0] & 0x80:
        ext = payload[1]
        pos = 2
        if ext & 0x80:
            if len(payload) <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:
            pos += 1
        if ext & 0x30:
            pos += 1
    return len(payload) > pos and not payload[pos] & 0x01


def _h264_keyframe_start(payload: bytes) -> bool:
    """RFC 6184: an SPS, or the first slice of an IDR picture, alone, in a STAP-A, or as the
    first FU-A fragment. Later slices of an IDR picture do not count: a decoder starting there
    lacks the picture's beginning (encoders such as aiortc's cut keyframes into slices)."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == H264_FU_A:
        return len(payload) > 2 and bool(payload[1] & 0x80) and _starts_picture(
            payload[1] & 0x1F, payload[2:3])
    if nal_type == H264_STAP_A:
        pos = 1
        while pos + 2 < len(payload):
            size = int.from_bytes(payload[pos:pos + 2], "big")
            if _starts_picture(payload[pos + 2] & 0x1F, payload[pos + 3:pos + 4]):
                return True
            pos += 2 + size
        return False
    return _starts_picture(nal_type, payload[1:2])


def _starts_picture(nal_type: int, slice_header: bytes) -> bool:
    """SPS, or an IDR slice whose first_mb_in_slice (ue(v), so a leading 1 bit) is 0."""
    if nal_type == H264_SPS:
        return True
    return nal_type == H264_IDR and bool(slice_header) and bool(slice_header[0] & 0x80)


@dataclass
class KeyframeRequestThrottle:
    """Lets through at most one keyframe request per `interval` seconds.

    A request inside the interval is held, not lost: it goes out when the interval ends
    (`poll`), unless a keyframe starting after the request already answered it.
    """

    interval: float
    _last_sent: float | None = None
    _pending_since: float | None = None

    def request(self, now: float) -> bool:
        """A subscriber asks for a keyframe; True if the publisher should be asked now."""
        if self._last_sent is None or now - self._last_sent >= self.interval:
            self._last_sent, self._pending_since = now, None
            return True
        if self._pending_since is None:
            self._pending_since = now
        return False

    def keyframe(self, now: float) -> None:
        """A keyframe started arriving from the publisher."""
        if self._pending_since is not None and now > self._pending_since:
            self._pending_since = None

    def poll(self, now: float) -> bool:
        """True if a held request is due now (call this as packets arrive)."""
        if self._pending_since is None or now - self._last_sent < self.interval:
            return False
        self._last_sent, self._pending_since = now, None
        return True
