"""A participant's publishing connection (LiveKit's publisher transport): the client offers
its tracks, the server answers, and each offered audio or video section becomes a Track fed
by a ForwardingReceiver. Later offers from the client (renegotiation) add tracks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCSessionDescription

from .config import SfuConfig
from .ice import gather_on
from .receiver import ForwardingReceiver
from .track import LevelCallback, Track
from .transceiver import answer_as_dtls_server, install_receiver

StateCallback = Callable[[str], None]


class PublishPeer:
    def __init__(self, peer_id: str, config: SfuConfig, *, on_track: Callable[[Track], None],
                 on_level: LevelCallback | None = None,
                 on_closed: Callable[["PublishPeer"], None] | None = None,
                 on_state: StateCallback | None = None) -> None:
        self.id = peer_id
        self.pc = RTCPeerConnection(config.rtc_configuration())
        self.tracks: dict[str, Track] = {}
        self._config = config
        self._on_track = on_track
        self._on_level = on_level
        self._on_closed = on_closed
        self._lock = asyncio.Lock()
        self._closed = False
        if on_state is not None:
            self.pc.on("connectionstatechange", lambda: on_state(self.pc.connectionState))

    @property
    def closed(self) -> bool:
        return self._closed

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        """Apply the client's offer and return the server's answer (candidates included)."""
        if offer.type != "offer":
            raise ValueError(f"expected an offer, got {offer.type!r}")
        async with self._lock:
            if self._closed:
                raise ConnectionError("publisher is closed")
            await self.pc.setRemoteDescription(offer)
            for transceiver in self.pc.getTransceivers():
                if transceiver.mid is None or isinstance(transceiver.receiver, ForwardingReceiver):
                    continue
                track = Track(peer_id=self.id, mid=transceiver.mid, kind=transceiver.kind,
                              config=self._config, on_live=self._on_track, on_level=self._on_level)
                install_receiver(transceiver, ForwardingReceiver(
                    transceiver.kind, transceiver.receiver.transport, transceiver.receiver.track,
                    transceiver.sender._ssrc, track))
                self.tracks[transceiver.mid] = track
            await gather_on(self.pc, self._config.ice.addresses)
            answer_as_dtls_server(self.pc)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            return self.pc.localDescription

    async def close(self) -> None:
        """Idempotent: closes the tracks (and so their subscriptions), then the connection."""
        if self._closed:
            return
        self._closed = True
        for track in list(self.tracks.values()):
            await track.close()
        await self.pc.close()
        if self._on_closed is not None:
            self._on_closed(self)
