"""Settings of the media plane, validated once when the plane is built."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer


@dataclass(frozen=True)
class IceConfig:
    """Where the server gathers ICE candidates and which STUN/TURN servers it may use.

    `addresses` names the local addresses to offer (Janus `ice_enforce_list`, LiveKit
    `rtc.node_ip`); empty means aioice's default, every interface except loopback. `servers`
    defaults to none, so the server never contacts a third party unless configured to.
    """

    addresses: tuple[str, ...] = ()
    servers: tuple[RTCIceServer, ...] = ()

    def __post_init__(self) -> None:
        for address in self.addresses:
            ipaddress.ip_address(address)


@dataclass(frozen=True)
class SfuConfig:
    ice: IceConfig = field(default_factory=IceConfig)
    keyframe_interval: float = 0.5
    """At most one keyframe request (PLI) per published track in this many seconds."""
    max_bitrate: int = 2_500_000
    """Ceiling of the REMB sent to publishers, in bit/s."""
    rtp_history: int = 1024
    """Packets kept per subscription for NACK retransmission (a power of two)."""

    def __post_init__(self) -> None:
        if self.keyframe_interval <= 0:
            raise ValueError("keyframe_interval must be positive")
        if self.max_bitrate <= 0:
            raise ValueError("max_bitrate must be positive")
        if self.rtp_history <= 0 or self.rtp_history & (self.rtp_history - 1):
            raise ValueError("rtp_history must be a power of two")

    def rtc_configuration(self) -> RTCConfiguration:
        """One BUNDLEd transport per peer connection, ICE servers only from the settings."""
        return RTCConfiguration(iceServers=list(self.ice.servers),
                                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
