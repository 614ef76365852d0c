"""The server's sender of one forwarded stream to one subscriber, installed in place of
aiortc's RTCRtpSender.

aiortc's sender pulls frames from a track and encodes them; this one has no track and no
encoder: the subscription writes already-encoded, rewritten packets into it. It keeps what a
sender owes its receiver: the negotiated SSRC, payload type and header-extension ids, sender
reports, NACK retransmission (RTX when negotiated, else the packet again) from a history, and
it passes keyframe requests and REMB up. It duck-types the parts of RTCRtpSender that
RTCPeerConnection and RTCDtlsTransport call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Protocol

from aiortc import clock
from aiortc.codecs import is_rtx
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
    wrap_rtx,
)
from aiortc.stats import RTCOutboundRtpStreamStats, RTCStatsReport
from aiortc.utils import random32, uint16_add

from .forwarder import PacketHistory

logger = logging.getLogger(__name__)


class SenderListener(Protocol):
    async def on_send(self, sender: "ForwardingSender") -> None: ...

    async def on_keyframe_request(self) -> None: ...

    def on_remb(self, bitrate: int) -> None: ...


@dataclass
class SenderStats:
    packets: int = 0
    octets: int = 0
    retransmitted: int = 0
    fraction_lost: int = 0
    packets_lost: int = 0


class ForwardingSender:
    def __init__(self, kind: str, transport: RTCDtlsTransport, *, stream_id: str,
                 track_id: str, listener: SenderListener, history: int = 1024) -> None:
        self._ssrc = random32()
        self._rtx_ssrc = random32()
        self._stream_id = stream_id
        self._track_id = track_id
        self._enabled = True
        self.stats = SenderStats()
        self.__kind = kind
        self.__transport = transport
        self.__listener = listener
        self.__history = PacketHistory(history)
        self.__extensions = HeaderExtensionsMap()
        self.__payload_type: int | None = None
        self.__rtx_payload_type: int | None = None
        self.__rtx_seq = random_sequence_number()
        self.__clock_rate = 90000
        self.__mid: str | None = None
        self.__cname: str | None = None
        self.__last_ts: int | None = None
        self.__last_sent = 0.0
        self.__rtcp_task: asyncio.Task[None] | None = None
        self.__stopped = False

    @property
    def kind(self) -> str:
        return self.__kind

    @property
    def track(self) -> None:
        return None

    @property
    def transport(self) -> RTCDtlsTransport:
        return self.__transport

    @property
    def ready(self) -> bool:
        """Negotiated and connected: packets written now reach the subscriber."""
        return self.__payload_type is not None and not self.__stopped

    def setTransport(self, transport: RTCDtlsTransport) -> None:
        self.__transport = transport

    def replaceTrack(self, track: object) -> None:
        if track is not None:
            raise ValueError("a forwarding sender carries forwarded packets, not a track")

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        """Called by RTCPeerConnection once DTLS is up, and again on every renegotiation."""
        if self.__payload_type is not None or self.__stopped:
            return
        codec = parameters.codecs[0]
        self.__clock_rate = codec.clockRate
        self.__mid = parameters.muxId
        self.__cname = parameters.rtcp.cname
        self.__extensions.configure(parameters)
        for candidate in parameters.codecs:
            if is_rtx(candidate) and candidate.parameters.get("apt") == codec.payloadType:
                self.__rtx_payload_type = candidate.payloadType
        self.__transport._register_rtp_sender(self, parameters)
        self.__payload_type = codec.payloadType
        self.__rtcp_task = asyncio.create_task(self._run_rtcp())
        await self.__listener.on_send(self)

    async def stop(self) -> None:
        """Irreversible and idempotent; safe before `send` and after a crashed RTCP task."""
        if self.__stopped:
            return
        self.__stopped = True
        self.__transport._unregister_rtp_sender(self)
        if self.__rtcp_task is not None:
            self.__rtcp_task.cancel()
            await asyncio.gather(self.__rtcp_task, return_exceptions=True)
            await self._send_rtcp([RtcpByePacket(sources=[self._ssrc])])

    async def getStats(self) -> RTCStatsReport:
        report = RTCStatsReport()
        report.add(RTCOutboundRtpStreamStats(
            timestamp=clock.current_datetime(), type="outbound-rtp", id=f"outbound-rtp_{id(self)}",
            ssrc=self._ssrc, kind=self.__kind, transportId=self.transport._stats_id,
            packetsSent=self.stats.packets, bytesSent=self.stats.octets, trackId=self._track_id))
        return report

    async def write(self, source: RtpPacket, seq: int, ts: int, abs_send_time: int) -> None:
        """Send one forwarded packet with this subscriber's sequence number and timestamp."""
        if not self.ready or not self._enabled:
            return
        packet = RtpPacket(payload_type=self.__payload_type, marker=source.marker,
                           sequence_number=seq, timestamp=ts, ssrc=self._ssrc,
                           payload=source.payload)
        packet.padding_size = source.padding_size
        extensions = packet.extensions
        extensions.mid = self.__mid
        extensions.abs_send_time = abs_send_time
        extensions.audio_level = source.extensions.audio_level
        data = packet.serialize(self.__extensions)
        self.__history.put(seq, data)
        self.__last_ts, self.__last_sent = ts, time.time()
        self.stats.packets += 1
        self.stats.octets += len(packet.payload)
        await self._send(data)

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self._ssrc:
                    self.stats.fraction_lost = report.fraction_lost
                    self.stats.packets_lost = report.packets_lost
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            for seq in packet.lost:
                await self._retransmit(seq)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            await self.__listener.on_keyframe_request()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self._ssrc in ssrcs:
                self.__listener.on_remb(bitrate)

    async def _retransmit(self, seq: int) -> None:
        data = self.__history.get(seq)
        if data is None or self.__stopped:
            return
        if self.__rtx_payload_type is not None:
            packet = wrap_rtx(RtpPacket.parse(data, self.__extensions),
                              payload_type=self.__rtx_payload_type,
                              sequence_number=self.__rtx_seq, ssrc=self._rtx_ssrc)
            self.__rtx_seq = uint16_add(self.__rtx_seq, 1)
            data = packet.serialize(self.__extensions)
        self.stats.retransmitted += 1
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        try:
            await self.__transport._send_rtp(data)
        except ConnectionError:
            pass

    async def _run_rtcp(self) -> None:
        """Sender reports every 0.5-1.5 s, their RTP time extrapolated from the last packet."""
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())
                if self.__last_ts is None:
                    continue
                elapsed = time.time() - self.__last_sent
                rtp_ts = (self.__last_ts + int(elapsed * self.__clock_rate)) & 0xFFFFFFFF
                packets: list[AnyRtcpPacket] = [RtcpSrPacket(ssrc=self._ssrc, sender_info=RtcpSenderInfo(
                    ntp_timestamp=clock.current_ntp_time(), rtp_timestamp=rtp_ts,
                    packet_count=self.stats.packets & 0xFFFFFFFF,
                    octet_count=self.stats.octets & 0xFFFFFFFF))]
                if self.__cname is not None:
                    packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(
                        ssrc=self._ssrc, items=[(1, self.__cname.encode("utf8"))])]))
                await self._send_rtcp(packets)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("RTCP loop of the %s sender failed", self.__kind)

    async def _send_rtcp(self, packets: list[AnyRtcpPacket]) -> None:
        try:
            await self.__transport._send_rtp(b"".join(bytes(p) for p in packets))
        except ConnectionError:
            pass
