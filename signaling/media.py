"""One room's media: keeps the media plane in step with the room's decisions.

The room (I/O-free) decides who publishes, who subscribes to what and which tracks are muted;
this class owns the room's MediaPlane and reconciles it with those decisions, LiveKit style:
a participant's publisher connection answers the client's offers, its subscriber connection
carries the tracks it subscribed to and is renegotiated by server offers. Reconciling runs in
one worker task per room, so two changes never renegotiate one connection at once; the
session's offer, answer and candidate messages take the same lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription, candidate_from_sdp

from signaling.protocol import ErrorCode, ProtocolError, event
from signaling.room import Room
from signaling.sfu import MediaPlane, SfuConfig, SubscribePeer, Track
from signaling.sfu.recorder import Recording

log = logging.getLogger(__name__)

Deliver = Callable[[str, dict[str, Any]], None]
Recorded = Callable[[str, str, list[str]], Awaitable[None]]
"""(room id, identity of the host who started it, file names): a recording is complete."""


@dataclass(frozen=True)
class RecordingPlace:
    directory: Path
    """Each room records into a folder of its own under this one."""
    on_recorded: Recorded


def _description(sdp: str, kind: str) -> RTCSessionDescription:
    return RTCSessionDescription(sdp=sdp, type=kind)


def _ice_ufrag(description: str | RTCSessionDescription | None) -> str | None:
    """The ICE username fragment, which names the client's connection."""
    if isinstance(description, RTCSessionDescription):
        description = description.sdp
    found = re.search(r"^a=ice-ufrag:(\S+)", description or "", re.MULTILINE)
    return found.group(1) if found else None


