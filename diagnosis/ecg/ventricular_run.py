"""A run of real ventricular complexes spliced into a real recording: how VT alerts are
validated here (tests, the alert-latency bench), since the shared data holds isolated
ventricular beats but no ventricular tachycardia. The complex of one annotated ventricular beat
(from `lead_in_s` before its R peak, one cycle long) is laid end to end at the run's rate, each
copy levelled to start and end at zero, on the straight line between the host's samples at the
run's ends, so the joins carry no step a detector could take for a beat."""

from __future__ import annotations

import numpy as np

from diagnosis.ecg.beats import detrend


def with_ventricular_run(signal: np.ndarray, fs: float, beat: int, after: int, beats: int,
                         rate_bpm: float, lead_in_s: float = 0.15) -> np.ndarray:
    """`signal` (n_samples, n_leads) mV with `beats` copies of the complex whose R peak is at
    sample `beat`, at `rate_bpm`, the first R peak one cycle after the R peak at `after` (so
    the run starts premature, as VT does), in place of what was there."""
    cycle = int(round(60.0 * fs / rate_bpm))
    lead_in = int(round(lead_in_s * fs))
    start = beat - lead_in
    at = after + cycle - lead_in
    stop = at + beats * cycle
    if start < 0 or start + cycle > len(signal) or at < 1 or stop >= len(signal):
        raise ValueError("the complex or the run does not lie inside the recording")
    complex_ = detrend(signal[start:start + cycle])
    host = np.linspace(0.0, 1.0, stop - at + 1)[:-1, None]
    out = signal.copy()
    out[at:stop] = signal[at - 1] + host * (signal[stop] - signal[at - 1]) \
        + np.tile(complex_, (beats, 1))
    return out
