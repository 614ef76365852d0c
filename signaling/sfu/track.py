"""A published track (mediasoup producer): one publisher's stream, fanned out unchanged to its
subscriptions, with keyframe requests throttled and bandwidth feedback combined on the way up."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiortc import clock
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from .bitrate import BitrateFeedback
from .config import SfuConfig
from .keyframe import KeyframeRequestThrottle, is_keyframe_start
from .receiver import ForwardingReceiver

if TYPE_CHECKING:
    from .subscription import Subscription

logger = logging.getLogger(__name__)

LevelCallback = Callable[["Track", int, float], None]


class Track:
    def __init__(self, *, peer_id: str, mid: str, kind: str, config: SfuConfig,
                 on_live: Callable[["Track"], None], on_level: LevelCallback | None) -> None:
        self.id = str(uuid.uuid4())
        self.peer_id = peer_id
        self.mid = mid
        self.kind = kind
        self.codec: RTCRtpCodecParameters | None = None
        self.ssrc: int | None = None
        self.closed = False
        self.paused = False
        """Muted: packets still arrive (and keep the uplink's feedback going) but go nowhere."""
        self.generation = 0
        """Counts resumptions, so subscriptions know their source was interrupted."""
        self.packets = 0
        self.subscriptions: dict[str, Subscription] = {}
        self.bitrate = BitrateFeedback(config.max_bitrate)
        self._throttle = KeyframeRequestThrottle(config.keyframe_interval)
        self._receiver: ForwardingReceiver | None = None
        self._on_live = on_live
        self._on_level = on_level

    def __repr__(self) -> str:
        codec = self.codec.mimeType if self.codec else "?"
        return f"Track({self.peer_id}/{self.mid} {codec} ssrc={self.ssrc})"

    @property
    def live(self) -> bool:
        return self.codec is not None and not self.closed

    # ReceiverListener

    def on_receive(self, receiver: ForwardingReceiver, codec: RTCRtpCodecParameters,
                   ssrc: int | None) -> None:
        self._receiver, self.codec, self.ssrc = receiver, codec, ssrc
        self._on_live(self)

    async def on_rtp(self, packet: RtpPacket) -> None:
        if self.closed:
            return
        self.packets += 1
        if self.paused:
            return
        now = time.monotonic()
        keyframe = self.kind == "video" and is_keyframe_start(self.codec.name, packet.payload)
        if keyframe:
            self._throttle.keyframe(now)
        elif self._throttle.poll(now):
            await self._send_keyframe_request()
        level = packet.extensions.audio_level
        if level is not None and self._on_level is not None:
            self._on_level(self, level[1], now)
        abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
        for subscription in list(self.subscriptions.values()):
            try:
                await subscription.forward(packet, keyframe, abs_send_time)
            except Exception:
                logger.exception("forwarding %r to %r failed; closing it", self, subscription)
                await subscription.close()

    async def set_paused(self, paused: bool) -> None:
        """Stop or resume forwarding; video resumes at a keyframe, asked for at once."""
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            self.generation += 1
            await self.request_keyframe()

    def bitrate_target(self, uplink_estimate: int | None) -> int:
        self.bitrate.uplink = uplink_estimate
        return self.bitrate.target()

    # for subscriptions

    async def request_keyframe(self) -> None:
        """A subscriber needs a keyframe; the publisher hears of it at most once per interval."""
        if self.kind == "video" and self._throttle.request(time.monotonic()):
            await self._send_keyframe_request()

    async def _send_keyframe_request(self) -> None:
        if self._receiver is not None and not self.closed:
            await self._receiver.request_keyframe()

    def _attach(self, subscription: Subscription) -> None:
        self.subscriptions[subscription.id] = subscription

    def _detach(self, subscription: Subscription) -> None:
        self.subscriptions.pop(subscription.id, None)
        self.bitrate.forget(subscription.id)

    async def close(self) -> None:
        """Idempotent; closes every subscription of this track."""
        if self.closed:
            return
        self.closed = True
        for subscription in list(self.subscriptions.values()):
            await subscription.close()
