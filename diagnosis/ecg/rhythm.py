"""Rhythm episodes from the beat sequence: AF, sinus rate classes, pauses, ventricular runs.

Atrial fibrillation is called per RR interval from four windowed features, each the
physiology of AF in one number (Dash et al. 2009 and Lake & Moorman 2011 use relatives of the
first three):

* irregularity: the median normalised successive difference |RR_i - RR_i-1| / mean of the two
  over `af_half_window` RRs on either side; sinus rhythm stays near 0.01-0.03.
* spread: the share of those differences that are intermediate (`spread_band`); AF's are
  spread continuously, sinus arrhythmia gives only small ones, and ectopic beats, bigeminy,
  Wenckebach or flutter with variable block give mostly large jumps.
* level structure: the within-cluster share of variance after the best split of the window's
  log RR values into two groups (Otsu's criterion). Regularly irregular rhythms (atrial flutter
  with variable conduction, 2:1/3:2 block, bigeminy) sit on a few discrete RR levels and
  score near 0; AF's continuous spread scores 0.2-0.4.
* atrial coherence: the energy of the average of the pre-QRS segments of the beats in a
  window over the average energy of one (1 for identical P waves, about 1/n for f waves).

An RR interval is AF when all four say so; the call is then smoothed by a majority over
`smooth_half_window` RRs either side. The thresholds were chosen on the nine CPSC 2021
records (three patients: duration Se 95.7 %, Sp 98.3 %) and checked on MIT-BIH SVDB 800 (no AF;
99.5 % of it called non-AF); three patients are few, so they should be re-checked on more. The
level-structure feature is what tells CPSC patient 35's atrial flutter with variable block
(RR on a few levels, no P waves) from AF; the coherence is what finds fast AF with nearly
regular RR (patient 101).

Non-AF intervals are SINUS, BRADY (< `brady_bpm`) or TACHY (> `tachy_bpm`) by the median RR
over `rate_half_window` RRs either side, so a rate class must hold over about half a window,
and it lasts until the rate is `hysteresis_bpm` back inside the limits; a new class is called
only once it has held for `rate_min_beats` intervals.
Every windowed call looks a fixed number of beats ahead, so a stream gets final calls that
long after the beat and the same calls a batch run gets. Base episodes tile the stream from
sample 0 to its end; ventricular runs (>= 3 consecutive V beats; VT when their rate is over
`vt_bpm`, else VRUN) overlay them, and so do the stretches without beats that the caller
judges with `gap_label`: PAUSE (> `pause_s`, 2.0 s, the usual Holter cut-off) and ASYSTOLE
(>= `asystole_s`, 4 s, the usual monitor alarm).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from functools import lru_cache

import numpy as np

from diagnosis.ecg.buffers import SampleBuffer
from diagnosis.ecg.medians import median

AF, SINUS, BRADY, TACHY = "AF", "SINUS", "BRADY", "TACHY"
PAUSE, ASYSTOLE, VT, VRUN = "PAUSE", "ASYSTOLE", "VT", "VRUN"
_BASE = (AF, SINUS, BRADY, TACHY)
RATE_CLASSES = (SINUS, BRADY, TACHY)


@dataclass(frozen=True)
class Episode:
    start: int
    end: int
    """Exclusive."""
    label: str


@dataclass(frozen=True)
class RhythmConf:
    af_half_window: int = 12
    irregularity: float = 0.05
    spread_band: tuple[float, float] = (0.06, 0.25)
    spread: float = 0.2
    level_structure: float = 0.1
    coherence_half_window: int = 8
    coherence: float = 0.4
    smooth_half_window: int = 4
    rate_half_window: int = 4
    brady_bpm: float = 50.0
    tachy_bpm: float = 100.0
    hysteresis_bpm: float = 5.0
    """A rate class is entered beyond its limit and left only this far back inside it."""
    rate_min_beats: int = 4
    """A rate class is called only once it holds for this many intervals in a row (the
    whole stream if shorter): a rate at a limit, or a flutter's block switching between two
    RR levels, flickered between SINUS and BRADY every beat or two (CPSC 2021 35_6: 20
    episodes in 2 min). Free in latency: the AF calls the episodes wait for look further."""
    pause_s: float = 2.0
    asystole_s: float = 4.0
    run_beats: int = 3
    vt_bpm: float = 100.0

    def __post_init__(self) -> None:
        ok = (self.af_half_window >= 1 and self.coherence_half_window >= 1
              and self.smooth_half_window >= 0 and self.rate_half_window >= 0
              and 0 < self.brady_bpm < self.tachy_bpm and self.hysteresis_bpm >= 0
              and self.rate_min_beats >= 1
              and 0 < self.pause_s < self.asystole_s
              and self.run_beats >= 2 and self.vt_bpm > 0
              and 0 <= self.spread_band[0] < self.spread_band[1])
        if not ok:
            raise ValueError("invalid RhythmConf")



def rate_class(previous: str, bpm: float, conf: RhythmConf) -> str:
    """The rate class at `bpm` after `previous`: BRADY or TACHY beyond their limits, left only
    `hysteresis_bpm` back inside them, so a rate hovering at a limit does not flicker."""
    if previous == BRADY and bpm >= conf.brady_bpm + conf.hysteresis_bpm:
        previous = SINUS
    elif previous == TACHY and bpm <= conf.tachy_bpm - conf.hysteresis_bpm:
        previous = SINUS
    if bpm < conf.brady_bpm:
        return BRADY
    if bpm > conf.tachy_bpm:
        return TACHY
    return previous


def gap_label(seconds: float, conf: RhythmConf) -> str | None:
    """PAUSE or ASYSTOLE for a stretch without beats, None for an ordinary RR interval."""
    if seconds >= conf.asystole_s:
        return ASYSTOLE
    if seconds > conf.pause_s:
        return PAUSE
    return None


PRE_QRS_S = (0.25, 0.06)
"""The pre-QRS segment whose coherence tells P waves from f waves: from 250 ms to 60 ms before
R, which holds the P wave and PR segment of PR intervals up to ~200 ms."""


# ---- features on arrays (each window is reduced on its own, so results do not depend on
# ---- how many windows are computed at once) ----

def successive_differences(rr: np.ndarray) -> np.ndarray:
    """|RR_i - RR_i-1| over their mean, per interval; the first gets the second's (0 if alone)."""
    rr = np.asarray(rr, dtype=np.float64)
    if len(rr) < 2:
        return np.zeros(len(rr))
    d = np.abs(np.diff(rr)) / (0.5 * (rr[1:] + rr[:-1]))
    return np.concatenate([d[:1], d])


