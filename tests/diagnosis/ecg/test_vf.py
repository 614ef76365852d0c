"""The VF detector: silent on every recording in ../shared/data/ecg (none holds VF), on every
lead; it finds VF spliced into a real recording, where it starts and ends; a stream gives the
same episodes however it is chunked. The shared data has no VF recording, so VF is synthetic:
a 4-6 Hz oscillation of drifting frequency and amplitude, as coarse VF looks on the surface."""

from __future__ import annotations

import numpy as np
import pytest

from diagnosis.ecg import references
from diagnosis.ecg.analysis import analyze
from diagnosis.ecg.formats import read_record
from diagnosis.ecg.record import EcgRecord
from diagnosis.ecg.vf import VfConf, VfEpisode, VfTracker, leakage

OTHER_FILES = ["ptb/s0010_re.hea", "dicom/waveform_ecg.dcm", "aecg/ecg_hl7.xml"]


def synthetic_vf(seconds: float, fs: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    drift = rng.standard_normal(len(t)).cumsum() / np.sqrt(len(t))
    frequency = 5.0 + 0.8 * np.sin(2 * np.pi * 0.3 * t) + 0.3 * drift
    phase = 2 * np.pi * np.cumsum(frequency) / fs
    amplitude = 0.5 + 0.3 * np.sin(2 * np.pi * 0.2 * t + rng.uniform(0, 6))
    return (amplitude * (np.sin(phase) + 0.15 * np.sin(2 * phase + 1.0))
            + 0.03 * rng.standard_normal(len(t)))


def episodes(signal: np.ndarray, fs: float, chunk: int | None = None) -> list[VfEpisode]:
    tracker, found = VfTracker(fs), []
    step = chunk or len(signal)
    for start in range(0, len(signal), step):
        found += tracker.push(signal[start:start + step])[1]
    return found + tracker.finish(len(signal))


def all_recordings(ecg_dir):
    for record in references.annotated_records(ecg_dir):
        yield record.name, record.signal, record.fs
    for name in OTHER_FILES + [p.relative_to(ecg_dir).as_posix()
                               for p in sorted((ecg_dir / "cinc2021-12lead").glob("*.hea"))]:
        record = read_record(ecg_dir / name)
        yield name, record.signal, record.fs


def test_no_vf_on_any_shared_recording(shared_data):
    checked = 0
    for name, signal, fs in all_recordings(shared_data / "ecg"):
        for lead in range(min(signal.shape[1], 12)):
            assert episodes(np.nan_to_num(signal[:, lead]), fs) == [], (name, lead)
            checked += 1
    assert checked > 300


def test_vf_spliced_into_a_real_recording_is_found_where_it_is(shared_data):
    record = read_record(shared_data / "ecg" / "mitdb" / "100.hea")
    fs, lead = record.fs, record.signal[:, 0]
    before, vf_s, after = int(20 * fs), 20.0, int(20 * fs)
    vf = synthetic_vf(vf_s, fs)
    signal = np.concatenate([lead[:before], vf + lead[before], lead[before:before + after]])
    window = VfConf().window_s * fs
    (found,) = episodes(signal, fs)
    assert before <= found.start <= before + window, "from the first whole window of VF"
    vf_end = before + len(vf)
    assert vf_end <= found.end <= vf_end + 2 * window


@pytest.mark.parametrize("chunk", [1, 97, 500, 4096])
def test_streaming_equals_batch(shared_data, chunk):
    record = read_record(shared_data / "ecg" / "cinc2021-12lead" / "HR06000.hea")
    fs, lead = record.fs, record.signal[:, 1]
    signal = np.concatenate([lead, synthetic_vf(15.0, fs, seed=3), lead])
    batch = episodes(signal, fs)
    assert len(batch) == 1 and batch[0].end is not None
    assert episodes(signal, fs, chunk) == batch


def test_regular_slow_oscillations_and_mains_are_not_vf():
    fs = 500.0
    t = np.arange(int(20 * fs)) / fs
    slow = np.sin(2 * np.pi * 2.0 * t)  # 120 per minute: a sinusoidal VT or artefact, not VF
    mains = 0.5 * np.sin(2 * np.pi * 50.0 * t)
    for signal in (slow, mains):
        assert episodes(signal, fs) == []
    assert leakage(np.sin(2 * np.pi * 5.0 * t)[None, :]) < 0.05
    noise = np.random.default_rng(0).standard_normal((4, 2000))
    assert np.all(np.abs(leakage(noise) - np.sqrt(2) / 2) < 0.05)


@pytest.mark.parametrize("chunk", [None, 125])
def test_the_analysis_alerts_vf_on_the_rhythm_lead(shared_data, chunk):
    """VF on every lead of a real 12-lead (after its 10 s of sinus rhythm): one VF alert naming
    lead II at the VF's first window, a VF rhythm episode, the same in batch and 0.25 s chunks;
    the recording alone raises no VF."""
    record = read_record(shared_data / "ecg" / "cinc2021-12lead" / "HR06000.hea")
    assert not [a for a in analyze(record).alerts if a.kind == "VF"]
    fs, sinus = record.fs, len(record.signal)
    vf = synthetic_vf(20.0, fs, seed=5)[:, None] * np.linspace(0.6, 1.2, len(record.leads))
    spliced = EcgRecord(fs, record.leads, np.vstack([record.signal, vf + record.signal[-1]]),
                        None, record.gain, record.baseline)
    report = analyze(spliced, chunk=chunk)
    (alert,) = [a for a in report.alerts if a.kind == "VF"]
    window = VfConf().window_s * fs
    assert alert.leads == ("II",) and abs(alert.sample - sinus) <= window, "its first window"
    (episode,) = [e for e in report.rhythms if e.label == "VF"]
    assert episode.start == alert.sample and episode.end == len(spliced.signal)
