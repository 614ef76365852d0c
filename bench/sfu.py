"""One publisher of pre-encoded VP8 (640x480, 30 fps, ~1 Mbit/s) to N non-decoding subscribers,
through a server running in its own process: our SFU (`forward`), Janus's VideoRoom (`janus`),
and aiortc's decode-and-re-encode MediaRelay (`relay`), on the same load in one run.

    python bench/sfu.py [--subscribers 1,2,4,8,16,32,64] [--janus 1,2,4,8,16,32,64]
                        [--relay 1,2,4] [--seconds 8] [--warmup 3]
    python bench/sfu.py serve --mode forward|janus|relay [--workdir DIR]   (started by the above)

For each N the servers run one after the other (forward, janus, relay), so a change in the
machine's background load affects them alike. Per round it prints the server's CPU per
forwarded stream per second, loss, and the added forwarding latency p50/p99: publisher send
(before SRTP) to subscriber socket arrival, matched by payload, all clients in this process on
one clock. The server's CPU is that of the process that forwards: the `serve` process itself
(all threads) for forward and relay, the janus process (utime + stime from /proc) for janus;
the small translator that speaks this benchmark's API to Janus is not counted. The relay
re-encodes, so payloads differ and only its CPU and received rate are comparable. At the end a
table per N compares the three (our CPU over Janus's, over the relay's) and checks the targets.

A server mode is a process speaking the small HTTP API in `serve` (publish, subscribe, answer,
cpu). For `janus` that process starts Janus (`janus_videoroom.py`: a private configuration
with only the VideoRoom plugin and the HTTP transport on 127.0.0.1, no STUN, and the
`janus_ifaddrs.c` LD_PRELOAD shim so that Janus gathers on loopback; see
shared/notes/webrtc-on-this-machine.md) and translates the API to VideoRoom requests. Every
server process, and Janus, dies with its parent; Janus's temporary directory is removed by
this process whatever happens. Every remote SDP is checked to offer only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.rtp import RtpPacket, is_rtcp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from janus_videoroom import JanusProcess, VideoRoom, VideoRoomClient  # noqa: E402

from signaling.sfu import IceConfig, MediaPlane, SfuConfig, Track  # noqa: E402
from signaling.sfu.ice import gather_on  # noqa: E402
from signaling.sfu.receiver import ForwardingReceiver  # noqa: E402
from signaling.sfu.transceiver import install_receiver  # noqa: E402

LOOPBACK = "127.0.0.1"
WIDTH, HEIGHT, FPS, BITRATE, GOP = 640, 480, 30, 1_000_000, 60
CLOCK = 90000


def description(data: dict) -> RTCSessionDescription:
    return RTCSessionDescription(sdp=data["sdp"], type=data["type"])


def as_json(desc: RTCSessionDescription) -> dict:
    return {"sdp": desc.sdp, "type": desc.type}


def peer_connection() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


# The server process -------------------------------------------------------------------------


class Server:
    """What `serve` needs of a server mode; CPU is this process's own (all threads)."""

    def __init__(self, workdir: Path | None) -> None:
        self.workdir = workdir

    async def start(self) -> None:
        pass

    def cpu(self) -> float:
        return time.process_time()

    async def close(self) -> None:
        pass


