"""The streaming analyzer as a whole: streaming equals batch on real records, stretches without
beats (asystole, leads off, pause) on real records with a stretch replaced, the report and the
`telemed ecg analyze` command, bad input, throughput."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from diagnosis.ecg import analysis, qrs, rhythm
from diagnosis.ecg.formats import export_record
from diagnosis.ecg.formats.wfdb_io import read_wfdb
from diagnosis.ecg.record import EcgRecord
from diagnosis.ecg.ventricular_run import with_ventricular_run
from telemed.cli import main


@pytest.fixture(scope="module")
def ecg_dir(shared_data: Path) -> Path:
    return shared_data / "ecg"


def stream(record, sizes) -> tuple[analysis.Report, analysis.Update]:
    """Push the record in chunks of the given sizes (cycled); the report and all updates."""
    analyzer = analysis.StreamAnalyzer(record.fs, record.leads, record.sex, record.age)
    updates = analysis.Update()
    start, sizes = 0, iter(sizes)
    while start < record.n_samples:
        size = next(sizes)
        updates.extend(analyzer.push(record.signal[start:start + size]))
        start += size
    updates.extend(analyzer.finish())
    return analyzer.report(), updates


def cycle(*sizes: int):
    while True:
        yield from sizes


def assert_same(got: analysis.Report, expected: analysis.Report) -> None:
    """Equal in every value, bit for bit."""
    assert (got.fs, got.leads, got.n_samples) == (expected.fs, expected.leads, expected.n_samples)
    assert [(b.sample, b.label) for b in got.beats] == [(b.sample, b.label) for b in expected.beats]
    for field in ("hr_bpm", "hr_avg_bpm"):
        assert np.array_equal([getattr(b, field) for b in got.beats],
                              [getattr(b, field) for b in expected.beats], equal_nan=True)
    assert got.rhythms == expected.rhythms
    assert got.alerts == expected.alerts
    assert [(q.start, q.end) for q in got.quality] == [(q.start, q.end) for q in expected.quality]
    assert all(np.array_equal(a.sqi, b.sqi) and np.array_equal(a.flags, b.flags)
               for a, b in zip(got.quality, expected.quality))
    assert [s.sample for s in got.st] == [s.sample for s in expected.st]
    assert all(np.array_equal(a.deviation_mv, b.deviation_mv, equal_nan=True)
               and np.array_equal(a.elevation_mv, b.elevation_mv, equal_nan=True)
               for a, b in zip(got.st, expected.st))
    assert got.as_json() == expected.as_json()


def assert_updates_make_the_report(updates: analysis.Update, report: analysis.Report) -> None:
    assert [b.sample for b in updates.beats] == [b.sample for b in report.beats]
    assert sorted(updates.rhythms, key=lambda e: (e.start, e.end, e.label)) == report.rhythms
    assert sorted(updates.alerts, key=lambda a: (a.sample, a.kind)) == report.alerts
    assert len(updates.quality) == len(report.quality) and len(updates.st) == len(report.st)


# ---- streaming equals batch ----

@pytest.mark.parametrize("name, sizes", [
    ("cinc2021-12lead/JS20004", (1,)),          # 12 leads, three of them flat
    ("cinc2021-12lead/JS20004", (13,)),
    ("ptb/s0010_re", (7,)),                     # 15 leads at 1 kHz
    ("ptb/s0010_re", (97,)),
    ("ptb/s0010_re", (1000,)),
    ("ptb/s0010_re", (200, 1, 0, 3, 4096)),
    ("cpsc2021/data_8_2", (97,)),               # AF, ventricular runs, a VT alert
    ("cpsc2021/data_8_2", (250,)),
    ("cpsc2021/data_8_2", (1001,)),
    ("cpsc2021/data_8_2", (200, 1, 0, 3, 4096)),
    ("cpsc2021/data_101_8", (50,)),             # paroxysmal AF, sinus, tachycardia
    ("cpsc2021/data_101_8", (3000, 7)),
], ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v)))
def test_streaming_equals_batch(ecg_dir: Path, name: str, sizes) -> None:
    record = read_wfdb(ecg_dir / name)
    batch = analysis.analyze(record)
    assert batch.beats and batch.rhythms and batch.quality and batch.st
    got, updates = stream(record, cycle(*sizes))
    assert_same(got, batch)
    assert_updates_make_the_report(updates, got)


def test_streaming_equals_batch_with_random_chunks(ecg_dir: Path) -> None:
    record = read_wfdb(ecg_dir / "cpsc2021" / "data_8_3")
    rng = np.random.default_rng(11)
    got, _ = stream(record, (int(n) for n in rng.integers(0, 900, size=10**6)))
    assert_same(got, analysis.analyze(record))


def test_beats_are_the_detectors_and_labels_the_labellers(ecg_dir: Path) -> None:
    record = read_wfdb(ecg_dir / "mitdb" / "100")
    report = analysis.analyze(record)
    assert np.array_equal([b.sample for b in report.beats],
                          qrs.detect_qrs(record.signal, record.fs))
    labels = [b.label for b in report.beats]
    assert labels.count("N") == 2272 and labels.count("V") == 1   # as in test_beats
    rates = np.array([b.hr_bpm for b in report.beats])
    assert np.isnan(rates[0]) and 60 <= np.nanmedian(rates) <= 90
    averaged = np.array([b.hr_avg_bpm for b in report.beats[8:]])
    assert np.std(averaged) < np.std(rates[8:])
    assert [e.label for e in report.rhythms] == [rhythm.SINUS]
    assert report.alerts == []


# ---- stretches without beats ----

def replaced(record, start_s: float, stop_s: float, how: str) -> "read_wfdb":
    """The record with [start_s, stop_s) replaced: "asystole" (the baseline there plus
    0.01 mV of noise: signal but no QRS), "off" (no samples) or "flat" (0 mV)."""
    signal = record.signal.copy()
    span = slice(int(start_s * record.fs), int(stop_s * record.fs))
    if how == "asystole":
        level = np.median(signal[span], axis=0)
        noise = np.random.default_rng(1).normal(0, 0.01, signal[span].shape)
        signal[span] = level + noise
    else:
        signal[span] = np.nan if how == "off" else 0.0
    return dataclasses.replace(record, signal=signal, digital=None)


@pytest.fixture(scope="module")
def minute(ecg_dir: Path):
    record = read_wfdb(ecg_dir / "mitdb" / "100")
    return dataclasses.replace(record, signal=record.signal[:360 * 60], digital=None)


def gap_around(report: analysis.Report, start_s: float) -> tuple[int, int]:
    """The last beat before `start_s` and the next one."""
    beats = np.array([b.sample for b in report.beats])
    before = int(np.flatnonzero(beats < start_s * report.fs)[-1])
    return int(beats[before]), int(beats[before + 1])


def test_asystole(minute) -> None:
    record = replaced(minute, 20.0, 27.0, "asystole")
    report = analysis.analyze(record)
    last, first = gap_around(report, 20.0)
    assert first - last > 7 * record.fs                 # no beat found in the noise
    asystole = int(last + 4 * record.fs)
    assert [(a.kind, a.sample) for a in report.alerts] == [("ASYSTOLE", asystole)]
    assert rhythm.Episode(last, first, "ASYSTOLE") in report.rhythms
    for sizes in [(36,), (360,), (5000, 1, 7)]:
        got, updates = stream(record, cycle(*sizes))
        assert_same(got, report)
        assert_updates_make_the_report(updates, got)


def test_asystole_alert_comes_when_due(minute) -> None:
    """Streamed in 0.1 s chunks, the alert is out within the detector's lookahead and R
    refinement (`QrsDetector.settled`) plus one chunk after the moment it describes: well
    inside the issue's second, not the detector's 1 s worst-case latency on top of it."""
    record = replaced(minute, 20.0, 27.0, "asystole")
    analyzer = analysis.StreamAnalyzer(record.fs, record.leads)
    detector = analyzer.detector
    due = (detector.lookahead + detector.conf.refine_s * record.fs + 36) / record.fs
    for start in range(0, record.n_samples, 36):
        update = analyzer.push(record.signal[start:start + 36])
        if update.alerts:
            (alert,) = update.alerts
            assert 0 <= (start + 36 - alert.sample) / record.fs <= due < 0.5
            break
    else:
        pytest.fail("no asystole alert while streaming")


@pytest.mark.parametrize("how", ["off", "flat"])
def test_leads_off_is_no_asystole(minute, how: str) -> None:
    record = replaced(minute, 20.0, 27.0, how)
    report = analysis.analyze(record)
    last, first = gap_around(report, 20.0)
    assert report.alerts == []
    assert rhythm.Episode(last, first, analysis.LEAD_OFF) in report.rhythms
    got, _ = stream(record, cycle(97))
    assert_same(got, report)


def test_leads_off_in_the_second_before_the_alarm(minute) -> None:
    """Signal without beats, then the leads come off just before the 4 s are up: judged from
    the samples up to the alarm (not a whole quality block after it), a technical problem."""
    record = replaced(replaced(minute, 20.0, 27.0, "asystole"), 23.2, 27.0, "off")
    report = analysis.analyze(record)
    last, first = gap_around(report, 20.0)
    assert 23.2 < last / record.fs + 4 < 24.0
    assert report.alerts == []
    assert rhythm.Episode(last, first, analysis.LEAD_OFF) in report.rhythms
    got, _ = stream(record, cycle(36))
    assert_same(got, report)


VENTRICULAR_BEAT_100 = 546792
"""The R peak of MIT-BIH 100's one ventricular beat (its .atr annotation)."""


