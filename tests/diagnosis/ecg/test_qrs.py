"""QRS detection on every annotated real recording in ../shared/data/ecg, scored the EC57 way
(150 ms match window) with the project's own scoring module; streaming equals batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from diagnosis.ecg import qrs, references, scoring
from diagnosis.ecg.formats.wfdb_io import read_wfdb

TARGET = 99.7
"""Se and +P in total over all annotated records, in percent (the issue's target)."""
RECORD_TARGET = 99.0
"""Se and +P on every annotated record, in percent (the issue's target)."""
BELOW_TARGET = {
    # record: (Se, +P) floors in percent that the detector meets where it misses RECORD_TARGET.
    # A 10 s CPSC 2019 record holds 11-25 beats, so one miss costs 4-9 %.
    "cpsc2019/data_01384": (91.6, 100.0),  # reference beat on a 0.15 mV bump (no QRS visible)
}
DATABASE_FLOORS = {
    # database: (Se, +P) in percent over its records.
    "mitdb": (100.0, 99.9),
    "cpsc2021": (99.9, 99.9),
    "cpsc2019": (99.7, 100.0),
}


@pytest.fixture(scope="module")
def ecg_dir(shared_data: Path) -> Path:
    return shared_data / "ecg"


@pytest.fixture(scope="module")
def annotated(ecg_dir: Path) -> list[references.AnnotatedRecord]:
    return references.annotated_records(ecg_dir)


@pytest.fixture(scope="module")
def detections(annotated) -> dict[str, np.ndarray]:
    """Batch detection on every annotated record, once for all the tests below."""
    return {record.name: qrs.detect_qrs(record.signal, record.fs) for record in annotated}


@pytest.fixture(scope="module")
def scores(annotated, detections) -> dict[str, scoring.BeatMatch]:
    return {record.name: scoring.match_beats(record.reference, detections[record.name],
                                             record.fs, span=record.span)
            for record in annotated}


def percent(value: float) -> float:
    return 100.0 * value


def test_every_annotated_record_is_scored(annotated, ecg_dir: Path) -> None:
    names = {record.name for record in annotated}
    expected = ({f"mitdb/{p.stem}" for p in (ecg_dir / "mitdb").glob("*.atr")}
                | {f"cpsc2021/{p.stem}" for p in (ecg_dir / "cpsc2021").glob("*.atr")}
                | {f"cpsc2019/{p.stem}" for p in (ecg_dir / "cpsc2019").glob("data_*.mat")})
    assert names == expected
    assert {"mitdb/100", "mitdb/800"} <= names
    assert len([n for n in names if n.startswith("cpsc2021/")]) == 9
    assert len([n for n in names if n.startswith("cpsc2019/")]) == 25
    assert sum(len(record.reference) for record in annotated) > 6000


def test_record_100_matches_the_best_open_peer(scores) -> None:
    """wfdb XQRS scores Se 100 / +P 100 on MIT-BIH 100 (neurokit2 99.87 / 100)."""
    match = scores["mitdb/100"]
    assert (match.tp, match.fn, match.fp) == (2273, 0, 0)


def test_each_record_meets_its_floor(scores) -> None:
    failures = []
    for name, match in scores.items():
        se_floor, pp_floor = BELOW_TARGET.get(name, (RECORD_TARGET, RECORD_TARGET))
        se, pp = percent(match.sensitivity), percent(match.positive_predictivity)
        if se < se_floor or pp < pp_floor:
            failures.append(f"{name}: Se {se:.2f} +P {pp:.2f} (tp {match.tp} fn {match.fn} "
                            f"fp {match.fp}), floor {se_floor}/{pp_floor}")
    assert not failures, "\n".join(failures)


def test_records_below_target_are_only_the_listed_ones(scores) -> None:
    """When the detector improves, the list of exceptions must shrink with it."""
    below = {name for name, match in scores.items()
             if min(percent(match.sensitivity), percent(match.positive_predictivity))
             < RECORD_TARGET}
    assert below == set(BELOW_TARGET)


ARTEFACTS_BEAT_LEVELS_PASS = [
    # (record, sample): no beat within 150 ms. Premature, shaped unlike the beats (correlation
    # -0.07 to 0.41) and no steeper than the beat before: what the shape test rejects.
    ("cpsc2019/data_00557", 4412),     # the 4 mV motion artefact
    ("cpsc2021/data_8_3", 52502),
    ("mitdb/800", 40691), ("mitdb/800", 102114), ("mitdb/800", 215514),
    # A lone wave in a 1.45 s atrial fibrillation pause, the strongest search-back candidate
    # (correlation 0.27 with the beats).
    ("cpsc2021/data_8_4", 2673),
]
DRAWN_OUT_ARTEFACTS = [
    # (record, sample): no beat within 150 ms. Premature, no steeper than the beat before and
    # shaped 0.67-0.82 like the beats, but drawn out: the envelope peak is 1.39-1.84x its median
    # over the surroundings (true premature beats no steeper than the last: 3.44x and more).
    ("cpsc2019/data_01575", 2755),     # a ~12 Hz noise burst between two beats
    ("cpsc2019/data_00513", 532), ("cpsc2019/data_00513", 897),   # its noisy first 2 s
]
EARLY_BEATS_NOT_STEEPER = [
    # (record, sample): premature reference beats no steeper than the beat before, the least
    # prominent ones (3.44x and 4.08x their surroundings' median envelope), kept as beats.
    ("cpsc2021/data_35_6", 9993), ("cpsc2019/data_01044", 1531),
]
ECTOPIC_BEATS = [
    # (record, sample): premature reference beats shaped unlike the ones before (correlation
    # -0.28 to 0.49) but steeper (1.44x and more), kept as beats.
    ("mitdb/100", 546792), ("cpsc2021/data_8_2", 8791), ("cpsc2021/data_8_2", 22319),
    ("cpsc2019/data_00676", 1632),
]


@pytest.mark.parametrize("name, sample", ARTEFACTS_BEAT_LEVELS_PASS + DRAWN_OUT_ARTEFACTS)
def test_premature_artefacts_are_not_beats(detections, annotated, name: str,
                                           sample: int) -> None:
    record = next(r for r in annotated if r.name == name)
    window = int(0.15 * record.fs)
    assert not np.any(np.abs(detections[name] - sample) <= window)
    assert not np.any(np.abs(record.reference - sample) <= window)


def test_a_baseline_step_is_not_a_beat_and_does_not_hide_the_next(detections) -> None:
    """CPSC 2019 00513: at 2391 the baseline jumps 0.45 mV in 20 ms and decays over 0.3 s, a
    premature deflection steeper than the beats; its envelope lobe covered the beat at 2563,
    0.34 s later, which was never a candidate. The step is rejected and the beat found, on the
    step's sloping tail, within 10 ms of the reference."""
    window = int(0.15 * 500)
    found = detections["cpsc2019/data_00513"]
    assert not np.any(np.abs(found - 2391) <= window // 2)
    assert np.any(np.abs(found - 2563) <= 5)


@pytest.fixture(scope="module")
def record_100_with_electrode_pops(annotated) -> tuple[references.AnnotatedRecord, np.ndarray]:
    """MIT-BIH 100 with a baseline step (2 mV on MLII, 1.2 mV on V5, as an electrode pop or a
    jolted cable gives) halfway between every twelfth pair of beats: 189 steps."""
    record = next(r for r in annotated if r.name == "mitdb/100")
    signal, beats = record.signal.copy(), record.reference
    for i in range(5, len(beats) - 1, 12):
        signal[(beats[i] + beats[i + 1]) // 2:] += [2.0, 1.2]
    return record, signal


def test_electrode_pops_are_not_beats(record_100_with_electrode_pops) -> None:
    record, signal = record_100_with_electrode_pops
    match = scoring.match_beats(record.reference, qrs.detect_qrs(signal, record.fs), record.fs)
    assert (match.tp, match.fn, match.fp) == (2273, 0, 0)
    # Without the edge test each step is a steep premature deflection, taken as a beat.
    no_step_test = qrs.QrsDetector.Conf(step_edge_ratio=0.0)
    blind = scoring.match_beats(record.reference, qrs.detect_qrs(signal, record.fs, no_step_test),
                                record.fs)
    assert blind.fp > 50


def test_a_beat_just_after_an_electrode_pop_is_found(ecg_dir: Path, annotated) -> None:
    """CPSC 2021 data_101_9 (AF, 200 Hz) with a 2 mV pop halfway between every twelfth pair of
    beats: the beat after a pop comes 0.2-0.56 s later, on the pop's decaying tail and often
    inside its envelope lobe; the beat before it has the pop's rising lobe in its window."""
    record = next(r for r in annotated if r.name == "cpsc2021/data_101_9")
    signal, beats = record.signal.copy(), record.reference
    before = list(range(5, len(beats) - 1, 12))
    for i in before:
        signal[(beats[i] + beats[i + 1]) // 2:] += [2.0, 1.2]
    match = scoring.match_beats(beats, qrs.detect_qrs(signal, record.fs), record.fs)
    found = np.zeros(len(beats), dtype=bool)
    found[match.matched_reference] = True
    assert match.fp == 0
    assert found[[i + 1 for i in before]].all() and len(before) == 26
    assert found[before].all()


def test_streaming_equals_batch_over_electrode_pops(record_100_with_electrode_pops) -> None:
    record, signal = record_100_with_electrode_pops
    signal = signal[: int(120 * record.fs)]
    rng = np.random.default_rng(11)
    batch = qrs.detect_qrs(signal, record.fs)
    streamed, _ = stream(qrs.QrsDetector(record.fs, 2), signal,
                         (int(n) for n in rng.integers(0, 90, size=10**6)))
    assert len(batch) > 140 and np.array_equal(streamed, batch)


@pytest.mark.parametrize("name, lead, how, most_missed, most_false", [
    ("mitdb/100", 0, "flat", 1, 0), ("mitdb/100", 1, "flat", 0, 0),
    ("mitdb/100", 0, "missing", 1, 0), ("mitdb/100", 1, "missing", 0, 0),
    ("cpsc2021/data_8_3", 0, "missing", 4, 2), ("cpsc2021/data_8_3", 1, "missing", 4, 2),
])
def test_a_lead_that_goes_off_for_a_while_costs_almost_no_beats(
        annotated, name: str, lead: int, how: str, most_missed: int, most_false: int) -> None:
    """One lead flat (0 mV) or missing (NaN) through the middle third of the record, as an
    electrode that comes off and is put back gives. The lead says nothing of the candidates
    there and the others judge them alone: before, its typical beat made every candidate look
    weak, the rejected beats raised the noise level on the other lead and the detector lost
    MIT-BIH 100's whole middle third (758 beats; 8_3: 113). What is missed is about what the
    other lead alone misses (8_3's second lead alone: Se 99.08 %)."""
    record = next(r for r in annotated if r.name == name)
    signal = record.signal.copy()
    third = len(signal) // 3
    signal[third:2 * third, lead] = 0.0 if how == "flat" else np.nan
    match = scoring.match_beats(record.reference, qrs.detect_qrs(signal, record.fs), record.fs)
    assert match.fn <= most_missed and match.fp <= most_false, (match.fn, match.fp)


def test_a_lead_whose_qrs_shrinks_tenfold_is_re_weighed_after_three_seconds(annotated) -> None:
    """MLII of MIT-BIH 100 at 5 % through the middle third (an electrode that slipped): its
    typical beat, twenty times too large now, made every beat look weak and the rejected
    beats raised V5's noise level until nothing was a beat (755 of the 758 beats missed).
    After `lost_s` without a beat each lead's stale level may be spared; the beats taken so
    let search-back spare it too until the levels have caught up. Missed: the three beats of
    those 3 s. Streamed in random chunks the same."""
    record = next(r for r in annotated if r.name == "mitdb/100")
    signal = record.signal.copy()
    third = len(signal) // 3
    signal[third:2 * third, 0] *= 0.05
    found = qrs.detect_qrs(signal, record.fs)
    match = scoring.match_beats(record.reference, found, record.fs)
    missed = np.setdiff1d(np.arange(len(record.reference)), match.matched_reference)
    assert (match.fn, match.fp) == (3, 0)
    assert np.all((record.reference[missed] > third)
                  & (record.reference[missed] < third + 3 * record.fs))
    part = slice(third - int(30 * record.fs), third + int(30 * record.fs))
    rng = np.random.default_rng(12)
    streamed, _ = stream(qrs.QrsDetector(record.fs, 2), signal[part],
                         (int(n) for n in rng.integers(0, 90, size=10**6)))
    assert np.array_equal(streamed, qrs.detect_qrs(signal[part], record.fs))


@pytest.mark.parametrize("lead", [0, 1])
def test_electrode_motion_on_one_lead_does_not_drown_the_other(annotated, lead: int) -> None:
    """CPSC 2021 data_8_2 (AF, small QRS complexes) with 0.3 mV RMS of 1-10 Hz noise on one
    lead through the middle third. Summed unweighted, the noisy lead's band energy made noise
    peaks that outranked beats shown clearly on the other lead (24 and 21 beats missed); each
    lead's energy in units of its own noise floor leaves 2."""
    record = next(r for r in annotated if r.name == "cpsc2021/data_8_2")
    signal = record.signal.copy()
    third = len(signal) // 3
    white = np.random.default_rng(5).normal(0.0, 1.0, third + int(record.fs))
    motion = sosfilt(butter(4, [1.0, 10.0], btype="band", fs=record.fs, output="sos"),
                     white)[-third:]
    signal[third:2 * third, lead] += 0.3 * motion / np.std(motion)
    match = scoring.match_beats(record.reference, qrs.detect_qrs(signal, record.fs), record.fs)
    assert match.fn <= 3 and match.fp <= 1, (match.fn, match.fp)


@pytest.mark.parametrize("name, sample", ECTOPIC_BEATS + EARLY_BEATS_NOT_STEEPER)
def test_premature_ectopic_beats_are_kept(detections, annotated, name: str,
                                          sample: int) -> None:
    record = next(r for r in annotated if r.name == name)
    window = int(0.15 * record.fs)
    assert np.any(np.abs(record.reference - sample) <= window)
    assert np.any(np.abs(detections[name] - sample) <= window)


def test_totals_meet_the_target(scores) -> None:
    total = sum(scores.values(), start=scoring.BeatMatch(0, 0, 0, np.empty(0), np.empty(0),
                                                         np.empty(0)))
    assert total.tp + total.fn > 6000
    assert percent(total.sensitivity) >= TARGET
    assert percent(total.positive_predictivity) >= TARGET


@pytest.mark.parametrize("database", sorted(DATABASE_FLOORS))
def test_database_totals(scores, database: str) -> None:
    matches = [m for name, m in scores.items() if name.startswith(database + "/")]
    total = sum(matches[1:], start=matches[0])
    se_floor, pp_floor = DATABASE_FLOORS[database]
    assert percent(total.sensitivity) >= se_floor
    assert percent(total.positive_predictivity) >= pp_floor


def test_r_peak_timing_on_record_100(scores) -> None:
    """MIT-BIH annotations sit on the R peak: the median timing error must be <= 4 ms."""
    errors_ms = 1000 * np.abs(scores["mitdb/100"].offsets_s)
    assert np.median(errors_ms) <= 4.0
    assert np.mean(errors_ms) <= 4.0
    assert np.percentile(errors_ms, 99) <= 10.0


def test_r_peak_timing_elsewhere_is_within_two_samples(scores, annotated) -> None:
    """Other references put the fiducial elsewhere (SVDB 800: on the upstroke, 2 samples at
    128 Hz before the peak; CPSC 2021 at 200 Hz: 1-2 samples either side); the detector's R
    stays within 2 samples of them in the median, and steady (800: every beat +2 samples)."""
    fs = {record.name: record.fs for record in annotated}
    for name, match in scores.items():
        if name.startswith("cpsc2019/"):
            continue  # CPSC 2019's references wander by up to 50 ms around the R peak
        assert np.median(np.abs(match.offsets)) <= 2, name
    offsets = scores["mitdb/800"].offsets
    assert np.median(offsets) == 2 and np.median(np.abs(offsets - 2)) == 0
    total = sum((scores[n] for n in scores if not n.startswith("cpsc2019/")),
                start=scoring.BeatMatch(0, 0, 0, np.empty(0), np.empty(0), np.empty(0)))
    assert 1000 * np.median(np.abs(total.offsets_s)) <= 5.0
    assert fs["mitdb/800"] == 128


def stream(detector: qrs.QrsDetector, signal: np.ndarray, sizes) -> tuple[np.ndarray, list]:
    """Push `signal` in chunks of the given sizes (cycled); return the peaks and, per push,
    the number of samples pushed so far, the peaks it returned and `settled` after it."""
    out, emitted, start = [], [], 0
    sizes = iter(sizes)
    while start < len(signal):
        size = next(sizes)
        got = detector.push(signal[start:start + size])
        start += size
        out.append(got)
        emitted.append((min(start, len(signal)), got, detector.settled))
    out.append(detector.finish())
    return np.concatenate(out), emitted


def cycle(*sizes: int):
    while True:
        yield from sizes


@pytest.fixture(scope="module")
def record_8_3(ecg_dir: Path):
    """CPSC 2021 data_8_3: paroxysmal AF, ventricular beats, a noise burst with a false beat and
    a beat just before a larger lobe, so learning, T-wave test, search-back, the lost-beat
    threshold and the rising-flank rule all act."""
    return read_wfdb(ecg_dir / "cpsc2021" / "data_8_3")


@pytest.mark.parametrize("sizes", [(7,), (13,), (97,), (1001,), (200, 1, 0, 3, 4096)],
                         ids=["7", "13", "97", "1001", "mixed-with-empty"])
def test_streaming_equals_batch_on_a_whole_record(record_8_3, sizes) -> None:
    batch = qrs.detect_qrs(record_8_3.signal, record_8_3.fs)
    assert len(batch) > 300
    streamed, _ = stream(qrs.QrsDetector(record_8_3.fs, 2), record_8_3.signal, cycle(*sizes))
    assert np.array_equal(streamed, batch)


def test_streaming_equals_batch_with_random_chunks(record_8_3) -> None:
    rng = np.random.default_rng(57)
    batch = qrs.detect_qrs(record_8_3.signal, record_8_3.fs)
    streamed, emitted = stream(qrs.QrsDetector(record_8_3.fs, 2), record_8_3.signal,
                               (int(n) for n in rng.integers(0, 700, size=10**6)))
    assert np.array_equal(streamed, batch)
    assert_settled_holds(emitted, record_8_3.fs)


@pytest.mark.parametrize("name", ["cpsc2019/data_01511", "cpsc2019/data_01575",
                                  "cpsc2019/data_00513", "cinc2021-12lead/JS20004"])
def test_streaming_one_sample_at_a_time(ecg_dir: Path, annotated, name: str) -> None:
    """One sample per push on whole real records: CPSC 2019 data_01511 (three beats found by
    search-back), 01575 (a drawn-out noise burst rejected), 00513 (a baseline step rejected and
    the beat in its shadow found) and a 12-lead record with three disconnected leads."""
    if name.startswith("cpsc2019/"):
        record = next(r for r in annotated if r.name == name)
        signal, fs = record.signal, record.fs
    else:
        loaded = read_wfdb(ecg_dir / name)
        signal, fs = loaded.signal, loaded.fs
    batch = qrs.detect_qrs(signal, fs)
    assert len(batch) >= 8
    streamed, emitted = stream(qrs.QrsDetector(fs, signal.shape[1]), signal, cycle(1))
    assert np.array_equal(streamed, batch)
    # Final when emitted: ascending across pushes, never withdrawn, and after the learning
    # period no later than `latency_s` after the R peak.
    assert np.all(np.diff(streamed) > 0)
    conf = qrs.QrsDetector.Conf()
    late = [(end - peak) / fs for end, got, _ in emitted for peak in got
            if end > (conf.learning_s + conf.refractory_s) * fs + 1]
    assert late and max(late) <= conf.latency_s
    assert_settled_holds(emitted, fs)


def assert_settled_holds(emitted: list, fs: float) -> None:
    """No beat comes out before `settled` after it was said, and `settled` trails the newest
    sample by about the lookahead (what lets an asystole alarm out early), never by more than
    `latency_s` beyond it (a weak beat waiting for the search-back)."""
    detector = qrs.QrsDetector(fs, 1)
    lag = (detector.lookahead + detector.conf.refine_s * fs + 1) / fs
    ends = np.array([end for end, _, _ in emitted])
    settled = np.array([value for _, _, value in emitted])
    first = np.array([got[0] if len(got) else np.iinfo(np.int64).max for _, got, _ in emitted])
    first_after = np.minimum.accumulate(first[::-1])[::-1][1:]   # the next beat out, per push
    assert np.all(first_after >= settled[:-1])
    lags = (ends - settled)[ends > (detector.conf.learning_s + 1) * fs] / fs
    assert np.median(lags) <= lag and np.all(lags <= detector.conf.latency_s + lag)


def test_streaming_one_sample_at_a_time_on_mitdb(ecg_dir: Path) -> None:
    record = read_wfdb(ecg_dir / "mitdb" / "100")
    signal = record.signal[: int(60 * record.fs)]
    batch = qrs.detect_qrs(signal, record.fs)
    streamed, _ = stream(qrs.QrsDetector(record.fs, 2), signal, cycle(1))
    assert len(batch) == 74 and np.array_equal(streamed, batch)


def test_twelve_lead_records_give_plausible_rates(ecg_dir: Path) -> None:
    """All 25 CinC 2021 12-lead records, including JS20004 and JS20008 whose leads V2, V4 and
    V6 are flat zero: a flat lead has no say (it used to make every beat 0/0 and silence the
    detector)."""
    rates = {}
    for hea in sorted((ecg_dir / "cinc2021-12lead").glob("*.hea")):
        record = read_wfdb(hea)
        peaks = qrs.detect_qrs(record.signal, record.fs)
        assert len(peaks) >= 2, hea.stem
        rates[hea.stem] = 60 * record.fs / np.median(np.diff(peaks))
    assert len(rates) == 25
    assert all(30 <= rate <= 200 for rate in rates.values()), rates
    flat = read_wfdb(ecg_dir / "cinc2021-12lead" / "JS20004")
    assert np.all(flat.signal[:, [7, 9, 11]] == 0)


@pytest.fixture(scope="module")
def minute(ecg_dir: Path) -> np.ndarray:
    """The first minute of MIT-BIH 100 (74 beats), 360 Hz."""
    return read_wfdb(ecg_dir / "mitdb" / "100").signal[: int(60 * 360)]


class TestDefinedResultsOnBadInput:
    FS = 360.0

    @pytest.mark.parametrize("signal", [
        np.empty((0, 2)), np.empty(0), np.zeros((1, 2)), np.ones((10, 2)), np.zeros((3600, 12)),
        np.full((3600, 2), 1.5), np.full((3600, 2), np.nan), np.full((3600, 2), np.inf),
        np.full((3600, 1), -np.inf)],
        ids=["empty", "empty-1d", "one-sample", "ten-constant", "zeros-12-lead", "dc",
             "all-nan", "all-inf", "all-minus-inf"])
    def test_no_signal_no_beats(self, signal: np.ndarray) -> None:
        peaks = qrs.detect_qrs(signal, self.FS)
        assert peaks.dtype == np.int64 and peaks.shape == (0,)

    def test_short_input_gives_in_range_peaks(self, minute: np.ndarray) -> None:
        for n in (5, 50, 150, 360, 700):
            peaks = qrs.detect_qrs(minute[:n], self.FS)
            assert peaks.dtype == np.int64
            assert np.all((peaks >= 0) & (peaks < n)) and np.all(np.diff(peaks) > 0)

    def test_empty_pushes_and_finish_without_data(self) -> None:
        detector = qrs.QrsDetector(self.FS, 2)
        assert detector.push(np.empty((0, 2))).shape == (0,)
        assert detector.finish().shape == (0,)
        single = qrs.QrsDetector(self.FS, 1)
        assert single.push(np.zeros(10)).shape == (0,)  # 1-D chunk for one lead

    def test_nan_gap_loses_only_the_beats_inside_it(self, minute: np.ndarray) -> None:
        """A 1 s dropout with a 5 mV offset (as on CPSC 2021's front end): missing samples hold
        the last value, so the gap's edges are not taken for beats."""
        clean = qrs.detect_qrs(minute + 5.0, self.FS)
        gapped = minute + 5.0
        gap = slice(int(20 * self.FS), int(21 * self.FS))
        gapped[gap] = np.nan
        peaks = qrs.detect_qrs(gapped, self.FS)
        match = scoring.match_beats(clean, peaks, self.FS)
        inside = np.sum((clean >= gap.start) & (clean < gap.stop))
        assert match.fp == 0 and match.fn <= inside + 1

    def test_one_dead_lead_does_not_silence_the_others(self, minute: np.ndarray) -> None:
        reference = qrs.detect_qrs(minute[:, :1], self.FS)
        for dead in (np.nan, 0.0):
            signal = minute.copy()
            signal[:, 1] = dead
            match = scoring.match_beats(reference, qrs.detect_qrs(signal, self.FS), self.FS)
            assert (match.tp, match.fn, match.fp) == (74, 0, 0)
            assert np.all(match.offsets == 0)

    def test_dead_first_lead_moves_timing_to_a_live_one(self, minute: np.ndarray) -> None:
        """R peaks are placed on the first lead; when it is dead they go to V5 (2-3 samples
        before MLII's peak here), not to the edge of the search window (27 samples early)."""
        reference = qrs.detect_qrs(minute[:, :1], self.FS)
        signal = minute.copy()
        signal[:, 0] = np.nan
        match = scoring.match_beats(reference, qrs.detect_qrs(signal, self.FS), self.FS)
        assert (match.tp, match.fn, match.fp) == (74, 0, 0)
        assert np.all(np.abs(match.offsets) <= 3)

    def test_saturation_costs_only_the_clipped_stretch(self, minute: np.ndarray) -> None:
        reference = qrs.detect_qrs(minute, self.FS)
        railed = minute.copy()
        railed[int(30 * self.FS):int(31 * self.FS)] = 5.0  # amplifier at its rail for 1 s
        match = scoring.match_beats(reference, qrs.detect_qrs(railed, self.FS), self.FS)
        assert match.fn <= 3 and match.fp <= 2
        clipped = np.clip(minute, -0.3, 0.6)  # R peaks cut off by a small input range
        match = scoring.match_beats(reference, qrs.detect_qrs(clipped, self.FS), self.FS)
        assert (match.fn, match.fp) == (0, 0)

    def test_absurd_values_are_missing_samples(self, minute: np.ndarray) -> None:
        assert qrs.detect_qrs(np.full((3600, 2), 1e300), self.FS).shape == (0,)
        reference = qrs.detect_qrs(minute, self.FS)
        burst = minute.copy()
        burst[int(10 * self.FS):int(10.5 * self.FS), 0] = 1e300  # squared: inf
        match = scoring.match_beats(reference, qrs.detect_qrs(burst, self.FS), self.FS)
        assert match.fp == 0 and match.fn <= 1  # the beats after it are still found

    @pytest.mark.parametrize("fs", [50.0, 128.0, 250.0, 1000.0, 2000.0])
    def test_any_rate_runs(self, fs: float) -> None:
        assert qrs.detect_qrs(np.zeros((int(3 * fs), 1)), fs).shape == (0,)

    def test_invalid_configuration_is_refused(self) -> None:
        with pytest.raises(ValueError, match="refractory_s"):
            qrs.QrsDetector.Conf(refractory_s=0.05)
        with pytest.raises(ValueError, match="latency_s"):
            qrs.QrsDetector.Conf(latency_s=0.1)
        with pytest.raises(ValueError, match="premature_rr, foreign_correlation"):
            qrs.QrsDetector.Conf(premature_rr=1.2, foreign_correlation=2.0)
        with pytest.raises(ValueError, match="searchback_correlation"):
            qrs.QrsDetector.Conf(searchback_correlation=-1.5)
        with pytest.raises(ValueError, match="foreign_prominence"):
            qrs.QrsDetector.Conf(foreign_prominence=-1.0)
        with pytest.raises(ValueError):
            qrs.QrsDetector(0, 2)
        with pytest.raises(ValueError):
            qrs.QrsDetector(360, 0)
