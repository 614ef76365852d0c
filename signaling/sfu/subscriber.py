"""A participant's subscribing connection (LiveKit's subscriber transport): the server offers,
the client answers, so the server never meets an offer coming the other way (no glare).

`subscribe()` adds a sendonly transceiver restricted to the track's codec and puts a
ForwardingSender in it; the room layer then calls `offer()`, sends the offer to the client and
passes its answer to `accept()`. Several subscriptions can share one offer. Forwarding starts
when aiortc starts the sender (negotiated and DTLS up). The msid of each new section carries
the publisher's peer id and the track id, so the client knows what it receives. aiortc cannot
remove m-lines: a closed subscription's section turns inactive at the next offer and is not
reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters

from .config import SfuConfig
from .ice import gather_on
from .sender import ForwardingSender
from .subscription import Subscription
from .track import Track
from .transceiver import answer_as_dtls_server, install_sender

StateCallback = Callable[[str], None]


def codec_preferences(codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """The capability matching the publisher's codec, plus RTX for video."""
    kind = codec.mimeType.split("/")[0].lower()
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    same_type = [c for c in capabilities if c.mimeType.lower() == codec.mimeType.lower()]
    exact = [c for c in same_type if c.parameters == codec.parameters]
    if not same_type:
        raise ValueError(f"no capability to forward {codec.mimeType}")
    preferred = (exact or same_type)[:1]
    return preferred + [c for c in capabilities if c.mimeType.lower() == f"{kind}/rtx"]


class SubscribePeer:
    def __init__(self, peer_id: str, config: SfuConfig, *,
                 on_closed: Callable[["SubscribePeer"], None] | None = None,
                 on_state: StateCallback | None = None) -> None:
        self.id = peer_id
        self.pc = RTCPeerConnection(config.rtc_configuration())
        self.subscriptions: dict[str, Subscription] = {}
        self._config = config
        self._on_closed = on_closed
        self._lock = asyncio.Lock()
        self._closed = False
        self._negotiation_needed = False
        if on_state is not None:
            self.pc.on("connectionstatechange", lambda: on_state(self.pc.connectionState))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def negotiation_needed(self) -> bool:
        """A subscription was added or closed since the last offer."""
        return self._negotiation_needed

    def subscribe(self, track: Track) -> Subscription:
        """Start forwarding `track` here once the next offer/answer completes."""
        if self._closed:
            raise ConnectionError("subscriber is closed")
        if not track.live:
            raise ValueError(f"{track!r} is not live")
        transceiver = self.pc.addTransceiver(track.kind, direction="sendonly")
        transceiver.setCodecPreferences(codec_preferences(track.codec))
        subscription = Subscription(track, transceiver, self._forget)
        sender = ForwardingSender(track.kind, transceiver.sender.transport,
                                  stream_id=track.peer_id, track_id=track.id,
                                  listener=subscription, history=self._config.rtp_history)
        install_sender(transceiver, sender)
        subscription.bind(sender)
        track._attach(subscription)
        self.subscriptions[subscription.id] = subscription
        self._negotiation_needed = True
        return subscription

    async def offer(self) -> RTCSessionDescription:
        """The server's offer for the current subscriptions (candidates included)."""
        async with self._lock:
            if self._closed:
                raise ConnectionError("subscriber is closed")
            if self.pc.signalingState != "stable":
                raise RuntimeError("the previous offer has not been answered")
            await gather_on(self.pc, self._config.ice.addresses)
            await self.pc.setLocalDescription(await self.pc.createOffer())
            self._negotiation_needed = False
            return self.pc.localDescription

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Answer a client's offer to receive (WHEP) with the subscriptions made before it:
        aiortc matches each offered section to the first unassigned transceiver of its kind,
        so the forwarding senders and their codec preferences are used."""
        if offer.type != "offer":
            raise ValueError(f"expected an offer, got {offer.type!r}")
        async with self._lock:
            if self._closed:
                raise ConnectionError("subscriber is closed")
            await self.pc.setRemoteDescription(offer)
            await gather_on(self.pc, self._config.ice.addresses)
            answer_as_dtls_server(self.pc)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            self._negotiation_needed = False
            return self.pc.localDescription

    async def accept(self, answer: RTCSessionDescription) -> None:
        """Apply the client's answer to the last offer."""
        if answer.type != "answer":
            raise ValueError(f"expected an answer, got {answer.type!r}")
        async with self._lock:
            if self._closed:
                raise ConnectionError("subscriber is closed")
            await self.pc.setRemoteDescription(answer)

    def _forget(self, subscription: Subscription) -> None:
        if self.subscriptions.pop(subscription.id, None) is not None and not self._closed:
            self._negotiation_needed = True

    async def close(self) -> None:
        """Idempotent: closes the subscriptions, then the connection."""
        if self._closed:
            return
        self._closed = True
        for subscription in list(self.subscriptions.values()):
            await subscription.close()
        await self.pc.close()
        if self._on_closed is not None:
            self._on_closed(self)
