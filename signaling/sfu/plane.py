"""The media plane (mediasoup router): owns every participant's publishing and subscribing
connection by peer id, connects tracks to subscribers, and reports the active speaker.

The room layer drives it: `publisher(peer_id)` / `subscriber(peer_id)` create the connections,
`PublishPeer.answer()` handles the client's offers, `subscribe()` + `SubscribePeer.offer()` /
`accept()` forward tracks, `Subscription.close()` unsubscribes, `close()` ends everything.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import SfuConfig
from .publisher import PublishPeer, StateCallback
from .speaker import ActiveSpeakerDetector
from .subscriber import SubscribePeer
from .subscription import Subscription
from .track import Track

SPEAKER_POLL = 0.2


class MediaPlane:
    def __init__(self, config: SfuConfig | None = None, *,
                 on_active_speaker: Callable[[Track], None] | None = None) -> None:
        self.config = config or SfuConfig()
        self.publishers: dict[str, PublishPeer] = {}
        self.subscribers: dict[str, SubscribePeer] = {}
        self.speakers: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        self._on_active_speaker = on_active_speaker
        self._tracks: dict[str, Track] = {}
        self._speaker_polled = 0.0
        self._closed = False

    def publisher(self, peer_id: str, *, on_track: Callable[[Track], None],
                  on_state: StateCallback | None = None) -> PublishPeer:
        """A new publishing connection; `on_track` fires as each track starts receiving."""
        self._check_open(peer_id, self.publishers)

        def live(track: Track) -> None:
            self._tracks[track.id] = track
            on_track(track)

        peer = PublishPeer(peer_id, self.config, on_track=live, on_level=self._level,
                           on_closed=self._publisher_closed, on_state=on_state)
        self.publishers[peer_id] = peer
        return peer

    def subscriber(self, peer_id: str, *, on_state: StateCallback | None = None) -> SubscribePeer:
        """A new subscribing connection; the server makes its offers."""
        self._check_open(peer_id, self.subscribers)
        peer = SubscribePeer(peer_id, self.config, on_closed=self._subscriber_closed,
                             on_state=on_state)
        self.subscribers[peer_id] = peer
        return peer

    def subscribe(self, subscriber: SubscribePeer, track: Track) -> Subscription:
        if self.subscribers.get(subscriber.id) is not subscriber:
            raise ValueError(f"subscriber {subscriber.id!r} does not belong to this plane")
        return subscriber.subscribe(track)

    async def close(self) -> None:
        """Idempotent: closes subscribers first (nothing left to forward to), then publishers."""
        if self._closed:
            return
        self._closed = True
        for subscriber in list(self.subscribers.values()):
            await subscriber.close()
        for publisher in list(self.publishers.values()):
            await publisher.close()

    def _check_open(self, peer_id: str, peers: dict) -> None:
        if self._closed:
            raise ConnectionError("media plane is closed")
        if peer_id in peers:
            raise ValueError(f"peer {peer_id!r} already has this connection")

    def _level(self, track: Track, level_dbov: int, now: float) -> None:
        self.speakers.observe(track.id, level_dbov, now)
        if now - self._speaker_polled < SPEAKER_POLL:
            return
        self._speaker_polled = now
        if self.speakers.poll(now) and self._on_active_speaker is not None:
            speaker = self._tracks.get(self.speakers.speaker)
            if speaker is not None:
                self._on_active_speaker(speaker)

    def _publisher_closed(self, peer: PublishPeer) -> None:
        self.publishers.pop(peer.id, None)
        for track in peer.tracks.values():
            self._tracks.pop(track.id, None)
            self.speakers.forget(track.id)

    def _subscriber_closed(self, peer: SubscribePeer) -> None:
        self.subscribers.pop(peer.id, None)
