"""Recording consults (once the room layer has the participants' consent): each published track
goes to its own Matroska/WebM file exactly as its publisher encoded it.

A TrackRecorder is a sink of a Track, like a Subscription. It rebuilds encoded frames from RTP
the way aiortc's RTCRtpReceiver does (depayloader, jitter buffer), starts video at a keyframe
and hands frames to a writer thread that muxes them with PyAV, so a slow disk never stalls the
event loop. Nothing is decoded or encoded: for the file header, FFmpeg's parser reads the
picture size from the first keyframe, and Opus gets a fixed OpusHead.
"""

from __future__ import annotations

import asyncio
import io
import logging
import queue
import re
import struct
import threading
import uuid
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
from aiortc.codecs import depayload
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from av.container import OutputContainer
from av.stream import Stream
from av.video.codeccontext import VideoCodecContext

from .track import Track

logger = logging.getLogger(__name__)

FORMATS = {"vp8": ("webm", ".webm"), "opus": ("webm", ".webm"), "h264": ("matroska", ".mkv")}
"""RTP codec name -> (FFmpeg muxer, file suffix); other codecs cannot be recorded."""
QUEUE_FRAMES = 256
"""Frames waiting for the writer thread (seconds of media); more are dropped, the call goes on."""
OPUS_HEAD = struct.pack("<8sBBHIhB", b"OpusHead", 1, 2, 0, 48000, 0, 0)
"""RFC 7845 header that WebM requires: WebRTC's Opus is always signalled as 2 channels at 48 kHz,
and the pre-skip is 0 because recording starts mid-stream, long after the encoder's start-up."""


def recordable_codec(track: Track) -> RTCRtpCodecParameters:
    """The track's codec; ValueError if it is not known yet or cannot be recorded."""
    if track.codec is None or track.codec.name.lower() not in FORMATS:
        raise ValueError(f"cannot record {track!r}")
    return track.codec


def picture_size(codec_name: str, keyframe: bytes) -> tuple[int, int] | None:
    """Width and height from a keyframe's headers, read by FFmpeg's parser: no decoding."""
    parser = cast(VideoCodecContext, av.CodecContext.create(codec_name, "r"))
    parser.parse(keyframe)
    parser.parse(None)
    return (parser.width, parser.height) if parser.width and parser.height else None


