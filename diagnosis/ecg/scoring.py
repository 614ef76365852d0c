"""Scoring against reference annotations the ANSI/AAMI EC57 way, so our detector and its peers
are measured with one ruler: a detection matches a reference beat within 150 ms, each at most once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
"""EC57 beat labels; every other annotation symbol (rhythm '+', noise '~', artefact '|') is not a beat."""

MATCH_WINDOW_S = 0.150

VENTRICULAR_SYMBOLS = frozenset("VrE")
"""EC57's ventricular ectopic beat class (VEB): premature ventricular contraction, R-on-T
premature ventricular contraction, ventricular escape."""

UNJUDGED_SYMBOLS = frozenset("F/fQ?")
"""Reference beats EC57's VEB statistics leave out when the algorithm calls them V (fusion,
paced, fusion of paced and normal, unclassifiable): such a V is neither right nor wrong
(PhysioNet's bxb, the standard's reference implementation, counts their "Fv" and "Qv" in
neither)."""


@dataclass(frozen=True)
class BeatMatch:
    """The outcome of matching one record's detections to its reference beats."""

    tp: int
    fn: int
    fp: int
    offsets: np.ndarray = field(repr=False)
    """Detection minus reference, in samples, for every matched pair (one record's rate)."""
    matched_reference: np.ndarray = field(repr=False)
    """Index into the sorted reference array of each matched pair (empty once records are added)."""
    matched_detection: np.ndarray = field(repr=False)
    offsets_s: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    """Detection minus reference in seconds: comparable across records of different rates."""
    missed_reference: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64),
                                         repr=False)
    """Index into the sorted reference array of each false negative (empty once added)."""
    extra_detection: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64),
                                        repr=False)
    """Index into the sorted detections of each false positive (empty once added)."""

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def positive_predictivity(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    def __add__(self, other: "BeatMatch") -> "BeatMatch":
        """Gross totals over records (EC57 "gross" statistics); offsets in seconds carry over,
        offsets in samples only while every record has the same rate, which is not checked, so
        use `offsets_s` for totals."""
        return BeatMatch(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp,
                         np.concatenate([self.offsets, other.offsets]),
                         np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64),
                         np.concatenate([self.offsets_s, other.offsets_s]))


def reference_beats(samples: np.ndarray, symbols: list[str]) -> np.ndarray:
    """The sample indices of the annotations that are beats."""
    samples = np.asarray(samples, dtype=np.int64)
    if len(samples) != len(symbols):
        raise ValueError(f"{len(samples)} annotation samples but {len(symbols)} symbols")
    is_beat = np.array([symbol in BEAT_SYMBOLS for symbol in symbols], dtype=bool)
    return samples[is_beat] if len(symbols) else np.empty(0, np.int64)


def match_beats(reference: np.ndarray, detected: np.ndarray, fs: float,
                window_s: float = MATCH_WINDOW_S,
                span: tuple[int, int] | None = None) -> BeatMatch:
    """Pair detections with reference beats one-to-one, nearest first, within `window_s`.

    `span` (first, last sample, inclusive) limits scoring to the annotated stretch, because
    reference annotations often stop short of the record's edges; without it both arrays count.
    Pairs are formed over the whole record before the span is applied, so a detection just
    inside the span that matches a reference beat just outside it is neither a false positive
    nor a true positive (and likewise a reference inside matched from outside counts as found).
    """
    reference = np.sort(np.asarray(reference, dtype=np.int64).ravel())
    detected = np.sort(np.asarray(detected, dtype=np.int64).ravel())
    if not fs > 0 or not window_s >= 0:
        raise ValueError("fs must be positive and window_s non-negative")
    window = int(round(window_s * fs))
    ref_index, det_index = _nearest_pairs(reference, detected, window)
    if span is None:
        ref_in = np.ones(len(reference), dtype=bool)
        det_in = np.ones(len(detected), dtype=bool)
    else:
        ref_in = (reference >= span[0]) & (reference <= span[1])
        det_in = (detected >= span[0]) & (detected <= span[1])
    ref_matched = np.zeros(len(reference), dtype=bool)
    ref_matched[ref_index] = True
    det_matched = np.zeros(len(detected), dtype=bool)
    det_matched[det_index] = True
    scored = ref_in[ref_index]
    ref_index, det_index = ref_index[scored], det_index[scored]
    offsets = detected[det_index] - reference[ref_index]
    missed = np.flatnonzero(ref_in & ~ref_matched)
    extra = np.flatnonzero(det_in & ~det_matched)
    return BeatMatch(tp=len(ref_index), fn=len(missed), fp=len(extra), offsets=offsets,
                     matched_reference=ref_index, matched_detection=det_index,
                     offsets_s=offsets / float(fs), missed_reference=missed,
                     extra_detection=extra)