@pytest.fixture(scope="module")
def ventricular_tachycardia(ecg_dir: Path):
    """MIT-BIH 100's first minute with 8 copies of its ventricular complex at 150 bpm after
    the beat at 29.4 s (sample 10591)."""
    record = read_wfdb(ecg_dir / "mitdb" / "100")
    run = with_ventricular_run(record.signal, record.fs, VENTRICULAR_BEAT_100, 10591, 8, 150)
    return dataclasses.replace(record, signal=run[:360 * 60], digital=None)


def test_ventricular_tachycardia(ventricular_tachycardia) -> None:
    """Every beat of the run is ventricular (after the first few the median RR has shortened
    and they no longer look premature: each matches the ventricular beat before it), the VT
    alert comes at the third, and the VT episode spans the run; streaming gives the same."""
    record = ventricular_tachycardia
    report = analysis.analyze(record)
    run = [b for b in report.beats if 10591 < b.sample <= 10591 + 8 * 144 + 3]
    assert [b.label for b in run] == ["V"] * 8
    assert [b.label for b in report.beats].count("V") == 8
    assert report.alerts == [analysis.Alert("VT", run[2].sample)]
    assert [e for e in report.rhythms if e.label in (rhythm.VT, rhythm.VRUN)] == [
        rhythm.Episode(run[0].sample, run[-1].sample + 1, rhythm.VT)]
    got, _ = stream(record, cycle(90))
    assert_same(got, report)


