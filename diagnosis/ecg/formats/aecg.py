"""HL7 annotated ECG (aECG, HL7 v3 namespace urn:hl7-org:v3) XML files.

The waveforms sit in AnnotatedECG/component/series/component/sequenceSet: one sequence whose
code is a time axis (TIME_ABSOLUTE or TIME_RELATIVE; its `increment` is the sampling interval)
and one SLIST_PQ sequence per lead (code MDC_ECG_LEAD_*), whose `digits` are the stored
integers with value = origin + scale x digit. That is EcgRecord's mV = (digital - baseline) /
gain with gain = 1 / scale [mV] and baseline = -origin / scale. A series may carry derived
series (representative beats) under `derivation`; those are not read: the rhythm series is.

XML from outside is parsed without a DTD: a document with a DOCTYPE (the only place entities
can be declared, including external ones and "billion laughs" expansions) is refused, as
defusedxml's `forbid_dtd` does (defusedxml itself is not a dependency).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal, InvalidOperation
from pathlib import Path
from xml.parsers import expat

import numpy as np

from diagnosis.ecg.formats.errors import EcgFormatError
from diagnosis.ecg.record import EcgRecord, canonical_age, canonical_lead, canonical_sex

HL7 = "urn:hl7-org:v3"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
TIME_CODES = ("TIME_ABSOLUTE", "TIME_RELATIVE")
SECONDS_PER_UNIT = {"s": Decimal(1), "ms": Decimal("0.001"), "us": Decimal("0.000001")}
MILLIVOLTS_PER_UNIT = {"uV": Decimal("0.001"), "µV": Decimal("0.001"), "mV": Decimal(1),
                       "V": Decimal(1000), "nV": Decimal("0.000001")}
AGE_UNITS = {"a": 1.0, "mo": 12.0, "wk": 52.1775, "d": 365.25}
REPORTED_AGE = "21612-7"
"""LOINC "Reported Age", used by aECG files for the subject's age."""
_TRUNCATED = {expat.errors.codes[message] for message in (
    expat.errors.XML_ERROR_NO_ELEMENTS, expat.errors.XML_ERROR_UNCLOSED_TOKEN,
    expat.errors.XML_ERROR_PARTIAL_CHAR, expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION)}


class _Refused(Exception):
    """Raised from the parser's DTD handlers; ends parsing at once."""


def read_aecg(path: str | Path) -> EcgRecord:
    """Read the rhythm waveforms of an HL7 aECG file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EcgFormatError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    root = parse_xml(path, data)
    if root.tag != "AnnotatedECG":
        raise EcgFormatError(path, f"not an HL7 aECG document (the root element is "
                                   f"<{root.tag}>, not <AnnotatedECG xmlns=\"{HL7}\">)")
    series = _rhythm_series(path, root)
    sequence_set = series.find("component/sequenceSet")
    if sequence_set is None:
        raise EcgFormatError(path, "the rhythm series has no sequenceSet")
    fs = None
    leads: list[str] = []
    columns: list[np.ndarray] = []
    gains: list[float] = []
    baselines: list[float] = []
    for sequence in sequence_set.findall("component/sequence"):
        code_element = sequence.find("code")
        code = code_element.get("code", "") if code_element is not None else ""
        value = sequence.find("value")
        if value is None:
            continue
        if code in TIME_CODES:
            fs = _sampling_frequency(path, value)
        elif value.find("digits") is not None:
            lead = canonical_lead(code) if code else f"lead {len(leads) + 1}"
            digits, gain, baseline = _lead(path, lead, value)
            leads.append(lead)
            columns.append(digits)
            gains.append(gain)
            baselines.append(baseline)
    if fs is None:
        raise EcgFormatError(path, "the sequenceSet has no time sequence (TIME_ABSOLUTE or "
                                   "TIME_RELATIVE with an increment)")
    if not leads:
        raise EcgFormatError(path, "not an ECG: the rhythm series holds no lead sequences")
    lengths = [len(column) for column in columns]
    if len(set(lengths)) > 1:
        counts = ", ".join(f"{lead} {n}" for lead, n in zip(leads, lengths, strict=True))
        raise EcgFormatError(path, f"mismatched lengths: the leads hold different numbers of "
                                   f"samples ({counts})")
    sex, age = _demographics(root)
    try:
        return EcgRecord.from_digital(np.column_stack(columns), fs, tuple(leads),
                                      np.array(gains), np.array(baselines), sex=sex, age=age)
    except ValueError as exc:
        raise EcgFormatError(path, str(exc)) from exc


def parse_xml(path: Path, data: bytes) -> ET.Element:
    """An ElementTree of `data` with HL7 v3 tags unqualified ("{urn:hl7-org:v3}series" ->
    "series"), refusing any DTD; truncated or malformed XML is an EcgFormatError."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True

    def refuse(*_: object) -> None:
        raise _Refused

    def name(raw: str) -> str:
        if "}" not in raw:
            return raw
        namespace, local = raw.split("}", 1)
        return local if namespace == HL7 else "{" + raw

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = lambda tag, attrs: builder.start(
        name(tag), {name(key): value for key, value in attrs.items()})
    parser.EndElementHandler = lambda tag: builder.end(name(tag))
    parser.CharacterDataHandler = builder.data
    if not data.strip():
        raise EcgFormatError(path, "the file is empty")
    try:
        parser.Parse(data, True)
    except _Refused:
        raise EcgFormatError(path, "XML with a document type declaration (DTD) is refused: "
                                   "entities from outside are not expanded") from None
    except expat.ExpatError as exc:
        if exc.code in _TRUNCATED:
            raise EcgFormatError(path, f"truncated XML: the document ends at line {exc.lineno} "
                                       f"before it is complete ({exc})") from None
        raise EcgFormatError(path, f"malformed XML ({exc})") from None
    return builder.close()


