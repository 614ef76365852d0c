"""Real aiortc clients for the media plane, on loopback only.

Every ICE gatherer, the server's and the clients', must gather through the SFU's address
setting: aioice's own interface scan is replaced by one that fails the test, so no candidate
on the machine's other addresses can appear. Clients use no STUN/TURN server.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aioice.ice
import numpy as np
import pytest
from aiortc import (
    AudioStreamTrack,
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

from signaling.sfu import IceConfig, MediaPlane, SfuConfig
from signaling.sfu.ice import gather_on

LOOPBACK = "127.0.0.1"
WIDTH, HEIGHT, GRID = 320, 240, 4
CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", re.MULTILINE)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: real aiortc peers over ICE/DTLS on loopback (seconds each; run in CI)")


@pytest.fixture(autouse=True)
def no_interface_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        raise AssertionError("ICE gathered on the machine's interfaces instead of 127.0.0.1")

    monkeypatch.setattr(aioice.ice, "get_host_addresses", refuse)


def loopback_candidates(sdp: str) -> list[str]:
    """The candidate addresses of an SDP, which must all be 127.0.0.1."""
    addresses = CANDIDATE.findall(sdp)
    assert addresses, "the description carries no candidates"
    assert set(addresses) == {LOOPBACK}, addresses
    return addresses


def draw_counter(counter: int) -> np.ndarray:
    """A gray frame whose 4x4 blocks are the 16 bits of `counter` (white = 1)."""
    image = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    bh, bw = HEIGHT // GRID, WIDTH // GRID
    for bit in range(GRID * GRID):
        if counter >> bit & 1:
            row, col = divmod(bit, GRID)
            image[row * bh:(row + 1) * bh, col * bw:(col + 1) * bw] = 255
    return image


def read_counter(frame: VideoFrame) -> int:
    image = frame.to_ndarray(format="gray")
    bh, bw = image.shape[0] // GRID, image.shape[1] // GRID
    counter = 0
    for bit in range(GRID * GRID):
        row, col = divmod(bit, GRID)
        if image[row * bh:(row + 1) * bh, col * bw:(col + 1) * bw].mean() > 128:
            counter |= 1 << bit
    return counter


class CounterVideoTrack(VideoStreamTrack):
    """Frames numbered 1, 2, 3, ... in black and white blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.sent += 1
        gray = draw_counter(self.sent)
        frame = VideoFrame.from_ndarray(np.stack([gray] * 3, axis=-1), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneAudioTrack(AudioStreamTrack):
    """A 440 Hz tone at -12 dBFS, so the audio-level extension says someone is speaking."""

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        t = (np.arange(frame.samples) + frame.pts) / frame.sample_rate
        samples = (0.25 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
        tone = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        tone.pts, tone.sample_rate, tone.time_base = frame.pts, frame.sample_rate, frame.time_base
        return tone


def client_pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


@dataclass
class PublisherClient:
    pc: RTCPeerConnection = field(default_factory=client_pc)
    video: CounterVideoTrack = field(default_factory=CounterVideoTrack)
    audio: ToneAudioTrack = field(default_factory=ToneAudioTrack)

    async def offer(self) -> RTCSessionDescription:
        self.pc.addTransceiver(self.audio, direction="sendonly")
        self.pc.addTransceiver(self.video, direction="sendonly")
        await gather_on(self.pc, [LOOPBACK])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription

    async def accept(self, answer: RTCSessionDescription) -> None:
        loopback_candidates(answer.sdp)
        await self.pc.setRemoteDescription(answer)


@dataclass
class SubscriberClient:
    """Decodes what it receives: video frame counters and a count of audio frames."""

    pc: RTCPeerConnection = field(default_factory=client_pc)
    counters: list[int] = field(default_factory=list)
    audio_frames: int = 0
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tracks.append(track)
        self._readers.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.counters.append(read_counter(frame))
                else:
                    self.audio_frames += 1
        except MediaStreamError:
            pass

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        loopback_candidates(offer.sdp)
        await self.pc.setRemoteDescription(offer)
        await gather_on(self.pc, [LOOPBACK])
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await self.pc.close()


async def wait_for(condition, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def plane() -> AsyncIterator[MediaPlane]:
    media = MediaPlane(SfuConfig(ice=IceConfig(addresses=(LOOPBACK,))))
    yield media
    await media.close()
