"""Measurements across a running Link: ping RTT and loss, TCP connect time, TCP bulk goodput.
Used by `linkemu.py check` and by the tests, so both judge the link the same way."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from .link import LINKEMU, Endpoint, Link, LinkError

PING_BYTES = 84  # an IPv4 echo request with ping's default 56 data bytes
SYN_BYTES = 60  # an IPv4 SYN or SYN-ACK with Linux's MSS, SACK, timestamp and window-scale options
TCP_OVERHEAD = 52  # IPv4 + TCP headers with the timestamp option, per full-sized segment
_BULK_PORT = 5201
_CONNECT_PORT = 5202


@dataclass(frozen=True)
class PingResult:
    sent: int
    received: int
    rtt_min_s: float
    rtt_avg_s: float
    rtt_max_s: float

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent


@dataclass(frozen=True)
class BulkResult:
    """TCP payload bytes per second over `window_s`, measured after `warmup_s` of the transfer."""

    goodput_bps: float
    window_s: float
    warmup_s: float


def expected_rtt(link: Link, packet_bytes: int) -> float:
    """The configured RTT plus the time to serialise a packet of `packet_bytes` each way."""
    return (link.down.delay_s + link.up.delay_s
            + packet_bytes * 8 / link.down.rate_bps + packet_bytes * 8 / link.up.rate_bps)


def goodput_ceiling(rate_bps: float, mtu: int = 1500) -> float:
    """The most TCP payload a link of `rate_bps` (counted in IP bytes) can carry."""
    return rate_bps * (mtu - TCP_OVERHEAD) / mtu


def ping(source: Endpoint, count: int, interval_s: float) -> PingResult:
    """Ping the far side of the link from `source` (intervals under 0.2 s need root)."""
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", f"{interval_s:g}", "-W", "1", source.peer]
    result = source.run(argv, capture_output=True, text=True, timeout=count * interval_s + 30)
    counts = re.search(r"(\d+) packets transmitted, (\d+) received", result.stdout)
    if counts is None:
        raise LinkError(f"ping failed: {result.stdout}{result.stderr}")
    rtts = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", result.stdout)
    low, avg, high = (float(ms) / 1e3 for ms in rtts.groups()) if rtts else (float("nan"),) * 3
    return PingResult(int(counts.group(1)), int(counts.group(2)), low, avg, high)


def tcp_connect_rtts(link: Link, count: int) -> list[float]:
    """Seconds for each of `count` TCP handshakes from the client side to the server side; a
    connect() returns after SYN and SYN-ACK, one round trip."""
    rtts = []
    with link.server.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((link.server.address, _CONNECT_PORT))
        listener.listen(count)
        for _ in range(count):
            with link.client.socket() as sock:
                sock.settimeout(10)
                start = time.monotonic()
                sock.connect((link.server.address, _CONNECT_PORT))
                rtts.append(time.monotonic() - start)
                accepted = listener.accept()[0]
            accepted.close()
    return rtts


def bulk(link: Link, direction: str, seconds: float, warmup_s: float,
         congestion_control: str | None = None) -> BulkResult:
    """Send TCP as fast as possible "down" (server to client) or "up" for warmup + seconds, and
    measure the goodput over the last `seconds` only, when slow start is over. The sender uses
    `congestion_control` if given, else its namespace's default."""
    if direction not in ("down", "up"):
        raise ValueError(f"direction is 'down' or 'up', not {direction!r}")
    sender, receiver = (link.server, link.client) if direction == "down" else (link.client,
                                                                              link.server)
    python = [sys.executable, str(LINKEMU)]
    total = warmup_s + seconds
    sink = receiver.popen([*python, "tcp-sink", receiver.address, str(_BULK_PORT), f"{total:g}"],
                          stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    if not json.loads(sink.stdout.readline() or "{}").get("listening"):
        raise LinkError("the TCP sink did not start")
    choice = [] if congestion_control is None else ["--congestion-control", congestion_control]
    source = sender.popen([*python, "tcp-source", receiver.address, str(_BULK_PORT),
                           f"{total + 30:g}", *choice])
    samples = json.loads(sink.stdout.readline() or "{}").get("samples")
    sink.stdout.close()
    sink.wait(timeout=10)
    source.wait(timeout=10)
    if not samples:
        raise LinkError("the TCP sink received nothing")
    return goodput(samples, warmup_s)


def goodput(samples: list[tuple[float, int]], warmup_s: float) -> BulkResult:
    """Goodput between the last sample at or before `warmup_s` and the final sample."""
    start_t, start_bytes = 0.0, 0
    for t, total in samples:
        if t > warmup_s:
            break
        start_t, start_bytes = t, total
    end_t, end_bytes = samples[-1]
    if end_t <= start_t:
        raise LinkError("the transfer ended before the warm-up did")
    return BulkResult((end_bytes - start_bytes) * 8 / (end_t - start_t), end_t - start_t, start_t)
