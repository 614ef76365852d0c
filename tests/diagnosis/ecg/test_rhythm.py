"""Rhythm episodes: AF on every CPSC 2021 record scored by duration against its reference
rhythm annotations; the rhythm tracker's features and calls on constructed beat sequences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from diagnosis.ecg import analysis, rhythm, scoring
from diagnosis.ecg.formats.wfdb_io import read_wfdb

TARGET = 95.0
"""AF Se and Sp in percent, duration-weighted, over all CPSC 2021 records (the issue's target)."""
RECORD_FLOORS = {
    # record: (Se, Sp) in percent that each record reaches today (None: no AF, or no non-AF).
    "data_101_6": (59.0, 99.0),   # AF in four paroxysms of 3-25 s: the 25-RR windows blur them
    "data_101_8": (87.0, 96.0),
    "data_101_9": (95.0, 94.0),
    "data_35_10": (None, 99.0),   # patient 35: atrial flutter with variable block, not AF
    "data_35_4": (None, 99.0),
    "data_35_6": (None, 99.0),
    "data_8_2": (99.0, None),     # persistent AF
    "data_8_3": (99.0, None),
    "data_8_4": (99.0, None),
}


@pytest.fixture(scope="module")
def cpsc(shared_data: Path) -> dict[str, tuple[np.ndarray, analysis.Report]]:
    """Every CPSC 2021 record: its reference AF mask and the analysis report."""
    out = {}
    for header in sorted((shared_data / "ecg" / "cpsc2021").glob("*.hea")):
        base = header.with_suffix("")
        record = read_wfdb(base)
        annotation = wfdb.rdann(str(base), "atr")
        reference = scoring.reference_af_mask(record.n_samples, annotation.sample,
                                              annotation.aux_note)
        out[base.name] = (reference, analysis.analyze(record))
    return out


def af_agreement(reference: np.ndarray, report: analysis.Report) -> scoring.EpisodeAgreement:
    detected = scoring.intervals_mask(len(reference), [(e.start, e.end) for e in report.rhythms
                                                       if e.label == rhythm.AF])
    return scoring.episode_agreement(reference, detected)


def percent(value: float) -> float:
    return 100.0 * value


def test_af_on_every_cpsc2021_record(cpsc) -> None:
    assert set(cpsc) == set(RECORD_FLOORS)
    total = scoring.EpisodeAgreement(0, 0, 0, 0)
    lines, failures = [], []
    for name, (reference, report) in sorted(cpsc.items()):
        agreement = af_agreement(reference, report)
        total = total + agreement
        se, sp = percent(agreement.sensitivity), percent(agreement.specificity)
        lines.append(f"{name:11s} AF {reference.sum() / report.fs:6.1f} s  non-AF "
                     f"{(~reference).sum() / report.fs:6.1f} s  Se {se:6.2f}  Sp {sp:6.2f}")
        se_floor, sp_floor = RECORD_FLOORS[name]
        # A class under a second long is not scored per record: persistent-AF records end
        # with one "(N" sample, which would make their Sp 0 or 100 %.
        short = (reference.sum() < report.fs, (~reference).sum() < report.fs)
        for value, floor, too_short, what in ((se, se_floor, short[0], "Se"),
                                              (sp, sp_floor, short[1], "Sp")):
            if floor is None:
                assert too_short, (name, what)
            elif not value >= floor:
                failures.append(f"{name}: {what} {value:.2f} < {floor}")
    se, sp = percent(total.sensitivity), percent(total.specificity)
    print("\n".join(lines + [f"{'total':11s} Se {se:.2f}  Sp {sp:.2f}"]))
    assert not failures, "\n".join(failures)
    assert se >= TARGET and sp >= TARGET, (se, sp)


def test_af_episodes_are_whole_and_in_order(cpsc) -> None:
    """Base rhythm episodes tile each record: start at 0, end at its last sample, no gaps."""
    for name, (reference, report) in cpsc.items():
        base = [e for e in report.rhythms if e.label in (rhythm.AF, rhythm.SINUS, rhythm.BRADY,
                                                         rhythm.TACHY)]
        assert base[0].start == 0 and base[-1].end == len(reference), name
        assert all(a.end == b.start and a.label != b.label for a, b in zip(base, base[1:]))
    persistent = cpsc["data_8_2"][1]
    assert [e.label for e in persistent.rhythms if e.label in (rhythm.AF, rhythm.SINUS)] == ["AF"]


def test_a_variable_block_does_not_flicker_between_rate_classes(cpsc) -> None:
    """Patient 35's flutter conducts with a block that switches between RR levels either side
    of 50 bpm: every rate episode between two others lasts `rate_min_beats` beats or more
    (before the rule, 35_6 had 20 episodes in 2 min, 13 of them one or two beats long)."""
    least = rhythm.RhythmConf().rate_min_beats
    for name in ("data_35_4", "data_35_6", "data_35_10"):
        report = cpsc[name][1]
        samples = np.array([b.sample for b in report.beats])
        base = [e for e in report.rhythms if e.label in (rhythm.SINUS, rhythm.BRADY,
                                                         rhythm.TACHY, rhythm.AF)]
        for episode in base[1:-1]:
            beats = np.count_nonzero((samples >= episode.start) & (samples < episode.end))
            assert beats >= least, (name, episode)
    assert len([e for e in cpsc["data_35_6"][1].rhythms if e.label != rhythm.PAUSE]) <= 4


def test_ventricular_runs_on_cpsc2021(cpsc) -> None:
    """No ventricular run on CPSC 2021: the references hold only isolated V beats. (Before the
    labeller compared shapes at the best alignment and measured the QRS as one run of slope,
    it called runs of normal beats in the noisy AF of data_8_3 and the flutter of data_35_4
    ventricular: five false runs; and before premature beats had to be wider than the template,
    eight runs and a false VT alert on data_8_2.)"""
    runs = {name: [e for e in report.rhythms if e.label in (rhythm.VT, rhythm.VRUN)]
            for name, (_, report) in cpsc.items()}
    assert runs == {name: [] for name in cpsc}
    alerts = [(name, a) for name, (_, report) in cpsc.items() for a in report.alerts]
    assert alerts == []


# ---- features ----

def test_successive_differences() -> None:
    d = rhythm.successive_differences(np.array([1.0, 1.0, 0.5, 1.0]))
    assert np.allclose(d, [0.0, 0.0, 2 / 3, 2 / 3])
    assert rhythm.successive_differences(np.array([0.8])).tolist() == [0.0]
    assert rhythm.successive_differences(np.array([])).shape == (0,)


def test_level_structure() -> None:
    rng = np.random.default_rng(1)
    two_levels = np.log(np.where(rng.random((200, 25)) < 0.5, 1.0, 1.5)
                        * rng.normal(1, 0.01, (200, 25)))
    spread = np.log(rng.uniform(0.5, 1.2, (200, 25)))
    assert np.median(rhythm.level_structure(two_levels)) < 0.05
    assert 0.15 < np.median(rhythm.level_structure(spread)) < 0.35
    assert rhythm.level_structure(np.zeros((1, 25))).tolist() == [0.0]


def test_coherence() -> None:
    rng = np.random.default_rng(2)
    p_wave = rng.standard_normal((19, 2))
    same = np.repeat(p_wave[None], 17, axis=0)
    assert rhythm.coherence(same) == pytest.approx(1.0)
    random = rng.standard_normal((17, 19, 2))
    assert rhythm.coherence(random) < 0.15
    assert rhythm.coherence(np.zeros((17, 19, 2))) == 1.0


# ---- the tracker on constructed beat sequences ----

FS = 250.0
SEGMENT = (int(rhythm.PRE_QRS_S[0] * FS) - int(rhythm.PRE_QRS_S[1] * FS), 2)


def beats_from_rr(rr_s: np.ndarray, start_s: float = 1.0) -> np.ndarray:
    return np.round((start_s + np.concatenate([[0.0], np.cumsum(rr_s)])) * FS).astype(np.int64)


def segments(n: int, p_waves: bool, seed: int = 0) -> np.ndarray:
    """Pre-QRS segments: the same P wave with a little noise, or f-wave-like noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, SEGMENT[0])
    p = 0.15 * np.exp(-((t - 0.4) / 0.12) ** 2)
    base = np.repeat(np.column_stack([p, 0.5 * p])[None], n, axis=0)
    noise = rng.normal(0, 0.01 if p_waves else 0.05, (n, *SEGMENT))
    return (base if p_waves else 0 * base) + noise


def track(samples: np.ndarray, labels: list[str], segs: np.ndarray, batches=(None,),
          conf: rhythm.RhythmConf | None = None):
    """Episodes and alerts, fed in batches of the given sizes (cycled; None: all at once)."""
    tracker = rhythm.RhythmTracker(FS, conf)
    episodes, alerts, i, k = [], [], 0, 0
    while i < len(samples):
        size = batches[k % len(batches)] or len(samples)
        got, warned = tracker.add(samples[i:i + size], labels[i:i + size], segs[i:i + size])
        episodes += got
        alerts += warned
        i, k = i + size, k + 1
    end = int(samples[-1]) + int(FS) if len(samples) else 0
    episodes += tracker.finish(end)
    return sorted(episodes, key=lambda e: (e.start, e.label)), alerts


def base_labels(episodes) -> list[str]:
    return [e.label for e in episodes if e.label in (rhythm.AF, rhythm.SINUS, rhythm.BRADY,
                                                     rhythm.TACHY)]


@pytest.mark.parametrize("bpm, label", [(72, rhythm.SINUS), (42, rhythm.BRADY),
                                        (130, rhythm.TACHY)])
def test_rate_classes(bpm: float, label: str) -> None:
    rng = np.random.default_rng(3)
    rr = 60.0 / bpm * rng.normal(1.0, 0.01, 80)
    samples = beats_from_rr(rr)
    episodes, alerts = track(samples, ["N"] * len(samples), segments(len(samples), True))
    assert base_labels(episodes) == [label] and alerts == []
    assert episodes[0].start == 0 and episodes[-1].end == samples[-1] + int(FS)


def test_a_rate_class_must_hold_for_a_few_beats() -> None:
    """A median rate that swings across the brady limit every three beats (RR in runs of
    1.3 s and 1.0 s after sinus beats at 0.8 s) is no bradycardia episode, nor a string of
    them; a rule that calls every switch gives a dozen. Bradycardia that holds is called."""
    rr = np.concatenate([np.full(30, 0.8), np.tile(np.repeat([1.3, 1.0], 3), 8),
                         np.full(30, 1.4)])
    samples = beats_from_rr(rr)
    labels, segs = ["N"] * len(samples), segments(len(samples), True)
    episodes, _ = track(samples, labels, segs)
    assert base_labels(episodes) == [rhythm.SINUS, rhythm.BRADY]
    (brady,) = [e for e in episodes if e.label == rhythm.BRADY]
    assert samples[74] <= brady.start <= samples[82]
    flickering, _ = track(samples, labels, segs, conf=rhythm.RhythmConf(rate_min_beats=1))
    assert len(base_labels(flickering)) > 10


def test_af_and_what_is_not_af() -> None:
    rng = np.random.default_rng(4)
    n = 120
    irregular = rng.uniform(0.45, 1.2, n)
    samples = beats_from_rr(irregular)
    labels = ["N"] * len(samples)
    episodes, _ = track(samples, labels, segments(len(samples), p_waves=False))
    assert base_labels(episodes) == [rhythm.AF]
    # The same RR intervals with one P wave before every beat: frequent atrial ectopy, not AF.
    episodes, _ = track(samples, labels, segments(len(samples), p_waves=True))
    assert rhythm.AF not in base_labels(episodes)
    # Flutter with variable block: no P waves, RR on two levels.
    levels = np.where(rng.random(n) < 0.5, 1.0, 1.5) * rng.normal(1, 0.02, n)
    samples = beats_from_rr(levels)
    episodes, _ = track(samples, labels, segments(len(samples), p_waves=False))
    assert rhythm.AF not in base_labels(episodes)
    # Fewer than 25 RR intervals are not judged for AF at all.
    samples = beats_from_rr(irregular[:20])
    episodes, _ = track(samples, ["N"] * 21, segments(21, p_waves=False))
    assert rhythm.AF not in base_labels(episodes)


def test_paroxysm_boundaries() -> None:
    """60 sinus beats, 80 AF beats (independent RR, 15 % spread), 60 sinus beats: one AF
    episode whose ends are within 8 beats of the truth (over seeds 5-11 the onset comes 0-6
    beats late and the end 0-5 beats early: all four features must agree)."""
    rng = np.random.default_rng(5)
    rr = np.concatenate([rng.normal(0.8, 0.008, 60), 0.6 * rng.lognormal(0, 0.15, 80),
                         rng.normal(0.8, 0.008, 60)])
    samples = beats_from_rr(rr)
    segs = np.concatenate([segments(61, True, 1), segments(80, False, 2), segments(60, True, 3)])
    episodes, _ = track(samples, ["N"] * len(samples), segs)
    (af,) = [e for e in episodes if e.label == rhythm.AF]
    assert abs(af.start - samples[60]) <= 8 * 0.6 * FS
    assert abs(af.end - samples[140]) <= 8 * 0.6 * FS


def test_calls_do_not_depend_on_batching() -> None:
    rng = np.random.default_rng(6)
    rr = np.concatenate([rng.normal(0.7, 0.01, 50), rng.uniform(0.4, 1.1, 70),
                         rng.normal(1.3, 0.01, 30), rng.normal(0.5, 0.005, 40)])
    samples = beats_from_rr(rr)
    labels = ["N"] * len(samples)
    labels[100:104] = ["V"] * 4
    segs = np.concatenate([segments(51, True), segments(70, False), segments(70, True)])
    expected = track(samples, labels, segs)
    assert {rhythm.AF, rhythm.BRADY, rhythm.TACHY, rhythm.VT} <= {e.label for e in expected[0]}
    for batches in [(1,), (3,), (7, 1, 20), (0, 5)]:
        assert track(samples, labels, segs, batches) == expected


def test_ventricular_runs() -> None:
    rr = np.full(40, 0.8)
    rr[10:14] = 0.45                        # beats 10-13 come at 133 bpm
    rr[25:28] = 0.8                         # beats 25-27 at 75 bpm
    samples = beats_from_rr(rr)
    labels = ["N"] * len(samples)
    labels[10:14] = ["V"] * 4
    labels[25:28] = ["V"] * 3
    labels[33:35] = ["V"] * 2               # a couplet is no run
    labels[-3:] = ["V"] * 3                 # a run at the end, closed by the end of the stream
    episodes, alerts = track(samples, labels, segments(len(samples), True))
    runs = [(e.label, e.start, e.end) for e in episodes if e.label in (rhythm.VT, rhythm.VRUN)]
    assert runs == [(rhythm.VT, samples[10], samples[13] + 1),
                    (rhythm.VRUN, samples[25], samples[27] + 1),
                    (rhythm.VRUN, samples[-3], samples[-1] + 1)]
    assert alerts == [(rhythm.VT, samples[12])]  # at the third beat of the fast run


def test_empty_and_tiny_streams() -> None:
    tracker = rhythm.RhythmTracker(FS)
    assert tracker.add(np.empty(0, np.int64), [], np.empty((0, *SEGMENT))) == ([], [])
    assert tracker.finish(1000) == []
    episodes, _ = track(np.array([100]), ["N"], segments(1, True))
    assert episodes == []
    episodes, _ = track(np.array([100, 300]), ["N", "N"], segments(2, True))
    assert [(e.start, e.label) for e in episodes] == [(0, rhythm.SINUS)]
    with pytest.raises(ValueError):
        rhythm.RhythmConf(pause_s=5.0)


def test_gap_labels() -> None:
    conf = rhythm.RhythmConf()
    assert rhythm.gap_label(1.9, conf) is None
    assert rhythm.gap_label(2.0, conf) is None
    assert rhythm.gap_label(2.01, conf) == rhythm.PAUSE
    assert rhythm.gap_label(4.0, conf) == rhythm.ASYSTOLE
