"""A current of injury added to a real recording: how the STEMI elevation criteria are validated
here (tests, the alert-latency bench), since the shared data's one infarct record meets only
the posterior equivalent. The ST segment of the chosen leads is lifted from just before each R
peak (so it is fully there at the J point) through the T wave, back to the baseline 400 ms
after R; the PR segment, the reference ST is measured against, is untouched."""

from __future__ import annotations

import numpy as np

from diagnosis.ecg import qrs


def with_injury(signal: np.ndarray, fs: float, amounts: dict[int, float]) -> np.ndarray:
    """`signal` (n_samples, n_leads) mV with `amounts` (lead index: mV) of injury current."""
    t = np.arange(len(signal))
    shape = np.zeros(len(signal))
    for peak in qrs.detect_qrs(signal, fs):  # one ramp per beat
        rise = np.clip((t - (peak - 0.01 * fs)) / (0.04 * fs), 0, 1)
        fall = np.clip(((peak + 0.40 * fs) - t) / (0.15 * fs), 0, 1)
        shape = np.maximum(shape, np.minimum(rise, fall))
    out = signal.copy()
    for lead, mv in amounts.items():
        out[:, lead] += mv * shape
    return out
