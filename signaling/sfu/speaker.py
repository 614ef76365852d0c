"""I/O-free active speaker detection from the RFC 6464 audio level of each publisher's packets.

Levels are smoothed per source (time constant `smoothing`); the loudest source above
`threshold_dbov` becomes the speaker, and the speaker changes at most once per `hold` seconds
unless the current one goes silent, so short interjections do not make the view flicker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)

SILENT = 127


@dataclass
class _Level:
    loudness: float
    updated: float


@dataclass
class ActiveSpeakerDetector(Generic[K]):
    threshold_dbov: int = 50
    smoothing: float = 0.3
    hold: float = 1.0
    stale: float = 1.0
    speaker: K | None = None
    _since: float = -math.inf
    _levels: dict[K, _Level] = field(default_factory=dict)

    def observe(self, key: K, level_dbov: int, now: float) -> None:
        """One packet's level: 0 is the loudest (0 dBov), 127 silence (-127 dBov)."""
        loudness = float(SILENT - min(max(level_dbov, 0), SILENT))
        entry = self._levels.get(key)
        if entry is None:
            self._levels[key] = _Level(loudness, now)
            return
        weight = 1.0 - math.exp(-max(now - entry.updated, 0.0) / self.smoothing)
        entry.loudness += (loudness - entry.loudness) * weight
        entry.updated = now

    def loudness(self, key: K) -> float:
        """The smoothed level of `key` as a fraction: 0 silent, 1 as loud as 0 dBov."""
        entry = self._levels.get(key)
        return round(entry.loudness / SILENT, 3) if entry is not None else 0.0

    def forget(self, key: K) -> None:
        self._levels.pop(key, None)
        if self.speaker == key:
            self.speaker, self._since = None, -math.inf

    def poll(self, now: float) -> bool:
        """Re-evaluate; True if `speaker` changed."""
        floor = SILENT - self.threshold_dbov
        active = {key: level.loudness for key, level in self._levels.items()
                  if level.loudness >= floor and now - level.updated <= self.stale}
        loudest = max(active, key=active.__getitem__, default=None)
        if loudest == self.speaker or loudest is None:
            return False
        if self.speaker in active and now - self._since < self.hold:
            return False
        self.speaker, self._since = loudest, now
        return True
