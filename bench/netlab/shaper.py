"""One direction of the emulated link as an I/O-free queue model: the emulator feeds it packets
with the current time and asks which packets are due, so the timing rules are testable with a
fake clock."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass

from .units import parse_duration, parse_rate

MTU = 1500


def default_queue_bytes(rate_bps: float) -> int:
    """100 ms of the link rate plus ten full packets: a bottleneck buffer of the order of the
    bandwidth-delay product at 100 ms RTT (so TCP can fill the link), which still holds a few
    packets at very low rates."""
    return int(rate_bps * 0.100 / 8) + 10 * MTU


@dataclass(frozen=True)
class Shape:
    """Rate, one-way delay, random loss and bottleneck buffer of one direction."""

    rate_bps: float
    delay_s: float
    loss: float = 0.0
    queue_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.rate_bps <= 0:
            raise ValueError(f"rate must be positive, not {self.rate_bps}")
        if self.delay_s < 0:
            raise ValueError(f"delay must not be negative, not {self.delay_s}")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss is a probability in [0, 1), not {self.loss}")
        if self.queue_bytes is not None and self.queue_bytes < MTU:
            raise ValueError(f"queue must hold at least one {MTU}-byte packet")

    @classmethod
    def parse(cls, rate: str | float, rtt: str | float, loss: float = 0.0,
              queue_bytes: int | None = None) -> Shape:
        """One direction of a link whose round trip is split evenly:
        Shape.parse("2mbit", "100ms") is 2 Mbit/s with 50 ms one-way delay."""
        return cls(parse_rate(rate), parse_duration(rtt) / 2, loss, queue_bytes)

    @property
    def queue_limit(self) -> int:
        return default_queue_bytes(self.rate_bps) if self.queue_bytes is None else self.queue_bytes

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Shape:
        return cls(**data)


@dataclass
class PipeStats:
    """Packet counts of one direction (lost = random loss, overflowed = queue full, drop-tail),
    and how late the emulator handed packets over, which bounds its timing error."""

    received: int = 0
    lost: int = 0
    overflowed: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    late_total_s: float = 0.0
    late_max_s: float = 0.0

    @property
    def late_mean_s(self) -> float:
        return self.late_total_s / self.delivered if self.delivered else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Pipe:
    """Serialises packets at the rate behind a drop-tail byte queue, then delays them.

    A packet that arrives when the transmitter is busy waits for it; it leaves the transmitter
    size*8/rate seconds after it starts and reaches the far side one delay later. The bytes still
    waiting for the transmitter are (busy_until - now) * rate / 8, which is what the queue limit
    bounds. `shape` may be replaced at any time; it applies to packets offered from then on.
    """

    def __init__(self, shape: Shape, rng: random.Random) -> None:
        self.shape = shape
        self.stats = PipeStats()
        self._rng = rng
        self._busy_until = 0.0
        self._last_arrival = 0.0
        self._in_flight: deque[tuple[float, bytes]] = deque()

    def backlog_bytes(self, now: float) -> float:
        return max(0.0, self._busy_until - now) * self.shape.rate_bps / 8

    def offer(self, packet: bytes, now: float) -> bool:
        """Take a packet the sender put on the link at `now`; False if it was dropped."""
        self.stats.received += 1
        if self.shape.loss and self._rng.random() < self.shape.loss:
            self.stats.lost += 1
            return False
        if self.backlog_bytes(now) + len(packet) > self.shape.queue_limit:
            self.stats.overflowed += 1
            return False
        departure = max(now, self._busy_until) + len(packet) * 8 / self.shape.rate_bps
        self._busy_until = departure
        # A shorter delay set while packets are in flight must not let later ones overtake.
        arrival = max(departure + self.shape.delay_s, self._last_arrival)
        self._last_arrival = arrival
        self._in_flight.append((arrival, packet))
        return True

    def next_due(self) -> float | None:
        """When the next packet reaches the far side, or None when nothing is in flight."""
        return self._in_flight[0][0] if self._in_flight else None

    def pop_due(self, now: float) -> list[bytes]:
        """The packets that have reached the far side by `now`, in order."""
        due = []
        while self._in_flight and self._in_flight[0][0] <= now:
            arrival, packet = self._in_flight.popleft()
            self.stats.delivered += 1
            self.stats.delivered_bytes += len(packet)
            self.stats.late_total_s += now - arrival
            self.stats.late_max_s = max(self.stats.late_max_s, now - arrival)
            due.append(packet)
        return due
