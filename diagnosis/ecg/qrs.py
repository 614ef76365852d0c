"""Multi-lead QRS detection that runs live with a fixed lookahead and gives batch results.

The leads' QRS-band energies are summed and smoothed into one envelope; every local maximum of
the envelope over +-refractory is a candidate, known `refractory_s` after it happens, and so is a
local maximum outranked only by the rising flank of a lobe that peaks beyond that. Candidates
are then judged in time order against adaptive signal and noise levels (Pan & Tompkins 1985),
with a T-wave test and a search-back that recovers a weak beat when the rhythm says one is
missing. Where amplitude cannot tell, shape does: a premature candidate no steeper than the last
beat that is shaped unlike the recent beats, or drawn out over its surroundings, is an
artefact, not an ectopic beat, and search-back only takes a candidate shaped like them. A
candidate with one steep edge and no swing back is a baseline step (an electrode pop), and a
beat its envelope lobe hid becomes a candidate after all.
Search-back happens at a fixed point in time (once every candidate up to last beat + 1.66 RR is
known) over candidates already known then, so the order of decisions, and every result, does
not depend on how the stream is chunked: the envelope is a running sum carried sample by sample,
the filters carry their state, and the same samples give the same bits. An accepted beat is
never withdrawn: it is final when it is emitted, at most `latency_s` after its R peak once the
first `learning_s` have been learnt (beats in those wait for the end of them).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.ndimage import maximum_filter1d

from diagnosis.ecg import filters
from diagnosis.ecg.beats import AFTER_S, BEFORE_S, best_correlation, detrend, stepped_windows
from diagnosis.ecg.buffers import SampleBuffer
from diagnosis.ecg.medians import median

NO_PEAKS = np.empty(0, dtype=np.int64)
"""What a push that finalises no beat returns (most do): one array, read only."""
NO_PEAKS.flags.writeable = False


@dataclass
class _Candidate:
    peak: int
    """Envelope maximum, absolute sample."""
    amplitudes: np.ndarray
    """Per-lead RMS of the QRS band over the integration window ending at the peak, mV."""
    slope: float
    one_sided: bool = False
    """One steep edge without the swing back a QRS complex has: a baseline step, never a beat."""
    shadowed: bool = False
    """A local envelope maximum that only a baseline step's lobe before it kept from being the
    highest of its window (`QrsDetector._unshadowed`)."""


class _Levels:
    """Per-lead typical beat and noise amplitudes, and how beat-like a candidate is across leads.

    A candidate's beat-likeness is each lead's excess over its noise, weighted by that lead's
    signal-to-noise ratio, as a fraction of a typical beat's: 1 is a typical beat, 0 is noise.
    A lead whose artefacts are as large as its QRS complexes thereby gets almost no say, and a
    lead that is flat or missing at a candidate (its electrode came off) none: the others
    judge it as if that lead were not there. Otherwise the lost lead's typical beat made every
    beat look weak, the rejected beats raised the noise level of the leads still showing them,
    and detection stopped until the electrode was back (MIT-BIH 100 with MLII missing for ten
    minutes lost all 758 beats in them, and the analysis called ASYSTOLE).
    """

    HISTORY: ClassVar[int] = 8
    NOISE_WEIGHT: ClassVar[float] = 0.125
    LEARN_RATIO: ClassVar[float] = 0.4
    MAX_NOISE: ClassVar[float] = 0.5
    """Noise above half the beat level is taken as a mis-estimate (fast rhythms, wide QRS)."""
    MIN_BEAT_MV: ClassVar[float] = 1e-3
    """A lead whose typical beat has less QRS-band RMS than this (1 uV) carries no ECG."""

    def __init__(self, beats: list[np.ndarray], noise: np.ndarray) -> None:
        self.beats = beats[-self.HISTORY:]
        self.noise = noise
        self._signal: tuple[np.ndarray, ...] | None = None
        """(typical beat, usable leads, beat level used, lowest and highest noise level taken
        as true), until a beat is added."""
        self._model: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float] | None = None
        """(usable leads, weights, clipped noise, each lead's and the typical beat's score), until
        levels change."""

    @classmethod
    def learn(cls, candidates: list["_Candidate"], band: np.ndarray) -> "_Levels":
        """Levels from the first seconds: candidates within `LEARN_RATIO` of the strongest are
        beats; noise peaks are put at twice the band's median magnitude (about 1.5 sigma)."""
        noise = 2.0 * median(np.abs(band), axis=0) if len(band) else np.zeros(band.shape[1])
        if not candidates:
            return cls([], noise)
        amplitudes = np.array([c.amplitudes for c in candidates])
        strength = np.sqrt(np.sum(amplitudes ** 2, axis=1))
        return cls(list(amplitudes[strength >= cls.LEARN_RATIO * strength.max()]), noise)

    def _typical_beat(self) -> tuple[np.ndarray, ...]:
        if self._signal is None:
            typical = median(np.array(self.beats), axis=0)
            # A flat, disconnected or all-NaN lead (0 mV after the filters) has no beat level:
            # it gets no say instead of turning every lead's weights into 0/0.
            usable = np.isfinite(typical) & (typical > self.MIN_BEAT_MV)
            signal = np.where(usable, typical, 1.0)
            self._signal = (typical, usable, signal, 0.02 * signal, self.MAX_NOISE * signal)
        return self._signal

    def _weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        if self._model is None:
            _, usable, signal, lowest, highest = self._typical_beat()
            noise = np.where(np.isfinite(self.noise), self.noise, 0.0)
            noise = np.minimum(np.maximum(noise, lowest), highest)
            margin = signal - noise
            weights = np.where(usable, margin / noise ** 2, 0.0)
            scores = np.where(usable, weights * margin, 0.0)
            typical = float(np.add.reduce(scores)) if usable.any() else 0.0
            self._model = (usable, weights, noise, scores, typical)
        return self._model

    def beat_likeness(self, amplitudes: np.ndarray, spare_one: bool = False) -> float:
        """`spare_one`: the highest likeness with or without any one lead."""
        if not self.beats:
            return float("inf")
        usable, weights, noise, scores, typical = self._weights()
        if not typical > 0:
            return 0.0
        # Missing (NaN) or infinite amplitudes count as 0 (an RMS is never -inf).
        present = np.where(np.isfinite(amplitudes), amplitudes, 0.0)
        shares = weights * np.where(usable, present - noise, 0.0)
        dead = usable & ~self._shows(amplitudes)
        if dead.any():
            # A lead gone flat or missing since (an electrode off) says nothing of this
            # candidate: the others judge it as they would without that lead.
            rest = float(np.add.reduce(scores[~dead]))
            return float(np.add.reduce(shares[~dead]) / rest) if rest > 0 else 0.0
        total = np.add.reduce(shares)
        if not spare_one:
            return float(total / typical)
        rest = typical - scores
        with np.errstate(divide="ignore", invalid="ignore"):
            without = np.where(rest > 0, (total - shares) / rest, -np.inf)
        return float(max(total / typical, np.maximum.reduce(without)))

    def timing_lead(self, amplitudes: np.ndarray) -> int:
        """The lead this beat's R peak is placed on: the first, as annotators do (MIT-BIH's
        MLII), unless it carries no ECG (flat, disconnected, or gone so at this beat); then
        the one with the largest typical beat among those that show the beat."""
        if not self.beats:
            return 0
        typical, usable, *_ = self._typical_beat()
        live = usable & self._shows(amplitudes)
        if live[0] or not live.any():
            return 0
        return int(np.argmax(np.where(live, typical, -np.inf)))

    def _shows(self, amplitudes: np.ndarray) -> np.ndarray:
        """Per lead: has some QRS-band activity at this candidate (not flat nor missing)."""
        return np.isfinite(amplitudes) & (amplitudes > self.MIN_BEAT_MV)

    def add_beat(self, amplitudes: np.ndarray) -> None:
        self.beats = (self.beats + [amplitudes])[-self.HISTORY:]
        self._signal = None
        self._model = None

    def add_noise(self, amplitudes: np.ndarray) -> None:
        self.noise = self.noise + self.NOISE_WEIGHT * (amplitudes - self.noise)
        self._model = None


