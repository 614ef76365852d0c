"""ST deviation per lead and the STEMI criteria of the Fourth Universal Definition of MI (2018).

Per beat, all leads together fix two fiducial points on the baseline-free signal: the QRS onset
(the end of the last quiet stretch before the R peak, i.e. the PR segment) and the J point (the
start of the first quiet stretch after it). "Quiet" is a summed multi-lead slope below a fraction
of the QRS's own maximum slope, for at least `quiet_s`. The ST deviation of a lead is then its
mean over 20 ms centred on J + 60 ms minus its mean over the 20 ms of PR segment just before
the QRS onset, both taken from the unfiltered signal: a high-pass filter (the detector's 0.5 Hz
baseline removal) shifts the ST level after every large QRS, which is exactly what is measured
here, whereas subtracting the PR level a few hundred ms earlier removes the baseline already.
20 ms is one mains period at 50 Hz, so mains hum averages out of both levels.

A lead's current ST value is the median over its last `history` normal beats, so one noisy or
misplaced beat does not move it.

STEMI: ST elevation at or above the cut-point in two anatomically contiguous leads. The
elevation judged is that of the ST segment, the lower of the levels at J (where the Fourth
Universal Definition measures) and at J + 60 ms (the deviation reported): a level high at
J + 60 ms only is the up-slope into a tall T wave (early repolarisation in young men, the T
wave reached early at fast rates), which at J + 60 ms alone flagged three of the 22 CinC 2021
records without an ischaemia code; a level high at J only is a J wave. Cut-points: 1 mm
(0.1 mV) everywhere except V2-V3, where it is 2 mm for men of 40 or more, 2.5 mm for men under
40 and 1.5 mm for women.

Posterior (infero-basal) STEMI equivalent: the Fourth Universal Definition reads ST depression
in V1-V3 as ischaemia, "especially when the terminal T wave is positive (ST-elevation
equivalent)", to be confirmed in V7-V9, which a standard 12-lead lacks. Here: horizontal or
downsloping depression of at least 0.5 mm (its ischaemia cut-point; at J and at J + 60 ms
both, so the up-sloping J-point depression of a fast rate is not it) in two contiguous leads
of V1-V3, each with an upright T wave: at least 1 mm above the PR level and nowhere more than
1 mm below the ST level at J + 60 ms (an inverted T wave, as in anterior ischaemia, dips there).
Only records with all twelve standard leads are evaluated (the criteria are defined on the
12-lead ECG).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from diagnosis.ecg.buffers import SampleBuffer
from diagnosis.ecg.medians import all_finite, median, nanmedian
from diagnosis.ecg.record import STANDARD_LEADS

MM_PER_MV = 10.0
"""Standard calibration: 10 mm per mV (cut-points are divided by it: 1.5 / 10 is 0.15 exactly,
1.5 * 0.1 is not)."""
CONTIGUOUS = (("V1", "V2"), ("V2", "V3"), ("V3", "V4"), ("V4", "V5"), ("V5", "V6"),
              ("aVL", "I"), ("II", "aVF"), ("aVF", "III"))
"""Anatomically contiguous pairs: neighbouring precordial leads; the lateral limb leads I and
aVL; the inferior leads in Cabrera order II, aVF, III (II-aVF and aVF-III)."""
V2_V3 = ("V2", "V3")
POSTERIOR = (("V1", "V2"), ("V2", "V3"))
"""Contiguous pairs of the leads facing the posterior wall's mirror image."""
DEPRESSION_CUT_MV = 0.05
T_UPRIGHT_MV = 0.1
"""An upright T wave rises this far above the PR level and never dips this far below the ST."""


def v2_v3_cut_point_mm(sex: str | None, age: float | None) -> float:
    """The V2-V3 cut-point: women 1.5 mm; men 2.0 mm at 40 or over, 2.5 mm under 40.

    Men of unknown age get 2.0 mm (nearly all men with a myocardial infarction are 40 or
    older), and so does a patient of unknown sex: the cut-point the guideline gives for the
    typical patient rather than the most sensitive (1.5) or the most specific (2.5) one.
    """
    if sex == "F":
        return 1.5
    if sex == "M" and age is not None and age < 40:
        return 2.5
    return 2.0


