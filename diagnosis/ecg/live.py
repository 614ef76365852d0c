"""Live analysis of a stream as it is received: the streaming analyzer fed the stored samples,
and what became final turned into the message followers get.

The analyzer's results depend on the samples only, never on how they were chunked, so an
analyzer rebuilt after a restart (fed everything stored so far at once) carries on exactly as
the one that was lost, and `report_for` over the stored samples gives what followers were told.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from diagnosis.ecg import streams
from diagnosis.ecg.analysis import StreamAnalyzer, Update, analyze
from diagnosis.ecg.ingest import StreamFormat
from diagnosis.ecg.quality import flag_names
from diagnosis.ecg.record import EcgRecord


def _number(value: float, digits: int = 3) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


class LiveAnalysis:
    def __init__(self, fmt: StreamFormat, sex: str | None, age: float | None) -> None:
        self.leads = fmt.leads
        self.analyzer = StreamAnalyzer(fmt.fs, fmt.leads, sex, age)
        self.format = fmt

    @classmethod
    def resume(cls, fmt: StreamFormat, sex: str | None, age: float | None, path: Path,
               stored: int) -> "LiveAnalysis":
        """An analyzer that has seen the first `stored` samples of the stream's file."""
        live = cls(fmt, sex, age)
        if stored:
            stored_samples = streams.read_samples(path, len(fmt.leads), 0, stored)
            live.analyzer.push(fmt.millivolts(stored_samples))
        return live

    def push(self, samples: np.ndarray) -> dict[str, Any] | None:
        """Stored int16 samples in; the `analysis` message for followers, or None when
        nothing became final."""
        now = self.analyzer.current_rhythm
        update = self.analyzer.push(self.format.millivolts(samples))
        if not (update.beats or update.rhythms or update.alerts or update.st or update.quality
                or self.analyzer.current_rhythm != now):
            return None
        return self.message(update)

    def finish(self) -> dict[str, Any]:
        """The stream ended: what the last samples settle (final rhythm episodes)."""
        return self.message(self.analyzer.finish())

    def message(self, update: Update) -> dict[str, Any]:
        last_st = update.st[-1].deviation_mv if update.st else None
        last_quality = update.quality[-1] if update.quality else None
        now = self.analyzer.current_rhythm
        return {
            "type": "analysis",
            "up_to_sample": self.analyzer.n_samples,
            "beats": [{"sample": b.sample, "label": b.label, "hr_bpm": _number(b.hr_bpm, 1),
                       "hr_avg_bpm": _number(b.hr_avg_bpm, 1)} for b in update.beats],
            "rhythms": [{"start": e.start, "end": e.end, "label": e.label}
                        for e in update.rhythms],
            "rhythm_now": None if now is None else {"label": now.label, "since": now.start},
            "alerts": [alert.as_json() for alert in update.alerts],
            "st_mv": None if last_st is None else {
                lead: _number(v) for lead, v in zip(self.leads, last_st)},
            "quality": None if last_quality is None else {
                lead: {"sqi": _number(last_quality.sqi[i]),
                       "flags": flag_names(last_quality.flags[i])}
                for i, lead in enumerate(self.leads)},
        }


def stored_record(fmt: StreamFormat, sex: str | None, age: float | None, path: Path,
                  stored: int) -> EcgRecord:
    """The first `stored` samples of a stream as a record: the integers as received, with
    the gains and baselines they came with; the "no sample" marker is missing."""
    return fmt.record(streams.read_samples(path, len(fmt.leads), 0, stored), sex, age)


def report_for(fmt: StreamFormat, sex: str | None, age: float | None, path: Path,
               stored: int) -> dict[str, Any]:
    """The analysis of everything stored, as `telemed ecg analyze --json` prints it."""
    return analyze(stored_record(fmt, sex, age, path, stored)).as_json()
