"""Ventricular fibrillation from the waveform itself, since VF has no QRS complexes to detect.

The VF filter of Kuo and Dillman (1978), as evaluated for defibrillators by Amann et al. (2005):
estimate a window's mean half period from |x| over |dx| (exact for a sinusoid), and measure how
much of the window survives adding it to itself shifted by that half period (the "leakage").
VF, close to a sinusoid, nearly cancels (leakage under `leakage_max`); QRS complexes on a flat
baseline do not (0.65 and up on every record in ../shared/data/ecg). A window also needs its
dominant frequency in the VF band and some amplitude (fine VF and asystole are told apart by
the asystole detector, not here). `windows_to_alert` such windows in a row make an episode.

Windows are `window_s` long and counted from the stream's first sample, so a stream gives the
same episodes however it is chunked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal as sps

from diagnosis.ecg.buffers import BlockFiller
from diagnosis.ecg.filters import StreamingFilter

VF = "VF"


@dataclass(frozen=True)
class VfConf:
    window_s: float = 4.0
    band_hz: tuple[float, float] = (1.0, 30.0)
    """Band-pass before the filter: no baseline wander, no mains, no muscle noise."""
    leakage_max: float = 0.406
    """Amann et al.'s threshold for the VF filter."""
    dominant_hz: tuple[float, float] = (3.0, 10.0)
    """VF's dominant frequency (180-600 per minute); slower sinusoidal rhythms are VT or flutter."""
    min_peak_to_peak_mv: float = 0.1
    windows_to_alert: int = 2


def leakage(windows: np.ndarray) -> np.ndarray:
    """VF filter leakage of each row of (n_windows, n_samples): 0 for a sinusoid, ~0.7 for noise."""
    n = windows.shape[1]
    magnitude = np.abs(windows).sum(axis=1)
    change = np.abs(np.diff(windows, axis=1)).sum(axis=1)
    half = np.floor(np.pi * magnitude / np.maximum(change, np.finfo(float).tiny) + 0.5)
    half = np.clip(half, 1, n - 1).astype(int)
    out = np.empty(len(windows))
    for row, (window, shift) in enumerate(zip(windows, half)):  # one shift per window
        later, earlier = window[shift:], window[:-shift]
        total = np.abs(later).sum() + np.abs(earlier).sum()
        out[row] = np.abs(later + earlier).sum() / total if total > 0 else 1.0
    return out


def dominant_hz(windows: np.ndarray, fs: float, band_hz: tuple[float, float]) -> np.ndarray:
    """The frequency of each window's largest spectral peak within `band_hz` (Hann window)."""
    n = windows.shape[1]
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    power = np.abs(np.fft.rfft(windows * np.hanning(n), axis=1)) ** 2
    inside = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    return freqs[inside][np.argmax(power[:, inside], axis=1)]


def vf_windows(windows: np.ndarray, fs: float, conf: VfConf) -> np.ndarray:
    """Which band-passed windows look like VF."""
    if not len(windows):
        return np.zeros(0, dtype=bool)
    vf = leakage(windows) < conf.leakage_max
    if vf.any():    # the spectrum and amplitude of only the windows that pass the VF filter
        low, high = conf.dominant_hz
        passed = windows[vf]
        dominant = dominant_hz(passed, fs, conf.band_hz)
        vf[vf] = ((dominant >= low) & (dominant <= high)
                  & (np.ptp(passed, axis=1) >= conf.min_peak_to_peak_mv))
    return vf


@dataclass(frozen=True)
class VfEpisode:
    start: int
    end: int | None
    """None while it lasts."""


class VfTracker:
    """One lead in millivolts, chunk by chunk; reports VF episodes as they start and end."""

    def __init__(self, fs: float, conf: VfConf | None = None) -> None:
        self.fs, self.conf = fs, conf or VfConf()
        self.window = max(8, int(round(self.conf.window_s * fs)))
        high = min(self.conf.band_hz[1], 0.45 * fs)
        self._filter = StreamingFilter(
            sps.butter(2, [self.conf.band_hz[0], high], "bandpass", fs=fs, output="sos"), 1)
        self._windows = BlockFiller(self.window, 1)
        """Unfiltered samples: a window is filtered once complete, one filter call per window
        instead of one per chunk (the same samples either way)."""
        self._next_start = 0
        self._run_start = 0
        self._run_length = 0
        self.open: VfEpisode | None = None

    def push(self, samples: np.ndarray) -> tuple[list[VfEpisode], list[VfEpisode]]:
        """(episodes that started, episodes that ended) with the samples of this chunk."""
        complete = self._windows.push(np.asarray(samples, dtype=np.float64).reshape(-1, 1))
        if not len(complete):
            return [], []
        windows = self._filter.process(complete.reshape(-1, 1))[:, 0].reshape(-1, self.window)
        started, ended = [], []
        for is_vf in vf_windows(windows, self.fs, self.conf):
            start, self._next_start = self._next_start, self._next_start + self.window
            if not is_vf:
                self._run_length = 0
                if self.open is not None:
                    ended.append(VfEpisode(self.open.start, start))
                    self.open = None
                continue
            if self._run_length == 0:
                self._run_start = start
            self._run_length += 1
            if self.open is None and self._run_length >= self.conf.windows_to_alert:
                self.open = VfEpisode(self._run_start, None)
                started.append(self.open)
        return started, ended

    def finish(self, end: int) -> list[VfEpisode]:
        """The episode still open at the end of the stream, closed there."""
        if self.open is None:
            return []
        closed, self.open = VfEpisode(self.open.start, end), None
        return [closed]
