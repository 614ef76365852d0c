"""I/O-free rewriting of one source's RTP into one subscriber's stream (LiveKit
`sfu/forwarder.go`): sequence numbers and timestamps move by fixed offsets from a random
origin, so the subscriber sees a continuous stream of its own, reordered and retransmitted
packets keep their order, and packets from before the subscription started are dropped (only
while the stream is young: after `REORDER_WINDOW` packets the 16-bit comparison with the first
packet would no longer mean "older")."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from aiortc.utils import uint16_add, uint16_gt, uint32_add

REORDER_WINDOW = 4096


@dataclass
class RtpRewriter:
    seq_origin: int = field(default_factory=lambda: random.randrange(1 << 15))
    ts_origin: int = field(default_factory=lambda: random.randrange(1 << 32))
    started: bool = False
    _young: bool = True
    _first_seq: int = 0
    _seq_offset: int = 0
    _ts_offset: int = 0
    _last: tuple[int, int] | None = None
    _ts_gap: int | None = None

    def rewrite(self, seq: int, ts: int) -> tuple[int, int] | None:
        """The subscriber's (sequence number, timestamp), or None to drop the packet."""
        if not self.started:
            self.started = True
            self._young = True
            self._first_seq = seq
            if self._last is None:
                self._seq_offset = (self.seq_origin - seq) & 0xFFFF
                self._ts_offset = (self.ts_origin - ts) & 0xFFFFFFFF
            else:
                self._seq_offset = (self._last[0] + 1 - seq) & 0xFFFF
                self._ts_offset = (self._last[1] + (self._ts_gap or 1) - ts) & 0xFFFFFFFF
        elif self._young:
            if uint16_gt(self._first_seq, seq):
                return None
            self._young = (seq - self._first_seq) & 0xFFFF < REORDER_WINDOW
        out = uint16_add(seq, self._seq_offset), uint32_add(ts, self._ts_offset)
        if self._last is None or uint16_gt(out[0], self._last[0]):
            self._last = out
        return out

    def restart(self, ts_gap: int) -> None:
        """The source was interrupted (paused, or its stream changed): the next packet continues
        the subscriber's stream right after the last one sent, `ts_gap` clock ticks later, so the
        subscriber sees no hole in sequence numbers to ask retransmission for."""
        self.started = False
        self._ts_gap = max(ts_gap, 1)


@dataclass
class PacketHistory:
    """The last `size` packets sent to one subscriber, by its sequence number, for NACKs.

    Kept as serialized bytes in two flat lists: with dozens of subscribers that is tens of
    thousands of packets, and as Python objects every full garbage collection would walk them
    all, pausing forwarding to every subscriber at once."""

    size: int = 1024
    _seqs: list[int] = field(init=False)
    _packets: list[bytes | None] = field(init=False)

    def __post_init__(self) -> None:
        self._seqs = [-1] * self.size
        self._packets = [None] * self.size

    def put(self, seq: int, packet: bytes) -> None:
        slot = seq & (self.size - 1)
        self._seqs[slot], self._packets[slot] = seq, packet

    def get(self, seq: int) -> bytes | None:
        slot = seq & (self.size - 1)
        return self._packets[slot] if self._seqs[slot] == seq else None