class _LeadGains:
    """Per-lead weights of the QRS-band energy summed into the envelope: each lead's energy in
    units of its own noise floor, so a lead under muscle or motion noise does not drown the
    beats of the others in noise peaks (over each lead of the shared multi-lead records under
    0.3 mV of electrode motion, 133 beats were missed, 41 so; the other leads alone miss few).
    A lead's floor is the median, over its last `BLOCKS` blocks of `BLOCK_S`, of each block's
    median band power (a QRS fills a fifth of a block at most). The weights are fixed within a
    block and set from the blocks before it: the same samples give the same energy however they
    are chunked."""

    BLOCK_S: ClassVar[float] = 1.0
    BLOCKS: ClassVar[int] = 4
    LIMIT: ClassVar[float] = 1e3
    """No lead weighs more than this many times the mean, nor less than its inverse."""
    STRIDE: ClassVar[int] = 5
    """Block medians are taken over every `STRIDE`th sample (by absolute index, so the same
    ones however the stream is cut): a fifth of the samples tell a median as well."""

    def __init__(self, fs: float, n_leads: int) -> None:
        self._block = max(int(round(self.BLOCK_S * fs)), 1)
        self._seen = 0
        self._open: list[np.ndarray] = []
        """Band power of the current block's samples so far."""
        self._floors = np.empty((self.BLOCKS, n_leads))
        """Each of the last `BLOCKS` blocks' median band power per lead (a ring)."""
        self._closed = 0
        self._weights = np.ones(n_leads)

    def energy(self, band: np.ndarray) -> np.ndarray:
        """Weighted sum over leads of the squared band samples (n_samples, n_leads)."""
        power = band * band
        if len(band) < self._block - self._seen % self._block:    # most chunks: inside a block
            self._open.append(power[-self._seen % self.STRIDE::self.STRIDE])
            self._seen += len(band)
            return np.einsum("ij,j->i", power, self._weights)
        out = np.empty(len(band))
        done = 0
        while done < len(band):
            take = min(len(band) - done, self._block - self._seen % self._block)
            part = power[done:done + take]
            out[done:done + take] = np.einsum("ij,j->i", part, self._weights)
            self._open.append(part[-self._seen % self.STRIDE::self.STRIDE])
            done += take
            self._seen += take
            if not self._seen % self._block:
                self._close_block()
        return out

    def _close_block(self) -> None:
        power = np.concatenate(self._open) if len(self._open) > 1 else self._open[0]
        self._open = []
        self._floors[self._closed % self.BLOCKS] = median(power, axis=0)
        self._closed += 1
        floor = median(self._floors[:self._closed], axis=0)
        # A flat or missing lead has no floor (and no energy): it keeps a weight of 1.
        live = floor > 0                # False for NaN too
        if live.any():
            mean = float(np.add.reduce(floor[live])) / np.count_nonzero(live)
            bounded = np.minimum(np.maximum(floor, mean / self.LIMIT), mean * self.LIMIT)
            self._weights = np.where(live, mean / bounded, 1.0)


