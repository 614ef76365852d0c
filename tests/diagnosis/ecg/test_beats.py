"""Beat labels (normal vs ventricular) on the detector's beats in the annotated real records, and
the labeller's features on small hand-made beats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diagnosis.ecg import beats, filters, qrs, references, scoring

RR_HISTORY = 8


def label_record(signal: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Detect beats, then label each in order from the same clean signal the detector uses."""
    peaks = qrs.detect_qrs(signal, fs)
    clean = filters.apply_sos(filters.clean_sos(fs), signal)
    labeller = beats.BeatLabeler(fs)
    labels = []
    for i, peak in enumerate(peaks):
        window = clean[max(peak - labeller.before, 0):peak + labeller.after]
        rr = (peak - peaks[i - 1]) / fs if i else float("nan")
        recent = np.diff(peaks[max(i - RR_HISTORY, 0):i + 1])
        median_rr = float(np.median(recent)) / fs if len(recent) >= 2 else float("nan")
        labels.append(labeller.label(window, rr, median_rr))
    return peaks, np.array(labels)


@pytest.fixture(scope="module")
def labelled(shared_data: Path) -> dict[str, np.ndarray]:
    """For every .atr record: a 2x2 table [[N as N, N as V], [V as N, V as V]] over the detected
    beats matched to reference beats (reference classes: V, and every other beat symbol)."""
    import wfdb

    tables = {}
    for record in references.wfdb_annotated(shared_data / "ecg"):
        annotation = wfdb.rdann(str(shared_data / "ecg" / record.name), "atr")
        is_beat = np.array([s in scoring.BEAT_SYMBOLS for s in annotation.symbol])
        symbols = np.array(annotation.symbol)[is_beat]
        peaks, labels = label_record(record.signal, record.fs)
        assert set(labels) <= {"N", "V"}
        match = scoring.match_beats(record.reference, peaks, record.fs)
        ventricular = symbols[match.matched_reference] == "V"
        called_v = labels[match.matched_detection] == "V"
        tables[record.name] = np.array(
            [[np.sum(~ventricular & ~called_v), np.sum(~ventricular & called_v)],
             [np.sum(ventricular & ~called_v), np.sum(ventricular & called_v)]])
    return tables


def test_record_100(labelled) -> None:
    """2,272 supraventricular beats and one ventricular: all labelled right."""
    assert labelled["mitdb/100"].tolist() == [[2272, 0], [0, 1]]


def test_ventricular_beats_over_all_records(labelled) -> None:
    """What the labeller achieves today over the 17 annotated V beats (MIT-BIH 100 and 800,
    CPSC 2021 data_8_2 and data_8_3): 15 found; but 77 of the 5,894 other beats, nearly all in
    the noisy CPSC 2021 records (52 in data_8_2/8_3 alone), are called V: V +P is about 16 %.
    (Before premature beats had to be wider than the template: 14 found, 96 false.)"""
    total = sum(labelled.values())
    assert total[1].sum() == 17
    assert total[1, 1] >= 15
    assert total[0, 1] <= 77
    assert labelled["mitdb/800"][1, 1] >= 5


def beat(fs: float, width_s: float, height: float, n_leads: int = 2) -> np.ndarray:
    """A triangular QRS of the given base width, centred at BEFORE_S in the label window."""
    labeller = beats.BeatLabeler(fs)
    t = (np.arange(labeller.window_length) - labeller.before) / fs
    shape = np.clip(1 - np.abs(t) / (width_s / 2), 0, None) * height
    return np.column_stack([shape * (k + 1) for k in range(n_leads)])


def test_a_wide_inverted_beat_among_normals_is_ventricular() -> None:
    fs = 500.0
    labeller = beats.BeatLabeler(fs)
    normal = beat(fs, 0.08, 1.0)
    for _ in range(5):
        assert labeller.label(normal, 0.8, 0.8) == "N"
    assert labeller.label(-beat(fs, 0.16, 1.5), 0.55, 0.8) == "V"
    assert labeller.label(normal, 1.05, 0.8) == "N"
    # The same wide beat as the very first one has no template to differ from.
    assert beats.BeatLabeler(fs).label(-beat(fs, 0.16, 1.5), 0.55, 0.8) == "N"


def test_windows_that_cannot_be_judged() -> None:
    labeller = beats.BeatLabeler(360.0)
    normal = beat(360.0, 0.08, 1.0)
    assert labeller.label(normal, 0.8, 0.8) == "N"
    gap = normal.copy()
    gap[10, 0] = np.nan
    assert labeller.label(gap, 0.8, 0.8) == "Q"
    # The NaN window was not learnt: the template still tells a ventricular beat apart.
    assert labeller.label(-beat(360.0, 0.16, 1.5), 0.5, 0.8) == "V"
    assert labeller.label(np.zeros((0, 2)), float("nan"), float("nan")) == "N"
    assert labeller.label(normal[:5], 0.8, 0.8) == "N"  # cut by the record's start
    assert labeller.label(np.zeros(labeller.window_length), 0.8, 0.8) == "N"  # flat, 1-D


def test_features() -> None:
    fs = 1000.0
    assert beats.qrs_width_s(beat(fs, 0.08, 1.0), fs) == pytest.approx(0.08, abs=0.003)
    assert beats.qrs_width_s(beat(fs, 0.16, 1.0), fs) == pytest.approx(0.16, abs=0.003)
    assert np.isnan(beats.qrs_width_s(np.zeros((100, 2)), fs))
    assert np.isnan(beats.qrs_width_s(np.zeros(2), fs))
    a = beat(fs, 0.08, 1.0)
    assert beats.correlation(a, 3 * a + 1) == pytest.approx(1.0)
    assert beats.correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(beats.correlation(a, np.zeros_like(a)))
    tilted = a + np.linspace(0, 2, len(a))[:, None] + 0.5
    assert np.allclose(beats.detrend(tilted), beats.detrend(a))
    with pytest.raises(ValueError):
        beats.BeatLabeler.Conf(min_correlation=1.5)


def test_stacked_windows() -> None:
    """The QRS detector's shape test detrends and correlates many windows at once: the same
    values as one at a time."""
    fs = 500.0
    windows = np.array([beat(fs, 0.08, 1.0) + np.linspace(0, k, 125)[:, None]
                        for k in (0.0, 0.3, -1.0)])
    assert np.array_equal(beats.detrend(windows),
                          np.array([beats.detrend(w) for w in windows]))
    templates = np.array([beat(fs, 0.16, 1.0), -beat(fs, 0.08, 1.0)])
    expected = max(beats.correlation(w, t) for w in windows for t in templates)
    assert beats.best_correlation(windows, templates) == pytest.approx(expected)
    assert beats.best_correlation(windows, -templates[1:]) == pytest.approx(1.0)
    flat = np.zeros((2,) + windows.shape[1:])
    assert beats.best_correlation(np.concatenate([flat, windows]), templates) \
        == pytest.approx(expected)
    assert np.isnan(beats.best_correlation(flat, templates))
