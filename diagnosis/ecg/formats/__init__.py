"""ECG file formats: read any supported file into an EcgRecord, export one as DICOM or WFDB.

    WFDB (.hea + .dat/.mat)                read_wfdb   save_wfdb (format 16, 24 or 32)
    DICOM waveforms (12-Lead, General ECG,  read_dicom  save_dicom (General ECG)
      other waveform IODs)
    HL7 aECG XML                           read_aecg

Every reader and writer raises `EcgFormatError` (a ValueError) naming the file and the problem.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from diagnosis.ecg.formats.aecg import read_aecg
from diagnosis.ecg.formats.dicom_ecg import read_dicom, save_dicom
from diagnosis.ecg.formats.errors import EcgFormatError
from diagnosis.ecg.formats.wfdb_io import read_wfdb, save_wfdb
from diagnosis.ecg.record import EcgRecord

__all__ = ["EXPORT_FORMATS", "EcgFormatError", "detect_format", "export_record", "exported",
           "read_aecg", "read_dicom", "read_record", "read_wfdb", "save_dicom", "save_wfdb"]

READERS = {"wfdb": read_wfdb, "dicom": read_dicom, "aecg": read_aecg}
EXPORT_FORMATS = ("dicom", "wfdb")
_WFDB_SUFFIXES = (".hea", ".dat", ".mat")
_SUFFIXES = {".dcm": "dicom", ".dicom": "dicom", ".xml": "aecg", ".hea": "wfdb"}


def detect_format(path: str | Path) -> str:
    """"wfdb", "dicom" or "aecg": by content where the file says (the DICM prefix, XML), else
    by suffix; a bare record name with a `.hea` beside it is WFDB."""
    path = Path(path)
    if path.suffix.lower() in _WFDB_SUFFIXES or (not path.exists()
                                                 and path.with_name(path.name + ".hea").is_file()):
        return "wfdb"
    if path.is_dir():
        raise EcgFormatError(path, "a directory, not an ECG file")
    if not path.is_file():
        raise EcgFormatError(path, "file not found")
    try:
        with path.open("rb") as file:
            head = file.read(512)
    except OSError as exc:
        raise EcgFormatError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    if not head:
        raise EcgFormatError(path, "the file is empty")
    if head[128:132] == b"DICM":
        return "dicom"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return "aecg"
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    raise EcgFormatError(path, "not a recognised ECG file (expected a WFDB record, a DICOM "
                               "waveform file or HL7 aECG XML)")


def read_record(path: str | Path) -> EcgRecord:
    """Read a WFDB record, a DICOM waveform file or an HL7 aECG file."""
    return READERS[detect_format(path)](path)


def export_record(record: EcgRecord, path_or_dir: str | Path, format: str | None = None,
                  *, name: str = "ecg", **options: Any) -> Path:
    """Write `record` as DICOM General ECG ("dicom") or WFDB ("wfdb"); returns the file written
    (the `.dcm`, or the WFDB `.hea` with its `.dat` beside it).

    `path_or_dir` is the file to write (a WFDB record may be named with or without `.hea`), or
    an existing directory, where the file is called `name` (`ecg.dcm`, `ecg.hea`). Without
    `format` the suffix decides (`.dcm` or `.hea`). `options` go to `save_dicom` (patient_id,
    patient_name, acquired, study_uid, series_uid).
    """
    target = Path(path_or_dir)
    fmt = format or _SUFFIXES.get(target.suffix.lower())
    if fmt not in EXPORT_FORMATS:
        raise EcgFormatError(target, f"cannot export as {format or target.suffix or 'this'!r}: "
                                     f"choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "wfdb":
        if options:
            raise TypeError(f"WFDB export takes no options, not {sorted(options)}")
        if target.is_dir():
            return save_wfdb(record, target, name)
        record_name = target.stem if target.suffix.lower() == ".hea" else target.name
        return save_wfdb(record, target.parent, record_name)
    return save_dicom(record, target / f"{name}.dcm" if target.is_dir() else target, **options)


def exported(record: EcgRecord, format: str, name: str,
             **options: Any) -> tuple[bytes, str, str]:
    """`record` as one download: (bytes, media type, file name). DICOM is its one `.dcm`; a
    WFDB record is two files (`.hea`, `.dat`), sent as a zip of both. Errors name the
    record, not the scratch folder it was written in."""
    with tempfile.TemporaryDirectory(prefix="ecg-export-") as scratch:
        try:
            written = export_record(record, Path(scratch), format, name=name, **options)
        except EcgFormatError as exc:
            raise EcgFormatError(name, exc.problem) from exc
        if format == "dicom":
            return written.read_bytes(), "application/dicom", written.name
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for part in sorted(Path(scratch).iterdir()):
                zipped.write(part, part.name)
        return archive.getvalue(), "application/zip", f"{name}.zip"
