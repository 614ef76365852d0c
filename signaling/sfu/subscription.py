"""A subscription (mediasoup consumer, LiveKit down-track): one published track forwarded to
one subscriber's sender, rewritten into the subscriber's own sequence and timestamp space.

Video starts at a keyframe (a decoder cannot start from a delta frame), and one is asked for
as soon as the subscriber's transport is up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from aiortc import RTCRtpTransceiver
from aiortc.rtp import RtpPacket

from .forwarder import RtpRewriter
from .sender import ForwardingSender
from .track import Track


class Subscription:
    def __init__(self, track: Track, transceiver: RTCRtpTransceiver,
                 on_closed: Callable[["Subscription"], None]) -> None:
        self.id = str(uuid.uuid4())
        self.track = track
        self.transceiver = transceiver
        self.closed = False
        self.forwarded = 0
        self._rewriter = RtpRewriter()
        self._generation = track.generation
        self._last_forwarded = 0.0
        self._on_closed = on_closed
        self._sender: ForwardingSender | None = None

    def __repr__(self) -> str:
        return f"Subscription({self.track!r} -> mid {self.transceiver.mid})"

    @property
    def sender(self) -> ForwardingSender | None:
        return self._sender

    def bind(self, sender: ForwardingSender) -> None:
        self._sender = sender

    async def forward(self, packet: RtpPacket, keyframe: bool, abs_send_time: int) -> None:
        sender = self._sender
        if self.closed or sender is None or not sender.ready:
            return
        now = time.monotonic()
        if self._generation != self.track.generation:
            self._generation = self.track.generation
            clock_rate = self.track.codec.clockRate if self.track.codec else 90000
            self._rewriter.restart(int((now - self._last_forwarded) * clock_rate))
        if not self._rewriter.started and self.track.kind == "video" and not keyframe:
            return
        rewritten = self._rewriter.rewrite(packet.sequence_number, packet.timestamp)
        if rewritten is None:
            return
        self.forwarded += 1
        self._last_forwarded = now
        await sender.write(packet, rewritten[0], rewritten[1], abs_send_time)

    # SenderListener

    async def on_send(self, sender: ForwardingSender) -> None:
        """The subscriber's transport is up; video needs a keyframe to start from."""
        await self.track.request_keyframe()

    async def on_keyframe_request(self) -> None:
        await self.track.request_keyframe()

    def on_remb(self, bitrate: int) -> None:
        self.track.bitrate.downlink(self.id, bitrate)

    async def close(self) -> None:
        """Idempotent: stops forwarding, detaches from the track and tells the owner."""
        if self.closed:
            return
        self.closed = True
        self.track._detach(self)
        if self._sender is not None:
            await self._sender.stop()
        self.transceiver.direction = "inactive"
        self._on_closed(self)
