"""Recording published tracks to files without decoding: a real aiortc publisher through the
media plane on loopback, and RTP from aiortc's own encoders fed straight into a Track."""

from __future__ import annotations

import asyncio
import fractions
import re
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from av import VideoFrame

from signaling.sfu import MediaPlane, SfuConfig, Track
from signaling.sfu import recorder as recorder_module
from signaling.sfu.recorder import Recording, TrackRecorder

from .conftest import HEIGHT, WIDTH, PublisherClient, draw_counter, read_counter, wait_for
from .test_end_to_end import count_calls

pytestmark = pytest.mark.slow

NAME = re.compile(r"\d{8}T\d{6}Z-cart_3-(video|audio)\.webm")


@pytest.fixture
async def client() -> AsyncIterator[PublisherClient]:
    publisher = PublisherClient()
    yield publisher
    await publisher.pc.close()


async def publish(plane: MediaPlane, client: PublisherClient) -> dict[str, Track]:
    tracks: dict[str, Track] = {}
    peer = plane.publisher("cart", on_track=lambda t: tracks.__setitem__(t.kind, t))
    await client.accept(await peer.answer(await client.offer()))
    await wait_for(lambda: len(tracks) == 2 and all(t.packets for t in tracks.values()),
                   what="both published tracks live")
    return tracks


def read_video(path: Path) -> tuple[str, list[av.Packet], list[int]]:
    """The codec, the packets and, decoded here in the test, each frame's counter."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        counters = [read_counter(frame) for p in packets for frame in p.decode()]
        return stream.codec_context.name, packets, counters


def creation_time(path: Path) -> datetime:
    with av.open(str(path)) as container:
        return datetime.fromisoformat(container.metadata["creation_time"])


def assert_increasing_from_zero(packets: list[av.Packet]) -> None:
    pts = [p.pts for p in packets]
    assert pts[0] == 0 and all(b > a for a, b in zip(pts, pts[1:])), pts


async def test_both_tracks_are_recorded_as_sent_without_coding(
        plane: MediaPlane, client: PublisherClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, int] = {}
    count_calls(monkeypatch, aiortc.rtcrtpreceiver, "get_decoder", calls)
    count_calls(monkeypatch, aiortc.rtcrtpsender, "get_encoder", calls)
    tracks = await publish(plane, client)
    recording = Recording(tmp_path / "consult")
    loop = asyncio.get_running_loop()
    began = loop.time()
    video = await recording.add(tracks["video"], "cart/3")
    audio = await recording.add(tracks["audio"], "cart/3")
    assert set(tracks["video"].subscriptions.values()) == {video}
    await asyncio.sleep(2)
    await wait_for(lambda: video.frames > 50, timeout=15, what="50 frames recorded")
    await asyncio.gather(recording.close(), video.close())
    elapsed = loop.time() - began
    await recording.close()
    assert not tracks["video"].subscriptions and not tracks["audio"].subscriptions
    assert not [t for t in threading.enumerate() if t.name.startswith("recorder-")]

    assert sorted(recording.files) == sorted([video.path, audio.path])
    assert {NAME.fullmatch(p.name).group(1) for p in recording.files} == {"video", "audio"}
    codec, packets, counters = read_video(video.path)
    assert codec == "vp8" and packets[0].is_keyframe
    assert len(counters) == len(packets) == video.frames > 50
    assert counters == list(range(counters[0], counters[0] + len(counters))), counters
    assert counters[-1] <= client.video.sent
    assert_increasing_from_zero(packets)

    with av.open(str(audio.path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        assert stream.codec_context.extradata.startswith(b"OpusHead")
        packets = [p for p in container.demux(stream) if p.size]
    assert_increasing_from_zero(packets)
    covered = float((packets[-1].pts - packets[0].pts) * packets[0].time_base) + 0.02
    assert len(packets) == audio.frames and elapsed - 0.5 < covered < elapsed + 0.05
    assert len(packets) * 0.02 == pytest.approx(covered, abs=0.1)  # no holes
    # the video waits for a keyframe; the files say when each began, to line them up
    assert -0.1 < (creation_time(video.path) - creation_time(audio.path)).total_seconds() < 0.5

    # Only the publishing client coded media: its audio and video encoders.
    assert calls == {"get_decoder": 0, "get_encoder": 2}
    assert not [t for t in threading.enumerate() if t.name.endswith("-decoder")]


async def test_closing_the_track_closes_the_recorder_and_keeps_the_file(
        plane: MediaPlane, client: PublisherClient, tmp_path: Path) -> None:
    tracks = await publish(plane, client)
    recording = Recording(tmp_path)
    recorder = await recording.add(tracks["video"], "cart")
    await wait_for(lambda: recorder.frames > 15, what="frames recorded")
    await plane.publishers["cart"].close()
    assert recorder.closed and not tracks["video"].subscriptions
    frames = recorder.frames
    codec, packets, counters = read_video(recorder.path)
    assert codec == "vp8" and len(counters) == frames
    assert counters == list(range(counters[0], counters[0] + frames))
    await recording.close()
    assert recording.files == [recorder.path] and recorder.frames == frames
    with pytest.raises(ConnectionError):
        await recording.add(tracks["audio"], "cart")


def bare_track(mime_type: str, kind: str = "video") -> Track:
    """A Track fed by the test instead of a publisher's connection."""
    track = Track(peer_id="cart", mid="0", kind=kind, config=SfuConfig(),
                  on_live=lambda t: None, on_level=None)
    codec = RTCRtpCodecParameters(mimeType=mime_type, clockRate=90000 if kind == "video" else 8000,
                                  payloadType=97)
    track.on_receive(None, codec, 1234)  # type: ignore[arg-type]  # no receiver: no PLIs
    return track