class RoomMedia:
    def __init__(self, room: Room, config: SfuConfig, deliver: Deliver,
                 on_failed: Callable[[str], None] | None = None,
                 recordings: RecordingPlace | None = None) -> None:
        self.room = room
        self._on_failed = on_failed
        self._recordings = recordings
        self._recording: Recording | None = None
        self._recording_by = ""
        self.plane = MediaPlane(config, on_active_speaker=self._active_speaker)
        self._deliver = deliver
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._pending_offers: dict[str, dict[str, Any]] = {}
        self._connections: dict[str, str] = {}
        """Each participant's subscriber connection id: a new one needs a new RTCPeerConnection."""
        self._worker = asyncio.create_task(self._reconcile_forever(), name=f"media-{room.id}")

    # -- from the session ---------------------------------------------------------------------

    async def publisher_offer(self, participant_id: str, sdp: str) -> str:
        """The client offers its tracks (first time or renegotiation); returns the answer.
        Each track is announced to the room when its media starts flowing."""
        self.room.publisher(participant_id)
        async with self._lock:
            peer = self.plane.publishers.get(participant_id)
            ufrag = _ice_ufrag(sdp)
            if peer is not None and ufrag and ufrag != _ice_ufrag(peer.pc.remoteDescription):
                await self._replace_publisher(participant_id)
                peer = None
            fresh = peer is None
            if peer is None:
                peer = self.plane.publisher(participant_id, on_track=self._track_live,
                                            on_state=self._state_changed)
            try:
                answer = await peer.answer(_description(sdp, "offer"))
            except Exception as exc:
                if fresh:
                    await peer.close()
                raise ProtocolError(ErrorCode.BAD_SDP, f"the offer was refused: {exc}", "offer")
        return answer.sdp

    async def _replace_publisher(self, participant_id: str) -> None:
        """An offer from a new RTCPeerConnection (a reloaded page, a presenter role regained):
        the old connection's tracks leave the room and the connection is closed."""
        peer = self.plane.publishers[participant_id]
        for track in peer.tracks.values():
            if track.id in self.room.tracks:
                self.room.unpublish(participant_id, track.id)
        await peer.close()

    async def player_offer(self, participant_id: str, sdp: str) -> str:
        """A WHEP player offers to receive: it gets the room's first publisher's audio and
        video (the cart in a ward round), one track per offered section of that kind."""
        self.room.participant(participant_id)
        try:
            kinds = [m.kind for m in SessionDescription.parse(sdp).media]
        except Exception as exc:
            raise ProtocolError(ErrorCode.BAD_SDP, f"the offer is not SDP: {exc}", "offer")
        async with self._lock:
            live = await self._align_tracks()
            by_kind: dict[str, Track] = {}
            for track in live.values():
                by_kind.setdefault(track.kind, track)
            if "video" in by_kind:
                video_owner = by_kind["video"].peer_id
                by_kind.update({t.kind: t for t in live.values() if t.peer_id == video_owner})
            if not any(kind in by_kind for kind in kinds):
                raise ProtocolError(ErrorCode.UNKNOWN_TRACK, "nothing is published in this room yet")
            if participant_id in self.plane.subscribers:
                raise ProtocolError(ErrorCode.OUT_OF_ORDER, "this player is already connected")
            peer = self.plane.subscriber(participant_id, on_state=self._state_changed)
            chosen = [by_kind[kind] for kind in dict.fromkeys(kinds) if kind in by_kind]
            for track in chosen:
                self.plane.subscribe(peer, track)
            try:
                answer = await peer.answer(_description(sdp, "offer"))
            except Exception as exc:
                await peer.close()
                raise ProtocolError(ErrorCode.BAD_SDP, f"the offer was refused: {exc}", "offer")
            self.room.participant(participant_id).subscriptions.update(t.id for t in chosen)
        return answer.sdp

    async def subscriber_answer(self, participant_id: str, sdp: str) -> None:
        async with self._lock:
            peer = self.plane.subscribers.get(participant_id)
            if peer is None or participant_id not in self._pending_offers:
                raise ProtocolError(ErrorCode.OUT_OF_ORDER, "there is no offer to answer", "answer")
            try:
                await peer.accept(_description(sdp, "answer"))
            except Exception as exc:
                raise ProtocolError(ErrorCode.BAD_SDP, f"the answer was refused: {exc}", "answer")
            del self._pending_offers[participant_id]
        self.changed()

    async def candidate(self, participant_id: str, target: str, candidate: str,
                        sdp_mid: str | None, sdp_mline_index: int | None) -> None:
        """A trickled candidate of the client's; an empty one ends its candidates."""
        peers = self.plane.publishers if target == "publisher" else self.plane.subscribers
        peer = peers.get(participant_id)
        if peer is None or peer.pc.remoteDescription is None:
            raise ProtocolError(ErrorCode.OUT_OF_ORDER, f"no {target} connection yet", "candidate")
        if not candidate:
            return
        try:
            parsed = candidate_from_sdp(candidate.removeprefix("candidate:"))
        except (AssertionError, ValueError, IndexError) as exc:  # aiortc asserts the field count
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"not an ICE candidate: {exc}", "candidate")
        parsed.sdpMid, parsed.sdpMLineIndex = sdp_mid, sdp_mline_index
        if sdp_mid is None and sdp_mline_index is None:
            parsed.sdpMLineIndex = 0
        await peer.pc.addIceCandidate(parsed)

    def resumed(self, participant_id: str) -> None:
        """A reconnected client may have missed the last offer: send it again."""
        offer = self._pending_offers.get(participant_id)
        if offer is not None:
            self._deliver(participant_id, offer)

    def changed(self) -> None:
        """The room changed (subscriptions, tracks, mutes, participants): reconcile soon."""
        self._changed.set()

    async def close(self) -> None:
        """Idempotent: stops the worker, finishes a running recording, then closes every
        connection of the room."""
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        await self._stop_recording()
        await self.plane.close()

    @property
    def closed(self) -> bool:
        return self._worker.done()

    # -- from the media plane -----------------------------------------------------------------

    def _track_live(self, track: Track) -> None:
        try:
            self.room.publish(track.peer_id, track.kind, track_id=track.id, mid=track.mid)
        except ProtocolError as exc:
            log.info("track %r refused: %s", track, exc.message)
        self.changed()

    def _active_speaker(self, track: Track) -> None:
        self.room.active_speaker(track.peer_id, self.plane.speakers.loudness(track.id))

    def _state_changed(self, state: str) -> None:
        if state in ("failed", "closed"):
            self.changed()

    # -- reconciling --------------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                async with self._lock:
                    await self._reconcile()
            except Exception:
                log.exception("reconciling the media of room %s failed", self.room.id)

    async def _reconcile(self) -> None:
        await self._close_departed()
        live = await self._align_tracks()
        await self._align_recording(live)
        for participant in list(self.room.participants.values()):
            wanted = {track_id for track_id in participant.subscriptions if track_id in live}
            peer = self.plane.subscribers.get(participant.id)
            if peer is None and wanted:
                peer = self.plane.subscriber(participant.id, on_state=self._state_changed)
                self._connections[participant.id] = secrets.token_hex(4)
            if peer is None:
                continue
            have = {s.track.id: s for s in peer.subscriptions.values()}
            for track_id, subscription in have.items():
                if track_id not in wanted:
                    await subscription.close()
            for track_id in wanted - have.keys():
                self.plane.subscribe(peer, live[track_id])
            if peer.negotiation_needed and participant.id not in self._pending_offers:
                await self._offer(participant.id, peer)

    async def _close_departed(self) -> None:
        """Connections of participants who left, and connections whose transport failed (their
        published tracks leave the room; a new subscriber connection is offered afresh)."""
        for peer_id, peer in [*self.plane.publishers.items(), *self.plane.subscribers.items()]:
            present = peer_id in self.room.participants
            if present and peer.pc.connectionState not in ("failed", "closed"):
                continue
            if present and peer_id in self.plane.publishers and self.plane.publishers[peer_id] is peer:
                for track in peer.tracks.values():
                    if track.id in self.room.tracks:
                        self.room.unpublish(peer_id, track.id)
            if peer is self.plane.subscribers.get(peer_id):
                self._pending_offers.pop(peer_id, None)
            await peer.close()
            if present and self._on_failed is not None:
                self._on_failed(peer_id)

    async def _align_tracks(self) -> dict[str, Track]:
        """Close media of tracks the room withdrew, apply mutes; the live tracks by id."""
        live = {}
        for peer in list(self.plane.publishers.values()):
            for track in list(peer.tracks.values()):
                published = self.room.tracks.get(track.id)
                if track.live and published is None:
                    await track.close()
                elif published is not None:
                    await track.set_paused(published.muted)
                    live[track.id] = track
        return live

    async def _align_recording(self, live: dict[str, Track]) -> None:
        """While the host has recording on, every live track is recorded as it is forwarded."""
        if not self.room.recording or self._recordings is None:
            await self._stop_recording()
            return
        if self._recording is None:
            self._recording = Recording(self._recordings.directory / self.room.id)
            self._recording_by = self.room.recording_by or ""
        recorded = {r.track.id for r in self._recording.recorders}
        for track in live.values():
            if track.id in recorded:
                continue
            publisher = self.room.participants.get(track.peer_id)
            try:
                await self._recording.add(track, publisher.name if publisher else track.peer_id)
            except ValueError as exc:
                log.warning("not recording %r: %s", track, exc)

    async def _stop_recording(self) -> None:
        recording, self._recording = self._recording, None
        if recording is None:
            return
        await recording.close()
        if recording.files and self._recordings is not None:
            await self._recordings.on_recorded(self.room.id, self._recording_by,
                                               [path.name for path in recording.files])

    async def _offer(self, participant_id: str, peer: SubscribePeer) -> None:
        offer = await peer.offer()
        mids = {s.transceiver.mid: s.track.id for s in peer.subscriptions.values()}
        message = event("offer", sdp=offer.sdp, tracks=mids,
                        connection=self._connections[participant_id])
        self._pending_offers[participant_id] = message
        self._deliver(participant_id, message)
