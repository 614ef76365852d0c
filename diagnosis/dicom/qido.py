"""QIDO-RS matching and answers in DICOM JSON, over the archive's index rows."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from typing import Any, Mapping

Row = dict[str, Any]

# query key (keyword or tag) -> (index column, level it belongs to)
KEYS = {
    "PatientID": ("dicom_patient_id", "studies"), "00100020": ("dicom_patient_id", "studies"),
    "PatientName": ("patient_name", "studies"), "00100010": ("patient_name", "studies"),
    "StudyInstanceUID": ("study_uid", "studies"), "0020000D": ("study_uid", "studies"),
    "StudyDate": ("study_date", "studies"), "00080020": ("study_date", "studies"),
    "AccessionNumber": ("accession_number", "studies"), "00080050": ("accession_number", "studies"),
    "StudyDescription": ("study_description", "studies"), "00081030": ("study_description", "studies"),
    "ModalitiesInStudy": ("modality", "studies"), "00080061": ("modality", "studies"),
    "Modality": ("modality", "series"), "00080060": ("modality", "series"),
    "SeriesInstanceUID": ("series_uid", "series"), "0020000E": ("series_uid", "series"),
    "SeriesNumber": ("series_number", "series"), "00200011": ("series_number", "series"),
    "SOPInstanceUID": ("sop_instance_uid", "instances"), "00080018": ("sop_instance_uid", "instances"),
    "SOPClassUID": ("sop_class_uid", "instances"), "00080016": ("sop_class_uid", "instances"),
    "InstanceNumber": ("instance_number", "instances"), "00200013": ("instance_number", "instances"),
}
CONTROL = ("limit", "offset", "includefield", "fuzzymatching")
LEVELS = ("studies", "series", "instances")


def parse_query(level: str, query: Mapping[str, str]) -> dict[str, Any]:
    """Filters by index column, plus limit and offset; unknown keys are an error, not ignored."""
    filters: dict[str, str] = {}
    for key, value in query.items():
        if key in CONTROL:
            continue
        if key not in KEYS:
            raise ValueError(f"{key!r} is not a supported matching key")
        column, key_level = KEYS[key]
        if LEVELS.index(key_level) > LEVELS.index(level):
            raise ValueError(f"{key!r} cannot be matched at the {level} level")
        filters[column] = value
    try:
        limit = int(query.get("limit", 1000))
        offset = int(query.get("offset", 0))
    except ValueError:
        raise ValueError("limit and offset must be whole numbers") from None
    if limit < 1 or offset < 0:
        raise ValueError("limit must be positive and offset not negative")
    return {"filters": filters, "limit": min(limit, 1000), "offset": offset}


def scope_clause(scope: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    columns = {"study": "study_uid", "series": "series_uid", "instance": "sop_instance_uid"}
    clauses = [f"{columns[k]} = ?" for k in scope]
    return (" AND ".join(clauses) or "1"), tuple(scope.values())


def _matches(value: Any, wanted: str, column: str) -> bool:
    text = "" if value is None else str(value)
    if column == "study_date" and "-" in wanted:
        low, _, high = wanted.partition("-")
        return bool(text) and (not low or text >= low) and (not high or text <= high)
    if "," in wanted and column in ("sop_instance_uid", "study_uid", "series_uid"):
        return text in wanted.split(",")
    if "*" in wanted or "?" in wanted:
        return fnmatch.fnmatchcase(text.casefold(), wanted.casefold())
    if column == "patient_name":
        return text.casefold() == wanted.casefold()
    return text == wanted


def _pn(name: str) -> dict:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]} if name else {"vr": "PN"}


def _value(vr: str, value: Any) -> dict:
    return {"vr": vr, "Value": [value]} if value not in (None, "") else {"vr": vr}


def _study(rows: list[Row], base: str) -> dict:
    first = rows[0]
    return {
        "00080020": _value("DA", first["study_date"]), "00080030": _value("TM", first["study_time"]),
        "00080050": _value("SH", first["accession_number"]),
        "00080061": {"vr": "CS", "Value": sorted({r["modality"] for r in rows if r["modality"]})},
        "00081030": _value("LO", first["study_description"]),
        "00081190": _value("UR", f"{base}/studies/{first['study_uid']}"),
        "00100010": _pn(first["patient_name"]), "00100020": _value("LO", first["dicom_patient_id"]),
        "0020000D": _value("UI", first["study_uid"]),
        "00201206": _value("IS", len({r["series_uid"] for r in rows})),
        "00201208": _value("IS", len(rows)),
    }


def _series(rows: list[Row], base: str) -> dict:
    first = rows[0]
    return {
        "00080060": _value("CS", first["modality"]),
        "0008103E": _value("LO", first["series_description"]),
        "00081190": _value("UR", f"{base}/studies/{first['study_uid']}/series/{first['series_uid']}"),
        "0020000D": _value("UI", first["study_uid"]), "0020000E": _value("UI", first["series_uid"]),
        "00200011": _value("IS", first["series_number"]),
        "00201209": _value("IS", len(rows)),
    }


def _instance(row: Row, base: str) -> dict:
    return {
        "00080016": _value("UI", row["sop_class_uid"]), "00080018": _value("UI", row["sop_instance_uid"]),
        "00083002": _value("UI", row["transfer_syntax_uid"]),
        "00081190": _value("UR", f"{base}/studies/{row['study_uid']}/series/{row['series_uid']}"
                                 f"/instances/{row['sop_instance_uid']}"),
        "0020000D": _value("UI", row["study_uid"]), "0020000E": _value("UI", row["series_uid"]),
        "00200013": _value("IS", row["instance_number"]),
        "00280008": _value("IS", row["frames"] or None),
        "00280010": _value("US", row["rows"]), "00280011": _value("US", row["columns"]),
    }


def answer(level: str, rows: list[Row], query: dict[str, Any], base: str) -> list[dict]:
    """Group the visible instances at the level, keep the groups whose members match."""
    filters = query["filters"]
    key = {"studies": "study_uid", "series": "series_uid", "instances": "sop_instance_uid"}[level]
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row)
    found = []
    for members in groups.values():
        if all(any(_matches(r[column], wanted, column) for r in members)
               for column, wanted in filters.items()):
            found.append(_study(members, base) if level == "studies" else
                         _series(members, base) if level == "series" else
                         _instance(members[0], base))
    return found[query["offset"]:query["offset"] + query["limit"]]