def cut_points_mv(leads: tuple[str, ...], sex: str | None = None,
                  age: float | None = None) -> np.ndarray:
    """Per-lead ST elevation cut-point in mV; NaN for leads the criteria do not use."""
    v2_v3 = v2_v3_cut_point_mm(sex, age) / MM_PER_MV
    other = 1.0 / MM_PER_MV
    standard = set(STANDARD_LEADS)
    return np.array([v2_v3 if lead in V2_V3 else other if lead in standard else np.nan
                     for lead in leads])


def has_twelve_leads(leads: tuple[str, ...]) -> bool:
    return _covers_standard_leads(tuple(leads))


@lru_cache(maxsize=64)
def _covers_standard_leads(leads: tuple[str, ...]) -> bool:
    """Cached: a stream asks after every normal beat, always about its own leads."""
    return set(STANDARD_LEADS) <= set(leads)


def stemi_leads(st_mv: np.ndarray, leads: tuple[str, ...], cut_points: np.ndarray) -> list[str]:
    """The leads that meet the cut-point together with a contiguous lead that meets it too,
    in record order; empty when the criteria are not met or the record lacks a standard lead."""
    if not has_twelve_leads(leads):
        return []
    # Python floats: one comparison each, NaN compares False without a warning.
    elevated = {lead for lead, value, cut in zip(leads, np.asarray(st_mv).tolist(),
                                                 np.asarray(cut_points).tolist()) if value >= cut}
    if len(elevated) < 2:
        return []
    return _contiguous(elevated, CONTIGUOUS, leads)


def posterior_leads(depression_mv: np.ndarray, t_max_mv: np.ndarray, t_dip_mv: np.ndarray,
                    leads: tuple[str, ...]) -> list[str]:
    """The V1-V3 leads with the posterior STEMI equivalent (ST depression, upright T wave)
    together with a contiguous one, in record order. `depression_mv` is the upper of the J and
    J + 60 ms levels, `t_max_mv` the T wave's highest level and `t_dip_mv` its lowest minus
    the J + 60 ms level (all against the PR level)."""
    if not has_twelve_leads(leads):
        return []
    shown = {lead for lead, depression, t_max, t_dip in zip(
        leads, np.asarray(depression_mv).tolist(), np.asarray(t_max_mv).tolist(),
        np.asarray(t_dip_mv).tolist())
        if depression <= -DEPRESSION_CUT_MV and t_max >= T_UPRIGHT_MV and t_dip > -T_UPRIGHT_MV}
    return _contiguous(shown, POSTERIOR, leads)


def _contiguous(meeting: set[str], pairs: tuple[tuple[str, str], ...],
                leads: tuple[str, ...]) -> list[str]:
    """The leads of `meeting` that have a neighbour in `meeting`, in record order."""
    hit = {lead for pair in pairs if set(pair) <= meeting for lead in pair}
    return [lead for lead in leads if lead in hit]


