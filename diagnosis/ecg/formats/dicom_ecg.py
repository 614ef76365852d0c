"""DICOM waveforms (12-Lead ECG, General ECG and the other waveform IODs) through pydicom.

Reading takes one multiplex group of the Waveform Sequence (the rhythm strip, not the median
beats, when a file holds both) with its stored integers untouched; the calibration comes from
each channel definition:

    value [unit] = sample x Channel Sensitivity x Correction Factor + Channel Baseline

(PS3.3 C.10.9.1.4; pydicom's `multiplex_array(..., as_raw=False)` applies the same), which is
`EcgRecord`'s mV = (digital - baseline) / gain with gain = (units per mV) / (sensitivity x
correction) and baseline = -Channel Baseline / (sensitivity x correction).

Writing produces General ECG Waveform Storage: one ORIGINAL multiplex group of 16-bit signed
samples with SCP-ECG lead codes, each channel's sensitivity (in uV where that is exact) and
baseline, chosen so that reading the file back gives the same integers and, wherever 16-character
decimal strings can hold the calibration exactly, the same millivolts (otherwise within a few
units in the last place, with a warning: the CPSC 2021 records' fractional gains).
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, GeneralECGWaveformStorage, generate_uid
from pydicom.waveforms import multiplex_array

from diagnosis.ecg.formats.errors import EcgFormatError
from diagnosis.ecg.record import EcgRecord, canonical_age, canonical_lead, canonical_sex

log = logging.getLogger(__name__)

SCPECG_LEADS = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7",
    10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R", 16: "X", 17: "Y", 18: "Z",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 66: "V8", 67: "V9", 68: "V8R", 69: "V9R",
}
"""SCP-ECG lead numbers (DICOM CID 3001: SCPECG "5.6.3-9-n", or MDC "2:n")."""
_LEAD_CODES = {name: number for number, name in SCPECG_LEADS.items()}
UNSPECIFIED_LEAD = 0
UNITS_PER_MV = {"uV": 1e3, "µV": 1e3, "uv": 1e3, "mV": 1.0, "mv": 1.0, "V": 1e-3, "nV": 1e6}
"""UCUM voltage codes in Channel Sensitivity Units, as units per millivolt."""
WRITE_UNITS = {"uV": "microvolt", "nV": "nanovolt", "mV": "millivolt"}
"""Units the writer may choose for a channel's calibration, in order of preference."""
SIGNED = {"SB", "SS", "SL", "SV"}
LINEAR = SIGNED | {"UB", "US", "UL", "UV"}
"""Sample interpretations holding plain integers (MB and AB are mu-law and A-law codes)."""
GENERAL_ECG_FS = (200.0, 1000.0)
GENERAL_ECG_MAX_CHANNELS = 24
NO_VALUE = -32768
"""Written as Waveform Padding Value for samples that hold no value (NaN in the record)."""
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$")
_AGE_UNIT_YEARS = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}
_MEDIAN = re.compile(r"median|average|represent|beat|template", re.IGNORECASE)


