"""Streaming ECG analysis: beats, heart rate, labels, rhythm, ST, signal quality and alerts.

`StreamAnalyzer` takes chunks of (n_samples, n_leads) millivolts and returns what became final
in each; `analyze` is the same analyzer fed a whole record at once. Every result is a function
of the samples only, never of the chunking: the QRS detector's beats are final and chunk
independent; a beat is labelled once the samples up to `post_s` after it have arrived, from the
detector's own filtered samples (the ones a batch run sees); ST is measured on normal beats
`ST_BATCH` at a time and the rhythm calls are settled every `RhythmTracker.SETTLE_BEATS` beats
(the same values, later, for a fraction of the fixed cost per call); the rhythm calls look a
fixed number of beats ahead; quality is judged on fixed blocks counted from the first sample;
and a stretch without beats is judged once the detector can no longer emit a beat inside it
(`QrsDetector.settled`), its lead-off state from the quality blocks and the samples.

Typical delays after the event: a beat and its label 0.4-1.4 s (median ~0.5 s); ASYSTOLE
~0.35 s after the 4 s without a beat (the detector's lookahead and R refinement; plus a
search-back's wait when the last RR interval was over 2.4 s); STEMI a few beats after the
third normal beat that meets the criteria; AF and rate episodes ~20-30 beats (centred windows
of 25 RR intervals plus smoothing).

Alerts: STEMI when the running ST medians first meet the elevation criteria or the posterior
equivalent (`Alert.criterion` says which; again only after neither has been met); VT at the
beat where a run of ventricular beats first has three beats over 100 bpm; ASYSTOLE
`asystole_s` after the last beat when no beat followed and at least one
lead carried signal throughout (all leads off is a technical problem, reported as a LEAD_OFF
rhythm episode instead). A stream that starts in asystole is not recognised: the detector
learns its levels from the first seconds and takes noise for beats. VF (`vf.py`, on the rhythm
lead) when two 4 s windows in a row look like VF: the alert at the first one's start, ~8-12 s
after VF begins; the VF rhythm episode when it ends. The shared data holds no VF recording:
the detector is tested on VF spliced into real recordings.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from diagnosis.ecg import quality as quality_mod
from diagnosis.ecg import rhythm as rhythm_mod
from diagnosis.ecg import st as st_mod
from diagnosis.ecg import vf as vf_mod
from diagnosis.ecg.beats import BeatLabeler
from diagnosis.ecg.buffers import SampleBuffer
from diagnosis.ecg.qrs import QrsDetector
from diagnosis.ecg.record import EcgRecord, canonical_lead

LEAD_OFF = "LEAD_OFF"
RHYTHM_LEADS = ("II", "MLII")
"""The lead VF is judged on when the stream has one (the usual rhythm strip), else the first."""


@dataclass(frozen=True)
class Beat:
    sample: int
    label: str
    """"N" normal, "V" ventricular, "Q" unclassifiable (missing samples in the window)."""
    hr_bpm: float
    """Instant rate from the preceding RR interval; NaN for the first beat."""
    hr_avg_bpm: float
    """Rate from the mean of the last `hr_average_beats` RR intervals; NaN for the first."""


@dataclass(frozen=True)
class Alert:
    kind: str
    sample: int
    leads: tuple[str, ...] = ()
    criterion: str | None = None
    """Which criteria a STEMI met: "elevation" or "posterior" (the STEMI equivalent)."""

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "sample": int(self.sample), "leads": list(self.leads),
                "criterion": self.criterion}


@dataclass(frozen=True)
class StValue:
    """Running per-lead medians after one normal beat, mV (NaN until enough beats)."""

    MEASURES: ClassVar[int] = 5
    """The per-lead arrays below, tracked side by side in this order."""

    sample: int
    deviation_mv: np.ndarray = field(repr=False)
    """ST at J + 60 ms minus PR level."""
    elevation_mv: np.ndarray = field(repr=False)
    """ST segment elevation (the lower of J and J + 60 ms), judged by the STEMI criteria."""
    depression_mv: np.ndarray = field(repr=False)
    """The upper of J and J + 60 ms: a depression at both, judged by the posterior criterion."""
    t_max_mv: np.ndarray = field(repr=False)
    """The T wave's highest level."""
    t_dip_mv: np.ndarray = field(repr=False)
    """The T wave's lowest level minus the J + 60 ms level (how far it dips below the ST)."""


