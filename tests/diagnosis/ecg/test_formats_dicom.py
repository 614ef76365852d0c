"""DICOM waveform reading on the real Mortara ELI 250 12-lead file: right leads, rate, duration
and millivolt scale, the stored integers untouched, and damaged or non-ECG files refused with a
message that names the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.waveforms import multiplex_array

from diagnosis.ecg.formats import EcgFormatError, read_dicom, read_record
from diagnosis.ecg.record import STANDARD_LEADS


@pytest.fixture(scope="module")
def dicom_file(shared_data: Path) -> Path:
    return shared_data / "ecg" / "dicom" / "waveform_ecg.dcm"


def per_second_peak_to_peak(signal: np.ndarray, fs: float) -> np.ndarray:
    n = int(fs)
    windows = signal[: len(signal) // n * n].reshape(-1, n)
    return windows.max(axis=1) - windows.min(axis=1)


def test_reads_the_rhythm_group_with_its_leads_and_scale(dicom_file: Path) -> None:
    record = read_record(dicom_file)
    assert record.leads == STANDARD_LEADS
    assert (record.fs, record.n_samples, record.duration_s) == (1000.0, 10000, 10.0)
    assert np.array_equal(record.gain, np.full(12, 800.0))  # 1.25 uV per unit
    assert np.array_equal(record.baseline, np.zeros(12))
    assert (record.sex, record.age) == ("F", 42.0)
    ds = pydicom.dcmread(dicom_file)
    assert np.array_equal(record.digital, multiplex_array(ds, 0, as_raw=True))
    # pydicom's own calibrated values are in microvolts.
    assert np.allclose(record.signal * 1000, ds.waveform_array(0), rtol=1e-12, atol=0)


def test_amplitudes_are_physiological_and_the_limb_leads_agree(dicom_file: Path) -> None:
    record = read_record(dicom_file)
    qrs = per_second_peak_to_peak(record.lead("II"), record.fs)
    assert 0.3 <= np.median(qrs) <= 5.0  # 1.17 mV
    # Einthoven and Goldberger: any lead mapped or scaled wrongly breaks these (to 1/2 unit).
    i, ii, iii = record.lead("I"), record.lead("II"), record.lead("III")
    step = 1 / 800
    assert np.abs(i + iii - ii).max() <= step
    assert np.abs(record.lead("aVR") + (i + ii) / 2).max() <= step
    assert np.abs(record.lead("aVL") - (i - iii) / 2).max() <= step
    assert np.abs(record.lead("aVF") - (ii + iii) / 2).max() <= step


def test_median_beats_are_read_only_when_asked(dicom_file: Path, tmp_path: Path) -> None:
    median = read_dicom(dicom_file, group=1)
    assert median.n_samples == 1200 and median.leads == STANDARD_LEADS
    ds = pydicom.dcmread(dicom_file)
    ds.WaveformSequence = pydicom.Sequence(list(reversed(ds.WaveformSequence)))
    swapped = tmp_path / "swapped.dcm"
    ds.save_as(swapped)
    assert read_dicom(swapped).n_samples == 10000  # the rhythm group, now second
    with pytest.raises(EcgFormatError, match="no multiplex group 5"):
        read_dicom(dicom_file, group=5)


@pytest.mark.parametrize("keep", [2000, 150_000, -10])
def test_truncated_file_is_refused(dicom_file: Path, tmp_path: Path, keep: int) -> None:
    """Cut in the header, in the waveform data, and in the trailing private elements (which
    pydicom reads without complaint)."""
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(dicom_file.read_bytes()[:keep])
    with pytest.raises(EcgFormatError, match="truncated") as caught:
        read_record(cut)
    assert str(cut) in str(caught.value)


def _altered(dicom_file: Path, tmp_path: Path, change) -> Path:
    ds = pydicom.dcmread(dicom_file)
    change(ds.WaveformSequence[0])
    path = tmp_path / "altered.dcm"
    ds.save_as(path)
    return path


def _set_units(group, unit: str) -> None:
    group.ChannelDefinitionSequence[3].ChannelSensitivityUnitsSequence[0].CodeValue = unit


def _drop_channel(group) -> None:
    del group.ChannelDefinitionSequence[11]


@pytest.mark.parametrize("change, message", [
    (lambda g: setattr(g, "NumberOfWaveformSamples", 20000), "truncated waveform data"),
    (lambda g: setattr(g, "NumberOfWaveformSamples", 5000), "mismatched lengths"),
    (_drop_channel, "mismatched lengths.*12 channels declared, 11 defined"),
    (lambda g: _set_units(g, "mm[Hg]"), "channel 4 is in 'mm\\[Hg\\]', not a voltage"),
    (lambda g: setattr(g, "WaveformSampleInterpretation", "MB"), "unsupported encoding"),
    (lambda g: delattr(g.ChannelDefinitionSequence[0], "ChannelSensitivity"), "not calibrated"),
])
def test_inconsistent_waveform_is_refused(dicom_file: Path, tmp_path: Path, change,
                                          message: str) -> None:
    with pytest.raises(EcgFormatError, match=message):
        read_record(_altered(dicom_file, tmp_path, change))


def test_non_ecg_and_non_dicom_files_are_refused(shared_data: Path, tmp_path: Path) -> None:
    ct = shared_data / "dicom" / "single" / "693_UNCR.dcm"
    with pytest.raises(EcgFormatError, match=r"not an ECG: .*CT Image Storage.*no waveform"):
        read_record(ct)
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\x00" * 300)
    with pytest.raises(EcgFormatError, match="not a DICOM file"):
        read_record(fake)