class TrackRecorder:
    """One published track into one file: `start()` attaches, `close()` finishes the file.

    The file appears with the first frame, so a track that sends nothing leaves no file.
    """

    def __init__(self, track: Track, path: Path) -> None:
        self._codec = recordable_codec(track)
        self._codec_name = self._codec.name.lower()
        if track.closed:
            raise ConnectionError(f"{track!r} is closed")
        self.id = str(uuid.uuid4())
        self.track = track
        self.path = path
        self.frames = 0
        """Frames in the file (counted by the writer thread)."""
        self.dropped = 0
        """Frames the writer thread had no room for."""
        self.started: datetime | None = None
        """Wall-clock time of the file's first frame (its `creation_time`), to line files up."""
        self._video = track.kind == "video"
        self._buffer: JitterBuffer | None = None
        self._generation = track.generation
        self._keyframe_ts: int | None = None
        self._size: tuple[int, int] | None = None
        self._last: tuple[int, int] | None = None
        self._queue: queue.Queue[tuple[bytes, int, bool] | None] = queue.Queue(QUEUE_FRAMES)
        self._thread = threading.Thread(target=self._write, name=f"recorder-{track.kind}",
                                        daemon=True)
        self._closing: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"TrackRecorder({self.track!r} -> {self.path.name})"

    @property
    def closed(self) -> bool:
        return self._closing is not None

    async def start(self) -> None:
        """Attach to the track and ask for a keyframe, so video starts without waiting."""
        if self.closed:
            raise ConnectionError(f"{self!r} is closed")
        self._thread.start()
        self.track._attach(self)  # type: ignore[arg-type]  # a sink like Subscription
        await self.track.request_keyframe()

    async def forward(self, packet: RtpPacket, keyframe: bool, abs_send_time: int) -> None:
        """Called by the track for every RTP packet (RTX already unwrapped)."""
        if self.closed:
            return
        if self._generation != self.track.generation:
            # Paused and resumed: the packets in between never come, so start over.
            self._generation, self._buffer = self.track.generation, None
        if self._buffer is None:
            if self._video and not keyframe:
                await self.track.request_keyframe()  # throttled by the track; resent if lost
                return
            self._buffer = JitterBuffer(capacity=512 if self._video else 16, is_video=self._video)
        if keyframe:
            self._keyframe_ts = packet.timestamp
        try:
            data = depayload(self._codec, packet.payload) if packet.payload else b""
        except ValueError:
            return
        copy = RtpPacket(sequence_number=packet.sequence_number, timestamp=packet.timestamp)
        copy._data = data  # type: ignore[attr-defined]  # what the jitter buffer joins
        lost, frame = self._buffer.add(copy)
        if frame is not None and not lost and self._video and self._size is None:
            # Matroska needs the picture size up front. No size: not a whole keyframe (an H.264
            # keyframe in slices says "keyframe" in each, and only the first has the SPS).
            self._size = picture_size(self._codec_name, frame.data)
            lost = self._size is None
        if lost:
            # Overflow, a jump or no whole keyframe: what follows refers to frames we lack.
            self._buffer = None
            await self.track.request_keyframe()
        elif frame is not None:
            self._queue_frame(frame)

    def _queue_frame(self, frame: JitterFrame) -> None:
        """Timestamps follow the RTP clock, unwrapped, from 0 and always increasing."""
        pts = 0
        if self._last is not None:
            delta = (frame.timestamp - self._last[0] + 2**31) % 2**32 - 2**31
            pts = self._last[1] + max(delta, 1)
        key = not self._video or frame.timestamp == self._keyframe_ts
        if self.started is None:
            self.started = datetime.now(timezone.utc)
        try:
            self._queue.put_nowait((frame.data, pts, key))
        except queue.Full:
            self.dropped += 1
            if self._video:
                self._buffer = None
            return
        self._last = (frame.timestamp, pts)

    def _write(self) -> None:
        """The writer thread, up to the None sentinel. After an error it logs, keeps the file as
        far as it got and drops the rest, so `close()` never waits on a full queue."""
        item = self._queue.get()
        time_base = Fraction(1, self._codec.clockRate)
        try:
            if item is None:
                return
            with av.open(str(self.path), "w", format=FORMATS[self._codec_name][0]) as container:
                assert self.started is not None
                container.metadata["creation_time"] = self.started.isoformat()
                stream = self._add_stream(container)
                while item is not None:
                    data, pts, key = item
                    packet = av.Packet(data)
                    packet.stream, packet.time_base, packet.is_keyframe = stream, time_base, key
                    packet.pts = packet.dts = pts
                    container.mux(packet)
                    self.frames += 1
                    item = self._queue.get()
        except Exception:
            logger.exception("recording %r failed", self)
            while item is not None:  # None: the error came after the sentinel, when finishing
                item = self._queue.get()

    def _add_stream(self, container: OutputContainer) -> Stream:
        if self._video:
            assert self._size is not None  # known before the first frame was queued
            width, height = self._size
            stream = container.add_mux_stream(self._codec_name, width=width, height=height)
        else:
            # PyAV takes extradata only from a codec context, and opens (initialises) a context
            # unless it was copied from a template: this one stays an unopened shell.
            with av.open(io.BytesIO(), "w", format="webm") as scratch:
                template = scratch.add_stream("libopus", rate=48000)
                stream = container.add_stream_from_template(template)
            stream.codec_context.extradata = OPUS_HEAD
        stream.time_base = Fraction(1, self._codec.clockRate)
        return stream

    async def close(self) -> None:
        """Idempotent (a second call waits for the first): detaches, then the writer thread
        finishes the file off the event loop."""
        if self._closing is not None:
            await self._closing.wait()
            return
        self._closing = asyncio.Event()
        self.track._detach(self)  # type: ignore[arg-type]
        try:
            if self._thread.ident is not None:
                await asyncio.to_thread(self._finish)
        finally:
            self._closing.set()

    def _finish(self) -> None:
        self._queue.put(None)
        self._thread.join()


class Recording:
    """A consult's recording: one file per track in `directory`, named
    `{start:%Y%m%dT%H%M%SZ}-{label}-{kind}.webm` (or `.mkv` for H.264) so a person can tell
    whose it is, what it holds and when it began (UTC)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.recorders: list[TrackRecorder] = []
        self._closed = False

    @property
    def files(self) -> list[Path]:
        """The files written so far; a track that sent nothing has none."""
        return [recorder.path for recorder in self.recorders if recorder.frames]

    async def add(self, track: Track, label: str) -> TrackRecorder:
        """Start recording `track` of participant `label` (ValueError if it cannot be)."""
        if self._closed:
            raise ConnectionError("recording is closed")
        if any(r.track is track and not r.closed for r in self.recorders):
            raise ValueError(f"{track!r} is already being recorded")
        suffix = FORMATS[recordable_codec(track).name.lower()][1]
        safe_label = re.sub(r"[^\w-]+", "_", label)[:64]
        stem = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{safe_label}-{track.kind}"
        self.directory.mkdir(parents=True, exist_ok=True)
        path, n = self.directory / f"{stem}{suffix}", 1
        while path.exists() or any(r.path == path for r in self.recorders):
            n += 1
            path = self.directory / f"{stem}-{n}{suffix}"
        recorder = TrackRecorder(track, path)
        self.recorders.append(recorder)
        await recorder.start()
        return recorder

    async def close(self) -> None:
        """Idempotent: finishes every file."""
        self._closed = True
        await asyncio.gather(*(recorder.close() for recorder in self.recorders))
