"""I/O-free bandwidth feedback for one publisher's track (REMB).

The publisher should send no more than its own uplink carries (the receiver's estimate) and
than the slowest subscriber's downlink reports (their REMB), capped by the configured maximum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable


@dataclass
class BitrateFeedback:
    max_bitrate: int
    uplink: int | None = None
    _downlinks: dict[Hashable, int] = field(default_factory=dict)

    def downlink(self, key: Hashable, bitrate: int) -> None:
        self._downlinks[key] = bitrate

    def forget(self, key: Hashable) -> None:
        self._downlinks.pop(key, None)

    def target(self) -> int:
        """The bitrate to announce to the publisher, in bit/s."""
        candidates = [self.max_bitrate, *self._downlinks.values()]
        if self.uplink is not None:
            candidates.append(self.uplink)
        return max(min(candidates), 1)
