"""The viewer's link, measured on the sending socket itself (Linux TCP_INFO): no replies from
the viewer are awaited. `parse_tcp_info` reads struct tcp_info and `LinkMeter` turns samples
into a rate and an RTT (both I/O-free); `read_tcp_info` and `set_notsent_lowat` are the two
socket calls, which degrade to nothing off Linux."""

from __future__ import annotations

import socket
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

from diagnosis.dicom.plan import Link

TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


@dataclass(frozen=True)
class TcpInfo:
    rtt_s: float
    min_rtt_s: float
    delivery_rate_bps: float
    app_limited: bool
    bytes_acked: int
    notsent_bytes: int
    cwnd: int
    mss: int


def parse_tcp_info(raw: bytes) -> TcpInfo | None:
    """Linux struct tcp_info (kernel 4.19 or later for every field used); None if shorter."""
    if len(raw) < 168:
        return None
    mss, = struct.unpack_from("=I", raw, 16)
    rtt, = struct.unpack_from("=I", raw, 68)
    cwnd, = struct.unpack_from("=I", raw, 80)
    acked, = struct.unpack_from("=Q", raw, 120)
    notsent, min_rtt = struct.unpack_from("=II", raw, 144)
    rate, = struct.unpack_from("=Q", raw, 160)
    return TcpInfo(rtt / 1e6, min_rtt / 1e6, rate * 8.0, bool(raw[7] & 1), acked, notsent, cwnd, mss)


class LinkMeter:
    """Rate and RTT from TCP_INFO samples: the kernel's delivery-rate samples, smoothed, taken
    at face value when the sender was not application-limited (else only as a floor), and the
    acknowledged bytes over the last `window_s` (goodput) while no such sample exists."""

    def __init__(self, window_s: float = 1.0, alpha: float = 0.3) -> None:
        self.window_s, self.alpha = window_s, alpha
        self.rtt_s: float | None = None
        self.min_rtt_s: float | None = None
        self.bytes_acked = 0
        self._rate: float | None = None
        self._acked: deque[tuple[float, int]] = deque()

    def add(self, at: float, info: TcpInfo) -> None:
        self.rtt_s = info.rtt_s or self.rtt_s
        self.min_rtt_s = info.min_rtt_s or self.min_rtt_s
        self.bytes_acked = info.bytes_acked
        self._acked.append((at, info.bytes_acked))
        while len(self._acked) > 2 and at - self._acked[1][0] >= self.window_s:
            self._acked.popleft()
        rate = info.delivery_rate_bps
        if rate > 0 and not info.app_limited:
            self._rate = rate if self._rate is None else self._rate + self.alpha * (rate - self._rate)
        elif rate > (self._rate or 0):
            self._rate = rate

    @property
    def goodput_bps(self) -> float | None:
        if len(self._acked) < 2:
            return None
        (t0, b0), (t1, b1) = self._acked[0], self._acked[-1]
        return (b1 - b0) * 8 / (t1 - t0) if t1 - t0 >= 0.2 else None

    @property
    def rate_bps(self) -> float | None:
        return self._rate or self.goodput_bps

    def link(self) -> Link:
        return Link(self.rate_bps, self.rtt_s)


def read_tcp_info(sock: Any) -> TcpInfo | None:
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256))
    except OSError:
        return None


def set_notsent_lowat(sock: Any, size: int) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, size)
    except (OSError, AttributeError):
        pass  # not Linux: the transport buffer alone bounds what is queued