def read_dicom(path: str | Path, *, group: int | None = None) -> EcgRecord:
    """Read the rhythm multiplex group of a DICOM waveform file (or the group at `group`)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise EcgFormatError(path, f"cannot read the file ({exc.strerror or exc})") from exc
    ds = _parse(path, blob)
    groups = ds.get("WaveformSequence")
    if not groups:
        sop = UID(str(ds.get("SOPClassUID", "")))
        kind = sop.name if sop else "no SOP class"
        raise EcgFormatError(path, f"not an ECG: the DICOM object ({kind}) has no waveform data")
    if group is None:
        index = _rhythm_group(groups)
    elif 0 <= group < len(groups):
        index = group
    else:
        raise EcgFormatError(path, f"there is no multiplex group {group} "
                                   f"(the file has {len(groups)})")
    item = groups[index]
    digital, missing = _samples(path, ds, item, index)
    channels = item.ChannelDefinitionSequence
    calibration = [_calibration(path, channel, n) for n, channel in enumerate(channels, 1)]
    gain = np.array([c[0] for c in calibration])
    baseline = np.array([c[1] for c in calibration])
    leads = tuple(_lead_name(channel, n) for n, channel in enumerate(channels, 1))
    try:
        fs = float(item.SamplingFrequency)
        return EcgRecord.from_digital(digital, fs, leads, gain, baseline, missing,
                                      sex=canonical_sex(str(ds.get("PatientSex") or "")),
                                      age=dicom_age(ds.get("PatientAge")))
    except (AttributeError, TypeError, ValueError) as exc:
        raise EcgFormatError(path, f"multiplex group {index}: {exc}") from exc


def save_dicom(record: EcgRecord, path: str | Path, *, patient_id: str = "",
               patient_name: str = "", acquired: datetime | None = None,
               study_uid: str | None = None, series_uid: str | None = None) -> Path:
    """Write `record` as one General ECG Waveform Storage file; returns its path.

    The stored integers go out unchanged as 16-bit signed samples; a record whose integers do
    not fit, whose rate is outside the IOD's 200-1000 Hz, or with more than 24 leads is refused
    (write it as WFDB instead). Samples without a value become the Waveform Padding Value
    -32768. `acquired` fills Acquisition DateTime (type 1); the record does not carry it, so it
    defaults to the time of writing.
    """
    path = Path(path)
    digital = _checked_for_general_ecg(record, path)
    now = datetime.now()
    acquired = acquired or now
    instance_uid = generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = GeneralECGWaveformStorage
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = GeneralECGWaveformStorage
    ds.SOPInstanceUID = instance_uid
    ds.InstanceCreationDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S")
    ds.StudyDate, ds.StudyTime = acquired.strftime("%Y%m%d"), acquired.strftime("%H%M%S")
    ds.Modality = "ECG"
    ds.Manufacturer = ""
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    ds.StudyID = ""
    ds.SeriesNumber = None
    ds.InstanceNumber = 1
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = record.sex or ""
    if record.age is not None:
        ds.PatientAge = _age_string(record.age)
    ds.AcquisitionContextSequence = Sequence()

    item = Dataset()
    item.MultiplexGroupTimeOffset = "0"
    item.WaveformOriginality = "ORIGINAL"
    item.NumberOfWaveformChannels = len(record.leads)
    item.NumberOfWaveformSamples = record.n_samples
    item.SamplingFrequency = _ds_string(record.fs)
    item.MultiplexGroupLabel = "RHYTHM"
    item.ChannelDefinitionSequence = Sequence(
        _channel(path, lead, gain, baseline)
        for lead, gain, baseline in zip(record.leads, record.gain, record.baseline, strict=True))
    item.WaveformBitsAllocated = 16
    item.WaveformSampleInterpretation = "SS"
    if np.isnan(record.signal).any():
        item.add_new(0x5400100A, "OW", np.array([NO_VALUE], "<i2").tobytes())
    item.add_new(0x54001010, "OW", np.ascontiguousarray(digital, "<i2").tobytes())
    ds.WaveformSequence = Sequence([item])

    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_age(value: object) -> float | None:
    """Years from an Age String ("042Y", "006M", "003W", "010D"), else None."""
    match = _AGE.match(str(value or ""))
    if not match:
        return None
    return canonical_age(int(match.group(1)) / _AGE_UNIT_YEARS[match.group(2)])


def gain_and_baseline(sensitivity: float, correction: float, channel_baseline: float,
                      units_per_mv: float) -> tuple[float, float]:
    """EcgRecord's (gain, baseline) from a channel's calibration; the reader and the writer's
    exactness check both use this one formula."""
    step = sensitivity * correction
    return units_per_mv / step, -channel_baseline / step + 0.0


# Reading ------------------------------------------------------------------------------------

def _parse(path: Path, blob: bytes) -> Dataset:
    if not blob:
        raise EcgFormatError(path, "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(blob))
            _check_complete(path, blob, ds)
    except InvalidDicomError:
        raise EcgFormatError(path, "not a DICOM file (no 'DICM' after the 128-byte "
                                   "preamble)") from None
    except EcgFormatError:
        raise
    except (OSError, EOFError) as exc:
        raise EcgFormatError(path, f"truncated DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on damaged files
        raise EcgFormatError(path, f"cannot be read as DICOM ({type(exc).__name__}: {exc})") \
            from exc
    if not ds.original_encoding[1]:
        raise EcgFormatError(path, "unsupported encoding: big endian transfer syntax")
    return ds


def _check_complete(path: Path, blob: bytes, ds: Dataset) -> None:
    """pydicom reads a file cut inside its last top-level element without complaint, so every
    top-level element must end inside the file, and the last one at its very end."""
    syntax = UID(ds.file_meta.get("TransferSyntaxUID", ""))
    group_length = ds.file_meta.get("FileMetaInformationGroupLength")
    if not syntax or syntax.is_deflated or group_length is None:
        return
    stream = io.BytesIO(blob)
    stream.seek(128 + 4 + 12 + int(group_length))
    end = stream.tell()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in data_element_generator(stream, syntax.is_implicit_VR, syntax.is_little_endian,
                                        defer_size=1):
            end = stream.tell()
    if any("End of file" in str(w.message) for w in caught) or end != len(blob):
        raise EcgFormatError(path, f"truncated DICOM file: an element runs past the end of its "
                                   f"{len(blob)} bytes")


def _rhythm_group(groups: Sequence) -> int:
    """The multiplex group holding the rhythm: ORIGINAL before DERIVED, a median/average-beat
    label last, then the longest."""
    def key(index: int) -> tuple:
        item = groups[index]
        label = str(item.get("MultiplexGroupLabel", ""))
        try:
            duration = int(item.NumberOfWaveformSamples) / float(item.SamplingFrequency)
        except (AttributeError, TypeError, ValueError, ZeroDivisionError):
            duration = 0.0
        return (str(item.get("WaveformOriginality", "")).upper() == "ORIGINAL",
                "RHYTHM" in label.upper(), not _MEDIAN.search(label), duration, -index)
    return max(range(len(groups)), key=key)


def _samples(path: Path, ds: Dataset, item: Dataset, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The group's stored integers, shaped (samples, channels), and where they hold no value."""
    where = f"multiplex group {index}"
    required = ("NumberOfWaveformChannels", "NumberOfWaveformSamples", "WaveformBitsAllocated",
                "WaveformSampleInterpretation", "SamplingFrequency", "ChannelDefinitionSequence",
                "WaveformData")
    absent = [keyword for keyword in required if item.get(keyword) in (None, "")]
    if absent:
        raise EcgFormatError(path, f"{where} lacks {', '.join(absent)}")
    bits = int(item.WaveformBitsAllocated)
    interpretation = str(item.WaveformSampleInterpretation)
    if interpretation not in LINEAR or bits not in (8, 16, 32, 64):
        raise EcgFormatError(path, f"unsupported encoding in {where}: {bits}-bit samples "
                                   f"interpreted as {interpretation!r}")
    channels, samples = int(item.NumberOfWaveformChannels), int(item.NumberOfWaveformSamples)
    if len(item.ChannelDefinitionSequence) != channels:
        raise EcgFormatError(path, f"mismatched lengths in {where}: {channels} channels "
                                   f"declared, {len(item.ChannelDefinitionSequence)} defined")
    declared = channels * samples * bits // 8
    stored = len(item.WaveformData)
    if stored < declared:
        raise EcgFormatError(path, f"truncated waveform data in {where}: {stored} bytes hold "
                                   f"less than the {samples} samples x {channels} channels "
                                   f"declared ({declared} bytes)")
    if stored > declared + declared % 2:
        raise EcgFormatError(path, f"mismatched lengths in {where}: {stored} bytes of waveform "
                                   f"data, {declared} declared")
    raw = multiplex_array(ds, index, as_raw=True)
    if raw.dtype == np.uint64 and raw.size and raw.max() > np.iinfo(np.int64).max:
        raise EcgFormatError(path, f"unsupported encoding in {where}: samples beyond 63 bits")
    digital = raw.astype(np.int32 if bits <= 16 else np.int64)
    missing = np.zeros(digital.shape, dtype=bool)
    padding = item.get("WaveformPaddingValue")
    if padding is not None and len(padding) >= bits // 8:
        value = np.frombuffer(bytes(padding)[:bits // 8], dtype=raw.dtype)[0]
        missing = raw == value
    return digital, missing


def _calibration(path: Path, channel: Dataset, number: int) -> tuple[float, float]:
    where = f"channel {number}"
    if channel.get("ChannelSensitivity") in (None, ""):
        raise EcgFormatError(path, f"{where} has no Channel Sensitivity: its samples are not "
                                   f"calibrated")
    units = channel.get("ChannelSensitivityUnitsSequence") or [Dataset()]
    unit = str(units[0].get("CodeValue", ""))
    if unit not in UNITS_PER_MV:
        raise EcgFormatError(path, f"{where} is in {unit or 'unstated units'!r}, not a voltage")
    try:
        sensitivity = float(channel.ChannelSensitivity)
        correction = float(channel.get("ChannelSensitivityCorrectionFactor") or 1.0)
        baseline = float(channel.get("ChannelBaseline") or 0.0)
        if sensitivity * correction == 0:
            raise ValueError("zero sensitivity")
    except (TypeError, ValueError) as exc:
        raise EcgFormatError(path, f"{where} has an unusable calibration ({exc})") from exc
    return gain_and_baseline(sensitivity, correction, baseline, UNITS_PER_MV[unit])


def _lead_name(channel: Dataset, number: int) -> str:
    """Canonical lead from the channel source code, else the channel label, else the code
    meaning ("Lead I (Einthoven)" -> "I")."""
    source = (channel.get("ChannelSourceSequence") or [Dataset()])[0]
    code = str(source.get("CodeValue", ""))
    scheme = str(source.get("CodingSchemeDesignator", "")).upper()
    prefix = {"SCPECG": "5.6.3-9-", "MDC": "2:"}.get(scheme)
    if prefix and code.startswith(prefix) and code[len(prefix):].isdigit():
        lead = SCPECG_LEADS.get(int(code[len(prefix):]))
        if lead:
            return lead
    label = str(channel.get("ChannelLabel") or "").strip()
    if label:
        return label
    meaning = str(source.get("CodeMeaning") or "").strip()
    return canonical_lead(meaning) if meaning else f"channel {number}"


# Writing ------------------------------------------------------------------------------------

def _checked_for_general_ecg(record: EcgRecord, path: Path) -> np.ndarray:
    """The int16 samples to write, or EcgFormatError naming the IOD constraint broken."""
    if record.digital is None:
        raise EcgFormatError(path, "the record has no stored integer samples; digitise it "
                                   "explicitly with EcgRecord.from_millivolts")
    if not record.n_samples:
        raise EcgFormatError(path, "the record has no samples")
    low, high = GENERAL_ECG_FS
    if not low <= record.fs <= high:
        raise EcgFormatError(path, f"General ECG needs 200-1000 Hz, the record has "
                                   f"{record.fs:g} Hz (write it as WFDB instead)")
    if len(record.leads) > GENERAL_ECG_MAX_CHANNELS:
        raise EcgFormatError(path, f"General ECG holds at most 24 channels, the record has "
                                   f"{len(record.leads)}")
    missing = np.isnan(record.signal)
    present = record.digital[~missing]
    lowest = NO_VALUE if not missing.any() else NO_VALUE + 1
    if present.size and (present.min() < lowest or present.max() > 32767):
        raise EcgFormatError(path, f"samples from {present.min()} to {present.max()} do not "
                                   f"fit General ECG's 16-bit samples (write it as WFDB "
                                   f"instead)")
    return np.where(missing, NO_VALUE, record.digital).astype(np.int16)


def _channel(path: Path, lead: str, gain: float, baseline: float) -> Dataset:
    number = _LEAD_CODES.get(lead, UNSPECIFIED_LEAD)
    source = Dataset()
    source.CodeValue = f"5.6.3-9-{number}"
    source.CodingSchemeDesignator = "SCPECG"
    source.CodingSchemeVersion = "1.3"
    source.CodeMeaning = f"Lead {lead}" if number else "Unspecified lead"
    unit, sensitivity, channel_baseline = _calibration_strings(path, lead, gain, baseline)
    units = Dataset()
    units.CodeValue = unit
    units.CodingSchemeDesignator = "UCUM"
    units.CodingSchemeVersion = "1.4"
    units.CodeMeaning = WRITE_UNITS[unit]
    channel = Dataset()
    channel.ChannelLabel = lead
    channel.ChannelSourceSequence = Sequence([source])
    channel.ChannelSensitivity = sensitivity
    channel.ChannelSensitivityUnitsSequence = Sequence([units])
    channel.ChannelSensitivityCorrectionFactor = "1"
    channel.ChannelBaseline = channel_baseline
    channel.ChannelSampleSkew = "0"
    channel.WaveformBitsStored = 16
    return channel


def _calibration_strings(path: Path, lead: str, gain: float,
                         baseline: float) -> tuple[str, str, str]:
    """A UCUM unit with Channel Sensitivity and Channel Baseline in it, as decimal strings of at
    most 16 characters that read back as exactly `gain` and `baseline` when such strings exist
    (microvolts tried first); otherwise the nearest ones, with a warning. The integers are
    exact either way."""
    gain, baseline = float(gain), float(baseline)
    best: tuple[float, str, str, str] | None = None
    for unit in WRITE_UNITS:
        per_mv = UNITS_PER_MV[unit]
        for sensitivity in _decimal_candidates(per_mv / gain):
            step = float(sensitivity)
            for channel_baseline in _decimal_candidates(-baseline * step):
                back_gain, back_baseline = gain_and_baseline(step, 1.0, float(channel_baseline),
                                                             per_mv)
                if back_gain == gain and back_baseline == baseline:
                    return unit, sensitivity, channel_baseline
                # Largest change in millivolts over the 16-bit range the samples may span.
                error = (abs(back_baseline - baseline) / abs(gain)
                         + (32768 + abs(baseline)) * abs(back_gain - gain) / gain ** 2)
                if best is None or error < best[0]:
                    best = (error, unit, sensitivity, channel_baseline)
    assert best is not None
    error, unit, sensitivity, channel_baseline = best
    log.warning("%s: lead %s's calibration (gain %r/mV, baseline %r) has no exact 16-character "
                "decimal form; written as sensitivity %s %s, baseline %s %s (at most %.1e mV "
                "off)", path, lead, gain, baseline, sensitivity, unit, channel_baseline, unit,
                error)
    return unit, sensitivity, channel_baseline


def _decimal_candidates(value: float) -> list[str]:
    """Decimal strings of at most 16 characters near `value`, shortest first."""
    value = float(value)
    found: list[str] = []
    for text in [repr(value)] + [f"{value:.{digits}g}" for digits in range(16, 5, -1)]:
        text = text.replace("e+", "E").replace("e-", "E-").replace("e", "E")
        if text.endswith(".0"):
            text = text[:-2]
        if text == "-0":
            text = "0"
        if len(text) <= 16 and text not in found:
            found.append(text)
    return found


def _ds_string(value: float) -> str:
    candidates = _decimal_candidates(value)
    exact = [c for c in candidates if float(c) == value]
    return (exact or candidates)[0]


def _age_string(age: float) -> str:
    """An Age String: whole years as "nnnY", anything else in months (rounded)."""
    if age == int(age) and age < 1000:
        return f"{int(age):03d}Y"
    return f"{min(999, round(age * 12)):03d}M"
