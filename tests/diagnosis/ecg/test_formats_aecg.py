"""HL7 aECG reading on the real 12-lead file: right leads, rate, duration and millivolt scale,
the rhythm series rather than the derived median beat, and damaged, hostile or non-aECG XML
refused with a message that names the file and the problem."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from diagnosis.ecg.formats import EcgFormatError, read_aecg, read_record
from diagnosis.ecg.record import STANDARD_LEADS


@pytest.fixture(scope="module")
def aecg_file(shared_data: Path) -> Path:
    return shared_data / "ecg" / "aecg" / "ecg_hl7.xml"


@pytest.fixture(scope="module")
def aecg_text(aecg_file: Path) -> str:
    return aecg_file.read_text(encoding="utf-8")


def write(tmp_path: Path, text: str, name: str = "changed.xml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_the_rhythm_series_with_its_leads_and_scale(aecg_file: Path, aecg_text: str) -> None:
    record = read_record(aecg_file)
    assert record.leads == ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "III", "aVR", "aVL",
                            "aVF")  # the file's order, kept
    assert set(record.leads) == set(STANDARD_LEADS)
    assert (record.fs, record.n_samples, record.duration_s) == (500.0, 5000, 10.0)
    assert np.array_equal(record.gain, np.full(12, 400.0))  # scale 2.5 uV
    assert np.array_equal(record.baseline, np.zeros(12))  # origin 0 uV
    assert (record.sex, record.age) == ("M", 46.0)
    # The first lead's digits, read with a plain regular expression.
    first = re.search(r"<digits>(.*?)</digits>", aecg_text, re.DOTALL).group(1).split()
    assert np.array_equal(record.digital[:, 0], np.array(first, dtype=int))
    assert np.array_equal(record.signal[:, 0], np.array(first, dtype=float) * 2.5 / 1000)


def test_amplitudes_are_physiological_and_the_limb_leads_agree(aecg_file: Path) -> None:
    record = read_aecg(aecg_file)
    ii = record.lead("II")
    windows = ii.reshape(-1, 500)
    assert 0.3 <= np.median(windows.max(axis=1) - windows.min(axis=1)) <= 5.0  # 0.93 mV
    i, iii = record.lead("I"), record.lead("III")
    step = 2.5e-3
    assert np.abs(i + iii - ii).max() <= step
    assert np.abs(record.lead("aVR") + (i + ii) / 2).max() <= step
    assert np.abs(record.lead("aVF") - (ii + iii) / 2).max() <= step


def test_the_rhythm_series_is_chosen_by_its_code(aecg_text: str, tmp_path: Path) -> None:
    """A second top-level series before the rhythm one (here a copy with 100 samples per lead
    under another code) is passed over."""
    start, end = aecg_text.index("<component>\n    <series>"), aecg_text.index("</series>") + 9
    other = re.sub(r"<digits>(\S+(?:\s+\S+){99}).*?</digits>", r"<digits>\1</digits>",
                   aecg_text[start:end].replace('code="RHYTHM"', 'code="OTHER"'), flags=re.DOTALL)
    doc = aecg_text[:start] + other + "\n  </component>\n  " + aecg_text[start:]
    assert read_record(write(tmp_path, doc)).n_samples == 5000


def test_truncated_file_is_refused(aecg_file: Path, tmp_path: Path) -> None:
    data = aecg_file.read_bytes()
    for keep in (len(data) // 2, len(data) - 20):
        cut = tmp_path / "cut.xml"
        cut.write_bytes(data[:keep])
        with pytest.raises(EcgFormatError, match="truncated XML") as caught:
            read_record(cut)
        assert str(cut) in str(caught.value)


def test_malformed_and_inconsistent_files_are_refused(aecg_text: str, tmp_path: Path) -> None:
    cases = [
        (aecg_text.replace("</digits>", "</digit>", 1), "malformed XML"),
        (aecg_text.replace("<digits>-2 -2 -2 ", "<digits>", 1), "mismatched lengths"),
        (aecg_text.replace("<digits>-2 -2", "<digits>-2 x", 1), "digits must be integers"),
        (aecg_text.replace('<scale value="2.5" unit="uV"/>', '<scale value="2.5" unit="mm"/>',
                           1), "lead I's scale is in 'mm', not a voltage"),
        (aecg_text.replace('<increment value="0.002" unit="s"/>', ""), "no increment"),
        (aecg_text.replace("<sequenceSet>", "<sequenceSetX>").replace(
            "</sequenceSet>", "</sequenceSetX>"), "no sequenceSet"),
    ]
    for text, message in cases:
        with pytest.raises(EcgFormatError, match=message):
            read_record(write(tmp_path, text))


def test_entities_are_never_expanded(tmp_path: Path) -> None:
    secret = write(tmp_path, "<digits>1 2 3</digits>", "secret.txt")
    laughs = ('<?xml version="1.0"?>\n<!DOCTYPE AnnotatedECG [<!ENTITY a "lol">'
              '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n'
              '<AnnotatedECG xmlns="urn:hl7-org:v3">&b;</AnnotatedECG>')
    external = ('<?xml version="1.0"?>\n<!DOCTYPE AnnotatedECG [<!ENTITY x SYSTEM '
                f'"file://{secret}">]>\n<AnnotatedECG xmlns="urn:hl7-org:v3">&x;</AnnotatedECG>')
    for text in (laughs, external):
        with pytest.raises(EcgFormatError, match="document type declaration"):
            read_record(write(tmp_path, text))


def test_other_xml_is_not_an_aecg(tmp_path: Path) -> None:
    with pytest.raises(EcgFormatError, match="not an HL7 aECG document.*<html>"):
        read_record(write(tmp_path, "<html><body>ECG</body></html>"))
    with pytest.raises(EcgFormatError, match="no waveform series"):
        read_record(write(tmp_path, '<AnnotatedECG xmlns="urn:hl7-org:v3"/>'))