@dataclass
class Update:
    """What became final in one push (or finish)."""

    beats: list[Beat] = field(default_factory=list)
    rhythms: list[rhythm_mod.Episode] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    quality: list[quality_mod.QualityBlock] = field(default_factory=list)
    st: list[StValue] = field(default_factory=list)

    def extend(self, other: "Update") -> None:
        self.beats += other.beats
        self.rhythms += other.rhythms
        self.alerts += other.alerts
        self.quality += other.quality
        self.st += other.st


def _round(value: float, digits: int = 3) -> float | None:
    return round(float(value), digits) if np.isfinite(value) else None


@dataclass
class Report:
    fs: float
    leads: tuple[str, ...]
    n_samples: int
    beats: list[Beat]
    rhythms: list[rhythm_mod.Episode]
    alerts: list[Alert]
    quality: list[quality_mod.QualityBlock]
    st: list[StValue]

    def as_json(self) -> dict[str, Any]:
        """The `telemed ecg analyze --json` document; samples at the record's own rate."""
        rates = np.array([b.hr_bpm for b in self.beats], dtype=np.float64)
        rates = rates[np.isfinite(rates)]
        last_st = self.st[-1].deviation_mv if self.st else np.full(len(self.leads), np.nan)
        sqi = np.array([b.sqi for b in self.quality]) if self.quality else None
        flags = np.array([b.flags for b in self.quality]) if self.quality else None
        quality = {}
        for i, lead in enumerate(self.leads):
            if sqi is None:
                quality[lead] = {"sqi": None, "flags": {}}
                continue
            quality[lead] = {"sqi": _round(np.mean(sqi[:, i])), "flags": {
                name: _round(np.mean((flags[:, i] & bit) > 0))
                for bit, name in quality_mod.FLAG_NAMES.items() if np.any(flags[:, i] & bit)}}
        return {
            "fs": self.fs,
            "leads": list(self.leads),
            "n_samples": self.n_samples,
            "beats": [{"sample": b.sample, "label": b.label} for b in self.beats],
            "rhythms": [{"start": e.start, "end": e.end, "label": e.label} for e in self.rhythms],
            "alerts": [alert.as_json() for alert in self.alerts],
            "heart_rate": {"mean_bpm": _round(60.0 / np.mean(60.0 / rates), 1) if len(rates)
                           else None,
                           "min_bpm": _round(np.min(rates), 1) if len(rates) else None,
                           "max_bpm": _round(np.max(rates), 1) if len(rates) else None},
            "st_mv": {lead: _round(v) for lead, v in zip(self.leads, last_st)},
            "quality": quality,
        }


@dataclass
class _Gap:
    start: int
    stop: int | None
    """None while no beat has ended it."""
    live: bool | None = None
    """Some lead carried signal over its first `asystole_s`; None until judged."""
    emitted: bool = False