class QrsDetector:
    """Stateful detector: `push` chunks of (n_samples, n_leads) mV, get final R-peak samples."""

    @dataclass(frozen=True)
    class Conf:
        band_hz: tuple[float, float] = filters.QRS_BAND_HZ
        mains_hz: float | None = 50.0
        integration_s: float = 0.10
        """Energy smoothing window, about one QRS width."""
        refractory_s: float = 0.20
        """No two beats closer than this; also the candidate lookahead."""
        t_wave_s: float = 0.36
        """A candidate this soon after a beat with under `t_wave_slope_ratio` of its slope is a T wave."""
        t_wave_slope_ratio: float = 0.5
        threshold_ratio: float = 0.35
        """Threshold = noise level + ratio * (signal level - noise level)."""
        searchback_ratio: float = 0.3
        searchback_rr: float = 1.66
        learning_s: float = 2.0
        latency_s: float = 1.0
        """No beat is emitted later than this after its R peak."""
        lost_s: float = 3.0
        """After this long without a beat the threshold drops to the search-back one."""
        refine_s: float = 0.075
        """Half-width of the search for the R extremum around the envelope peak."""
        premature_rr: float = 0.7
        """A candidate sooner than this fraction of the median RR after a beat is premature."""
        foreign_correlation: float = 0.5
        """Below this correlation with the recent beats' mean window a candidate is shaped
        unlike them."""
        foreign_slope_ratio: float = 1.2
        """A premature candidate shaped unlike the beats is one only if this much steeper than
        the beat before it. On the shared records every such true beat (ventricular) is at
        least 1.44x as steep; the motion artefacts and T waves that passed the levels early are
        at most 0.96x and correlate -0.07 to 0.41 with the beats, while true early beats no
        steeper than 1.2x correlate at least 0.64 (a noise burst in CPSC 2019 01575, 0.67, and
        waves in 00513's noisy start, which its small QS complexes resemble, 0.74 and 0.82, are
        beyond any shape threshold: `foreign_prominence` takes them)."""
        foreign_prominence: float = 2.5
        """A premature candidate no steeper than the last beat whose envelope peak is under this
        many times the envelope's median over [-0.3 s, +refractory] is an artefact whatever its
        shape: a QRS is a short burst of energy, a noise burst or a T wave in a noisy stretch
        is drawn out. On the shared records the premature, no steeper candidates above the
        levels are 123 true beats at 3.44x and more (CPSC 2021 35_6 9996; next CPSC 2019 01044,
        4.08x) and 8 artefacts at 1.39x to 2.03x: the five the shape test rejects, the noise
        burst of CPSC 2019 01575 and two waves in 00513's noisy start (shaped 0.67, 0.74 and
        0.82 like the beats). 2.5 lies mid-margin. Beats at any timing go below it only in
        noisy stretches (40 of the 6319 found, mostly CPSC 2019): there an early beat could be
        lost."""
        step_edge_ratio: float = 0.1
        """A candidate whose gentler edge is under this fraction of its steeper one, on the lead
        where it is largest, is a baseline step (an electrode pop or a jolt of the cable), not a
        QRS complex, which swings back as steeply as it came: on the shared records every beat
        found has a ratio of at least 0.25 (6281 beats; 17 under 0.3), the one step taken for a
        beat (CPSC 2019 00513 at 2391, which hid the beat after it) 0.04."""
        searchback_correlation: float = 0.35
        """Search-back takes a weak candidate only if shaped at least this much like the beats:
        the beats it finds on the shared records correlate at least 0.42, the lone wave it took
        in an atrial fibrillation pause (CPSC 2021 8_4) 0.27."""

        def __post_init__(self) -> None:
            low, high = self.band_hz
            checks = {
                "band_hz": 0 < low < high,
                "mains_hz": self.mains_hz is None or self.mains_hz > 0,
                "integration_s": 0 < self.integration_s <= 0.3,
                "refractory_s": 0.1 <= self.refractory_s <= 0.4,
                "t_wave_s": self.t_wave_s >= self.refractory_s,
                "t_wave_slope_ratio": 0 <= self.t_wave_slope_ratio <= 1,
                "threshold_ratio": 0 < self.threshold_ratio < 1,
                "searchback_ratio": 0 < self.searchback_ratio <= 1,
                "searchback_rr": self.searchback_rr > 1,
                "learning_s": self.learning_s > 0,
                "latency_s": self.latency_s >= self.refractory_s + self.refine_s,
                "refine_s": 0 < self.refine_s <= 0.15,
                "lost_s": self.lost_s > 0,
                "premature_rr": 0 < self.premature_rr < 1,
                "foreign_correlation": -1 <= self.foreign_correlation <= 1,
                "foreign_slope_ratio": self.foreign_slope_ratio > 0,
                "foreign_prominence": self.foreign_prominence >= 0,
                "step_edge_ratio": 0 <= self.step_edge_ratio < 1,
                "searchback_correlation": -1 <= self.searchback_correlation <= 1,
            }
            bad = [name for name, ok in checks.items() if not ok]
            if bad:
                raise ValueError(f"invalid QrsDetector.Conf fields: {', '.join(bad)}")

    RR_HISTORY: ClassVar[int] = 8
    WEAK_HISTORY: ClassVar[int] = 64
    FEW_MAXIMA: ClassVar[int] = 16
    """Up to this many envelope maxima a scan checks each on its own, beyond it all at once."""
    SHAPE_HISTORY: ClassVar[int] = 8
    """Beats whose mean window is the shape candidates are compared with."""
    SURROUND_S: ClassVar[float] = 0.3
    """How far back of an envelope peak its prominence is measured (forward: the refractory
    lookahead, known when it is judged)."""
    ALIGN_S: ClassVar[float] = 0.02
    """Envelope peaks wander this much from beat to beat; shapes are compared at the best
    alignment within it, in steps of a quarter of it."""
    EDGE_S: ClassVar[float] = 0.06
    """A candidate's edges are looked for this far either side of its QRS centre."""
    EDGE_STEP_S: ClassVar[float] = 0.004
    """Edges are slopes over twice this span, steady against single-sample noise."""
    ABSURD_MV: ClassVar[float] = 1e6
    """No electrode gives a kilovolt, whatever unit a caller confused: such samples are missing
    (squared they would overflow the running energy sum to inf and silence the stream for good)."""

    def __init__(self, fs: float, n_leads: int, conf: "QrsDetector.Conf | None" = None) -> None:
        if not fs > 0 or n_leads < 1:
            raise ValueError("fs must be positive and there must be at least one lead")
        self.fs = float(fs)
        self.n_leads = n_leads
        self.conf = conf or QrsDetector.Conf()
        c = self.conf
        self._clean_filter = filters.StreamingFilter(filters.clean_sos(fs, c.mains_hz), n_leads)
        band_sos = filters.qrs_band_sos(fs, c.band_hz)
        self._band_filter = filters.StreamingFilter(band_sos, n_leads)
        self._width = max(int(round(c.integration_s * fs)), 1)
        self._running_sum = np.zeros(self._width)
        """Running sums of the energy for the last `width` samples (0 before the stream)."""
        self._radius = max(int(round(c.refractory_s * fs)), 1)
        centre_hz = float(np.sqrt(c.band_hz[0] * min(c.band_hz[1], 0.45 * fs)))
        self._envelope_delay = int(round(filters.group_delay_s(band_sos, fs, centre_hz) * fs
                                         + (self._width - 1) / 2))
        self._refine = max(int(round(c.refine_s * fs)), 1)
        self._latency = int(round(c.latency_s * fs))
        self._lost = int(round(c.lost_s * fs))
        self._learning = int(round(c.learning_s * fs))
        history = self._latency + self._learning + 4 * self._radius + self._width
        self.clean = SampleBuffer(n_leads, history)
        """Baseline-free, notched signal, kept for R refinement and for beat labelling."""
        self._envelope = SampleBuffer(2, history)
        self._band = SampleBuffer(n_leads, history)
        self._gains = _LeadGains(fs, n_leads)
        self._scanned = 0
        self._known: list[_Candidate] = []
        self._weak: list[_Candidate] = []
        self._levels: _Levels | None = None
        self._last: _Candidate | None = None
        self._rr: list[int] = []
        self._rr_median = 0.0
        self._sparing = False
        """The last beat was taken only with one lead's stale level spared (`_judge`): until
        one is taken on all leads again, search-back spares one too."""
        self._before = int(round(BEFORE_S * fs))
        self._after = int(round(AFTER_S * fs))
        self._align = int(round(self.ALIGN_S * fs))
        self._surround = int(round(self.SURROUND_S * fs))
        self._edge = max(int(round(self.EDGE_S * fs)), 1)
        self._edge_step = max(int(round(self.EDGE_STEP_S * fs)), 1)
        self._step_peak: int | None = None
        """Envelope peak of the last one-sided candidate (a baseline step), whose shadow is
        scanned for."""
        self._shapes: list[np.ndarray] = []
        """Clean windows of the last `SHAPE_HISTORY` beats, as they were."""
        self._templates: np.ndarray | None = None
        """Their detrended mean and the last one, until a beat is added."""

    @property
    def lookahead(self) -> int:
        """Samples an ordinary beat waits after its R peak before it is emitted."""
        return self._radius + self._envelope_delay

    @property
    def settled(self) -> int:
        """Every beat whose R peak lies before this sample has been emitted.

        Usually ~`lookahead` + `refine_s` behind the newest sample, far less than `latency_s`
        (a bound for any stream): a beat still to come is a candidate not yet scanned or a weak
        one the pending search-back may take, and refinement moves it at most `refine_s`
        before its envelope peak. Once the search-back deadline has passed without a taker,
        no weak candidate can become a beat until a stronger one is accepted after it.
        """
        if self._levels is None:
            return 0
        earliest = self._scanned
        if self._last is not None and self._rr:
            deadline = self._last.peak + int(self.conf.searchback_rr * self._rr_median)
            if deadline + self._radius >= self._scanned:
                oldest = deadline + self._radius - self._latency
                earliest = min([earliest] + [c.peak for c in self._weak if c.peak >= oldest])
        return max(earliest - self._envelope_delay - self._refine, 0)

    def push(self, chunk: np.ndarray, checked: bool = False) -> np.ndarray:
        """Feed the next samples (n, n_leads) in mV; return R peaks that became final, ascending.

        NaN and infinite samples, and any beyond +-`ABSURD_MV`, are missing: the filters hold
        the lead's last value over them. `checked`: the chunk comes from `without_absurd`
        already (a caller that checked it for its other consumers), so it is not checked twice.
        """
        chunk = np.asarray(chunk, dtype=np.float64).reshape(-1, self.n_leads)
        if not len(chunk):
            return NO_PEAKS
        if not checked:
            chunk = self.without_absurd(chunk)
        clean = self._clean_filter.process(chunk)
        # The clean signal is finite (gaps held, no absurd values, a stable filter): the band
        # filter takes it as it lies, channel by channel.
        band = self._band_filter.filter_channels(np.array(clean.T, order="C")).T
        energy = self._gains.energy(band)
        envelope = np.empty((len(energy), 2))   # the envelope and, beside it, the slope
        np.sqrt(np.maximum(self._moving_average(energy), 0.0), out=envelope[:, 0])
        np.sqrt(energy, out=envelope[:, 1])
        self.clean.append(clean)
        self._band.append(band)
        self._envelope.append(envelope)
        self._scan(self._envelope.end - self._radius, at_end=False)
        return self._decide(self._envelope.end - self._radius, at_end=False)

    @classmethod
    def without_absurd(cls, chunk: np.ndarray) -> np.ndarray:
        """`chunk` with samples beyond +-`ABSURD_MV` as missing (NaN); the chunk itself when
        it has none."""
        if np.maximum.reduce(np.abs(chunk), axis=None) <= cls.ABSURD_MV:  # NaN: the long way
            return chunk
        with np.errstate(invalid="ignore"):
            absurd = np.abs(chunk) > cls.ABSURD_MV
        return np.where(absurd, np.nan, chunk) if absurd.any() else chunk

    def _moving_average(self, energy: np.ndarray) -> np.ndarray:
        """Mean of the last `width` energies (zeros before the stream), the same bits however
        the stream is chunked.

        A running sum carried sequentially (`np.add.accumulate`, np.cumsum's loop, adds in order
        from the carried total) differenced `width` apart: an FIR filter over chunks (lfilter
        with zi) adds the previous chunk's partial sums in another order and differs in the last
        bit, enough to flip a comparison of two equal-looking envelope samples.
        """
        width = self._width
        history = np.empty(width + len(energy))
        history[:width] = self._running_sum
        history[width:] = energy
        np.add.accumulate(history[width - 1:], out=history[width - 1:])
        self._running_sum = history[-width:]
        return (history[width:] - history[:-width]) / width

    def finish(self) -> np.ndarray:
        """End of stream: judge what is left with the samples there are."""
        self._scan(self._envelope.end, at_end=True)
        return self._decide(self._envelope.end, at_end=True)

    def _scan(self, until: int, at_end: bool) -> None:
        """Find envelope maxima over +-refractory in [scanned, until) whose window is complete.

        Only a local maximum (above the sample before it, not below the one after) can be the
        maximum of its window; the envelope is smooth, so a live chunk has a few, each checked
        against its own window (a long chunk's many are checked by one running maximum).
        """
        if until <= self._scanned:
            return
        lo = max(self._scanned - self._radius, 0)
        hi = self._envelope.end if at_end else until + self._radius
        values = self._envelope.window(lo, hi)
        envelope = values[:, 0]
        rising = envelope[1:] > envelope[:-1]
        offset = self._scanned - lo
        stop = min(offset + until - self._scanned, len(envelope))
        first, inner = max(offset, 1), min(stop, len(envelope) - 1)
        rises_to, rises_after = rising[first - 1:inner - 1], rising[first:inner]
        local = ((rises_to > rises_after).nonzero()[0] + first).tolist()  # rises to, not after
        if offset == 0 and (len(envelope) < 2 or not rising[0]):
            local.insert(0, 0)          # the stream's first sample: nothing before it
        if stop == len(envelope) > first and rising[-1]:
            local.append(stop - 1)      # the last sample known: nothing after it yet
        radius = self._radius
        if len(local) > self.FEW_MAXIMA:
            highest = maximum_filter1d(envelope, 2 * radius + 1, mode="constant",
                                       cval=-np.inf)[local].tolist()
        else:
            highest = [np.maximum.reduce(envelope[max(i - radius, 0):i + radius + 1])
                       for i in local]
        last = len(envelope) - 1
        for index, window_max in zip(local, highest):
            peak = lo + index
            # Outranked only by a rising flank: then the window's highest sample is its last.
            if envelope[index] >= window_max or (
                    index + radius <= last and envelope[index + radius] == window_max
                    and self._before_a_rise(envelope, rising, index)):
                # A lobe still rising at the stream's end is a complex cut short: one edge.
                cut = at_end and index == last
                candidate = self._candidate(peak, values[:, 1], index, cut=cut)
                self._known.append(candidate)
                if candidate.one_sided:
                    self._step_peak = peak
            elif (self._step_peak is not None
                  and self._width < peak - self._step_peak <= 2 * radius):
                shadowed = self._unshadowed(peak)
                if shadowed is not None:
                    self._known.append(shadowed)
        self._scanned = until

    def _before_a_rise(self, envelope: np.ndarray, rising: np.ndarray, index: int) -> bool:
        """For a local maximum whose refractory window peaks at its last sample: nothing before
        it is higher, and what is higher after it is only the rising flank of a lobe that peaks
        beyond the radius (that peak is a candidate of its own, at least the radius away): a
        beat just before a baseline step or a larger complex (CPSC 2021 101_9 with electrode
        pops: 12 beats before pops were lost without it)."""
        level, end = envelope[index], index + self._radius
        if not rising[end - 1] or np.maximum.reduce(
                envelope[max(index - self._radius, 0):index]) > level:
            return False
        higher = (envelope[index + 1:end + 1] > level).nonzero()[0]
        return bool(rising[index + 1 + higher[0]:end].all())

    def _candidate(self, peak: int, slopes: np.ndarray, index: int, shadowed: bool = False,
                   cut: bool = False) -> _Candidate:
        """The candidate with this envelope peak; `slopes[index]` is the peak's slope sample;
        `cut`: its lobe is cut by the stream's end, so it cannot be told one-sided."""
        band = self._band.window(peak + 1 - self._width, peak + 1)
        amplitudes = np.sqrt(np.add.reduce(band * band, axis=0) / len(band))
        slope = np.maximum.reduce(slopes[max(index - self._width, 0):index + self._width + 1])
        one_sided = not cut and self._one_sided(peak, amplitudes)
        return _Candidate(peak, amplitudes, float(slope), one_sided, shadowed)

    def _decide(self, frontier: int, at_end: bool) -> np.ndarray:
        """Judge known candidates and search-back deadlines in time order, up to `frontier`."""
        if self._levels is None:
            if frontier < self._learning and not at_end:
                return NO_PEAKS
            self._levels = _Levels.learn([c for c in self._known
                                          if c.peak < self._learning and not c.shadowed],
                                         self._band.window(0, self._learning))
        accepted: list[tuple[_Candidate, int]] = []
        queue, self._known = self._known, []
        for candidate in queue:
            self._search_back_before(candidate.peak + self._radius, accepted)
            self._judge(candidate, accepted)
        self._search_back_before(frontier if not at_end else frontier + self._latency, accepted)
        return self._refine_all(accepted)

    def _judge(self, candidate: _Candidate, accepted: list[tuple[_Candidate, int]]) -> None:
        if candidate.one_sided:     # a baseline step: an event, not a beat nor the noise floor
            return
        levels = self._levels
        last = self._last
        is_t_wave = (last is not None
                     and candidate.peak - last.peak < self.conf.t_wave_s * self.fs
                     and candidate.slope < self.conf.t_wave_slope_ratio * last.slope)
        # After `lost_s` without a beat the levels are stale: lower the bar, and spare any one
        # lead its stale level (one whose QRS shrank tenfold made every beat look weak). Not
        # before the first beat, whose levels were just learnt from these very seconds (a
        # lowered bar there took the tail of a complex cut by the record's start, MIT-BIH 800
        # sample 2).
        lost = last is not None and candidate.peak - last.peak > self._lost
        threshold = self.conf.threshold_ratio * (self.conf.searchback_ratio if lost else 1.0)
        likeness = levels.beat_likeness(candidate.amplitudes)
        sparing = lost and not likeness > threshold
        if sparing:
            likeness = levels.beat_likeness(candidate.amplitudes, spare_one=True)
        strong = likeness > threshold and not is_t_wave
        artefact = strong and self._foreign_early(candidate)
        if strong and not artefact:
            self._sparing = sparing
            self._accept(candidate, accepted)
            return
        levels.add_noise(candidate.amplitudes)
        if not (is_t_wave or artefact):
            self._weak = (self._weak + [candidate])[-self.WEAK_HISTORY:]

    def _foreign_early(self, candidate: _Candidate) -> bool:
        """Premature, no steeper than the last beat and either shaped unlike the recent beats
        or drawn out: a motion artefact, a noise burst or a T wave, not an ectopic beat (see
        `Conf.foreign_slope_ratio` and `Conf.foreign_prominence`)."""
        c, last = self.conf, self._last
        if (last is None or not self._rr
                or candidate.peak - last.peak >= c.premature_rr * self._rr_median
                or candidate.slope >= c.foreign_slope_ratio * last.slope):
            return False
        # In a step's shadow the surroundings are the step's lobe: prominence tells nothing.
        if not candidate.shadowed and self._drawn_out(candidate.peak):
            return True
        shape = self._shape_likeness(candidate.peak)
        return shape is not None and shape < c.foreign_correlation

    def _one_sided(self, peak: int, amplitudes: np.ndarray) -> bool:
        """One steep edge without the swing back a QRS complex has (`Conf.step_edge_ratio`),
        on the lead where the candidate is largest."""
        centre = peak - self._envelope_delay
        reach, step = self._edge, self._edge_step
        lead = int(amplitudes.argmax())     # finite: the band filter sees no gap
        trace = self.clean.window(centre - reach - step, centre + reach + step + 1)[:, lead]
        if len(trace) < 2 * (reach + step) + 1:
            return False
        edges = trace[2 * step:] - trace[:-2 * step]
        rise, fall = np.maximum.reduce(edges), -np.minimum.reduce(edges)
        return bool(min(rise, fall) < self.conf.step_edge_ratio * max(rise, fall))

    def _unshadowed(self, peak: int) -> _Candidate | None:
        """The local maximum at `peak`, one integration window to two refractory radii after
        the last baseline step (nearer, its energy window holds the step's own), as a candidate
        if the only higher envelope within the radius is the step's lobe: a beat on the step's
        decaying tail, which the lobe hid (CPSC 2019 00513 at 2563)."""
        step_peak, radius = self._step_peak, self._radius
        envelope = self._envelope.window(step_peak, peak + radius + 1)
        above = envelope[:, 0] > envelope[peak - step_peak, 0]
        lobe_end = int(np.argmin(above))    # the step's lobe is above until here
        if above[lobe_end:].any():
            return None
        return self._candidate(peak, envelope[:, 1], peak - step_peak, shadowed=True)

    def _drawn_out(self, peak: int) -> bool:
        """The envelope peak is under `foreign_prominence` times the envelope's median around it
        (from `SURROUND_S` before to the refractory lookahead after)."""
        around = self._envelope.window(peak - self._surround, peak + self._radius + 1)[:, 0]
        top = self._envelope.window(peak, peak + 1)[0, 0]
        return bool(top < self.conf.foreign_prominence * median(around))

    def _shape_likeness(self, peak: int) -> float | None:
        """Correlation with the recent beats' mean window, or with the last beat's when that is
        higher (the beats of a ventricular run repeat each other's shape, not the sinus one),
        at the best alignment; None without beats or a whole window (or if all are flat)."""
        if not self._shapes:
            return None
        if self._templates is None:
            shapes = detrend(np.array(self._shapes))
            self._templates = np.array([np.add.reduce(shapes) / len(shapes), shapes[-1]])
        length, align = self._before + self._after, self._align
        start = self._shape_start(peak) - align
        span = self.clean.window(start, start + length + 2 * align)
        if len(span) < length + 2 * align:
            return None
        step = max(align // 4, 1)
        windows = stepped_windows(span, length, step)
        value = best_correlation(detrend(windows), self._templates)
        return value if np.isfinite(value) else None

    def _shape_start(self, peak: int) -> int:
        """First sample of the shape window of the candidate with this envelope peak."""
        return peak - self._envelope_delay - self._before

    def _accept(self, candidate: _Candidate, accepted: list[tuple[_Candidate, int]]) -> None:
        self._levels.add_beat(candidate.amplitudes)
        if self._last is not None:
            self._rr = (self._rr + [candidate.peak - self._last.peak])[-self.RR_HISTORY:]
            self._rr_median = float(statistics.median(self._rr))  # whole samples: exact
        self._last = candidate
        self._weak = [c for c in self._weak if c.peak > candidate.peak]
        start = self._shape_start(candidate.peak)
        shape = self.clean.window(start, start + self._before + self._after)
        if len(shape) == self._before + self._after:
            self._shapes = (self._shapes + [shape.copy()])[-self.SHAPE_HISTORY:]
            self._templates = None
        accepted.append((candidate, self._levels.timing_lead(candidate.amplitudes)))

    def _search_back_before(self, now: int, accepted: list[tuple[_Candidate, int]]) -> None:
        """While the rhythm says a beat is overdue, take the strongest weak candidate shaped
        like the beats.

        `now` is in the units of `candidate.peak + radius`, the moment a candidate becomes known.
        A beat is overdue at `deadline` (last beat + searchback_rr x RR); the search runs once
        every candidate up to the deadline is known, at deadline + radius, so a weak beat just
        before the deadline is not skipped, and over candidates no older than `latency` before
        that moment, so no beat comes out later than that.
        """
        while self._last is not None and self._rr:
            rr = self._rr_median
            deadline = self._last.peak + int(self.conf.searchback_rr * rr)
            if deadline + self._radius >= now:
                return
            oldest = deadline + self._radius - self._latency
            floor = self.conf.threshold_ratio * self.conf.searchback_ratio
            scored = [(self._levels.beat_likeness(c.amplitudes, self._sparing), c)
                      for c in self._weak if oldest <= c.peak <= deadline]
            scored = sorted([(likeness, c) for likeness, c in scored if likeness > floor],
                            key=lambda pair: pair[0], reverse=True)
            taken = next((c for _, c in scored if self._shaped_like_beats(c.peak)), None)
            if taken is None:
                self._weak = [c for c in self._weak if c.peak > deadline]
                return
            self._accept(taken, accepted)

    def _shaped_like_beats(self, peak: int) -> bool:
        shape = self._shape_likeness(peak)
        return shape is None or shape >= self.conf.searchback_correlation

    def _refine_all(self, beats: list[tuple[_Candidate, int]]) -> np.ndarray:
        """Move each envelope peak to the R extremum of its timing lead's clean signal (the
        first lead, unless that carries no ECG; chosen when the beat was accepted): the sample
        farthest from the window's median, or, for a beat on a baseline step's decaying tail,
        from the straight line between the window's ends (the median lies to one side of a
        sloping baseline: CPSC 2019 00513's beat at 2563 was placed 76 ms early)."""
        if not beats:       # most chunks
            return NO_PEAKS
        refined = []
        for candidate, lead in beats:
            centre = candidate.peak - self._envelope_delay
            start = max(centre - self._refine, 0)
            window = self.clean.window(start, centre + self._refine + 1)[:, lead:lead + 1]
            if not len(window):
                refined.append(max(centre, 0))
                continue
            baseline = detrend(window) if candidate.shadowed else window - median(window, axis=0)
            refined.append(start + int(np.abs(baseline).argmax()))
        return np.array(refined, dtype=np.int64)


def detect_qrs(signal: np.ndarray, fs: float,
               conf: QrsDetector.Conf | None = None) -> np.ndarray:
    """R-peak sample indices of a whole record (n_samples[, n_leads]) in mV; empty if none."""
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim == 1:
        signal = signal[:, None]
    if not signal.size:
        return np.empty(0, dtype=np.int64)
    detector = QrsDetector(fs, signal.shape[1], conf)
    return np.concatenate([detector.push(signal), detector.finish()])
