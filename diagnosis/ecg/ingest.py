"""Exactly-once reception of a frame stream: I/O-free, so it is tested frame by frame.

The receiver acknowledges the highest contiguous sequence number, holds early frames until the
gap before them is filled, drops duplicates, reports gaps, and refuses frames that would change
the stream's sample rate, leads, gains or baselines, or that come from too far in the future.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from diagnosis.ecg.frames import MISSING_SAMPLE, Frame
from diagnosis.ecg.record import EcgRecord, millivolts

SATURATED = (-32767, 32767)


class StreamError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StreamFormat:
    """What the stream's integers mean: mV = (sample - baseline) / gain, per lead."""

    fs: float
    leads: tuple[str, ...]
    gain: tuple[float, ...]
    baseline: tuple[int, ...] = ()
    """Empty: 0 for every lead."""

    def __post_init__(self) -> None:
        if not self.baseline:
            object.__setattr__(self, "baseline", (0,) * len(self.leads))

    def millivolts(self, samples: np.ndarray) -> np.ndarray:
        """Stored integers (n, leads) in mV; the "no sample" marker is missing (NaN), as in a
        file's record (as -164 mV it would be a plunge for the analysis to take for a beat)."""
        return millivolts(samples, self.gain, self.baseline, samples == MISSING_SAMPLE)

    def record(self, samples: np.ndarray, sex: str | None = None,
               age: float | None = None) -> EcgRecord:
        """Stored integers (n, leads) as a record: the integers as received with their gains
        and baselines (what an export writes), the "no sample" marker missing."""
        return EcgRecord.from_digital(samples, self.fs, self.leads, np.asarray(self.gain),
                                      np.asarray(self.baseline), samples == MISSING_SAMPLE,
                                      sex=sex, age=age)


@dataclass
class Received:
    ack: int
    ready: list[Frame] = field(default_factory=list)
    duplicate: bool = False
    missing: list[tuple[int, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    complete: bool = False
    rejected: list[StreamError] = field(default_factory=list)
    """Frames dropped while releasing (their sample index does not fit); the sender resends."""


def sample_warnings(frame: Frame) -> list[str]:
    """Missing-value and saturated samples are kept as sent, and said out loud."""
    missing = np.count_nonzero(frame.samples == MISSING_SAMPLE, axis=0)
    saturated = np.count_nonzero(np.isin(frame.samples, SATURATED), axis=0)
    notes = []
    for lead, gone, clipped in zip(frame.leads, missing, saturated, strict=True):
        if gone:
            notes.append(f"lead {lead}: {gone} missing samples in frame {frame.seq}")
        if clipped:
            notes.append(f"lead {lead}: {clipped} saturated samples in frame {frame.seq}")
    return notes


class StreamReceiver:
    def __init__(self, stream_id: str, fmt: StreamFormat | None = None, next_seq: int = 0,
                 next_sample: int = 0, window: int = 512, complete: bool = False) -> None:
        self.stream_id = stream_id
        self.format = fmt
        self.next_seq = next_seq
        self.next_sample = next_sample
        self.window = window
        self.complete = complete
        self._early: dict[int, Frame] = {}

    @property
    def ack(self) -> int:
        return self.next_seq - 1

    def missing(self) -> list[tuple[int, int]]:
        """Gaps below the highest frame held, as inclusive ranges."""
        gaps, start = [], self.next_seq
        for seq in sorted(self._early):
            if seq > start:
                gaps.append((start, seq - 1))
            start = seq + 1
        return gaps

    def _check_format(self, frame: Frame) -> None:
        fmt = StreamFormat(frame.fs, frame.leads, frame.gain, frame.baseline)
        if self.format is None:
            self.format = fmt
        elif fmt != self.format:
            changed = [name for name in ("fs", "leads", "gain", "baseline")
                       if getattr(fmt, name) != getattr(self.format, name)]
            raise StreamError("format_changed", f"frame {frame.seq} changes the stream's "
                              f"{', '.join(changed)}; start a new stream for a new set-up")

    def accept(self, frame: Frame) -> Received:
        if str(frame.stream_id) != self.stream_id:
            raise StreamError("wrong_stream", f"frame is for stream {frame.stream_id}")
        if frame.seq < self.next_seq or frame.seq in self._early:
            return Received(self.ack, duplicate=True, missing=self.missing(),
                            complete=self.complete)
        if self.complete:
            raise StreamError("stream_ended", "the stream has ended; no frames follow its last")
        if frame.seq >= self.next_seq + self.window:
            raise StreamError("too_far_ahead", f"frame {frame.seq} is more than {self.window} "
                              f"frames ahead of {self.next_seq}; resend from {self.next_seq}")
        self._check_format(frame)
        self._early[frame.seq] = frame
        result = Received(self.ack, warnings=sample_warnings(frame))
        while self.next_seq in self._early:
            ready = self._early.pop(self.next_seq)
            if ready.first_sample != self.next_sample:
                result.rejected.append(StreamError(
                    "bad_sample_index", f"frame {ready.seq} starts at sample {ready.first_sample}; "
                    f"the stream is at {self.next_sample}"))
                break
            result.ready.append(ready)
            self.next_seq += 1
            self.next_sample += ready.n_samples
            if ready.end:
                self.complete = True
                self._early.clear()
                break
        result.ack, result.missing, result.complete = self.ack, self.missing(), self.complete
        return result
