"""WFDB records (PhysioNet `.hea` + `.dat`/`.mat`) through wfdb-python, checked before reading.

wfdb-python fails deep inside numpy on a short signal file ("cannot reshape array..."), so the
expected size of every signal file is computed from the header first, and the stored
checksums are verified after reading: a damaged file is refused, never half-read.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import wfdb

from diagnosis.ecg.formats.errors import EcgFormatError
from diagnosis.ecg.record import EcgRecord, canonical_age, canonical_sex

BYTES_PER_SAMPLE = {"8": 1.0, "16": 2.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5,
                    "310": 4 / 3, "311": 4 / 3, "24": 3.0, "32": 4.0}
"""Uncompressed WFDB formats (signal(5)); FLAC formats 508/516/524 have no fixed size."""
NO_VALUE = {"80": -128, "508": -128, "310": -512, "311": -512, "212": -2048, "16": -32768,
            "61": -32768, "160": -32768, "516": -32768, "24": -2**23, "524": -2**23,
            "32": -2**31}
"""The sample value each format reserves for "no value" (format 8 has none)."""
MILLIVOLTS_PER_UNIT = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "nv": 1e-6, "v": 1e3}
WRITE_FORMATS = (("16", -32768, 32767), ("24", -2**23, 2**23 - 1), ("32", -2**31, 2**31 - 1))
_COMMENT = re.compile(r"^\s*(age|sex)\s*:\s*(.*?)\s*$", re.IGNORECASE)


def header_path(path: Path) -> Path:
    """`x.hea` for `x.hea`, `x.dat`, `x.mat` or a bare record name `x`."""
    if path.suffix == ".hea":
        return path
    if path.suffix in (".dat", ".mat"):
        return path.with_suffix(".hea")
    return path.with_name(path.name + ".hea")


def read_wfdb(path: str | Path, *, verify_checksums: bool = True) -> EcgRecord:
    """Read a single-segment WFDB record given its `.hea` (or its record name)."""
    hea = header_path(Path(path))
    if not hea.is_file():
        raise EcgFormatError(path, f"WFDB header {hea.name} not found")
    name = str(hea.with_suffix(""))
    try:
        header = wfdb.rdheader(name)
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        raise EcgFormatError(hea, f"malformed WFDB header ({exc})") from exc
    if isinstance(header, wfdb.MultiRecord) or getattr(header, "seg_name", None):
        raise EcgFormatError(hea, "multi-segment WFDB records are not supported")
    if not header.n_sig:
        raise EcgFormatError(hea, "the header declares no signals")
    if any(spf not in (None, 1) for spf in header.samps_per_frame or []):
        raise EcgFormatError(hea, "multi-frequency records (samples per frame > 1) are not "
                                  "supported: reading them would average samples")
    _check_signal_files(hea, header)
    try:
        record = wfdb.rdrecord(name, physical=False, return_res=32)
    except (ValueError, OSError, EOFError, IndexError) as exc:
        raise EcgFormatError(hea, f"cannot read the signal file ({exc})") from exc
    digital = np.asarray(record.d_signal, dtype=np.int32)
    if verify_checksums:
        _check_checksums(hea, record)
    scale = np.array([_millivolts_per_unit(hea, lead, unit)
                      for lead, unit in zip(record.sig_name, record.units, strict=True)])
    gain = np.asarray(record.adc_gain, dtype=np.float64) / scale
    missing = np.column_stack([
        digital[:, ch] == NO_VALUE[fmt] if fmt in NO_VALUE else np.zeros(len(digital), bool)
        for ch, fmt in enumerate(record.fmt)])
    sex, age = _demographics(record.comments or [])
    try:
        return EcgRecord.from_digital(digital, record.fs,
                                      tuple(lead or "" for lead in record.sig_name), gain,
                                      np.asarray(record.baseline, dtype=np.float64), missing,
                                      sex=sex, age=age)
    except ValueError as exc:
        raise EcgFormatError(hea, str(exc)) from exc


def save_wfdb(record: EcgRecord, directory: str | Path, name: str) -> Path:
    """Write `name.hea` + `name.dat` (format 16, or 24/32 if the samples need it); returns the header.

    The stored integers are written unchanged with their own gain and baseline, so reading the
    record back gives the same digital samples and the same millivolts. Samples without a value
    (NaN in `signal`) are written as the chosen format's "no value" sample, so they read back as
    missing whatever format they came from; the format is chosen so that no real sample equals
    that marker. Lead names are written as they are, even when two leads share one (MIT-BIH
    SVDB's "ECG", "ECG"), which wfdb-python's writer refuses on its own.
    """
    directory = Path(directory)
    target = directory / name
    digital = record.digital
    if digital is None:
        raise EcgFormatError(target, "the record has no stored integer samples; "
                                     "digitise it explicitly with EcgRecord.from_millivolts")
    if not record.n_samples:
        raise EcgFormatError(target, "the record has no samples; WFDB cannot store an empty "
                                     "signal file")
    bad_names = [lead for lead in record.leads if any(ch in lead for ch in "\r\n")]
    if bad_names:
        raise EcgFormatError(target, f"lead names with line breaks cannot be written: {bad_names}")
    missing = np.isnan(record.signal)
    present = digital[~missing]
    low, high = int(present.min(initial=0)), int(present.max(initial=0))
    choice = next(((f, no_value) for f, no_value, hi in WRITE_FORMATS
                   if no_value < low and high <= hi), None)
    if choice is None:
        raise EcgFormatError(target, f"samples from {low} to {high} do not fit 32 bits")
    fmt, no_value = choice
    baseline = record.baseline.round()
    if not np.array_equal(baseline, record.baseline):
        raise EcgFormatError(target, "WFDB needs integer baselines, not "
                                     f"{record.baseline.tolist()}")
    comments = [f"{key}: {value}" for key, value in (("age", record.age), ("sex", record.sex))
                if value is not None]
    directory.mkdir(parents=True, exist_ok=True)
    placeholders = [f"s{i}" for i in range(len(record.leads))]
    wfdb.wrsamp(name, fs=record.fs, units=["mV"] * len(record.leads),
                sig_name=placeholders,
                d_signal=np.where(missing, no_value, digital).astype(np.int64),
                fmt=[fmt] * len(record.leads), adc_gain=record.gain.tolist(),
                baseline=baseline.astype(int).tolist(), comments=comments,
                write_dir=str(directory))
    hea = directory / f"{name}.hea"
    _rename_signals(hea, placeholders, list(record.leads))
    return hea


def _rename_signals(hea: Path, placeholders: list[str], names: list[str]) -> None:
    """Put the real lead names in the description field that ends each signal line."""
    lines = hea.read_text(encoding="ascii").split("\n")
    signal_lines = [i for i, line in enumerate(lines) if line and not line.startswith("#")][1:]
    if len(signal_lines) != len(names):
        raise EcgFormatError(hea, "wfdb wrote an unexpected header")
    for i, placeholder, lead in zip(signal_lines, placeholders, names, strict=True):
        head, _, last = lines[i].rpartition(" ")
        if last != placeholder:
            raise EcgFormatError(hea, "wfdb wrote an unexpected header")
        lines[i] = f"{head} {lead}" if lead else head
    hea.write_text("\n".join(lines), encoding="utf-8")


def _check_signal_files(hea: Path, header: wfdb.Record) -> None:
    """Every signal file exists and holds at least the samples the header promises."""
    files: dict[str, list[int]] = {}
    for ch, file_name in enumerate(header.file_name):
        files.setdefault(file_name, []).append(ch)
    for file_name, channels in files.items():
        data = hea.parent / file_name
        if not data.is_file():
            raise EcgFormatError(hea, f"signal file {file_name} not found")
        fmt = header.fmt[channels[0]]
        if header.sig_len is None or fmt not in BYTES_PER_SAMPLE:
            continue
        offset = header.byte_offset[channels[0]] or 0
        needed = offset + math.ceil(header.sig_len * len(channels) * BYTES_PER_SAMPLE[fmt])
        size = data.stat().st_size
        if size < needed:
            raise EcgFormatError(data, f"truncated signal file: {size} bytes, the header "
                                       f"({header.sig_len} samples x {len(channels)} signals, "
                                       f"format {fmt}) needs {needed}")


def _check_checksums(hea: Path, record: wfdb.Record) -> None:
    if record.checksum is None:
        return
    computed = record.calc_checksum()
    for lead, stored, actual in zip(record.sig_name, record.checksum, computed, strict=True):
        if stored is not None and (stored - actual) % 65536:
            raise EcgFormatError(hea, f"checksum mismatch in signal {lead}: header says "
                                      f"{stored}, samples give {actual}; the data is damaged")


def _millivolts_per_unit(hea: Path, lead: str, unit: str | None) -> float:
    key = (unit or "mV").strip().lower()
    if key not in MILLIVOLTS_PER_UNIT:
        raise EcgFormatError(hea, f"signal {lead} is in {unit!r}, not a voltage")
    return MILLIVOLTS_PER_UNIT[key]


def _demographics(comments: list[str]) -> tuple[str | None, float | None]:
    """Age and sex from "age: 81" / "Sex: Male" comment lines (PTB, CinC 2021 style)."""
    found = {}
    for line in comments:
        match = _COMMENT.match(line)
        if match:
            found.setdefault(match.group(1).lower(), match.group(2))
    return canonical_sex(found.get("sex")), canonical_age(found.get("age"))