@dataclass(frozen=True)
class StConf:
    pre_s: float = 0.25
    """Beat window before R: the QRS onset and PR segment are searched in it."""
    post_s: float = 0.40
    """Beat window after R: the J point (at most `max_j_s` after R) plus 60 ms plus half the
    averaging window, and the T wave up to `t_end_s`."""
    j_offset_s: float = 0.06
    average_s: float = 0.02
    smooth_s: float = 0.012
    """Boxcar over the baseline-free signal before slopes are taken."""
    slope_fraction: float = 0.12
    """Quiet: summed slope below this fraction of the beat's maximum QRS slope."""
    quiet_s: float = 0.02
    min_onset_s: float = 0.012
    """The QRS onset is at least this far before R, the J point at least this far after it."""
    max_onset_s: float = 0.16
    max_j_s: float = 0.20
    default_j_s: float = 0.08
    """J point when no quiet stretch follows the QRS (ST merging into T at fast rates)."""
    t_end_s: float = 0.40
    """The T wave is looked at up to this long after R, or `t_rr_fraction` of the RR interval
    before the beat if shorter (at fast rates the next P wave comes sooner)."""
    t_rr_fraction: float = 0.6
    history: int = 8
    min_beats: int = 3

    def __post_init__(self) -> None:
        checks = {
            "window": self.pre_s > self.max_onset_s + self.average_s
            and self.post_s >= self.max_j_s + self.j_offset_s + self.average_s / 2
            and self.post_s >= self.t_end_s,
            "t_wave": self.t_end_s > self.j_offset_s and 0 < self.t_rr_fraction < 1,
            "slope_fraction": 0 < self.slope_fraction < 1,
            "quiet_s": self.quiet_s > 0 and self.average_s > 0 and self.smooth_s >= 0,
            "history": 1 <= self.min_beats <= self.history,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid StConf: {', '.join(bad)}")


def _samples(seconds: float, fs: float) -> int:
    return max(int(round(seconds * fs)), 1)


@dataclass(frozen=True)
class _Search:
    """Where `fiducials` looks, fixed by the window, the rate and the configuration."""

    run: int
    ahead: slice | np.ndarray
    behind: slice | np.ndarray
    """Samples whose difference is the smoothed slope at each searched position."""
    qrs: slice
    """The slopes the QRS's maximum slope is taken from."""
    onset_runs: slice
    """The quiet runs (by start, indices into the searched stretch) an onset may end..."""
    onset_ends: np.ndarray
    """...and where each ends (one past, index into the window)."""
    j_runs: slice
    """The quiet runs a J point may start..."""
    j_starts: np.ndarray
    """...and where each starts (index into the window)."""
    default_onset: int
    default_j: int

    def __post_init__(self) -> None:
        for value in vars(self).values():     # shared by every call: read only
            if isinstance(value, np.ndarray):
                value.flags.writeable = False


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """A run of consecutive indices as a slice (a view instead of a copy), else the indices."""
    if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
        return slice(int(index[0]), int(index[0]) + len(index))
    return index


def _span(allowed: np.ndarray) -> slice:
    """The stretch where `allowed` (True in one consecutive stretch, or nowhere) is True."""
    where = np.flatnonzero(allowed)
    return slice(int(where[0]), int(where[-1]) + 1) if len(where) else slice(0, 0)


@lru_cache(maxsize=32)
def _search(length: int, r_index: int, fs: float, conf: StConf) -> _Search:
    # Only the stretch searched matters: from the earliest onset's quiet run to the latest
    # J point's.
    run = _samples(conf.quiet_s, fs)
    first = max(r_index - _samples(conf.max_onset_s, fs) - run, 0)
    last = min(r_index + _samples(conf.max_j_s, fs) + run, length - 1)
    # Slope of the signal smoothed by a `smooth_s` boxcar: the boxcar's difference from one
    # sample to the next is (x[t + width - half] - x[t - half]) / width, no smoothing pass.
    width = _samples(conf.smooth_s, fs)
    half = width // 2
    t = np.arange(first, last)
    ahead = np.clip(t + width - half, 0, length - 1)
    behind = np.clip(t - half, 0, length - 1)
    r = r_index - first
    qrs = slice(max(r - _samples(0.06, fs), 0), r + _samples(0.06, fs))
    positions = np.arange(max(len(t) + 1 - run, 0)) + first
    ends = positions + run
    # Both are one stretch of runs: `ends` and `positions` ascend.
    onset_runs = _span((ends <= r_index - _samples(conf.min_onset_s, fs))
                       & (ends >= r_index - _samples(conf.max_onset_s, fs)))
    j_runs = _span((positions >= r_index + _samples(conf.min_onset_s, fs))
                   & (positions <= r_index + _samples(conf.max_j_s, fs)))
    return _Search(run, _as_slice(ahead), _as_slice(behind), qrs, onset_runs, ends[onset_runs],
                   j_runs, positions[j_runs], r_index - _samples(conf.max_onset_s, fs) // 2,
                   r_index + _samples(conf.default_j_s, fs))


def fiducials(clean: np.ndarray, r_index: int, fs: float,
              conf: StConf = StConf()) -> tuple[np.ndarray, np.ndarray]:
    """QRS onset and J point (indices into the window) of beat windows `clean`
    (n_beats, window, n_leads), baseline-free mV with each beat's R peak at `r_index`."""
    n_beats, length, _ = clean.shape
    if not n_beats:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # Windows padded with NaN before the stream's start are the rare case.
    x = clean if all_finite(clean) else np.where(np.isnan(clean), 0.0, clean)
    search = _search(length, r_index, float(fs), conf)
    run = search.run
    # The ufuncs' own reductions: numpy's wrappers cost more than these small arrays' sums.
    slope = x[:, search.ahead] - x[:, search.behind]
    slope = np.add.reduce(np.abs(slope, out=slope), axis=2)  # (n_beats, searched)
    peak = np.maximum.reduce(slope[:, search.qrs], axis=1, initial=0.0)
    quiet = slope < conf.slope_fraction * peak[:, None]
    counts = np.zeros((n_beats, quiet.shape[1] + 1), dtype=np.int32)
    np.add.accumulate(quiet, axis=1, dtype=np.int32, out=counts[:, 1:])
    # all_quiet[:, p]: slopes p .. p + run - 1 are all quiet.
    all_quiet = (counts[:, run:] - counts[:, :-run]) == run
    if n_beats == 1:
        onset, j_point = _one_beat_fiducials(all_quiet[0], search)
        return np.array([onset]), np.array([j_point])
    # Onset: one past the end of the last quiet run that ends min_onset_s before R (ends are
    # positive: -1 is none).
    latest = np.maximum.reduce(np.where(all_quiet[:, search.onset_runs], search.onset_ends, -1),
                               axis=1, initial=-1)
    onset = np.where(latest >= 0, latest, search.default_onset)
    # J point: the start of the first quiet run after R (`length` is none).
    earliest = np.minimum.reduce(np.where(all_quiet[:, search.j_runs], search.j_starts, length),
                                 axis=1, initial=length)
    j_point = np.where(earliest < length, earliest, search.default_j)
    return onset.astype(np.int64, copy=False), j_point.astype(np.int64, copy=False)


def _one_beat_fiducials(all_quiet: np.ndarray, search: _Search) -> tuple[int, int]:
    """`fiducials` of one beat from its quiet runs: the same points, picked from the runs
    that are quiet instead of reduced over all of them (a live stream measures one beat at a
    time)."""
    onsets = all_quiet[search.onset_runs].nonzero()[0]
    j_points = all_quiet[search.j_runs].nonzero()[0]
    onset = int(search.onset_ends[onsets[-1]]) if len(onsets) else search.default_onset
    j_point = int(search.j_starts[j_points[0]]) if len(j_points) else search.default_j
    return onset, j_point


@dataclass(frozen=True)
class Levels:
    """Per beat and lead, mV against the beat's PR level; NaN where samples are missing."""

    at_j: np.ndarray
    later: np.ndarray
    """At J + 60 ms: the ST deviation."""
    t_max: np.ndarray
    """The highest level of the T wave (after the J + 60 ms average, to the T window's end)."""
    t_min: np.ndarray
    """Its lowest level."""


def t_stops(rr_s: np.ndarray, r_index: int, fs: float, conf: StConf = StConf()) -> np.ndarray:
    """Per beat, one past the T window's last sample (index into the beat window), from the
    RR interval before each beat (NaN: unknown, `t_end_s`)."""
    seconds = np.fmin(conf.t_end_s, conf.t_rr_fraction * np.asarray(rr_s, dtype=np.float64))
    return r_index + np.rint(seconds * fs).astype(np.int64)   # np.round's own loop, unwrapped


def st_levels(raw: np.ndarray, onset: np.ndarray, j_point: np.ndarray, t_stop: np.ndarray,
              fs: float, conf: StConf = StConf()) -> Levels:
    """The ST levels at the J point and at J + 60 ms and the T wave's extremes, from
    unfiltered beat windows `raw` (n_beats, window, n_leads) whose T windows end at `t_stop`."""
    n_beats, length, n_leads = raw.shape
    if not n_beats:
        empty = np.empty((0, n_leads))
        return Levels(empty, empty, empty, empty)
    width = _samples(conf.average_s, fs)
    if n_beats == 1:
        single = _one_beat_levels(raw[0], int(onset[0]), int(j_point[0]), int(t_stop[0]), width,
                                  _samples(conf.j_offset_s, fs))
        if single is not None:
            return single
    at_j = j_point - width // 2
    # Where the three averages start, per beat: PR level, J, J + 60 ms; gathered in one go.
    first = np.array([onset - width, at_j, at_j + _samples(conf.j_offset_s, fs)]).T
    index = np.minimum(np.maximum(first[:, :, None] + np.arange(width), 0), length - 1)
    levels = raw[np.arange(n_beats)[:, None, None], index].sum(axis=2) / width  # the means
    baseline = levels[:, 0]
    # The T window, from the end of the J + 60 ms average to `t_stop`, gathered at a common
    # length with each beat's own last sample repeated (which changes no extreme).
    t_start = first[:, 2] + width
    t_last = np.minimum(t_stop, length) - 1
    steps = np.arange(max(int((t_last - t_start).max()) + 1, 1))
    index = np.minimum(t_start[:, None] + steps, t_last[:, None])
    # (n_beats, n_leads, steps): each lead's extremes along its own contiguous row, a third of
    # the cost of reducing across rows of n_leads values.
    t_wave = np.ascontiguousarray(raw[np.arange(n_beats)[:, None], index].transpose(0, 2, 1))
    t_max = np.maximum.reduce(t_wave, axis=2) - baseline
    t_min = np.minimum.reduce(t_wave, axis=2) - baseline
    empty = t_last < t_start
    if empty.any():
        t_max[empty] = t_min[empty] = np.nan
    return Levels(levels[:, 1] - baseline, levels[:, 2] - baseline, t_max, t_min)


def _one_beat_levels(window: np.ndarray, onset: int, j_point: int, t_stop: int, width: int,
                     j_offset: int) -> Levels | None:
    """`st_levels` of one beat window (samples, leads) from slices of it: the same sums, in the
    same order, and the same extremes as the gathered many-beat case for a third of its numpy
    calls (a live stream measures one beat at a time). None when an average would reach past
    the window's edge, where the many-beat case repeats the edge sample."""
    at_j = j_point - width // 2
    starts = (onset - width, at_j, at_j + j_offset)
    if min(starts) < 0 or max(starts) + width > len(window):
        return None
    baseline, at_j_level, later = (np.add.reduce(window[start:start + width], axis=0) / width
                                   for start in starts)
    t_start, t_last = starts[2] + width, min(t_stop, len(window)) - 1
    if t_last >= t_start:
        t_wave = window[t_start:t_last + 1]
        t_max = np.maximum.reduce(t_wave, axis=0) - baseline
        t_min = np.minimum.reduce(t_wave, axis=0) - baseline
    else:
        t_max, t_min = np.full(len(baseline), np.nan), np.full(len(baseline), np.nan)
    return Levels((at_j_level - baseline)[None], (later - baseline)[None], t_max[None],
                  t_min[None])


class StTracker:
    """Running per-lead median of the ST deviation over the last `history` normal beats."""

    def __init__(self, n_leads: int, conf: StConf = StConf()) -> None:
        self.conf = conf
        self._rows = SampleBuffer(n_leads, conf.history - 1)
        """The rows so far, NaN before the first beats."""
        self._rows.append(np.full((conf.history - 1, n_leads), np.nan))
        self._steps = np.arange(conf.history)[None, :]

    def add(self, st_rows: np.ndarray) -> np.ndarray:
        """Feed the next beats' ST rows in order; the median after each, NaN until `min_beats`
        beats have a value in a lead."""
        st_rows = np.asarray(st_rows, dtype=np.float64)
        if not len(st_rows):
            return np.empty((0, st_rows.shape[1]))
        self._rows.append(st_rows)
        end = self._rows.end
        stacked = self._rows.window(end - len(st_rows) - self.conf.history + 1, end)
        # Windows of the last `history` rows ending at each new row (one row's: the rows).
        windows = stacked[None] if len(st_rows) == 1 \
            else stacked[np.arange(len(st_rows))[:, None] + self._steps]  # (new, history, leads)
        if all_finite(windows):     # every window full: `history` beats, at least `min_beats`
            return median(windows, axis=1)
        enough = np.add.reduce(np.isfinite(windows), axis=1) >= self.conf.min_beats
        return np.where(enough, nanmedian(windows, axis=1), np.nan)