def level_structure(log_rr_windows: np.ndarray) -> np.ndarray:
    """Within-group variance share after the best two-group split of each window (rows)."""
    w = np.sort(log_rr_windows, axis=1)
    n = w.shape[1]
    c1, c2 = np.cumsum(w, axis=1), np.cumsum(w * w, axis=1)
    left_n = np.arange(1, n)
    s1, q1 = c1[:, :-1], c2[:, :-1]
    s2, q2 = c1[:, -1:] - s1, c2[:, -1:] - q1
    within = (q1 - s1 ** 2 / left_n) + (q2 - s2 ** 2 / (n - left_n))
    total = c2[:, -1] - c1[:, -1] ** 2 / n
    return np.where(total > 1e-12, within.min(axis=1, initial=np.inf) / np.maximum(total, 1e-12),
                    0.0)


def decimated(segments: np.ndarray, factor: int) -> np.ndarray:
    """Means over `factor` consecutive samples (n, length // factor, leads); P and f waves
    lie below 15 Hz, so ~100 Hz keeps them and cuts the work fivefold at 500 Hz."""
    if factor <= 1:
        return segments
    n, length, leads = segments.shape
    usable = length // factor * factor
    return segments[:, :usable].reshape(n, length // factor, factor, leads).mean(axis=2)


def detrended(segments: np.ndarray) -> np.ndarray:
    """Each segment (n, length, leads) minus its own straight-line fit, NaN as 0."""
    x = np.asarray(segments, dtype=np.float64)
    nan = np.isnan(x)
    if nan.any():
        x = np.where(nan, 0.0, x)
    if x.shape[1] < 2:
        return np.zeros_like(x)
    t, t_energy = _centred_ramp(x.shape[1])
    x = x - x.mean(axis=1, keepdims=True)
    return x - t * ((x * t).sum(axis=1, keepdims=True) / t_energy)


@lru_cache(maxsize=8)
def _centred_ramp(length: int) -> tuple[np.ndarray, float]:
    """-1 .. 1 over `length` samples, shaped to multiply (n, length, leads), and its energy."""
    t = np.linspace(-1.0, 1.0, length)[None, :, None]
    t.flags.writeable = False
    return t, (t * t).sum()


def coherence(window: np.ndarray) -> float:
    """|mean segment|^2 / mean |segment|^2 over a (n, ...) stack of detrended segments."""
    # The ufuncs' own reductions: numpy's wrappers cost more than these small sums.
    energy = float(np.add.reduce(window * window, axis=None))
    if not energy > 0:
        return 1.0
    mean = np.add.reduce(window, axis=0)
    return float(np.add.reduce(mean * mean, axis=None)) / (energy * len(window))


def coherences(windows: np.ndarray) -> np.ndarray:
    """`coherence` of each window of a (k, n, row) stack, the same bits (each sum runs over
    the same contiguous values in the same order) for a few calls instead of a few per window."""
    k, n = windows.shape[:2]
    flat = windows.reshape(k, -1)
    energy = np.add.reduce(flat * flat, axis=1)
    mean = np.add.reduce(windows, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.add.reduce(mean * mean, axis=1) / (energy * n)
    return np.where(energy > 0, ratio, 1.0)


class _Log:
    """An append-only series of numbers addressed by absolute index (amortised O(1) append)."""

    def __init__(self, dtype: type) -> None:
        self._data = np.empty(256, dtype=dtype)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def extend(self, values: np.ndarray | list) -> None:
        values = np.asarray(values, dtype=self._data.dtype).ravel()
        if self.n + len(values) > len(self._data):
            grown = np.empty(max(2 * len(self._data), self.n + len(values)), self._data.dtype)
            grown[:self.n] = self._data[:self.n]
            self._data = grown
        self._data[self.n:self.n + len(values)] = values
        self.n += len(values)

    def __getitem__(self, key: slice | int):
        return self._data[:self.n][key]


class LiveRate:
    """The rate class of the heart rate a follower is shown, for the live display while the
    settled calls, which wait for the AF windows, lag ~16 beats behind (a follower read
    "48 bpm, SINUS" for 20 s). Classed as the settled calls are (`rate_class`); a new class
    is taken once it has held for `rate_min_beats` beats."""

    def __init__(self, conf: RhythmConf) -> None:
        self.conf = conf
        self.episode: Episode | None = None
        """The class called now, since the first beat of the run that made it (the first
        class since the stream's start); None before the first rate and after the end."""
        self._called = SINUS
        self._run_start = 0
        self._run_beats = 0

    def add(self, sample: int, bpm: float) -> None:
        """The next beat and the rate shown with it (NaN for the first: no rate yet)."""
        if math.isnan(bpm):
            return
        called = rate_class(self._called, bpm, self.conf)
        if called != self._called or not self._run_beats:
            self._called, self._run_start, self._run_beats = called, sample, 0
        self._run_beats += 1
        if self.episode is None:
            self.episode = Episode(0, -1, called)
        elif called != self.episode.label and self._run_beats >= self.conf.rate_min_beats:
            self.episode = Episode(self._run_start, -1, called)

    def finish(self) -> None:
        self.episode = None


class RhythmTracker:
    """Feed beats in order (sample, label, pre-QRS segment); get episodes as they close."""

    COHERENCE_HZ = 100.0
    SETTLE_BEATS = 8

    def __init__(self, fs: float, conf: RhythmConf | None = None) -> None:
        self.fs = float(fs)
        self.conf = conf or RhythmConf()
        self._decimation = max(int(round(self.fs / self.COHERENCE_HZ)), 1)
        self._samples = _Log(np.int64)
        self._rr = _Log(np.float64)
        """RR interval i, in seconds, ends at beat i + 1."""
        self._labels: list[str] = []
        self._segments: SampleBuffer | None = None
        """Pre-QRS segments (decimated, detrended, flattened to rows; row i is beat i) of the
        beats whose coherence is not final yet, and of the window before them."""
        self._raw_segments: list[np.ndarray] = []
        """Segments as given, decimated and detrended in one go when calls are settled."""
        self._coherence = _Log(np.float64)
        self._af_raw = _Log(np.bool_)
        self._n_base = 0
        """RR intervals with a final base label."""
        self._rate_raw: list[str] = []
        """Per-interval rate class (`_settle_rates`), final as far as it goes."""
        self._rate_class = SINUS
        """The rate class called at the last interval with a final base label."""
        self._open: Episode | None = None
        self._run: list[int] = []
        """Beat indices of the current run of ventricular beats."""
        self._run_alerted = False
        self._settled_at = 0

    @property
    def current(self) -> Episode | None:
        """The rhythm called now (end -1: open): a VT run once it has alerted; else AF while
        rate/AF episode; None before the first call. Live information only: when it changes
        depends on how the stream was chunked, the episodes reported do not."""
        if self._run_alerted:
            return Episode(int(self._samples[self._run[0]]), -1, VT)
        return self._open

    # -- input --

    def add(self, samples: np.ndarray, labels: list[str], segments: np.ndarray
            ) -> tuple[list[Episode], list[tuple[str, int]]]:
        """Next beats with their pre-QRS segments (n, length, leads) of baseline-free signal
        (`PRE_QRS_S`); returns closed episodes and (kind, sample) alerts (VT). Pauses are
        the caller's (`gap_label`): it knows when a stretch without beats is final."""
        episodes: list[Episode] = []
        alerts: list[tuple[str, int]] = []
        samples = np.asarray(samples, dtype=np.int64)
        if not len(samples):
            return episodes, alerts
        joined = np.concatenate([self._samples[-1:], samples])
        self._rr.extend((joined[1:] - joined[:-1]) / self.fs)
        self._samples.extend(samples)
        self._raw_segments.append(np.asarray(segments, dtype=np.float64))
        for label in labels:
            self._labels.append(label)
            self._track_run(episodes, alerts)
        # The windowed calls are settled every few beats rather than on every one: the calls
        # are the same, only reported up to SETTLE_BEATS later, and the fixed cost of the
        # array operations is shared.
        if len(self._samples) - self._settled_at >= self.SETTLE_BEATS:
            episodes.extend(self._advance(at_end=False))
            self._settled_at = len(self._samples)
        return episodes, alerts

    def finish(self, end: int) -> list[Episode]:
        """End of stream at sample `end`: settle every call and close the open episodes."""
        episodes = self._advance(at_end=True)
        episodes.extend(self._close_run())
        if self._open is not None:
            episodes.append(Episode(self._open.start, max(end, self._open.start + 1),
                                    self._open.label))
            self._open = None
        return episodes

    # -- ventricular runs, decided beat by beat --

    def run_rate_bpm(self, beats: list[int]) -> float:
        """Mean rate over the RR intervals ending at the run's beats (the first one's
        coupling interval included when there is a beat before it)."""
        first = beats[0] - 1 if beats[0] > 0 else beats[0]
        span = int(self._samples[beats[-1]]) - int(self._samples[first])
        count = beats[-1] - first
        return 60.0 * self.fs * count / span if span > 0 and count > 0 else float("nan")

    def _track_run(self, episodes: list[Episode], alerts: list[tuple[str, int]]) -> None:
        index = len(self._labels) - 1
        if self._labels[index] != "V":
            episodes.extend(self._close_run())
            return
        self._run.append(index)
        if len(self._run) >= self.conf.run_beats and not self._run_alerted:
            if self.run_rate_bpm(self._run) > self.conf.vt_bpm:
                alerts.append((VT, int(self._samples[index])))
                self._run_alerted = True

    def _close_run(self) -> list[Episode]:
        run, self._run = self._run, []
        self._run_alerted = False
        if len(run) < self.conf.run_beats:
            return []
        label = VT if self.run_rate_bpm(run) > self.conf.vt_bpm else VRUN
        return [Episode(int(self._samples[run[0]]), int(self._samples[run[-1]]) + 1, label)]

    # -- windowed calls --

    def _advance(self, at_end: bool) -> list[Episode]:
        self._settle_coherence(at_end)
        self._settle_af(at_end)
        return self._settle_base(at_end)

    def _settle_coherence(self, at_end: bool) -> None:
        if self._raw_segments:
            batch = detrended(decimated(np.concatenate(self._raw_segments), self._decimation))
            self._raw_segments = []
            if self._segments is None:
                # Enough rows for every beat not settled since the last call and the windows
                # around them (calls are settled at least every SETTLE_BEATS beats).
                keep = 2 * self.conf.coherence_half_window + self.SETTLE_BEATS
                self._segments = SampleBuffer(int(np.prod(batch.shape[1:])), keep)
            self._segments.append(batch.reshape(len(batch), -1))
        half = self.conf.coherence_half_window
        n = len(self._samples)
        start, stop = len(self._coherence), n if at_end else n - half
        # Beats whose window the stream's ends cut one by one, those with a whole one (all
        # but a few) in one stack.
        first, last = max(start, half), min(stop, n - half)
        if first >= last:
            first = last = stop
        values = [self._cut_coherence(i, n) for i in range(start, first)]
        if first < last:
            rows = self._segments.window(first - half, last + half)
            values += coherences(rows[np.arange(last - first)[:, None]
                                      + np.arange(2 * half + 1)]).tolist()
        values += [self._cut_coherence(i, n) for i in range(last, stop)]
        self._coherence.extend(values)

    def _cut_coherence(self, beat: int, n: int) -> float:
        half = self.conf.coherence_half_window
        return coherence(self._segments.window(max(beat - half, 0), min(beat + half + 1, n)))

    def _differences(self, lo: int, hi: int) -> np.ndarray:
        """`successive_differences` of all RR intervals, entries lo..hi-1 (from the tail)."""
        if lo == 0:
            return successive_differences(self._rr[0:hi])
        rr = self._rr[lo - 1:hi]
        return np.abs(np.diff(rr)) / (0.5 * (rr[1:] + rr[:-1]))

    def _settle_af(self, at_end: bool) -> None:
        """AF calls per RR interval from a window of exactly `2 * af_half_window + 1`
        intervals, centred where the stream allows and shifted inwards at its ends; a stream
        with fewer intervals gets no AF call (RR features over fewer beats mistook frequent
        premature atrial beats for AF on 10 s 12-lead records)."""
        c = self.conf
        half = c.af_half_window
        size = 2 * half + 1
        n_rr = len(self._rr)
        # Interval i's window ends at max(i + half, size - 1); it also needs the coherence of
        # its closing beat i + 1.
        if at_end:
            stop = n_rr
        else:
            stop = min(n_rr - half if n_rr >= size else 0, len(self._coherence) - 1)
        start = len(self._af_raw)
        if stop <= start:
            return
        if n_rr < size:
            self._af_raw.extend(np.zeros(stop - start, dtype=bool))
            return
        first = np.minimum(np.maximum(np.arange(start, stop) - half, 0), n_rr - size)
        lo, hi = int(first[0]), int(first[-1]) + size
        index = (first - lo)[:, None] + np.arange(size)
        d = self._differences(lo, hi)[index]
        irregular = median(d, axis=1) > c.irregularity
        band = (d >= c.spread_band[0]) & (d < c.spread_band[1])
        spread = np.count_nonzero(band, axis=1) / size > c.spread
        log_rr = np.log(np.maximum(self._rr[lo:hi], 1e-3))
        levels = level_structure(log_rr[index]) > c.level_structure
        coherent = self._coherence[start + 1:stop + 1] >= c.coherence
        self._af_raw.extend(irregular & spread & levels & ~coherent)

    @staticmethod
    def _edge_windows(log: _Log, start: int, stop: int, half: int) -> np.ndarray:
        """Windows of 2*half+1 entries centred on start..stop-1, the series' own first and
        last entries repeated beyond its ends."""
        around = np.arange(start, stop)[:, None] + np.arange(-half, half + 1)
        return log[:][np.minimum(np.maximum(around, 0), len(log) - 1)]

    def _settle_base(self, at_end: bool) -> list[Episode]:
        c = self.conf
        n = len(self._af_raw)
        sm = c.smooth_half_window
        ready = self._settle_rates(at_end)
        stop = n if at_end else min(n - sm, ready - (c.rate_min_beats - 1))
        start = self._n_base
        if stop <= start:
            return []
        is_af = (self._edge_windows(self._af_raw, start, stop, sm).sum(axis=1) > sm).tolist()
        labels = []
        for i, af in enumerate(is_af, start):
            # A new rate class holds for `rate_min_beats` intervals (or the whole of a shorter
            # stream) before it is called.
            held = self._rate_raw[i:i + c.rate_min_beats]
            if (held[0] != self._rate_class
                    and len(held) >= min(c.rate_min_beats, ready)
                    and held.count(held[0]) == len(held)):
                self._rate_class = held[0]
            labels.append(AF if af else self._rate_class)
        episodes = []
        for offset, label in enumerate(labels):
            if self._open is None:
                self._open = Episode(0, -1, label)
            elif label != self._open.label:
                boundary = int(self._samples[start + offset])   # interval i starts at beat i
                episodes.append(Episode(self._open.start, boundary, self._open.label))
                self._open = Episode(boundary, -1, label)
        self._n_base = stop
        return episodes

    def _settle_rates(self, at_end: bool) -> int:
        """Extend the per-interval rate classes (median RR over `rate_half_window` either side,
        with hysteresis) as far as their windows are final; returns how many there are."""
        c = self.conf
        rh = c.rate_half_window
        start, stop = len(self._rate_raw), len(self._rr) if at_end else len(self._rr) - rh
        if stop > start:
            bpm = (60.0 / median(self._edge_windows(self._rr, start, stop, rh), axis=1)).tolist()
            called = self._rate_raw[-1] if self._rate_raw else SINUS
            for rate in bpm:
                called = rate_class(called, rate, c)
                self._rate_raw.append(called)
        return len(self._rate_raw)
