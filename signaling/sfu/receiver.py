"""The server's receiver of a publisher's stream, installed in place of aiortc's RTCRtpReceiver.

aiortc's receiver runs every packet through a jitter buffer into a decoder thread. This one
keeps what the publisher needs from a receiver (RTCP receiver reports, NACKs for lost packets,
PLIs, REMB) and hands each RTP packet, RTX already unwrapped, to a listener instead: no jitter
buffer, no decoder thread, no decoder. It duck-types the parts of RTCRtpReceiver that
RTCPeerConnection and RTCDtlsTransport call.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Protocol

from aiortc import MediaStreamTrack
from aiortc.codecs import is_rtx
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)
from aiortc.stats import RTCInboundRtpStreamStats, RTCStatsReport
from aiortc import clock

logger = logging.getLogger(__name__)


class ReceiverListener(Protocol):
    def on_receive(self, receiver: "ForwardingReceiver", codec: RTCRtpCodecParameters,
                   ssrc: int | None) -> None: ...

    async def on_rtp(self, packet: RtpPacket) -> None: ...

    def bitrate_target(self, uplink_estimate: int | None) -> int: ...


class ForwardingReceiver:
    def __init__(self, kind: str, transport: RTCDtlsTransport,
                 track: MediaStreamTrack | None, rtcp_ssrc: int,
                 listener: ReceiverListener) -> None:
        self._enabled = True
        self._track = track
        self.__kind = kind
        self.__transport = transport
        self.__listener = listener
        self.__rtcp_ssrc = rtcp_ssrc
        self.__codecs: dict[int, RTCRtpCodecParameters] = {}
        self.__rtx_ssrc: dict[int, int] = {}
        self.__streams: dict[int, StreamStatistics] = {}
        self.__lsr: dict[int, tuple[int, float]] = {}
        self.__nack = NackGenerator() if kind == "video" else None
        self.__estimator = RemoteBitrateEstimator() if kind == "video" else None
        self.__uplink: int | None = None
        self.__media_ssrc: int | None = None
        self.__rtcp_task: asyncio.Task[None] | None = None
        self.__stopped = False

    @property
    def kind(self) -> str:
        return self.__kind

    @property
    def track(self) -> MediaStreamTrack | None:
        return self._track

    @property
    def transport(self) -> RTCDtlsTransport:
        return self.__transport

    @property
    def media_ssrc(self) -> int | None:
        """The publisher's SSRC, from the SDP or, without one there, its first packet."""
        return self.__media_ssrc

    def setTransport(self, transport: RTCDtlsTransport) -> None:
        self.__transport = transport

    def _set_rtcp_ssrc(self, ssrc: int) -> None:
        self.__rtcp_ssrc = ssrc

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        """Called by RTCPeerConnection once DTLS is up, and again on every renegotiation."""
        if self.__rtcp_task is not None or self.__stopped:
            return
        for codec in parameters.codecs:
            self.__codecs[codec.payloadType] = codec
        for encoding in parameters.encodings:
            self.__media_ssrc = encoding.ssrc
            if encoding.rtx:
                self.__rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        self.__transport._register_rtp_receiver(self, parameters)
        self.__rtcp_task = asyncio.create_task(self._run_rtcp())
        self.__listener.on_receive(self, parameters.codecs[0], self.__media_ssrc)

    async def stop(self) -> None:
        """Irreversible and idempotent; safe before `receive` and after a crashed RTCP task."""
        if self.__stopped:
            return
        self.__stopped = True
        self.__transport._unregister_rtp_receiver(self)
        if self.__rtcp_task is not None:
            self.__rtcp_task.cancel()
            await asyncio.gather(self.__rtcp_task, return_exceptions=True)

    def _handle_disconnect(self) -> None:
        """The DTLS transport ended; the peer connection's state change tells the owner."""

    async def getStats(self) -> RTCStatsReport:
        report = RTCStatsReport()
        for ssrc, stream in self.__streams.items():
            report.add(RTCInboundRtpStreamStats(
                timestamp=clock.current_datetime(), type="inbound-rtp",
                id=f"inbound-rtp_{id(self)}_{ssrc}", ssrc=ssrc, kind=self.__kind,
                transportId=self.transport._stats_id, packetsReceived=stream.packets_received,
                packetsLost=stream.packets_lost, jitter=stream.jitter))
        return report

    async def request_keyframe(self) -> None:
        """Send a PLI to the publisher (throttling is the track's job)."""
        if self.__media_ssrc is not None:
            await self._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.__rtcp_ssrc,
                                                 media_ssrc=self.__media_ssrc))

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket):
            ntp = packet.sender_info.ntp_timestamp
            self.__lsr[packet.ssrc] = ((ntp >> 16) & 0xFFFFFFFF, time.time())

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if not self._enabled:
            return
        codec = self.__codecs.get(packet.payload_type)
        if codec is None:
            return
        if self.__estimator is not None and packet.extensions.abs_send_time is not None:
            remb = self.__estimator.add(abs_send_time=packet.extensions.abs_send_time,
                                        arrival_time_ms=arrival_time_ms,
                                        payload_size=len(packet.payload) + packet.padding_size,
                                        ssrc=packet.ssrc)
            if remb is not None:
                self.__uplink = remb[0]
                await self._send_remb()
        stream = self.__streams.get(packet.ssrc)
        if stream is None:
            stream = self.__streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if is_rtx(codec):
            original_ssrc = self.__rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original_ssrc is None or len(packet.payload) < 2 or apt not in self.__codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
        elif self.__media_ssrc is None:
            self.__media_ssrc = packet.ssrc
        if self.__nack is not None and self.__nack.add(packet):
            nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self.__rtcp_ssrc,
                                   media_ssrc=packet.ssrc)
            nack.lost = sorted(self.__nack.missing)
            await self._send_rtcp(nack)
        await self.__listener.on_rtp(packet)

    async def _run_rtcp(self) -> None:
        """Receiver reports and REMB every 0.5-1.5 s (RFC 3550 randomised interval)."""
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())
                reports = [self._report(ssrc, stream) for ssrc, stream in self.__streams.items()]
                if reports:
                    await self._send_rtcp(RtcpRrPacket(ssrc=self.__rtcp_ssrc, reports=reports))
                await self._send_remb()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("RTCP loop of the %s receiver failed", self.__kind)

    def _report(self, ssrc: int, stream: StreamStatistics) -> RtcpReceiverInfo:
        lsr, dlsr = 0, 0
        if ssrc in self.__lsr:
            lsr, received = self.__lsr[ssrc]
            delay = time.time() - received
            if 0 < delay < 65536:
                dlsr = int(delay * 65536)
        return RtcpReceiverInfo(ssrc=ssrc, fraction_lost=stream.fraction_lost,
                                packets_lost=stream.packets_lost,
                                highest_sequence=stream.max_seq, jitter=stream.jitter,
                                lsr=lsr, dlsr=dlsr)

    async def _send_remb(self) -> None:
        if self.__estimator is None or self.__media_ssrc is None:
            return
        bitrate = self.__listener.bitrate_target(self.__uplink)
        await self._send_rtcp(RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=self.__rtcp_ssrc, media_ssrc=0,
            fci=pack_remb_fci(bitrate, [self.__media_ssrc])))

    async def _send_rtcp(self, packet: AnyRtcpPacket) -> None:
        try:
            await self.__transport._send_rtp(bytes(packet))
        except ConnectionError:
            pass
