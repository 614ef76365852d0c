"""EcgRecord and WFDB I/O on the real records: what is read is what wfdb stores, and writing it
back gives the same digital samples bit for bit; damaged files are refused whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from diagnosis.ecg.formats.errors import EcgFormatError
from diagnosis.ecg.formats.wfdb_io import read_wfdb, save_wfdb
from diagnosis.ecg.record import EcgRecord, canonical_age, canonical_lead, canonical_sex

pytestmark = pytest.mark.filterwarnings(
    "ignore:The inplace keyword in DataFrame.drop is deprecated")  # inside wfdb-python's reader

RECORDS = ["mitdb/100", "mitdb/800", "ptb/s0010_re", "cpsc2021/data_101_6", "cpsc2021/data_8_3",
           "cinc2021-12lead/E07500", "cinc2021-12lead/HR06000", "cinc2021-12lead/JS20004"]


@pytest.fixture(scope="module")
def ecg_dir(shared_data: Path) -> Path:
    return shared_data / "ecg"


@pytest.mark.parametrize("name", RECORDS)
def test_read_gives_what_wfdb_stores(ecg_dir: Path, name: str) -> None:
    record = read_wfdb(ecg_dir / name)
    stored = wfdb.rdrecord(str(ecg_dir / name), physical=False, return_res=32)
    assert np.array_equal(record.digital, stored.d_signal)
    assert record.fs == stored.fs and record.n_samples == stored.sig_len
    physical = wfdb.rdrecord(str(ecg_dir / name))
    scale = np.array([1e-3 if unit.lower() == "uv" else 1.0 for unit in physical.units])
    assert np.allclose(record.signal, physical.p_signal * scale, rtol=1e-12, atol=1e-12,
                       equal_nan=True)


@pytest.mark.parametrize("name", RECORDS)
def test_round_trip_is_bit_exact(ecg_dir: Path, tmp_path: Path, name: str) -> None:
    record = read_wfdb(ecg_dir / name)
    header = save_wfdb(record, tmp_path, "copy")
    back = read_wfdb(header)
    assert back.digital.dtype == record.digital.dtype
    assert np.array_equal(back.digital, record.digital)
    assert np.array_equal(back.signal, record.signal, equal_nan=True)
    assert np.array_equal(back.gain, record.gain) and np.array_equal(back.baseline,
                                                                      record.baseline)
    assert (back.fs, back.leads, back.sex, back.age) == (record.fs, record.leads, record.sex,
                                                         record.age)
    # A second generation is byte-identical to the first.
    again = save_wfdb(back, tmp_path / "again", "copy")
    assert again.read_bytes() == header.read_bytes()
    assert (again.with_suffix(".dat").read_bytes()
            == header.with_suffix(".dat").read_bytes())


def test_format_212_record_keeps_its_values(ecg_dir: Path, tmp_path: Path) -> None:
    """MIT-BIH 100 is stored in format 212 (12 bits) and written back as format 16."""
    record = read_wfdb(ecg_dir / "mitdb" / "100")
    assert record.leads == ("MLII", "V5") and record.digital.shape == (650000, 2)
    assert np.array_equal(record.digital[:3], [[995, 1011], [995, 1011], [995, 1011]])
    back = read_wfdb(save_wfdb(record, tmp_path, "r100"))
    assert wfdb.rdheader(str(tmp_path / "r100")).fmt == ["16", "16"]
    assert np.array_equal(back.digital, record.digital)


def test_duplicate_lead_names_are_written_as_they_are(ecg_dir: Path, tmp_path: Path) -> None:
    record = read_wfdb(ecg_dir / "mitdb" / "800")
    assert record.leads == ("ECG", "ECG")  # wfdb-python's writer alone refuses this
    back = read_wfdb(save_wfdb(record, tmp_path, "r800"))
    assert back.leads == ("ECG", "ECG")
    assert np.array_equal(back.digital, record.digital)


def test_missing_samples_stay_missing(tmp_path: Path) -> None:
    millivolts = np.array([[0.1, np.nan], [np.nan, -0.2], [0.3, 0.4]])
    record = EcgRecord.from_millivolts(millivolts, 500, ("I", "II"))
    assert np.array_equal(record.digital, [[100, -32768], [-32768, -200], [300, 400]])
    back = read_wfdb(save_wfdb(record, tmp_path, "gaps"))
    assert np.array_equal(back.signal, millivolts, equal_nan=True)
    assert np.array_equal(back.digital, record.digital)


def test_missing_marker_of_another_format_is_translated(tmp_path: Path) -> None:
    """A format 212 record marks "no value" as -2048; written as format 16 that would be a real
    -2048 (-10 mV at gain 200). The gap is written as format 16's marker and reads back as NaN."""
    digital = np.array([[5, -2048], [-2048, 7], [1, 2]])
    record = EcgRecord.from_digital(digital, 360, ("MLII", "V5"), [200, 200], [0, 0],
                                    missing=digital == -2048)
    back = read_wfdb(save_wfdb(record, tmp_path, "m212"))
    assert np.array_equal(np.isnan(back.signal), digital == -2048)
    assert np.array_equal(back.signal[~np.isnan(back.signal)], [0.025, 0.035, 0.005, 0.01])


