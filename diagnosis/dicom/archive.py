"""The image archive: DICOM instances kept byte for byte as received, indexed in SQLite.

`inspect` decides whether a file is a complete DICOM instance before anything is stored
(pydicom reads truncated files leniently, so completeness is checked here); `admit` files an
inspected instance under its UIDs, linked to a telemed patient, in one transaction with its
audit entry.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.dataelem import RawDataElement
from pydicom.filereader import data_element_generator
from pydicom.uid import UID

from telemed.caller import Caller, InvalidRequest
from telemed.permissions import refusal
from telemed.store import Conflict, accounts
from telemed.store import consults as consult_store
from telemed.store.rows import insert, now_iso
from telemed.store.ties import patient_ties

DEFER_BYTES = 64 * 1024
PIXEL_DATA_TAG = 0x7FE00010


class DicomRejected(ValueError):
    """The bytes are not a complete, storable DICOM instance; says why."""


@dataclass(frozen=True)
class Instance:
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    dicom_patient_id: str
    patient_name: str
    modality: str
    study_date: str
    study_time: str
    accession_number: str
    study_description: str
    series_description: str
    series_number: int | None
    instance_number: int | None
    rows: int | None
    columns: int | None
    frames: int
    bits_allocated: int | None
    is_image: bool
    size: int
    sha256: str


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _top_level_lengths(path: Path, ds: pydicom.Dataset) -> dict[int, int]:
    """The value length of each top-level element, read without the values; checks that every
    element ends inside the file and the last one at its very end. Empty for deflated files."""
    ts = UID(ds.file_meta.TransferSyntaxUID)
    if ts.is_deflated:
        return {}
    group_length = ds.file_meta.get("FileMetaInformationGroupLength")
    if group_length is None:
        raise DicomRejected("the file meta information has no group length")
    start = 128 + 4 + 12 + int(group_length)
    end, lengths = start, {}
    with path.open("rb") as stream, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream.seek(start)
        for element in data_element_generator(stream, ts.is_implicit_VR, ts.is_little_endian,
                                              defer_size=1):
            if isinstance(element, RawDataElement):  # sequences and encapsulated data come read
                lengths[int(element.tag)] = element.length
            end = stream.tell()
        size = stream.seek(0, os.SEEK_END)
    if any("End of file" in str(w.message) for w in caught) or end != size:
        raise DicomRejected("the file is truncated (an element runs past its end)")
    return lengths


def _check_content(ds: pydicom.Dataset, lengths: dict[int, int]) -> bool:
    """Mandatory identifiers present; image and waveform data of the declared size.
    Returns whether the instance is an image (rendered) or not (stored and indexed only)."""
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
               if not _text(ds, k)]
    if missing:
        raise DicomRejected(f"missing {', '.join(missing)}")
    sop_class = UID(_text(ds, "SOPClassUID"))
    is_image = "Image Storage" in sop_class.name or "PixelData" in ds
    if is_image:
        if "PixelData" not in ds or not ds.get("Rows") or not ds.get("Columns"):
            raise DicomRejected("an image without pixel data (the file is cut short)")
        if not UID(ds.file_meta.TransferSyntaxUID).is_compressed:
            frames = _int(ds, "NumberOfFrames") or 1
            bits = int(ds.get("BitsAllocated", 8))
            expected = ds.Rows * ds.Columns * int(ds.get("SamplesPerPixel", 1)) * frames
            expected = (expected * bits + 7) // 8
            held = lengths.get(PIXEL_DATA_TAG)
            if held is None:
                held = len(ds.PixelData)
            if held < expected:
                raise DicomRejected(f"pixel data holds {held} bytes; {expected} are declared")
    if "Waveform" in sop_class.name:
        for item in ds.get("WaveformSequence", []):
            declared = (int(item.NumberOfWaveformChannels) * int(item.NumberOfWaveformSamples)
                        * int(item.WaveformBitsAllocated) // 8)
            if len(item.get("WaveformData", b"")) < declared:
                raise DicomRejected("waveform data is shorter than declared")
    return is_image


def inspect(path: Path) -> Instance:
    """Read and check one uploaded file; DicomRejected says what is wrong with it. Large values
    (pixel data) are left on disk: an upload is never held whole in memory."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, defer_size=DEFER_BYTES)
        if "TransferSyntaxUID" not in ds.file_meta:
            raise DicomRejected("no transfer syntax in the file meta information")
        is_image = _check_content(ds, _top_level_lengths(path, ds))
    except InvalidDicomError:
        raise DicomRejected("not a DICOM Part 10 file (no 'DICM' prefix)") from None
    except DicomRejected:
        raise
    except Exception as exc:
        raise DicomRejected(f"the file cannot be read as DICOM: {exc}") from None
    return Instance(
        sop_instance_uid=_text(ds, "SOPInstanceUID"), sop_class_uid=_text(ds, "SOPClassUID"),
        study_uid=_text(ds, "StudyInstanceUID"), series_uid=_text(ds, "SeriesInstanceUID"),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        dicom_patient_id=_text(ds, "PatientID"), patient_name=_text(ds, "PatientName"),
        modality=_text(ds, "Modality"), study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"), accession_number=_text(ds, "AccessionNumber"),
        study_description=_text(ds, "StudyDescription"),
        series_description=_text(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber"), instance_number=_int(ds, "InstanceNumber"),
        rows=_int(ds, "Rows"), columns=_int(ds, "Columns"),
        frames=_int(ds, "NumberOfFrames") or (1 if is_image else 0),
        bits_allocated=_int(ds, "BitsAllocated"), is_image=is_image, size=path.stat().st_size,
        sha256=_sha256(path))


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def instance_path(root: Path, instance: Instance) -> Path:
    digest = hashlib.sha256(instance.sop_instance_uid.encode()).hexdigest()
    return root / "dicom" / digest[:2] / f"{digest}.dcm"


def admit(conn: sqlite3.Connection, caller: Caller, instance: Instance, patient_id: str | None,
          consult_id: str | None, root: Path, upload: Path) -> str:
    """File one inspected upload: 'stored', 'already stored' (same bytes), or an exception.
    The file is moved into place last, so a refused instance leaves nothing behind."""
    target = patient_id or instance.dicom_patient_id
    if not target:
        raise InvalidRequest("the instance has no Patient ID; name the patient (?patient=)")
    if patient_id and instance.dicom_patient_id and instance.dicom_patient_id != patient_id:
        raise InvalidRequest(f"the instance is for Patient ID {instance.dicom_patient_id!r}, "
                             f"not {patient_id!r}")
    patient = accounts.get_patient(conn, target)
    caller.require("patient.read", patient, f"study:{instance.study_uid}", patient["id"],
                   patient_ties(conn, patient["id"]), attempted="dicom.store")
    existing = conn.execute("SELECT sha256 FROM dicom_instances WHERE sop_instance_uid = ?",
                            (instance.sop_instance_uid,)).fetchone()
    if existing is not None:
        if existing["sha256"] != instance.sha256:
            raise Conflict(f"instance {instance.sop_instance_uid} is stored already with other content")
        return "already stored"
    if consult_id is not None:
        consult = consult_store.get(conn, consult_id)
        caller.require("consult.attach", consult, f"consult:{consult_id}", patient["id"])
        if consult["patient_id"] != patient["id"]:
            raise InvalidRequest("the consult is about another patient")
        known = {a["ref"] for a in consult["attachments"] if a["kind"] == "study"}
        if instance.study_uid not in known:
            consult_store.add_attachment(conn, consult_id, "study", instance.study_uid,
                                         caller.actor.id)
    path = instance_path(root, instance)
    insert(conn, "dicom_instances", {**asdict(instance), "patient_id": patient["id"],
                                     "path": str(path.relative_to(root)),
                                     "stored_by": caller.actor.id, "stored_at": now_iso()})
    caller.audit(conn, "dicom.store", f"instance:{instance.sop_instance_uid}", patient["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(upload, path)
    return "stored"


def visible_instances(conn: sqlite3.Connection, caller: Caller, where: str,
                      params: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Instances matching `where` whose patients the caller may see; each read is audited."""
    rows = [dict(r) for r in conn.execute(
        f"SELECT * FROM dicom_instances WHERE {where} ORDER BY study_uid, series_number, "
        "series_uid, instance_number, sop_instance_uid", params)]
    allowed: dict[str, bool] = {}
    audited: set[str] = set()
    visible = []
    for row in rows:
        patient_id = row["patient_id"]
        if patient_id not in allowed:
            patient = accounts.get_patient(conn, patient_id)
            allowed[patient_id] = refusal(caller.actor, "patient.read", patient,
                                          patient_ties(conn, patient_id)) is None
        if allowed[patient_id]:
            visible.append(row)
            if row["study_uid"] not in audited:
                audited.add(row["study_uid"])
                caller.audit(conn, "dicom.read", f"study:{row['study_uid']}", patient_id)
    return visible
