"""Debian's `simple-whip-client` (GStreamer webrtcbin + libnice) publishes into a room over WHIP
and an aiortc WHEP player decodes its video and audio.

Network confinement: libnice gathers on every interface it can see, so whip-client runs inside
a network namespace this test creates, whose only interfaces are `lo` and one end of a veth
pair (a free /30 in 10.78.0.0/24, no default route). The server listens on, and gathers ICE
candidates only on, the root-side veth address; whip-client gets no STUN/TURN server. Before
the server's aiortc sees whip-client's offer, a guard around `RoomMedia.publisher_offer`
refuses it unless every candidate in it is the namespace's address, so the server never
sends anywhere else.

Library clash: on Debian 12, whip-client links libsoup 2.4 while libnice links
libgupnp-igd -> libgupnp-1.6 -> libsoup 3, and libsoup aborts a process that loads both
("libsoup2 symbols detected...") as soon as webrtcbin is loaded. whip-client therefore runs
with a no-op libgupnp-igd (four functions, built here with `cc`) on its LD_LIBRARY_PATH only:
libnice handles a missing UPnP agent and just maps no ports, which also keeps UPnP/SSDP
discovery traffic out of the namespace.

DTLS: GStreamer 1.22 (Debian 12) has an RSA-2048 certificate, so the server must complete a
DTLS handshake with an RSA peer in whichever role it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from signaling.media import RoomMedia
from signaling.protocol import ErrorCode, ProtocolError
from signaling.sfu.ice import gather_on
from telemed.app import create_app
from telemed.settings import Settings

from ..conftest import Signaling
from .conftest import CANDIDATE, read_counter, wait_for
from .test_whip import SDP, Player, post_sdp

pytestmark = pytest.mark.slow

IGD_SONAME = "libgupnp-igd-1.0.so.4"
IGD_STUB = """\
/* No-op libgupnp-igd for libnice: no UPnP agent, so no port mappings and no libsoup 3. */
void *gupnp_simple_igd_thread_new(void) { return 0; }
unsigned long gupnp_simple_igd_get_type(void) { return 80; /* G_TYPE_OBJECT */ }
void gupnp_simple_igd_add_port(void) {}
void gupnp_simple_igd_remove_port_local(void) {}
"""
WIDTH, HEIGHT = 320, 240
AUDIO = ("audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc"
         " ! rtpopuspay pt=111 ssrc=1 ! queue"
         " ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111")
VIDEO = (f"videotestsrc is-live=true pattern=white"
         f" ! video/x-raw,width={WIDTH},height={HEIGHT},framerate=15/1 ! videoconvert ! queue"
         " ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2 ! queue"
         " ! application/x-rtp,media=video,encoding-name=VP8,payload=96")
ALL_WHITE = (1 << 16) - 1
"""read_counter() of a white frame: every block is bright."""


def _run(*args: str) -> None:
    result = subprocess.run(args, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"{' '.join(args)}: {result.stderr.strip()}")


def _free_subnet() -> tuple[str, str]:
    """The root-side and namespace-side addresses of a /30 in 10.78.0.0/24 not yet in use
    (10.77.0.0/24 belongs to the link emulator)."""
    namespaces = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    used = "".join(
        subprocess.run(["ip", *(["-n", name] if name else []), "-4", "-o", "address", "show"],
                       check=False, capture_output=True, text=True).stdout
        for name in ["", *namespaces])
    for base in range(0, 256, 4):
        root, inner = f"10.78.0.{base + 1}", f"10.78.0.{base + 2}"
        if f" {root}/" not in used and f" {inner}/" not in used:
            return root, inner
    raise OSError("no free /30 left in 10.78.0.0/24")


@dataclass
class WhipLab:
    """A namespace holding whip-client, joined to the root namespace by a veth pair."""

    namespace: str
    root_address: str
    address: str
    stub_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, url: str, token: str) -> subprocess.Popen[bytes]:
        command = ["ip", "netns", "exec", self.namespace, "whip-client", "--url", url,
                   "--token", token, "--no-trickle", "--disable-colors", "--log-level", "4",
                   "--audio", AUDIO, "--video", VIDEO]
        # GStreamer's DTLS errors (e.g. OpenSSL's reason for a failed handshake) go to the log.
        env = {**os.environ, "LD_LIBRARY_PATH": str(self.stub_dir), "GST_DEBUG": "dtls*:1",
               "GST_DEBUG_NO_COLOR": "1"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env)
        return self.process

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "whip-client said:\n" + "\n".join(text.splitlines()[-40:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


@pytest.fixture
def whip_lab(tmp_path: Path) -> Iterator[WhipLab]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace and a veth pair for whip-client")
    for tool, package in (("whip-client", "simple-whip-client"), ("ip", "iproute2"),
                          ("cc", "gcc")):
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` is missing: install Debian's {package} "
                        f"(scripts/setup.sh --test does)")
    stub_dir = tmp_path / "igd"
    stub_dir.mkdir()
    (stub_dir / "stub.c").write_text(IGD_STUB)
    _run("cc", "-shared", "-fPIC", "-O2", "-nostdlib", f"-Wl,-soname,{IGD_SONAME}",
         "-o", str(stub_dir / IGD_SONAME), str(stub_dir / "stub.c"))

    pid = os.getpid()
    namespace, root_link, inner_link = f"tmwhip-{pid}", f"twhr{pid}", f"twhn{pid}"
    root_address, address = _free_subnet()
    lab = WhipLab(namespace, root_address, address, stub_dir, tmp_path / "whip-client.log")
    try:
        _run("ip", "netns", "add", namespace)
        # IPv4 only in the namespace: no link-local IPv6 candidates, no router solicitations.
        _run("ip", "netns", "exec", namespace, "sh", "-c",
             "! [ -d /proc/sys/net/ipv6 ] || { echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6"
             " && echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; }")
        _run("ip", "link", "add", root_link, "type", "veth", "peer", "name", inner_link,
             "netns", namespace)
        ipv6 = Path("/proc/sys/net/ipv6/conf", root_link, "disable_ipv6")
        if ipv6.exists():
            ipv6.write_text("1")
        _run("ip", "address", "add", f"{root_address}/30", "dev", root_link)
        _run("ip", "link", "set", root_link, "up")
        _run("ip", "-n", namespace, "address", "add", f"{address}/30", "dev", inner_link)
        _run("ip", "-n", namespace, "link", "set", inner_link, "up")
        _run("ip", "-n", namespace, "link", "set", "lo", "up")
        yield lab
    finally:
        with contextlib.suppress(Exception):
            lab.stop()
        with contextlib.suppress(Exception):
            pids = subprocess.run(["ip", "netns", "pids", namespace], check=False,
                                  capture_output=True, text=True).stdout
            for other in pids.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(other), signal.SIGKILL)
        subprocess.run(["ip", "link", "delete", root_link], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "delete", namespace], check=False, capture_output=True)


class VethPlayer(Player):
    """The WHEP player of test_whip, gathering on the root side of the test's veth."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address
        self.sizes: set[tuple[int, int]] = set()

    async def offer(self) -> RTCSessionDescription:
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        await gather_on(self.pc, [self.address])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription

    async def accept(self, sdp: str) -> None:
        assert set(CANDIDATE.findall(sdp)) == {self.address}, CANDIDATE.findall(sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def _read(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.sizes.add((frame.width, frame.height))
                    self.counters.append(read_counter(frame))
                else:
                    self.audio_frames += 1
        except MediaStreamError:
            pass


async def test_simple_whip_client_is_played_by_a_whep_player(
        whip_lab: WhipLab, tmp_path: Path, aiohttp_client, monkeypatch: pytest.MonkeyPatch) -> None:
    offers: list[str] = []
    answers: list[str] = []
    publisher_offer = RoomMedia.publisher_offer

    async def guarded(self: RoomMedia, participant_id: str, sdp: str) -> str:
        offers.append(sdp)
        addresses = set(CANDIDATE.findall(sdp))
        if addresses != {whip_lab.address}:
            raise ProtocolError(ErrorCode.BAD_SDP, f"test guard: offer candidates {addresses}")
        answer = await publisher_offer(self, participant_id, sdp)
        answers.append(answer)
        return answer

    monkeypatch.setattr(RoomMedia, "publisher_offer", guarded)
    root = whip_lab.root_address
    app = create_app(Settings(data_dir=tmp_path / "data", secret_key="s" * 48, host=root,
                              rtc_addresses=(root,)))
    signaling = Signaling(await aiohttp_client(app, server_kwargs={"host": root}))
    expert = await signaling.join("expert")

    url = str(signaling.client.make_url("/whip/room-1"))
    assert url.startswith(f"http://{root}:")
    process = whip_lab.start(url, signaling.token("cart-camera"))
    published: set[str] = set()
    deadline = asyncio.get_running_loop().time() + 12
    while published != {"audio", "video"}:
        if process.poll() is not None or asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"whip-client did not publish audio and video (exit code {process.returncode}, "
                f"published {published or 'nothing'}, candidates in its offers "
                f"{[CANDIDATE.findall(offer) for offer in offers]})\n{whip_lab.log()}")
        with contextlib.suppress(TimeoutError):
            published.add((await expert.next("track_published", timeout=0.5))["track"]["kind"])

    assert "STUN server:    (none)" in whip_lab.log()
    assert len(offers) == 1, offers
    assert set(CANDIDATE.findall(offers[0])) == {whip_lab.address}
    assert set(re.findall(r" typ (\w+)", offers[0])) == {"host"}
    assert set(CANDIDATE.findall(answers[0])) == {root}

    player = VethPlayer(root)
    response = await post_sdp(signaling.client, "/whep/room-1",
                              signaling.token("student", publish=False), (await player.offer()).sdp)
    assert response.status == 201, await response.text()
    assert response.content_type == SDP
    whep_location = response.headers["Location"]
    await player.accept(await response.text())
    try:
        await wait_for(lambda: len(player.counters) > 30 and player.audio_frames > 30,
                       timeout=10, what="the player decoding whip-client's video and audio")
    except AssertionError as error:
        raise AssertionError(f"{error}: {len(player.counters)} video, {player.audio_frames} "
                             f"audio frames\n{whip_lab.log()}") from None
    assert player.sizes == {(WIDTH, HEIGHT)}
    assert set(player.counters) == {ALL_WHITE}
    names = {p.name for p in signaling.rooms.rooms["room-1"].participants.values()}
    assert names == {"Expert", "Cart-Camera (WHIP)", "Student (WHEP)"}

    # whip-client hangs up with DELETE on SIGINT and exits.
    process.send_signal(signal.SIGINT)
    assert (await expert.next("track_unpublished", timeout=5))["participant_id"]
    await wait_for(lambda: process.poll() is not None, timeout=5, what="whip-client to exit")
    assert process.returncode == 0, whip_lab.log()
    assert "Disconnecting from server" in whip_lab.log()

    student = {"Authorization": f"Bearer {signaling.token('student', publish=False)}"}
    assert (await signaling.client.delete(whep_location, headers=student)).status == 200
    await wait_for(lambda: len(signaling.rooms.rooms["room-1"].participants) == 1,
                   what="only the expert left")
    await player.close()