def test_a_real_sample_equal_to_a_marker_is_not_lost(tmp_path: Path) -> None:
    """-32768 is a real value in format 24; writing it as format 16 would turn it into a gap."""
    record = EcgRecord.from_digital(np.array([[-32768, 5], [0, 6]]), 360, ("I", "II"),
                                    [200, 200], [0, 0])
    header = save_wfdb(record, tmp_path, "wide")
    assert wfdb.rdheader(str(tmp_path / "wide")).fmt == ["24", "24"]
    back = read_wfdb(header)
    assert np.array_equal(back.digital, record.digital)
    assert not np.isnan(back.signal).any()


def test_records_that_cannot_be_written(tmp_path: Path) -> None:
    never_digitised = EcgRecord(500.0, ("I",), np.zeros((3, 1)), None, np.ones(1), np.zeros(1))
    with pytest.raises(EcgFormatError, match="no stored integer"):
        save_wfdb(never_digitised, tmp_path, "x")
    empty = EcgRecord.from_digital(np.zeros((0, 1), dtype=np.int16), 500, ("I",), [1000], [0])
    with pytest.raises(EcgFormatError, match="no samples"):
        save_wfdb(empty, tmp_path, "x")
    fractional = EcgRecord.from_digital(np.zeros((3, 1), dtype=np.int16), 500, ("I",), [1000],
                                        [0.5])
    with pytest.raises(EcgFormatError, match="integer baselines"):
        save_wfdb(fractional, tmp_path, "x")


def copy_record(source: Path, target_dir: Path) -> Path:
    for path in source.parent.glob(source.name + ".*"):
        if path.suffix in (".hea", ".dat", ".mat"):
            shutil.copy(path, target_dir / path.name)
    return target_dir / source.name


def test_truncated_signal_file_is_refused(ecg_dir: Path, tmp_path: Path) -> None:
    copy = copy_record(ecg_dir / "cpsc2021" / "data_8_4", tmp_path)
    data = copy.with_suffix(".dat")
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(EcgFormatError, match="truncated"):
        read_wfdb(copy)


def test_damaged_samples_are_refused_by_checksum(ecg_dir: Path, tmp_path: Path) -> None:
    copy = copy_record(ecg_dir / "cpsc2021" / "data_8_4", tmp_path)
    data = copy.with_suffix(".dat")
    damaged = bytearray(data.read_bytes())
    damaged[1000] ^= 0x01
    data.write_bytes(bytes(damaged))
    with pytest.raises(EcgFormatError, match="checksum mismatch"):
        read_wfdb(copy)
    assert read_wfdb(copy, verify_checksums=False).n_samples == 8235


def test_missing_files_are_refused(ecg_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EcgFormatError, match="not found"):
        read_wfdb(tmp_path / "nothing")
    copy = copy_record(ecg_dir / "cpsc2021" / "data_8_4", tmp_path)
    copy.with_suffix(".dat").unlink()
    with pytest.raises(EcgFormatError, match="signal file data_8_4.dat not found"):
        read_wfdb(copy)


def test_demographics_from_header_comments(ecg_dir: Path) -> None:
    ptb = read_wfdb(ecg_dir / "ptb" / "s0010_re")
    assert (ptb.sex, ptb.age) == ("F", 81.0)
    assert ptb.leads[:6] == ("I", "II", "III", "aVR", "aVL", "aVF")
    assert np.array_equal(ptb.lead("avr"), ptb.signal[:, 3])


def test_canonical_names_and_values() -> None:
    assert canonical_lead("MDC_ECG_LEAD_AVR") == "aVR"
    assert canonical_lead("Lead aVL") == "aVL"
    assert canonical_lead("v1 (unipolar)") == "V1"
    assert canonical_lead("DII") == "II"
    assert canonical_lead("MLII") == "MLII"
    assert (canonical_sex("male"), canonical_sex("Female"), canonical_sex("?")) == ("M", "F", None)
    assert (canonical_age("81"), canonical_age("NaN"), canonical_age("-1")) == (81.0, None, None)


def test_record_shape_checks() -> None:
    with pytest.raises(ValueError, match="does not match"):
        EcgRecord(500.0, ("I", "II"), np.zeros((3, 1)), None, np.ones(2), np.zeros(2))
    with pytest.raises(ValueError, match="integers"):
        EcgRecord.from_digital(np.zeros((3, 1)), 500, ("I",), [1000], [0])
    with pytest.raises(ValueError, match="non-zero gain"):
        EcgRecord.from_digital(np.zeros((3, 1), dtype=int), 500, ("I",), [0], [0])
    with pytest.raises(ValueError, match="16-bit"):
        EcgRecord.from_millivolts(np.array([[40.0]]), 500, ("I",))
