"""The EC57 scoring itself, on small hand-made arrays whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from diagnosis.ecg import scoring
from diagnosis.ecg.scoring import match_beats

FS = 1000.0  # one sample per millisecond: the 150 ms window is 150 samples


def counts(match: scoring.BeatMatch) -> tuple[int, int, int]:
    return match.tp, match.fn, match.fp


def test_perfect_detection() -> None:
    beats = np.array([100, 900, 1700, 2500])
    match = match_beats(beats, beats, FS)
    assert counts(match) == (4, 0, 0)
    assert match.sensitivity == 1.0 and match.positive_predictivity == 1.0
    assert np.array_equal(match.offsets, [0, 0, 0, 0])


def test_window_is_150_ms_inclusive() -> None:
    reference = np.array([1000, 3000, 5000, 7000])
    detected = np.array([1150, 2850, 5151, 6849])
    match = match_beats(reference, detected, FS)
    assert counts(match) == (2, 2, 2)
    assert np.array_equal(match.offsets, [150, -150])
    assert np.array_equal(match.matched_reference, [0, 1])
    assert np.array_equal(match.matched_detection, [0, 1])


def test_window_scales_with_the_sampling_rate() -> None:
    # 150 ms at 360 Hz is 54 samples.
    assert counts(match_beats([1000], [1054], 360)) == (1, 0, 0)
    assert counts(match_beats([1000], [1055], 360)) == (0, 1, 1)
    assert counts(match_beats([1000], [1055], 360, window_s=0.2)) == (1, 0, 0)


def test_each_beat_and_each_detection_counts_once() -> None:
    # Two detections on one beat: one is a false positive, whichever is nearer is the match.
    match = match_beats([1000], [960, 1010], FS)
    assert counts(match) == (1, 0, 1)
    assert np.array_equal(match.offsets, [10])
    # One detection between two beats: it matches the nearer one only.
    match = match_beats([1000, 1200], [1090], FS)
    assert counts(match) == (1, 1, 0)
    assert np.array_equal(match.matched_reference, [0])


def test_a_taken_nearest_detection_does_not_hide_the_next_one() -> None:
    """Beat 120's nearest detection (90) goes to beat 100; its next one (80) is still within
    150 ms and must be paired, not only the immediate neighbours of the beat."""
    match = match_beats([100, 120], [80, 90], FS)
    assert counts(match) == (2, 0, 0)
    assert sorted(match.offsets.tolist()) == [-40, -10]


def test_unsorted_input_is_sorted_first() -> None:
    match = match_beats([2500, 100, 1700, 900], [1705, 95, 2500], FS)
    assert counts(match) == (3, 1, 0)
    assert np.array_equal(match.offsets, [-5, 5, 0])


def test_empty_and_undefined() -> None:
    none = match_beats([], [], FS)
    assert counts(none) == (0, 0, 0)
    assert np.isnan(none.sensitivity) and np.isnan(none.positive_predictivity)
    missed = match_beats([10, 20_000], [], FS)
    assert counts(missed) == (0, 2, 0) and missed.sensitivity == 0.0
    assert np.isnan(missed.positive_predictivity)
    invented = match_beats([], [10], FS)
    assert counts(invented) == (0, 0, 1) and invented.positive_predictivity == 0.0


def test_span_scores_only_the_annotated_stretch() -> None:
    reference = np.array([100, 1000, 2000, 3000, 4900])
    detected = np.array([20, 1010, 2990, 4000, 4990])
    match = match_beats(reference, detected, FS, span=(500, 4500))
    # Inside: 1000 found, 2000 missed, 3000 found, 4000 invented; the edges do not count.
    assert counts(match) == (2, 1, 1)


def test_span_edges_pair_before_they_cut() -> None:
    """A detection just inside the span that belongs to a beat just outside it is neither a
    false positive nor a true positive (CPSC 2019's scorer does the same at 0.5 s and 9.5 s)."""
    assert counts(match_beats([4760], [4740], FS, span=(250, 4750))) == (0, 0, 0)
    assert counts(match_beats([240], [260], FS, span=(250, 4750))) == (0, 0, 0)
    # A beat inside the span found from just outside it is found.
    assert counts(match_beats([4745], [4770], FS, span=(250, 4750))) == (1, 0, 0)


def test_percentages() -> None:
    reference = np.arange(100) * 1000
    detected = np.concatenate([reference[:97], [500_000, 600_500]])
    match = match_beats(reference, detected, FS)
    assert counts(match) == (97, 3, 2)
    assert match.sensitivity == pytest.approx(0.97)
    assert match.positive_predictivity == pytest.approx(97 / 99)


def test_totals_add_counts_and_keep_offsets_in_seconds() -> None:
    a = match_beats([1000, 2000], [1002, 2000, 2500], 1000)
    b = match_beats([360, 720], [362], 360)
    total = a + b
    assert counts(total) == (3, 1, 1)
    assert total.sensitivity == 0.75 and total.positive_predictivity == 0.75
    assert np.allclose(total.offsets_s, [0.002, 0.0, 2 / 360])


def test_reference_beats_keep_only_beat_symbols() -> None:
    samples = np.arange(10) * 100
    symbols = ["+", "N", "~", "V", "|", "A", "Q", "x", "F", "/"]
    assert np.array_equal(scoring.reference_beats(samples, symbols),
                          [100, 300, 500, 600, 800, 900])
    assert scoring.reference_beats(np.empty(0), []).shape == (0,)
    with pytest.raises(ValueError):
        scoring.reference_beats(samples, symbols[:3])


def test_af_mask_from_rhythm_annotations() -> None:
    mask = scoring.reference_af_mask(100, [0, 10, 40, 60, 90],
                                     ["(N", "(AFIB", "(N", "(AFIB\x00", ""])
    expected = np.zeros(100, dtype=bool)
    expected[10:40] = True
    expected[60:] = True
    assert np.array_equal(mask, expected)


def test_episode_agreement_counts_samples() -> None:
    reference = scoring.intervals_mask(100, [(10, 40)])
    detected = scoring.intervals_mask(100, [(20, 50), (-5, 2)])
    agreement = scoring.episode_agreement(reference, detected)
    assert (agreement.true_positive, agreement.false_negative,
            agreement.false_positive, agreement.true_negative) == (20, 10, 12, 58)
    assert agreement.sensitivity == pytest.approx(20 / 30)
    assert agreement.specificity == pytest.approx(58 / 70)


def test_ventricular_match_counts_as_physionets_bxb() -> None:
    """EC57 VEB as bxb counts it: a missed V is a false negative and an extra detection
    called V a false positive; a V called on a fusion or an unclassifiable beat is neither."""
    reference = np.array([100, 400, 700, 1000, 1300, 1600, 1900])
    symbols = ["N", "V", "E", "N", "F", "r", "Q"]
    detected = np.array([102, 398, 1003, 1301, 1598, 1900, 2200])   # 700 missed, 2200 extra
    labels = ["V", "V", "N", "V", "V", "V", "V"]
    veb = scoring.ventricular_match(match_beats(reference, detected, 360.0), symbols, labels)
    # TP: 400 V, 1600 r. FN: the missed 700 E. FP: 100 N called V, the extra V at 2200.
    assert (veb.tp, veb.fn, veb.fp) == (2, 1, 2)
    assert veb.sensitivity == pytest.approx(2 / 3) and veb.positive_predictivity == 0.5
    total = veb + veb
    assert (total.tp, total.fn, total.fp) == (4, 2, 4)
    labels[-1] = "N"     # the extra detection called normal is the detector's error only
    veb = scoring.ventricular_match(match_beats(reference, detected, 360.0), symbols, labels)
    assert (veb.tp, veb.fn, veb.fp) == (2, 1, 1)
    with pytest.raises(ValueError):
        scoring.ventricular_match(match_beats(reference, detected, 360.0), symbols[:1], labels)


def test_ventricular_match_scores_inside_the_span_only() -> None:
    reference = np.array([100, 400, 700])
    detected = np.array([400, 705, 1000])
    match = match_beats(reference, detected, 360.0, span=(300, 800))
    assert np.array_equal(match.missed_reference, []) and np.array_equal(match.extra_detection, [])
    veb = scoring.ventricular_match(match, ["V", "N", "N"], ["V", "N", "V"])
    assert (veb.tp, veb.fn, veb.fp) == (0, 0, 1)   # 400 is a V on N; 100 and 1000 lie outside