async def test_a_track_that_sends_nothing_leaves_no_file(tmp_path: Path) -> None:
    track = bare_track("video/VP8")
    recording = Recording(tmp_path)
    recorder = await recording.add(track, "cart")
    with pytest.raises(ValueError):
        await recording.add(track, "cart")  # already recorded
    await recording.close()
    await recording.close()
    assert recorder.closed and not track.subscriptions
    assert recording.files == [] and list(tmp_path.iterdir()) == []

    await TrackRecorder(track, tmp_path / "never-started.webm").close()  # stop before start
    with pytest.raises(ValueError):
        TrackRecorder(bare_track("audio/PCMU", "audio"), tmp_path / "x.webm")
    unreceived = Track(peer_id="cart", mid="1", kind="video", config=SfuConfig(),
                       on_live=lambda t: None, on_level=None)
    with pytest.raises(ValueError):
        await Recording(tmp_path).add(unreceived, "cart")
    await track.close()
    with pytest.raises(ConnectionError):
        await Recording(tmp_path).add(track, "cart")
    assert list(tmp_path.iterdir()) == []


def rtp_frames(encoder: Vp8Encoder | H264Encoder, counters: range,
               keyframes: set[int]) -> Iterator[tuple[int, list[RtpPacket]]]:
    """aiortc's own packetization of frames showing `counters`, as lists of RTP packets; the
    sequence numbers and timestamps wrap around during the run. A fixed noise pattern makes
    keyframes span several packets."""
    noise = np.random.default_rng(7).integers(-30, 30, (HEIGHT, WIDTH))
    seq = 65500
    for counter in counters:
        gray = np.clip(draw_counter(counter) + noise, 0, 255).astype(np.uint8)
        frame = VideoFrame.from_ndarray(np.stack([gray] * 3, axis=-1), format="rgb24")
        frame.pts, frame.time_base = counter * 3000, fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=counter in keyframes)
        packets = []
        for i, payload in enumerate(payloads):
            packets.append(RtpPacket(payload_type=97, sequence_number=seq & 0xFFFF,
                                     timestamp=(timestamp + 2**32 - 60_000) & 0xFFFFFFFF,
                                     marker=i == len(payloads) - 1, payload=payload))
            seq += 1
        yield counter, packets


@pytest.mark.parametrize("mime_type, encoder, suffix", [
    ("video/VP8", Vp8Encoder, ".webm"), ("video/H264", H264Encoder, ".mkv")])
async def test_video_starts_at_a_keyframe_and_again_after_a_pause(
        tmp_path: Path, mime_type: str, encoder: type, suffix: str) -> None:
    track = bare_track(mime_type)
    recording = Recording(tmp_path)
    recorder = None
    for counter, packets in rtp_frames(encoder(), range(1, 51), keyframes={1, 20, 40}):
        if counter == 1:  # recording starts in the middle of a keyframe (x264 cuts keyframes
            # into slices, and the first packet of each says "keyframe")
            recorder = await recording.add(track, "cart")
            assert len(packets) > 2
            packets = packets[len(packets) // 2:]
        if counter == 28:
            await track.set_paused(True)
        if counter == 35:
            await track.set_paused(False)
        for packet in packets:
            await track.on_rtp(packet)
    await track.close()
    assert recorder is not None and recorder.closed and recorder.path.suffix == suffix
    codec, recorded, counters = read_video(recorder.path)
    # A frame leaves the jitter buffer when the next one starts: 27 was waiting when the pause
    # came, and 50 at the end.
    assert counters == list(range(20, 27)) + list(range(40, 50))
    assert codec == mime_type[6:].lower() and recorded[0].is_keyframe and recorded[7].is_keyframe
    assert_increasing_from_zero(recorded)
    assert recorded[7].pts - recorded[6].pts == round((40 - 26) / 30 * 1000)  # the pause, in ms


async def test_a_stuck_writer_costs_frames_not_the_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the queue full, frames are dropped at once, and video starts again at a keyframe
    (the frames after a dropped one refer to it)."""
    monkeypatch.setattr(recorder_module, "QUEUE_FRAMES", 4)
    stuck = threading.Event()
    write = TrackRecorder._write

    def stuck_write(self: TrackRecorder) -> None:
        stuck.wait(5)
        write(self)

    monkeypatch.setattr(TrackRecorder, "_write", stuck_write)
    track = bare_track("video/VP8")
    recorder = await Recording(tmp_path).add(track, "cart")
    for counter, packets in rtp_frames(Vp8Encoder(), range(1, 31), keyframes={1, 20}):
        if counter == 10:  # 5 found the queue full
            stuck.set()
            await wait_for(lambda: recorder.frames == 4, what="the queue drained")
        for packet in packets:
            await track.on_rtp(packet)
    await recorder.close()
    _, recorded, counters = read_video(recorder.path)
    assert counters == [1, 2, 3, 4, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
    assert recorder.dropped == 1 and recorded[4].is_keyframe


async def test_a_failing_writer_logs_and_close_still_returns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    track = bare_track("video/VP8")
    recorder = TrackRecorder(track, tmp_path / "no such folder" / "cart-video.webm")
    await recorder.start()
    for _, packets in rtp_frames(Vp8Encoder(), range(1, 11), keyframes={1}):
        for packet in packets:
            await track.on_rtp(packet)
    await asyncio.wait_for(recorder.close(), 5)
    assert recorder.frames == 0 and "cart-video.webm) failed" in caplog.text