def ventricular_match(match: BeatMatch, reference_symbols: list[str],
                      labels: list[str]) -> BeatMatch:
    """EC57 VEB statistics of the beat labels of `match`'s detections, as PhysioNet's bxb
    counts them: a reference beat in `VENTRICULAR_SYMBOLS` labelled "V" is a true positive;
    labelled otherwise, or not detected at all, a false negative; a "V" on a reference beat of
    another class, or on a detection matching no reference beat, a false positive, except on
    the `UNJUDGED_SYMBOLS` (fusion, paced, unclassifiable). No offsets."""
    if len(reference_symbols) <= int(max(match.matched_reference.max(initial=-1),
                                         match.missed_reference.max(initial=-1))) \
            or len(labels) <= int(max(match.matched_detection.max(initial=-1),
                                      match.extra_detection.max(initial=-1))):
        raise ValueError("a scored beat has no symbol or no label")
    reference = [reference_symbols[i] for i in match.matched_reference.tolist()]
    ventricular = np.array([symbol in VENTRICULAR_SYMBOLS for symbol in reference], dtype=bool)
    judged = np.array([symbol not in UNJUDGED_SYMBOLS for symbol in reference], dtype=bool)
    called = np.array([labels[i] == "V" for i in match.matched_detection.tolist()], dtype=bool)
    missed = sum(reference_symbols[i] in VENTRICULAR_SYMBOLS
                 for i in match.missed_reference.tolist())
    extra = sum(labels[i] == "V" for i in match.extra_detection.tolist())
    empty = np.empty(0, dtype=np.int64)
    return BeatMatch(int(np.sum(ventricular & called)),
                     int(np.sum(ventricular & ~called)) + missed,
                     int(np.sum(~ventricular & judged & called)) + extra,
                     empty, empty, empty, np.empty(0))


def _nearest_pairs(reference: np.ndarray, detected: np.ndarray,
                   window: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching by increasing distance over every pair within `window`
    (ties: earlier reference, then earlier detection); returns index arrays in reference order.

    Each reference's candidates are all detections in [r - window, r + window], found with two
    binary searches; only the final greedy pass walks the (few) candidate pairs.
    """
    empty = np.empty(0, dtype=np.int64)
    if not len(reference) or not len(detected):
        return empty, empty
    lo = np.searchsorted(detected, reference - window, side="left")
    hi = np.searchsorted(detected, reference + window, side="right")
    counts = hi - lo
    ref_i = np.repeat(np.arange(len(reference)), counts)
    if not len(ref_i):
        return empty, empty
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    det_k = starts + np.arange(len(ref_i))
    distance = np.abs(detected[det_k] - reference[ref_i])
    order = np.lexsort((det_k, ref_i, distance))
    used_ref = np.zeros(len(reference), dtype=bool)
    used_det = np.zeros(len(detected), dtype=bool)
    pairs_ref, pairs_det = [], []
    for r, d in zip(ref_i[order].tolist(), det_k[order].tolist()):
        if not used_ref[r] and not used_det[d]:
            used_ref[r] = used_det[d] = True
            pairs_ref.append(r)
            pairs_det.append(d)
    pairs_ref_a = np.array(pairs_ref, dtype=np.int64)
    pairs_det_a = np.array(pairs_det, dtype=np.int64)
    order = np.argsort(pairs_ref_a, kind="stable")
    return pairs_ref_a[order], pairs_det_a[order]


def reference_af_mask(n_samples: int, samples: np.ndarray, aux_notes: list[str]) -> np.ndarray:
    """Per-sample AF truth from rhythm annotations: '(AFIB' opens an episode, any other '(' closes it."""
    mask = np.zeros(n_samples, dtype=bool)
    in_af_since: int | None = None
    for sample, note in zip(np.asarray(samples, dtype=np.int64), aux_notes):
        note = (note or "").strip("\x00 ")
        if not note.startswith("("):
            continue
        if in_af_since is not None:
            mask[in_af_since:sample] = True
            in_af_since = None
        if note.startswith("(AFIB"):
            in_af_since = int(sample)
    if in_af_since is not None:
        mask[in_af_since:] = True
    return mask


def intervals_mask(n_samples: int, intervals: list[tuple[int, int]]) -> np.ndarray:
    """Per-sample mask of half-open [start, end) intervals."""
    mask = np.zeros(n_samples, dtype=bool)
    for start, end in intervals:
        mask[max(start, 0):min(end, n_samples)] = True
    return mask


@dataclass(frozen=True)
class EpisodeAgreement:
    """Duration-weighted agreement of a detected episode mask with the reference mask."""

    true_positive: int
    false_negative: int
    true_negative: int
    false_positive: int

    @property
    def sensitivity(self) -> float:
        total = self.true_positive + self.false_negative
        return self.true_positive / total if total else float("nan")

    @property
    def specificity(self) -> float:
        total = self.true_negative + self.false_positive
        return self.true_negative / total if total else float("nan")

    def __add__(self, other: "EpisodeAgreement") -> "EpisodeAgreement":
        return EpisodeAgreement(self.true_positive + other.true_positive,
                                self.false_negative + other.false_negative,
                                self.true_negative + other.true_negative,
                                self.false_positive + other.false_positive)


def episode_agreement(reference: np.ndarray, detected: np.ndarray) -> EpisodeAgreement:
    """Counts samples, so a long episode weighs more than a short one (duration Se/Sp)."""
    reference = np.asarray(reference, dtype=bool)
    detected = np.asarray(detected, dtype=bool)
    return EpisodeAgreement(int(np.sum(reference & detected)), int(np.sum(reference & ~detected)),
                            int(np.sum(~reference & ~detected)), int(np.sum(~reference & detected)))
