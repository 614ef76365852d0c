"""Export as DICOM General ECG and WFDB, and reading any format through one call: what is
written reads back with the same stored integers bit for bit, the same millivolts, leads, rate
and patient data; what cannot be written faithfully is refused."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from diagnosis.ecg.formats import EcgFormatError, detect_format, export_record, read_record
from diagnosis.ecg.record import EcgRecord

pytestmark = pytest.mark.filterwarnings(
    "ignore:The inplace keyword in DataFrame.drop is deprecated")  # inside wfdb-python's reader

SOURCES = ["dicom/waveform_ecg.dcm", "aecg/ecg_hl7.xml", "ptb/s0010_re.hea", "mitdb/100.hea",
           "cinc2021-12lead/JS20004.hea"]


def assert_same(back: EcgRecord, record: EcgRecord) -> None:
    assert back.digital.dtype == record.digital.dtype
    assert np.array_equal(back.digital, record.digital)
    assert np.array_equal(back.signal, record.signal, equal_nan=True)
    assert np.array_equal(back.gain, record.gain)
    assert np.array_equal(back.baseline, record.baseline)
    assert (back.fs, back.leads, back.sex, back.age) == (record.fs, record.leads, record.sex,
                                                         record.age)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("fmt, suffix", [("dicom", ".dcm"), ("wfdb", ".hea")])
def test_export_then_read_is_bit_exact(shared_data: Path, tmp_path: Path, source: str, fmt: str,
                                       suffix: str) -> None:
    record = read_record(shared_data / "ecg" / source)
    written = export_record(record, tmp_path / f"copy{suffix}", fmt)
    assert written == tmp_path / f"copy{suffix}" and detect_format(written) == fmt
    assert_same(read_record(written), record)


def test_dicom_export_is_a_general_ecg(shared_data: Path, tmp_path: Path) -> None:
    record = read_record(shared_data / "ecg" / "mitdb" / "100.hea")  # MLII, V5; baseline 1024
    path = export_record(record, tmp_path, "dicom", patient_id="DEMO-0001")
    assert path == tmp_path / "ecg.dcm"
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.9.1.2" and ds.Modality == "ECG"
    assert ds.PatientID == "DEMO-0001"
    (group,) = ds.WaveformSequence
    assert (group.WaveformOriginality, group.WaveformBitsAllocated,
            group.WaveformSampleInterpretation) == ("ORIGINAL", 16, "SS")
    sources = [(c.ChannelSourceSequence[0].CodeValue, c.ChannelLabel)
               for c in group.ChannelDefinitionSequence]
    assert sources == [("5.6.3-9-0", "MLII"), ("5.6.3-9-7", "V5")]  # MLII has no SCP-ECG code
    channel = group.ChannelDefinitionSequence[0]
    assert (channel.ChannelSensitivity, channel.ChannelBaseline) == (5.0, -5120.0)  # uV
    assert channel.ChannelSensitivityUnitsSequence[0].CodeValue == "uV"
    assert np.array_equal(ds.waveform_array(0) / 1000, record.signal)
    if shutil.which("dcmdump"):
        dump = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True)
        assert dump.returncode == 0 and not dump.stderr
        assert "(5400,1010) OW" in dump.stdout and "=GeneralECGWaveformStorage" in dump.stdout


def test_standard_leads_get_their_scp_ecg_codes(shared_data: Path, tmp_path: Path) -> None:
    record = read_record(shared_data / "ecg" / "aecg" / "ecg_hl7.xml")
    ds = pydicom.dcmread(export_record(record, tmp_path / "a.dcm"))
    codes = [c.ChannelSourceSequence[0].CodeValue
             for c in ds.WaveformSequence[0].ChannelDefinitionSequence]
    assert codes == ["5.6.3-9-" + n for n in
                     ("1", "2", "3", "4", "5", "6", "7", "8", "61", "62", "63", "64")]


def test_fractional_gains_keep_the_integers_and_warn(shared_data: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """CPSC 2021 gains (27477.561608300908/mV) need 17 digits; a DS value holds 16 characters.
    The integers stay exact; the millivolts move by a few units in the last place, said aloud."""
    record = read_record(shared_data / "ecg" / "cpsc2021" / "data_8_4.hea")
    with caplog.at_level(logging.WARNING):
        back = read_record(export_record(record, tmp_path / "c.dcm"))
    assert np.array_equal(back.digital, record.digital)
    assert np.allclose(back.signal, record.signal, rtol=1e-14, atol=1e-13)
    assert "no exact 16-character decimal form" in caplog.text


def test_missing_samples_become_the_padding_value(tmp_path: Path) -> None:
    millivolts = np.array([[0.1, np.nan], [np.nan, -0.2], [0.3, 0.4]] * 100)
    record = EcgRecord.from_millivolts(millivolts, 500, ("I", "II"))
    path = export_record(record, tmp_path / "gaps.dcm")
    assert pydicom.dcmread(path).WaveformSequence[0].WaveformPaddingValue == b"\x00\x80"
    back = read_record(path)
    assert np.array_equal(back.signal, record.signal, equal_nan=True)
    assert np.array_equal(back.digital, record.digital)


def test_records_general_ecg_cannot_hold_are_refused(shared_data: Path, tmp_path: Path) -> None:
    slow = read_record(shared_data / "ecg" / "mitdb" / "800.hea")  # 128 Hz
    with pytest.raises(EcgFormatError, match="200-1000 Hz, the record has 128 Hz"):
        export_record(slow, tmp_path / "slow.dcm")
    wide = EcgRecord.from_digital(np.array([[40000], [0]]), 500, ("I",), [1000], [0])
    with pytest.raises(EcgFormatError, match="do not fit General ECG's 16-bit samples"):
        export_record(wide, tmp_path / "wide.dcm")
    assert np.array_equal(read_record(export_record(wide, tmp_path / "wide.hea")).digital,
                          wide.digital)  # WFDB takes it (format 24)
    never = EcgRecord(500.0, ("I",), np.zeros((3, 1)), None, np.ones(1), np.zeros(1))
    with pytest.raises(EcgFormatError, match="no stored integer samples"):
        export_record(never, tmp_path / "never.dcm")
    with pytest.raises(EcgFormatError, match="cannot export as 'edf'"):
        export_record(wide, tmp_path / "x.edf", "edf")
    with pytest.raises(EcgFormatError, match="cannot export as '.bin'"):
        export_record(wide, tmp_path / "x.bin")


def test_format_is_detected_by_content_then_suffix(shared_data: Path, tmp_path: Path) -> None:
    ecg = shared_data / "ecg"
    dicom, xml = tmp_path / "monitor.bin", tmp_path / "export.txt"
    dicom.write_bytes((ecg / "dicom" / "waveform_ecg.dcm").read_bytes())
    xml.write_bytes((ecg / "aecg" / "ecg_hl7.xml").read_bytes())
    assert (detect_format(dicom), detect_format(xml)) == ("dicom", "aecg")
    assert read_record(dicom).n_samples == 10000 and read_record(xml).n_samples == 5000
    assert detect_format(ecg / "mitdb" / "100") == "wfdb"  # a bare record name
    assert detect_format(ecg / "mitdb" / "100.dat") == "wfdb"
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(range(256)) * 4)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    for path, message in ((noise, "not a recognised ECG file"), (empty, "the file is empty"),
                          (tmp_path / "nowhere.dcm", "file not found"),
                          (tmp_path, "a directory"),
                          (tmp_path / "nowhere.hea", "WFDB header nowhere.hea not found")):
        with pytest.raises(EcgFormatError, match=message) as caught:
            read_record(path)
        assert str(caught.value).startswith(str(path.parent))