def _rhythm_series(path: Path, root: ET.Element) -> ET.Element:
    """The top-level series coded RHYTHM, else the first top-level series (never a derived
    representative-beat series, which sits deeper under `derivation`)."""
    series = root.findall("component/series")
    if not series:
        raise EcgFormatError(path, "not an ECG: the document has no waveform series")
    for candidate in series:
        code = candidate.find("code")
        if code is not None and code.get("code") == "RHYTHM":
            return candidate
    return series[0]


def _sampling_frequency(path: Path, value: ET.Element) -> float:
    increment = value.find("increment")
    if increment is None:
        raise EcgFormatError(path, "the time sequence has no increment")
    unit = increment.get("unit", "s")
    try:
        seconds = Decimal(increment.get("value", "")) * SECONDS_PER_UNIT[unit]
        if seconds <= 0:
            raise InvalidOperation
    except (InvalidOperation, KeyError):
        raise EcgFormatError(path, f"unusable time increment {increment.get('value')!r} "
                                   f"{unit!r}") from None
    return float(1 / seconds)


def _lead(path: Path, lead: str, value: ET.Element) -> tuple[np.ndarray, float, float]:
    """A lead's digits with its gain (digits per mV) and baseline (digit value of 0 mV)."""
    scale_mv = _quantity(path, lead, value.find("scale"), "scale", default=None)
    origin_mv = _quantity(path, lead, value.find("origin"), "origin", default=Decimal(0))
    if scale_mv == 0:
        raise EcgFormatError(path, f"lead {lead} has a zero scale")
    text = value.find("digits").text or ""
    try:
        digits = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise EcgFormatError(path, f"lead {lead}: digits must be integers") from None
    if digits.size and (digits.min() < np.iinfo(np.int32).min
                        or digits.max() > np.iinfo(np.int32).max):
        raise EcgFormatError(path, f"lead {lead}: digits beyond 32 bits are not supported")
    return digits.astype(np.int32), float(1 / scale_mv), float(-origin_mv / scale_mv) + 0.0


def _quantity(path: Path, lead: str, element: ET.Element | None, what: str,
              default: Decimal | None) -> Decimal:
    """A physical quantity in millivolts."""
    if element is None:
        if default is None:
            raise EcgFormatError(path, f"lead {lead} has no {what}: its digits are not "
                                       f"calibrated")
        return default
    unit = element.get("unit", "")
    if unit not in MILLIVOLTS_PER_UNIT:
        raise EcgFormatError(path, f"lead {lead}'s {what} is in {unit!r}, not a voltage")
    try:
        return Decimal(element.get("value", "")) * MILLIVOLTS_PER_UNIT[unit]
    except InvalidOperation:
        raise EcgFormatError(path, f"lead {lead} has an unusable {what} "
                                   f"{element.get('value')!r}") from None


def _demographics(root: ET.Element) -> tuple[str | None, float | None]:
    gender = root.find(".//subjectDemographicPerson/administrativeGenderCode")
    sex = canonical_sex(gender.get("code")) if gender is not None else None
    age = None
    for observation in root.iter("relatedObservation"):
        code, value = observation.find("code"), observation.find("value")
        if code is not None and code.get("code") == REPORTED_AGE and value is not None:
            unit = AGE_UNITS.get(value.get("unit", "a"))
            try:
                age = canonical_age(float(value.get("value", "")) / unit) if unit else None
            except ValueError:
                age = None
            break
    return sex, age