class ForwardServer(Server):
    """The SFU: packets forwarded, never decoded."""

    def __init__(self, workdir: Path | None) -> None:
        super().__init__(workdir)
        self.plane = MediaPlane(SfuConfig(ice=IceConfig(addresses=(LOOPBACK,))))
        self.video: asyncio.Future[Track] = asyncio.get_running_loop().create_future()

    def _on_track(self, track: Track) -> None:
        if track.kind == "video" and not self.video.done():
            self.video.set_result(track)

    async def publish(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        return await self.plane.publisher("publisher", on_track=self._on_track).answer(offer)

    async def subscribe(self, name: str) -> RTCSessionDescription:
        peer = self.plane.subscriber(name)
        self.plane.subscribe(peer, await self.video)
        return await peer.offer()

    async def answer(self, name: str, answer: RTCSessionDescription) -> None:
        await self.plane.subscribers[name].accept(answer)

    async def close(self) -> None:
        await self.plane.close()


class RelayServer(Server):
    """aiortc's MediaRelay: the publisher's video decoded once, re-encoded per subscriber."""

    def __init__(self, workdir: Path | None) -> None:
        super().__init__(workdir)
        self.relay = MediaRelay()
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.video: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "video" and not self.video.done():
            self.video.set_result(track)

    async def publish(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        pc = self.pcs["publisher"] = peer_connection()
        pc.on("track", self._on_track)
        await pc.setRemoteDescription(offer)
        await gather_on(pc, [LOOPBACK])
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription

    async def subscribe(self, name: str) -> RTCSessionDescription:
        pc = self.pcs[name] = peer_connection()
        pc.addTransceiver(self.relay.subscribe(await self.video, buffered=False), direction="sendonly")
        await gather_on(pc, [LOOPBACK])
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription

    async def answer(self, name: str, answer: RTCSessionDescription) -> None:
        await self.pcs[name].setRemoteDescription(answer)

    async def close(self) -> None:
        # subscribers first, so the relay's encoders stop before its source does
        for name, pc in sorted(self.pcs.items(), key=lambda item: item[0] == "publisher"):
            await pc.close()


class JanusServer(Server):
    """Janus VideoRoom in its own process; this process only translates the API. CPU is the
    janus process's (utime + stime of all its threads), not this translator's."""

    def __init__(self, workdir: Path | None) -> None:
        if workdir is None:
            raise ValueError("janus needs --workdir")
        super().__init__(workdir)
        self.janus = JanusProcess(workdir)
        self.client: VideoRoomClient | None = None
        self.room: VideoRoom | None = None

    async def start(self) -> None:
        await self.janus.start()
        self.client = VideoRoomClient(self.janus.url)
        await self.client.connect()
        self.room = VideoRoom(self.client)

    def cpu(self) -> float:
        return self.janus.cpu()

    async def publish(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        return description(await self.room.publish(as_json(offer)))

    async def subscribe(self, name: str) -> RTCSessionDescription:
        return description(await self.room.subscribe(name))

    async def answer(self, name: str, answer: RTCSessionDescription) -> None:
        await self.room.answer(name, as_json(answer))

    async def close(self) -> None:
        try:
            if self.client is not None:
                await self.client.close()
        finally:
            await self.janus.stop()
            # the benchmark removes it too; this covers a benchmark killed outright
            shutil.rmtree(self.workdir, ignore_errors=True)


SERVERS = {"forward": ForwardServer, "janus": JanusServer, "relay": RelayServer}
_PR_SET_PDEATHSIG = 1


async def serve(mode: str, workdir: Path | None) -> None:
    # SIGTERM when the benchmark dies (even by SIGKILL), so no server outlives it
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    if os.getppid() == 1:
        return
    server = SERVERS[mode](workdir)
    runner: web.AppRunner | None = None
    try:
        await server.start()

        async def publish(request: web.Request) -> web.Response:
            return web.json_response(as_json(await server.publish(description(await request.json()))))

        async def subscribe(request: web.Request) -> web.Response:
            return web.json_response(as_json(await server.subscribe(request.match_info["name"])))

        async def answer(request: web.Request) -> web.Response:
            await server.answer(request.match_info["name"], description(await request.json()))
            return web.json_response({})

        async def cpu(request: web.Request) -> web.Response:
            decoders = sum(t.name.endswith("-decoder") for t in threading.enumerate())
            return web.json_response({"cpu": server.cpu(), "decoders": decoders})

        app = web.Application()
        app.add_routes([web.post("/publish", publish), web.post("/subscribe/{name}", subscribe),
                        web.post("/answer/{name}", answer), web.get("/cpu", cpu)])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        print(json.dumps({"port": site._server.sockets[0].getsockname()[1]}), flush=True)
        await stop.wait()
    finally:
        try:
            await server.close()
        finally:
            if runner is not None:
                await runner.cleanup()


# The load generator -------------------------------------------------------------------------


def encode_clip(seconds: int) -> list[bytes]:
    """A moving test pattern, VP8 at a constant ~1 Mbit/s with a keyframe every 2 s."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base, codec.framerate = Fraction(1, FPS), Fraction(FPS)
    codec.bit_rate, codec.gop_size = BITRATE, GOP
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                     "minrate": str(BITRATE), "maxrate": str(BITRATE), "keyint_min": str(GOP)}
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    packets: list[bytes] = []
    for i in range(seconds * FPS):
        image = ((x + 4 * i) % 256 + (y // 2)).astype(np.uint8)
        image[100:260, (i * 6) % 480:(i * 6) % 480 + 160] = rng.integers(0, 255, (160, 160))
        frame = av.VideoFrame.from_ndarray(np.stack([image] * 3, axis=-1), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        if i % GOP == 0:
            frame.pict_type = av.video.frame.PictureType.I
        packets += [bytes(p) for p in codec.encode(frame)]
    packets += [bytes(p) for p in codec.encode(None)]
    return packets


class PacketTrack(MediaStreamTrack):
    """Loops pre-encoded frames at 30 fps with ever-increasing timestamps (no burst at the loop)."""

    kind = "video"

    def __init__(self, clip: list[bytes]) -> None:
        super().__init__()
        self._clip, self._count, self._start = clip, 0, 0.0

    async def recv(self) -> av.Packet:
        loop = asyncio.get_running_loop()
        if self._count == 0:
            self._start = loop.time()
        delay = self._start + self._count / FPS - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        packet = av.Packet(self._clip[self._count % len(self._clip)])
        packet.pts, packet.time_base = self._count * (CLOCK // FPS), Fraction(1, CLOCK)
        self._count += 1
        return packet


@dataclass
class SendLog:
    """When each publisher RTP packet left, by payload and by sequence number."""

    payload_type: int | None = None
    index: dict[bytes, int] = field(default_factory=dict)
    by_seq: dict[int, int] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def record(self, data: bytes) -> None:
        if data[1] & 0x7F != self.payload_type:
            return
        packet = RtpPacket.parse(data)
        self.index[packet.payload] = self.by_seq[packet.sequence_number] = len(self.times)
        self.seqs.append(packet.sequence_number)
        self.times.append(time.perf_counter())


class Pacer:
    """Spreads RTP at 2.5x the media bitrate, like libwebrtc's paced sender, instead of sending
    a whole keyframe back to back as aiortc does."""

    def __init__(self, rate_bps: float) -> None:
        self.rate, self.next = rate_bps, 0.0

    async def wait(self, size: int) -> None:
        now = time.perf_counter()
        if self.next > now:
            await asyncio.sleep(self.next - now)
        self.next = max(now, self.next) + size * 8 / self.rate


class BenchSubscriber:
    """A subscriber that never decodes. Until it knows how the SFU shifted sequence numbers, a
    ForwardingReceiver decrypts and matches payloads; after that each datagram is stamped and
    matched from its cleartext SRTP header as the socket is read, and dropped, so this
    process's own work does not delay the arrival times of the others."""

    def __init__(self, log: SendLog) -> None:
        self.pc = peer_connection()
        self.log = log
        self.arrivals: deque[float] = deque()
        self.arrival = 0.0
        self.received: dict[int, float] = {}
        self.seq_offset: int | None = None
        self.ssrc: int | None = None
        self.octets = 0

    def on_receive(self, receiver: ForwardingReceiver, codec: object, ssrc: int | None) -> None:
        pass

    async def on_rtp(self, packet: RtpPacket) -> None:
        self.octets += len(packet.payload)
        index = self.log.index.get(packet.payload)
        if index is None:
            return
        if self.seq_offset is None:
            self.seq_offset = (packet.sequence_number - self.log.seqs[index]) & 0xFFFF
            self.ssrc = packet.ssrc
        self.received.setdefault(index, self.arrival - self.log.times[index])

    def bitrate_target(self, uplink_estimate: int | None) -> int:
        return uplink_estimate or 10 * BITRATE

    def _header_only(self, data: bytes, now: float) -> bool:
        if (self.seq_offset is None or len(data) < 12 or not 127 < data[0] < 192
                or is_rtcp(data) or int.from_bytes(data[8:12], "big") != self.ssrc):
            return False
        self.octets += len(data)
        seq = (int.from_bytes(data[2:4], "big") - self.seq_offset) & 0xFFFF
        index = self.log.by_seq.get(seq)
        if index is not None:
            self.received.setdefault(index, now - self.log.times[index])
        return True

    def _timestamp_arrivals(self, transceiver) -> None:
        ice = transceiver.receiver.transport.transport
        connection, recv = ice._connection, ice._recv
        received = connection.data_received

        def data_received(data: bytes, component: int) -> None:
            now = time.perf_counter()
            if not self._header_only(data, now):
                self.arrivals.append(now)
                received(data, component)

        async def timed_recv() -> bytes:
            data = await recv()
            self.arrival = self.arrivals.popleft() if self.arrivals else time.perf_counter()
            return data

        connection.data_received, ice._recv = data_received, timed_recv

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(offer)
        for transceiver in self.pc.getTransceivers():
            install_receiver(transceiver, ForwardingReceiver(
                transceiver.kind, transceiver.receiver.transport, transceiver.receiver.track,
                transceiver.sender._ssrc, self))
        self._timestamp_arrivals(self.pc.getTransceivers()[0])
        await gather_on(self.pc, [LOOPBACK])
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription


@dataclass
class Result:
    mode: str
    n: int
    cpu_core: float
    cpu_per_stream: float
    loss: float | None
    p50_ms: float | None
    p99_ms: float | None
    kbit_per_sub: float
    decoders: int


def loopback_only(desc: RTCSessionDescription, what: str) -> RTCSessionDescription:
    """A remote SDP must offer candidates, and only on 127.0.0.1 (anything else is a bug)."""
    candidates = [line for line in desc.sdp.splitlines() if line.startswith("a=candidate:")]
    if not candidates:
        raise RuntimeError(f"{what}: no ICE candidate in the SDP")
    for line in candidates:
        parts = line.split()
        if len(parts) < 5 or parts[4] != LOOPBACK:
            raise RuntimeError(f"{what}: candidate other than {LOOPBACK}: {line}")
    return desc


async def stop_process(process: asyncio.subprocess.Process | None, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if the server has not closed in `timeout` seconds."""
    if process is None:
        return
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def run_round(mode: str, n: int, clip: list[bytes], warmup: float, seconds: float) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix=f"telemed-bench-{mode}-")) if mode == "janus" else None
    command = [sys.executable, __file__, "serve", "--mode", mode]
    if workdir is not None:
        command += ["--workdir", str(workdir)]
    process: asyncio.subprocess.Process | None = None
    publisher = peer_connection()
    subscribers: list[BenchSubscriber] = []
    try:
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"the {mode} server exited ({await process.wait()}) before listening")
        port = json.loads(line)["port"]
        base = f"http://{LOOPBACK}:{port}"
        async with aiohttp.ClientSession() as http:
            async def post(path: str, body: dict | None = None) -> dict:
                async with http.post(base + path, json=body) as response:
                    response.raise_for_status()
                    return await response.json()

            async def cpu() -> dict:
                async with http.get(base + "/cpu") as response:
                    response.raise_for_status()
                    return await response.json()

            log = SendLog()
            transceiver = publisher.addTransceiver(PacketTrack(clip), direction="sendonly")
            await gather_on(publisher, [LOOPBACK])
            await publisher.setLocalDescription(await publisher.createOffer())
            answer = description(await post("/publish", as_json(publisher.localDescription)))
            await publisher.setRemoteDescription(loopback_only(answer, f"{mode} publisher answer"))
            log.payload_type = transceiver._codecs[0].payloadType
            send = transceiver.sender.transport._send_rtp

            pacer = Pacer(2.5 * BITRATE)

            async def logged_send(data: bytes) -> None:
                if not is_rtcp(data):
                    await pacer.wait(len(data))
                    log.record(data)
                await send(data)

            transceiver.sender.transport._send_rtp = logged_send

            async def add_subscriber(i: int) -> None:
                subscriber = BenchSubscriber(log)
                subscribers.append(subscriber)
                offer = description(await post(f"/subscribe/s{i}"))
                loopback_only(offer, f"{mode} subscriber offer")
                await post(f"/answer/s{i}", as_json(await subscriber.answer(offer)))

            for start in range(0, n, 8):
                await asyncio.gather(*(add_subscriber(i) for i in range(start, min(n, start + 8))))
            # Every subscriber connected and receiving (our SFU starts each at the next
            # keyframe, up to 2 s away) before the warm-up, so a slow start is not counted as loss.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10 + n / 4
            while any(s.octets == 0 for s in subscribers) and loop.time() < deadline:
                await asyncio.sleep(0.1)
            silent = sum(s.octets == 0 for s in subscribers)
            if silent:
                print(f"warning: {mode} N={n}: {silent} subscribers received nothing", file=sys.stderr)
            await asyncio.sleep(warmup)
            before, first, t0 = await cpu(), len(log.times), time.perf_counter()
            octets0 = sum(s.octets for s in subscribers)
            await asyncio.sleep(seconds)
            after, last, t1 = await cpu(), len(log.times), time.perf_counter()
            octets1 = sum(s.octets for s in subscribers)
            await asyncio.sleep(0.5)
    finally:
        try:
            await asyncio.gather(*(s.pc.close() for s in subscribers), return_exceptions=True)
            await publisher.close()
        finally:
            try:
                await stop_process(process)
            finally:
                if workdir is not None:
                    shutil.rmtree(workdir, ignore_errors=True)
    elapsed = t1 - t0
    cpu_s = after["cpu"] - before["cpu"]
    kbit = (octets1 - octets0) * 8 / elapsed / 1000 / n
    if mode == "relay":
        return Result(mode, n, cpu_s / elapsed, cpu_s / elapsed / n, None, None, None, kbit, after["decoders"])
    window = range(first, last)
    delays = sorted(d for s in subscribers for i, d in s.received.items() if i in window)
    expected = len(window) * n
    lost = expected - len(delays)

    def quantile(q: float) -> float | None:
        return delays[min(len(delays) - 1, int(q * len(delays)))] * 1000 if delays else None

    return Result(mode, n, cpu_s / elapsed, cpu_s / elapsed / n, lost / expected if expected else None,
                  quantile(0.5), quantile(0.99), kbit, after["decoders"])


def print_result(r: Result) -> None:
    loss = "n/a" if r.loss is None else f"{r.loss * 100:.3f}%"
    p50 = "n/a" if r.p50_ms is None else f"{r.p50_ms:.2f}"
    p99 = "n/a" if r.p99_ms is None else f"{r.p99_ms:.2f}"
    print(f"{r.mode:8} {r.n:4} {r.cpu_core * 100:8.2f} {r.cpu_per_stream * 100:10.3f} "
          f"{loss:>8} {p50:>7} {p99:>7} {r.kbit_per_sub:9.0f} {r.decoders:4}", flush=True)


MODES = ("forward", "janus", "relay")
TARGET_N = (16, 32, 64)
TARGET_JANUS_RATIO = 1.5
TARGET_RELAY_RATIO = 1 / 20
TARGET_P99_N, TARGET_P99_MS = 32, 5.0
TARGET_LOSS_N = 64


def print_summary(results: dict[tuple[str, int], Result]) -> None:
    def cpu(mode: str, n: int) -> str:
        r = results.get((mode, n))
        return f"{r.cpu_per_stream * 100:.3f}" if r else "-"

    def ratio(mode: str, n: int) -> str:
        ours, other = results.get(("forward", n)), results.get((mode, n))
        if ours is None or other is None or other.cpu_per_stream <= 0:
            return "-"
        value = ours.cpu_per_stream / other.cpu_per_stream
        return f"1/{1 / value:.1f}" if mode == "relay" and value < 1 else f"{value:.2f}"

    def loss(mode: str, n: int) -> str:
        r = results.get((mode, n))
        return "-" if r is None or r.loss is None else f"{r.loss * 100:.3f}%"

    def latency(mode: str, n: int) -> str:
        r = results.get((mode, n))
        if r is None or r.p50_ms is None or r.p99_ms is None:
            return "-"
        return f"{r.p50_ms:.2f}/{r.p99_ms:.2f}"

    print()
    print("per N: CPU in % of one core per forwarded stream (server process CPU / N); "
          "fwd/x = our CPU per stream over x's; latency p50/p99 in ms")
    print(f"{'N':>4} {'forward':>8} {'janus':>8} {'relay':>8} {'fwd/janus':>9} {'fwd/relay':>9} "
          f"{'fwd loss':>8} {'jan loss':>8} {'fwd p50/p99':>12} {'jan p50/p99':>12}")
    for n in sorted({n for _, n in results}):
        print(f"{n:4} {cpu('forward', n):>8} {cpu('janus', n):>8} {cpu('relay', n):>8} "
              f"{ratio('janus', n):>9} {ratio('relay', n):>9} {loss('forward', n):>8} "
              f"{loss('janus', n):>8} {latency('forward', n):>12} {latency('janus', n):>12}",
              flush=True)


def print_targets(results: dict[tuple[str, int], Result]) -> None:
    """The issue's targets for our SFU, each MET, MISSED or not measured in this run."""
    def verdict(ok: bool) -> str:
        return "met   " if ok else "MISSED"

    print()
    print("targets (our SFU = forward):")
    for n in TARGET_N:
        ours, janus = results.get(("forward", n)), results.get(("janus", n))
        if ours and janus:
            value = ours.cpu_per_stream / janus.cpu_per_stream
            print(f"  {verdict(value <= TARGET_JANUS_RATIO)} N={n}: CPU per stream {value:.2f}x "
                  f"Janus's (target <= {TARGET_JANUS_RATIO}x)")
        else:
            print(f"  not measured: N={n} forward vs janus")
    relays = [r for (mode, _), r in results.items() if mode == "relay"]
    if relays:
        cheapest = min(relays, key=lambda r: r.cpu_per_stream)
        for n in TARGET_N:
            ours = results.get(("forward", n))
            if ours:
                value = ours.cpu_per_stream / cheapest.cpu_per_stream
                print(f"  {verdict(value <= TARGET_RELAY_RATIO)} N={n}: CPU per stream 1/"
                      f"{1 / value:.0f} of the relay's cheapest ({cheapest.cpu_per_stream * 100:.2f} "
                      f"% at N={cheapest.n}) (target <= 1/{1 / TARGET_RELAY_RATIO:.0f})")
    else:
        print("  not measured: relay")
    p99 = results.get(("forward", TARGET_P99_N))
    if p99 and p99.p99_ms is not None:
        print(f"  {verdict(p99.p99_ms < TARGET_P99_MS)} N={TARGET_P99_N}: p99 added latency "
              f"{p99.p99_ms:.2f} ms (target < {TARGET_P99_MS} ms)")
    else:
        print(f"  not measured: N={TARGET_P99_N} forward latency")
    lossy = {n: r.loss for (mode, n), r in results.items()
             if mode == "forward" and n <= TARGET_LOSS_N and r.loss is not None}
    if lossy:
        worst = max(lossy, key=lambda n: lossy[n])
        print(f"  {verdict(lossy[worst] == 0)} no loss up to N={max(lossy)}: worst "
              f"{lossy[worst] * 100:.3f}% at N={worst} (target: none up to N={TARGET_LOSS_N})")


async def bench(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    clip = encode_clip(args.clip)
    kbit = sum(map(len, clip)) * 8 / args.clip / 1000
    print(f"clip: {len(clip)} frames {WIDTH}x{HEIGHT} VP8, {kbit:.0f} kbit/s, keyframe every "
          f"{GOP // FPS} s (encoded in {time.perf_counter() - started:.1f} s); "
          f"{args.warmup:g} s warm-up, {args.seconds:g} s measured per round")
    print(f"{'mode':8} {'N':>4} {'cpu%core':>8} {'%core/strm':>10} {'loss':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'kbit/sub':>9} {'dec':>4}", flush=True)
    plan = {"forward": args.subscribers, "janus": args.janus, "relay": args.relay}
    results: dict[tuple[str, int], Result] = {}
    for n in sorted({n for counts in plan.values() for n in counts}):
        for mode in MODES:
            if n in plan[mode]:
                result = results[mode, n] = await run_round(mode, n, clip, args.warmup, args.seconds)
                print_result(result)
    print_summary(results)
    print_targets(results)


def counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    server = sub.add_parser("serve")
    server.add_argument("--mode", choices=sorted(SERVERS), default="forward")
    server.add_argument("--workdir", type=Path, help="an empty directory for the server's files")
    parser.add_argument("--subscribers", type=counts, default=counts("1,2,4,8,16,32,64"),
                        help="N for our SFU (forward)")
    parser.add_argument("--janus", type=counts, default=counts("1,2,4,8,16,32,64"),
                        help="N for Janus VideoRoom (empty to skip)")
    parser.add_argument("--relay", type=counts, default=counts("1,2,4"),
                        help="N for aiortc's MediaRelay (~8-14 %% of a core per subscriber)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clip", type=int, default=10, help="seconds of video to pre-encode")
    args = parser.parse_args()
    try:
        if args.command == "serve":
            asyncio.run(serve(args.mode, args.workdir))
        else:
            asyncio.run(bench(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