class StreamAnalyzer:
    """One stream's analysis state: push chunks in order, then `finish`."""

    ST_BATCH = 1
    """Normal beats measured together. Four would save a quarter of the analysis' CPU but hold
    a STEMI alert back by three beats (~1.35 s from its beat instead of ~0.35 s, over the 1 s
    the issue allows): alert time wins."""

    @dataclass(frozen=True)
    class Conf:
        qrs: QrsDetector.Conf = field(default_factory=QrsDetector.Conf)
        st: st_mod.StConf = field(default_factory=st_mod.StConf)
        rhythm: rhythm_mod.RhythmConf = field(default_factory=rhythm_mod.RhythmConf)
        quality: quality_mod.QualityConf = field(default_factory=quality_mod.QualityConf)
        vf: vf_mod.VfConf = field(default_factory=vf_mod.VfConf)
        hr_average_beats: int = 8
        label_rr_beats: int = 8
        """RR intervals the labeller's median RR is taken over (as in its own tests)."""

        def __post_init__(self) -> None:
            if self.hr_average_beats < 1 or self.label_rr_beats < 2:
                raise ValueError("invalid StreamAnalyzer.Conf")
            if self.st.pre_s < rhythm_mod.PRE_QRS_S[0]:
                raise ValueError("StConf.pre_s must cover the pre-QRS segment")

    def __init__(self, fs: float, leads: tuple[str, ...] | list[str], sex: str | None = None,
                 age: float | None = None, conf: "StreamAnalyzer.Conf | None" = None) -> None:
        self.conf = conf or StreamAnalyzer.Conf()
        self.fs = float(fs)
        self.leads = tuple(canonical_lead(lead) for lead in leads)
        n = len(self.leads)
        self.detector = QrsDetector(fs, n, self.conf.qrs)
        self.labeller = BeatLabeler(fs)
        self.quality_monitor = quality_mod.QualityMonitor(fs, n, self.conf.quality)
        self.rhythm = rhythm_mod.RhythmTracker(fs, self.conf.rhythm)
        self.live_rate = rhythm_mod.LiveRate(self.conf.rhythm)
        self._vf_lead = next((self.leads.index(lead) for lead in RHYTHM_LEADS
                              if lead in self.leads), 0)
        self.vf = vf_mod.VfTracker(fs, self.conf.vf)
        self._st = st_mod.StTracker(StValue.MEASURES * n, self.conf.st)
        """The `StValue` measures side by side, each `n` leads wide."""
        self._cut_points = st_mod.cut_points_mv(self.leads, sex, age)
        self._stemi = False
        self._st_queue: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._st_queued = 0
        c = self.conf
        self._pre = int(round(c.st.pre_s * fs))
        self._post = int(round(c.st.post_s * fs))
        self._latency = int(round(c.qrs.latency_s * fs))
        self._learning = int(round(c.qrs.learning_s * fs))
        self._asystole = int(round(c.rhythm.asystole_s * fs))
        self._raw = SampleBuffer(n, self._pre + self._post + self._latency + self._learning
                                 + int(fs))
        self._window_offsets = np.arange(-self._pre, self._post)[None, :]
        first, last = (int(round(s * fs)) for s in rhythm_mod.PRE_QRS_S)
        self._pre_qrs = slice(self._pre - first, self._pre - last)
        """The pre-QRS segment (`rhythm.PRE_QRS_S`) in a beat window."""
        self._end = 0
        self._finished = False
        self._pending: list[int] = []
        """Detected beats waiting for `post_s` of samples after them."""
        self._peaks: list[int] = []
        """The last few measured beats, for RR intervals."""
        self._last_detected = -1
        self._gaps: list[_Gap] = []
        """Stretches without beats of at least `asystole_s` not yet reported."""
        self._blocks: list[quality_mod.QualityBlock] = []
        self._report = Update()

    @property
    def n_samples(self) -> int:
        return self._end

    def push(self, chunk: np.ndarray) -> Update:
        if self._finished:
            raise RuntimeError("push after finish")
        chunk = np.asarray(chunk, dtype=np.float64).reshape(-1, len(self.leads))
        update = Update()
        if not len(chunk):
            return update
        raw = QrsDetector.without_absurd(chunk)
        self._raw.append(raw)
        self._end += len(chunk)
        self._add_quality(self.quality_monitor.push(raw), update)
        detected = self.detector.push(raw, checked=True)
        self._add_detected(detected, update)
        self._add_vf(*self.vf.push(raw[:, self._vf_lead]), update)
        self._measure(update, at_end=False)
        self._queue_open_gap(at_end=False)
        self._judge_gaps(update, at_end=False)
        self._report.extend(update)
        return update

    def finish(self) -> Update:
        if self._finished:
            return Update()
        self._finished = True
        update = Update()
        self._add_quality(self.quality_monitor.finish(), update)
        self._add_detected(self.detector.finish(), update)
        self._measure(update, at_end=True)
        self._queue_open_gap(at_end=True)
        self._judge_gaps(update, at_end=True)
        update.rhythms += self.rhythm.finish(self._end)
        self.live_rate.finish()
        self._add_vf([], self.vf.finish(self._end), update)
        self._report.extend(update)
        return update

    @property
    def current_rhythm(self) -> rhythm_mod.Episode | None:
        """What the rhythm is now, for a live display: VF, a VT run or AF as called
        (`RhythmTracker.current`), else the class of the heart rate shown with the beats
        (`LiveRate`), since the settled episode's start when that is of the same class."""
        if self.vf.open is not None:
            return rhythm_mod.Episode(self.vf.open.start, -1, vf_mod.VF)
        called, live = self.rhythm.current, self.live_rate.episode
        if live is None or (called is not None and called.label not in rhythm_mod.RATE_CLASSES):
            return called
        return called if called is not None and called.label == live.label else live

    def report(self) -> Report:
        """Everything final so far (all of it after `finish`), in time order."""
        r = self._report
        return Report(self.fs, self.leads, self._end, list(r.beats),
                      sorted(r.rhythms, key=lambda e: (e.start, e.end, e.label)),
                      sorted(r.alerts, key=lambda a: (a.sample, a.kind)),
                      list(r.quality), list(r.st))

    def _add_vf(self, started: list[vf_mod.VfEpisode], ended: list[vf_mod.VfEpisode],
                update: Update) -> None:
        """VF alerts as episodes start (on the rhythm lead), episodes when they end."""
        if not (started or ended):      # nearly every chunk
            return
        lead = (self.leads[self._vf_lead],)
        update.alerts += [Alert(vf_mod.VF, episode.start, lead) for episode in started]
        update.rhythms += [rhythm_mod.Episode(episode.start, episode.end, vf_mod.VF)
                           for episode in ended]

    # -- quality and stretches without beats --

    def _add_quality(self, blocks: list[quality_mod.QualityBlock], update: Update) -> None:
        self._blocks += blocks
        update.quality += blocks

    def _add_detected(self, peaks: np.ndarray, update: Update) -> None:
        for peak in peaks.tolist():
            start = max(self._last_detected, 0)
            open_gap = self._gaps[-1] if self._gaps and self._gaps[-1].stop is None else None
            if open_gap is not None:
                open_gap.stop = peak
                self._emit_gap(open_gap, update)
            elif rhythm_mod.gap_label((peak - start) / self.fs, self.conf.rhythm) \
                    == rhythm_mod.ASYSTOLE:
                self._gaps.append(_Gap(start, peak))
            elif rhythm_mod.gap_label((peak - start) / self.fs, self.conf.rhythm) \
                    == rhythm_mod.PAUSE and self._last_detected >= 0:
                update.rhythms.append(rhythm_mod.Episode(start, peak, rhythm_mod.PAUSE))
            self._last_detected = peak
            self._pending.append(peak)

    def _queue_open_gap(self, at_end: bool) -> None:
        """Queue the stretch after the last beat once no beat can appear in its first
        `asystole_s`: every beat before then has been emitted (`QrsDetector.settled`, asked
        only once the samples reach that far: it is not free, and most chunks do not)."""
        start = max(self._last_detected, 0)
        if self._end < start + self._asystole:
            return
        if self._gaps and self._gaps[-1].start == start and self._gaps[-1].stop is None:
            return
        if at_end or self.detector.settled >= start + self._asystole:
            self._gaps.append(_Gap(start, None))

    def _judge_gaps(self, update: Update, at_end: bool) -> None:
        for gap in self._gaps:
            alarm = gap.start + self._asystole
            if gap.live is None and (at_end or self._end >= alarm):
                gap.live = self._some_lead_live(gap.start, alarm)
                if gap.live:
                    update.alerts.append(Alert(rhythm_mod.ASYSTOLE, alarm))
            if at_end and gap.stop is None:
                gap.stop = self._end
            self._emit_gap(gap, update)
        self._gaps = [gap for gap in self._gaps if not gap.emitted]

    @staticmethod
    def _emit_gap(gap: "_Gap", update: Update) -> None:
        if gap.live is not None and gap.stop is not None and not gap.emitted:
            update.rhythms.append(rhythm_mod.Episode(
                gap.start, gap.stop, rhythm_mod.ASYSTOLE if gap.live else LEAD_OFF))
            gap.emitted = True

    def _some_lead_live(self, start: int, stop: int) -> bool:
        """Some lead is on throughout [start, stop): not off in the quality blocks overlapping
        [start, stop - block), nor in the block-long window that ends at `stop` (assessed like
        a block from the samples, so the alarm need not wait for its own block to fill)."""
        size = self.quality_monitor.block      # block i covers [i * size, (i + 1) * size)
        tail = max(stop - size, start)
        blocks = self._blocks[start // size:-(-tail // size)]
        _, last = quality_mod.assess(self._raw.window(tail, stop)[None], self.fs,
                                     self.conf.quality)
        off = [(b.flags & quality_mod.LEAD_OFF) > 0 for b in blocks] \
            + [(last[0] & quality_mod.LEAD_OFF) > 0]
        return bool(np.any(~np.any(off, axis=0)))

    # -- beats --

    def _measure(self, update: Update, at_end: bool) -> None:
        ready = self._pending if at_end else [p for p in self._pending
                                              if p + self._post <= self._end]
        if not ready:
            if at_end:
                self._measure_st(np.empty(0, np.int64), [], np.empty(0), np.empty((0, 0, 0)),
                                 np.empty((0, 0, 0)), update, at_end)
            return
        self._pending = self._pending[len(ready):]
        peaks = np.asarray(ready, dtype=np.int64)
        clean = self._windows(self.detector.clean, peaks)
        raw = self._windows(self._raw, peaks)
        labels, beats, rrs = [], [], []
        c = self.conf
        fs = self.fs
        for i, peak in enumerate(peaks.tolist()):
            lo, hi = max(peak - self.labeller.before, 0), min(peak + self.labeller.after,
                                                                self._end)
            window = clean[i, lo - (peak - self._pre):hi - (peak - self._pre)]
            history = self._peaks[-c.label_rr_beats:] + [peak]
            rr = [(b - a) / fs for a, b in zip(history[:-1], history[1:])]
            rr_s = rr[-1] if rr else float("nan")
            median_rr = statistics.median(rr) if len(rr) >= 2 else float("nan")
            label = self.labeller.label(window, rr_s, median_rr)
            average = rr[-c.hr_average_beats:]
            beats.append(Beat(peak, label, 60.0 / rr_s if rr else float("nan"),
                              60.0 * len(average) / math.fsum(average) if average
                              else float("nan")))
            labels.append(label)
            rrs.append(rr_s)
            self.live_rate.add(peak, beats[-1].hr_avg_bpm)
            self._peaks = history[-(max(c.label_rr_beats, c.hr_average_beats) + 1):]
        update.beats += beats
        self._measure_st(peaks, labels, np.array(rrs), clean, raw, update, at_end)
        episodes, alerts = self.rhythm.add(peaks, labels, clean[:, self._pre_qrs])
        update.rhythms += episodes
        update.alerts += [Alert(kind, sample) for kind, sample in alerts]

    def _windows(self, buffer: SampleBuffer, peaks: np.ndarray) -> np.ndarray:
        """(n_beats, pre + post, n_leads) windows around `peaks`; NaN outside the samples."""
        lo = int(peaks[0]) - self._pre
        hi = int(peaks[-1]) + self._post
        data = buffer.window(lo, hi)
        if len(data) != hi - lo:
            first = max(buffer.start, lo, 0)
            padded = np.full((hi - lo, data.shape[1]), np.nan)
            padded[first - lo:first - lo + len(data)] = data
            data = padded
        if len(peaks) == 1:     # the samples themselves: a view (the buffer never rewrites them)
            return data[None]
        return data[(peaks - lo)[:, None] + self._window_offsets]

    def _measure_st(self, peaks: np.ndarray, labels: list[str], rr_s: np.ndarray,
                    clean: np.ndarray, raw: np.ndarray, update: Update, at_end: bool) -> None:
        """Queue the normal beats; measure them `ST_BATCH` at a time (the same values, a few
        beats later, for a fraction of the per-call cost)."""
        normal = [i for i, label in enumerate(labels) if label == "N"]
        if normal:
            if len(normal) == len(labels):
                self._st_queue.append((peaks, rr_s, clean, raw))
            else:
                self._st_queue.append((peaks[normal], rr_s[normal], clean[normal], raw[normal]))
            self._st_queued += len(normal)
        if not self._st_queue or (self._st_queued < self.ST_BATCH and not at_end):
            return
        peaks, rr_s, clean, raw = self._st_queue[0] if len(self._st_queue) == 1 else (
            np.concatenate(parts) for parts in zip(*self._st_queue))
        self._st_queue, self._st_queued = [], 0
        conf = self.conf.st
        onset, j_point = st_mod.fiducials(clean, self._pre, self.fs, conf)
        levels = st_mod.st_levels(raw, onset, j_point,
                                  st_mod.t_stops(rr_s, self._pre, self.fs, conf), self.fs, conf)
        medians = self._st.add(np.concatenate([
            levels.later, np.minimum(levels.at_j, levels.later),
            np.maximum(levels.at_j, levels.later), levels.t_max, levels.t_min - levels.later],
            axis=1))
        rows = medians.reshape(len(medians), StValue.MEASURES, len(self.leads))
        for k, sample in enumerate(peaks.tolist()):
            value = StValue(sample, *rows[k])
            update.st.append(value)
            self._judge_stemi(value, update)

    def _judge_stemi(self, value: StValue, update: Update) -> None:
        """A STEMI alert when the criteria, or failing them the posterior equivalent, are first
        met (again only after neither has been met for a beat)."""
        criterion = "elevation"
        leads = st_mod.stemi_leads(value.elevation_mv, self.leads, self._cut_points)
        if not leads:
            criterion = "posterior"
            leads = st_mod.posterior_leads(value.depression_mv, value.t_max_mv, value.t_dip_mv,
                                           self.leads)
        if leads and not self._stemi:
            update.alerts.append(Alert("STEMI", value.sample, tuple(leads), criterion))
        self._stemi = bool(leads)


def analyze(record: EcgRecord, conf: StreamAnalyzer.Conf | None = None,
            chunk: int | None = None) -> Report:
    """The whole record through one analyzer (in `chunk`-sample pieces if given)."""
    analyzer = StreamAnalyzer(record.fs, record.leads, record.sex, record.age, conf)
    step = chunk or max(record.n_samples, 1)
    for start in range(0, record.n_samples, step):
        analyzer.push(record.signal[start:start + step])
    analyzer.finish()
    return analyzer.report()
