"""ECG filters: the same bits chunk by chunk as in one go; each filter does its job on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import signal as sps

from diagnosis.ecg import filters
from diagnosis.ecg.formats.wfdb_io import read_wfdb


@pytest.fixture(scope="module")
def ptb(shared_data: Path):
    """PTB s0010_re: 15 leads at 1 kHz, 38.4 s."""
    return read_wfdb(shared_data / "ecg" / "ptb" / "s0010_re")


def chunked(sos: np.ndarray, signal: np.ndarray, sizes: list[int]) -> np.ndarray:
    stream = filters.StreamingFilter(sos, signal.shape[1])
    out, start, i = [], 0, 0
    while start < len(signal):
        size = sizes[i % len(sizes)]
        out.append(stream.process(signal[start:start + size]))
        start += size
        i += 1
    return np.concatenate(out)


@pytest.mark.parametrize("sizes", [[1], [7], [999], [0, 3, 1000, 1]])
def test_streaming_filter_is_bit_exact(ptb, sizes: list[int]) -> None:
    signal = ptb.signal[:6000]
    for sos in (filters.clean_sos(ptb.fs), filters.qrs_band_sos(ptb.fs)):
        assert np.array_equal(chunked(sos, signal, sizes), filters.apply_sos(sos, signal))


def test_missing_samples_hold_the_last_value_across_chunks(ptb) -> None:
    signal = ptb.signal[:4000, :3] + 5.0  # a front end's DC offset
    gapped = signal.copy()
    gapped[1000:1200, 0] = np.nan
    gapped[1999:2001, 1] = np.inf
    gapped[:10, 2] = np.nan  # before any value: held at 0 mV
    held = gapped.copy()
    held[1000:1200, 0] = signal[999, 0]
    held[1999:2001, 1] = signal[1998, 1]
    held[:10, 2] = 0.0
    sos = filters.clean_sos(ptb.fs)
    expected = filters.apply_sos(sos, held)
    assert np.array_equal(filters.apply_sos(sos, gapped), expected)
    assert np.array_equal(chunked(sos, gapped, [1, 150, 7]), expected)
    assert np.all(np.isfinite(expected))


def test_empty_cascade_and_empty_chunks() -> None:
    assert filters.notch_sos(100.0, 50.0).shape == (0, 6)  # mains at Nyquist: no notch
    assert filters.notch_sos(500.0, None).shape == (0, 6)
    x = np.array([[1.0], [np.nan], [2.0]])
    assert np.array_equal(filters.apply_sos(np.empty((0, 6)), x), [[1.0], [1.0], [2.0]])
    stream = filters.StreamingFilter(filters.clean_sos(500.0), 2)
    assert stream.process(np.empty((0, 2))).shape == (0, 2)


def response_db(sos: np.ndarray, fs: float, hz: float) -> float:
    _, h = sps.sosfreqz(sos, worN=[hz], fs=fs)
    return float(20 * np.log10(np.abs(h[0])))


@pytest.mark.parametrize("fs", [128.0, 200.0, 360.0, 500.0, 1000.0])
def test_frequency_responses(fs: float) -> None:
    baseline = filters.baseline_sos(fs)
    assert response_db(baseline, fs, 0.05) < -19  # respiration-driven wander
    assert response_db(baseline, fs, 5.0) > -0.1  # QRS and T untouched
    if fs > 100:
        assert response_db(filters.notch_sos(fs, 50.0), fs, 50.0) < -40
        assert response_db(filters.notch_sos(fs, 50.0), fs, 40.0) > -0.5
    band = filters.qrs_band_sos(fs)
    centre = np.sqrt(10 * min(25, 0.45 * fs))
    assert response_db(band, fs, centre) > -1
    assert response_db(band, fs, 1.0) < -30  # P/T waves and baseline out of the QRS band


def test_baseline_removal_on_a_real_record(ptb) -> None:
    """PTB leads carry offsets and wander; after removal every lead's 2 s means are near 0 mV
    while the QRS (the 99th-percentile slope) is kept."""
    fs = ptb.fs
    signal = ptb.signal + np.linspace(0, 2.0, ptb.n_samples)[:, None]  # add a 2 mV drift
    removed = filters.remove_baseline(signal, fs)
    settled = removed[int(5 * fs):]
    window_means = settled[: len(settled) // 2000 * 2000].reshape(-1, 2000, signal.shape[1])
    assert np.max(np.abs(window_means.mean(axis=1))) < 0.1
    slope_before = np.percentile(np.abs(np.diff(signal[int(5 * fs):], axis=0)), 99, axis=0)
    slope_after = np.percentile(np.abs(np.diff(settled, axis=0)), 99, axis=0)
    assert np.allclose(slope_after, slope_before, rtol=0.05)


def test_powerline_removal(ptb) -> None:
    fs = ptb.fs
    t = np.arange(ptb.n_samples) / fs
    hum = 0.3 * np.sin(2 * np.pi * 50.0 * t)[:, None]
    cleaned = filters.remove_powerline(ptb.signal + hum, fs, 50.0)
    reference = filters.remove_powerline(ptb.signal, fs, 50.0)
    residual = (cleaned - reference)[int(2 * fs):]  # past the notch's settling
    assert np.sqrt(np.mean(residual ** 2)) < 0.003


def test_group_delay_of_the_qrs_band() -> None:
    delay = filters.group_delay_s(filters.qrs_band_sos(500.0), 500.0, 15.0)
    assert 0.005 < delay < 0.05
    assert filters.group_delay_s(np.empty((0, 6)), 500.0, 15.0) == 0.0


def test_public_sosfilt_fallback_gives_the_same_bits(ptb, monkeypatch) -> None:
    """Streams use scipy's compiled sosfilt loop when it checks out; without it, the public
    function must produce the very same samples."""
    assert filters._SOSFILT is not None  # present and verified in this scipy
    signal = ptb.signal[:3000]
    sos = filters.clean_sos(ptb.fs)
    fast = chunked(sos, signal, [1, 125, 7])
    monkeypatch.setattr(filters, "_SOSFILT", None)
    assert np.array_equal(chunked(sos, signal, [1, 125, 7]), fast)
    assert np.array_equal(filters.apply_sos(sos, signal), fast)
