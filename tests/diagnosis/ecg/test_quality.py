"""Signal quality per lead on real records, and on real records with one lead edited: taken off
(flat, NaN), saturated (clipped, held at the rail), buried in noise, wandering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diagnosis.ecg import quality
from diagnosis.ecg.formats.wfdb_io import read_wfdb
from diagnosis.ecg.quality import LEAD_OFF, NOISE, SATURATED, WANDER


@pytest.fixture(scope="module")
def ecg_dir(shared_data: Path) -> Path:
    return shared_data / "ecg"


@pytest.fixture(scope="module")
def twelve_lead(ecg_dir: Path):
    """CinC 2021 E07500: a clean 12-lead 10 s record at 500 Hz (sinus bradycardia)."""
    return read_wfdb(ecg_dir / "cinc2021-12lead" / "E07500")


def judge(signal: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """(blocks, leads) SQI and flags of a whole signal."""
    monitor = quality.QualityMonitor(fs, signal.shape[1])
    blocks = monitor.push(signal) + monitor.finish()
    return np.array([b.sqi for b in blocks]), np.array([b.flags for b in blocks])


def test_clean_real_records_are_clean(twelve_lead, ecg_dir: Path) -> None:
    sqi, flags = judge(twelve_lead.signal, twelve_lead.fs)
    assert sqi.shape == (10, 12)
    assert np.all(flags == 0) and np.all(sqi >= 0.95)
    minute = read_wfdb(ecg_dir / "mitdb" / "100").signal[: 360 * 60]
    sqi, flags = judge(minute, 360.0)
    assert np.all(flags == 0) and sqi.mean() >= 0.95


def test_disconnected_leads_of_a_real_record(ecg_dir: Path) -> None:
    """CinC 2021 JS20004 was recorded with V2, V4 and V6 at exactly 0 mV throughout."""
    record = read_wfdb(ecg_dir / "cinc2021-12lead" / "JS20004")
    sqi, flags = judge(record.signal, record.fs)
    off = [record.leads.index(lead) for lead in ("V2", "V4", "V6")]
    assert np.all(flags[:, off] == LEAD_OFF) and np.all(sqi[:, off] == 0)
    live = [i for i in range(12) if i not in off]
    assert not np.any(flags[:, live] & LEAD_OFF) and sqi[:, live].mean() > 0.9


@pytest.mark.parametrize("edit", ["zero", "constant", "nan"])
def test_a_lead_taken_off(twelve_lead, edit: str) -> None:
    signal = twelve_lead.signal.copy()
    signal[:, 7] = {"zero": 0.0, "constant": 3.2, "nan": np.nan}[edit]
    sqi, flags = judge(signal, twelve_lead.fs)
    assert np.all(flags[:, 7] == LEAD_OFF) and np.all(sqi[:, 7] == 0)
    others = np.delete(np.arange(12), 7)
    assert np.all(flags[:, others] == 0)


def test_a_lead_off_for_three_seconds(twelve_lead) -> None:
    signal = twelve_lead.signal.copy()
    signal[1000:2500, 1] = np.nan   # 2-5 s
    _, flags = judge(signal, twelve_lead.fs)
    assert [bool(f & LEAD_OFF) for f in flags[:, 1]] == [False, False, True, True, True,
                                                         False, False, False, False, False]


@pytest.mark.parametrize("lead", ["II", "V5"])
def test_a_saturated_lead(twelve_lead, lead: str) -> None:
    """An input range half the lead's own cuts every R peak (and S trough) flat."""
    signal = twelve_lead.signal.copy()
    index = twelve_lead.leads.index(lead)
    low, high = np.percentile(signal[:, index], [0.5, 99.5])
    signal[:, index] = np.clip(signal[:, index], low / 2, high / 2)
    sqi, flags = judge(signal, twelve_lead.fs)
    assert np.all(flags[:, index] == SATURATED), flags[:, index]
    assert np.all(sqi[:, index] <= 0.9)
    assert np.all(np.delete(flags, index, axis=1) == 0)


def test_a_lead_held_at_the_rail_for_half_a_second(twelve_lead) -> None:
    signal = twelve_lead.signal.copy()
    signal[3200:3450, 0] = 5.0   # 6.4-6.9 s at +5 mV
    sqi, flags = judge(signal, twelve_lead.fs)
    assert [bool(f & SATURATED) for f in flags[:, 0]] == [False] * 6 + [True] + [False] * 3
    assert sqi[6, 0] == 0.0


def test_noise_and_wander(twelve_lead) -> None:
    rng = np.random.default_rng(3)
    fs = twelve_lead.fs
    t = np.arange(twelve_lead.n_samples) / fs
    signal = twelve_lead.signal.copy()
    signal[:, 4] += rng.normal(0.0, 0.15, len(signal))      # muscle-like noise, 0.15 mV SD
    signal[:, 9] += 2.0 * np.sin(2 * np.pi * 0.4 * t)         # 4 mV peak-to-peak wander
    sqi, flags = judge(signal, fs)
    assert np.all(flags[:, 4] & NOISE) and np.all(sqi[:, 4] < 0.2)
    assert np.mean((flags[:, 9] & WANDER) > 0) >= 0.7 and sqi[:, 9].mean() < 0.5
    assert np.all(np.delete(flags, [4, 9], axis=1) == 0)


def test_blocks_do_not_depend_on_chunking(twelve_lead) -> None:
    signal = twelve_lead.signal.copy()
    signal[1000:1300, 2] = np.nan
    signal[:, 5] = np.clip(signal[:, 5], -0.3, 0.3)
    whole = quality.QualityMonitor(500.0, 12)
    expected = whole.push(signal) + whole.finish()
    for size in (1, 37, 499, 501, 1234):
        monitor = quality.QualityMonitor(500.0, 12)
        got = []
        for start in range(0, len(signal), size):
            got += monitor.push(signal[start:start + size])
        got += monitor.finish()
        assert [(b.start, b.end) for b in got] == [(b.start, b.end) for b in expected]
        assert all(np.array_equal(a.sqi, b.sqi) and np.array_equal(a.flags, b.flags)
                   for a, b in zip(got, expected))


def test_short_tails_and_empty_input() -> None:
    monitor = quality.QualityMonitor(100.0, 2)
    assert monitor.push(np.zeros((0, 2))) == []
    assert monitor.push(np.ones((149, 2))) != []          # one full block, 49 samples pending
    assert monitor.finish() == []                         # under half a block: not judged
    monitor = quality.QualityMonitor(100.0, 2)
    monitor.push(np.zeros((60, 2)))
    (tail,) = monitor.finish()
    assert (tail.start, tail.end) == (0, 60) and np.all(tail.flags == LEAD_OFF)
    sqi, flags = quality.assess(np.zeros((0, 100, 3)), 100.0)
    assert sqi.shape == flags.shape == (0, 3)
    with pytest.raises(ValueError):
        quality.QualityConf(noise_mv=(0.1, 0.05))