def test_electrode_pops_change_nothing(minute) -> None:
    """A 1.5 mV baseline step (up or down, as an electrode pop or a jolted cable gives) halfway
    between every fifth pair of beats of MIT-BIH 100's first minute: the same beats, labels,
    rhythm and (no) alerts as the clean minute; streaming gives the same."""
    clean = analysis.analyze(minute)
    beats = [b.sample for b in clean.beats]
    signal = minute.signal.copy()
    for k, i in enumerate(range(2, len(beats) - 1, 5)):
        signal[(beats[i] + beats[i + 1]) // 2:] += (-1) ** k * np.array([1.5, 0.9])
    record = dataclasses.replace(minute, signal=signal, digital=None)
    report = analysis.analyze(record)
    assert len(range(2, len(beats) - 1, 5)) >= 14
    assert [(b.sample, b.label) for b in report.beats] == [(b.sample, b.label)
                                                           for b in clean.beats]
    assert report.rhythms == clean.rhythms and report.alerts == clean.alerts == []
    got, _ = stream(record, cycle(90))
    assert_same(got, report)


@pytest.mark.parametrize("how", ["off", "flat"])
@pytest.mark.parametrize("lead", [0, 1])
def test_one_lead_going_off_raises_no_asystole(minute, lead: int, how: str) -> None:
    """An electrode comes off 20 s into MIT-BIH 100's first minute: that lead's samples are
    missing (the monitor's "no sample" marker) or flat to the end. The other lead still shows
    every beat, so the analysis finds them all and raises nothing (with MLII missing it
    called ASYSTOLE and lost every beat after 20 s). Without MLII, R peaks are placed on V5,
    at most a few samples from MLII's."""
    clean = analysis.analyze(minute)
    signal = minute.signal.copy()
    signal[int(20 * minute.fs):, lead] = np.nan if how == "off" else 0.0
    record = dataclasses.replace(minute, signal=signal, digital=None)
    report = analysis.analyze(record)
    shift = np.array([b.sample for b in report.beats]) - [b.sample for b in clean.beats]
    assert np.abs(shift).max() <= 0.01 * record.fs
    assert {b.label for b in report.beats} == {"N"}
    assert report.alerts == [] and {e.label for e in report.rhythms} == {rhythm.SINUS}
    got, _ = stream(record, cycle(90))
    assert_same(got, report)


@pytest.mark.parametrize("lead", [0, 1])
def test_muscle_tremor_on_one_lead_is_not_ventricular(ecg_dir: Path, lead: int) -> None:
    """CPSC 2021 data_101_6 (fast AF) with 0.3 mV RMS of 20-150 Hz noise (muscle tremor) on one
    lead through its middle third. With every lead at full say the tremor made beats look wide
    and unlike the template: 52 and 47 false V, 3 and 5 VT alarms. A beat that looks
    ventricular is now judged again with each lead at its say (`beats.lead_weights`): 3 and
    2 V, no alarm."""
    record = read_wfdb(ecg_dir / "cpsc2021" / "data_101_6")
    signal = record.signal.copy()
    third = len(signal) // 3
    white = np.random.default_rng(2).normal(0.0, 1.0, third + int(record.fs))
    tremor = sosfilt(butter(4, [20.0, 0.45 * record.fs], btype="band", fs=record.fs,
                            output="sos"), white)[-third:]
    signal[third:2 * third, lead] += 0.3 * tremor / np.std(tremor)
    report = analysis.analyze(dataclasses.replace(record, signal=signal, digital=None))
    assert report.alerts == []
    assert sum(b.label == "V" for b in report.beats) <= 6


def test_a_flat_lead_does_not_take_the_other_leads_say(ecg_dir: Path) -> None:
    """CPSC 2021 data_101_6 with lead 0 at 0 mV through its middle third: the filters' smooth
    residue there must not pass for a lead without noise, whose say would leave the live lead
    none (a first version of `lead_weights` did that: 12 false V and 2 VT alarms). A lead
    with no ECG is left out. One beat is called V: the one whose window holds the step of the
    lead coming back."""
    record = read_wfdb(ecg_dir / "cpsc2021" / "data_101_6")
    signal = record.signal.copy()
    third = len(signal) // 3
    signal[third:2 * third, 0] = 0.0
    report = analysis.analyze(dataclasses.replace(record, signal=signal, digital=None))
    assert report.alerts == []
    assert [b.sample for b in report.beats if b.label == "V"] == [14936]


def test_pause(minute) -> None:
    record = replaced(minute, 20.0, 22.3, "asystole")
    report = analysis.analyze(record)
    last, first = gap_around(report, 20.0)
    assert 2.0 < (first - last) / record.fs < 4.0
    assert rhythm.Episode(last, first, rhythm.PAUSE) in report.rhythms
    assert report.alerts == []


def test_asystole_to_the_end(minute) -> None:
    """The stretch after the last beat counts too, up to the end of the stream. (A stream
    that starts in asystole is not recognised: the QRS detector learns its levels from the
    first 2 s and then takes noise peaks for beats.)"""
    record = replaced(minute, 50.0, 60.0, "asystole")
    report = analysis.analyze(record)
    last = report.beats[-1].sample
    assert last < 50 * record.fs
    assert report.alerts == [analysis.Alert("ASYSTOLE", int(last + 4 * record.fs))]
    assert rhythm.Episode(last, record.n_samples, "ASYSTOLE") in report.rhythms
    got, _ = stream(record, cycle(1000))
    assert_same(got, report)


# ---- the report and the command ----

def check_document(doc: dict, record) -> None:
    assert doc["fs"] == record.fs and doc["leads"] == list(record.leads)
    assert doc["beats"] and all(set(b) == {"sample", "label"} and isinstance(b["sample"], int)
                                and b["label"] in ("N", "V", "Q") for b in doc["beats"])
    samples = [b["sample"] for b in doc["beats"]]
    assert samples == sorted(samples) and 0 <= samples[0] and samples[-1] < record.n_samples
    assert doc["rhythms"] and all(set(e) == {"start", "end", "label"}
                                  and 0 <= e["start"] < e["end"] <= record.n_samples
                                  for e in doc["rhythms"])
    assert all(set(a) == {"kind", "sample", "leads", "criterion"}
               and isinstance(a["leads"], list)
               and (a["criterion"] in ("elevation", "posterior")) == (a["kind"] == "STEMI")
               for a in doc["alerts"])
    assert set(doc["st_mv"]) == set(record.leads) and set(doc["quality"]) == set(record.leads)


@pytest.mark.parametrize("name", ["mitdb/100", "ptb/s0010_re"])
def test_cli_prints_the_report_as_json(ecg_dir: Path, capsys, name: str) -> None:
    path = ecg_dir / f"{name}.hea"
    assert main(["ecg", "analyze", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    record = read_wfdb(path)
    check_document(doc, record)
    assert doc == json.loads(json.dumps(analysis.analyze(record).as_json()))
    if name == "mitdb/100":
        assert len(doc["beats"]) == 2273 and doc["fs"] == 360.0
        assert [e["label"] for e in doc["rhythms"]] == ["SINUS"] and doc["alerts"] == []
    else:
        assert doc["fs"] == 1000.0 and len(doc["leads"]) == 15
        assert [(a["kind"], a["leads"], a["criterion"]) for a in doc["alerts"]] == [
            ("STEMI", ["V2", "V3"], "posterior")]


def test_cli_summary_and_errors(ecg_dir: Path, capsys, tmp_path: Path,
                                ventricular_tachycardia) -> None:
    assert main(["ecg", "analyze", str(ecg_dir / "cpsc2021" / "data_8_2.hea")]) == 0
    out = capsys.readouterr().out
    assert "AF" in out and "ALERT" not in out
    vt = ventricular_tachycardia
    spliced = EcgRecord.from_digital(np.rint(vt.signal * 200).astype(np.int16), vt.fs,
                                     vt.leads, vt.gain, np.zeros(2))
    assert main(["ecg", "analyze", str(export_record(spliced, tmp_path / "vt.hea"))]) == 0
    assert "ALERT VT" in capsys.readouterr().out
    assert main(["ecg", "analyze", str(ecg_dir / "ptb" / "s0010_re.hea")]) == 0
    assert ("ALERT STEMI at 2.11 s (V2, V3): posterior equivalent, ST depression with upright T"
            in capsys.readouterr().out)
    assert main(["ecg", "analyze", str(tmp_path / "missing.hea"), "--json"]) == 2
    assert "error: cannot read" in capsys.readouterr().err


def test_other_formats_through_the_cli(ecg_dir: Path, capsys) -> None:
    for path in (ecg_dir / "dicom" / "waveform_ecg.dcm", ecg_dir / "aecg" / "ecg_hl7.xml"):
        assert main(["ecg", "analyze", str(path), "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert len(doc["leads"]) == 12 and len(doc["beats"]) >= 8


# ---- bad input ----

def test_bad_input() -> None:
    fs = 250.0
    empty = analysis.StreamAnalyzer(fs, ["II"])
    assert empty.push(np.empty((0, 1))) == analysis.Update()
    empty.finish()
    report = empty.report()
    assert report.n_samples == 0 and report.beats == [] and report.rhythms == []
    assert report.as_json()["heart_rate"] == {"mean_bpm": None, "min_bpm": None,
                                              "max_bpm": None}
    with pytest.raises(RuntimeError):
        empty.push(np.zeros((10, 1)))
    assert empty.finish() == analysis.Update()

    for value in (np.nan, 0.0, 1e300):
        analyzer = analysis.StreamAnalyzer(fs, ["I", "II"])
        analyzer.push(np.full((int(10 * fs), 2), value))
        analyzer.finish()
        report = analyzer.report()
        assert report.beats == [] and report.alerts == []
        assert report.rhythms == [rhythm.Episode(0, int(10 * fs), analysis.LEAD_OFF)]
        json.dumps(report.as_json())

    single = analysis.StreamAnalyzer(fs, ["II"])
    single.push(np.zeros(100))                     # a 1-D chunk for one lead
    with pytest.raises(ValueError):
        analysis.StreamAnalyzer.Conf(hr_average_beats=0)
