"""One ECG recording as every format reader returns it and every writer takes it.

The integer samples are kept exactly as stored (`digital`) next to their calibration, so a
record can be written back to any format without requantising: medical data is never
silently altered. `signal` (millivolts) is derived from them: (digital - baseline) / gain,
the WFDB convention; stored "no value" samples become NaN there and stay as they are in
`digital`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

STANDARD_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

_CANONICAL = {name.lower(): name for name in STANDARD_LEADS}
_CANONICAL.update({"di": "I", "dii": "II", "diii": "III", "v3r": "V3R", "v4r": "V4R",
                   "v5r": "V5R", "v7": "V7", "v8": "V8", "v9": "V9"})
_PREFIXES = re.compile(r"^(mdc_ecg_lead_|lead[ _-]+)", re.IGNORECASE)
_QUALIFIER = re.compile(r"\s*\(.*\)\s*$")


def canonical_lead(name: str) -> str:
    """The standard spelling of a lead name ("avr", "MDC_ECG_LEAD_AVR", "Lead aVR" -> "aVR").

    Names that are not standard leads ("MLII", "vx") come back stripped of a coding prefix
    and otherwise as the record spells them.
    """
    bare = _QUALIFIER.sub("", _PREFIXES.sub("", name.strip())).strip()
    return _CANONICAL.get(bare.lower(), bare or name.strip())


def canonical_sex(value: str | None) -> str | None:
    """"M"/"F" from the spellings the formats use ("male", "Female", "M"), else None."""
    if value is None:
        return None
    first = value.strip()[:1].upper()
    return first if first in ("M", "F") else None


def canonical_age(value: object) -> float | None:
    """Age in years, or None when missing or not a plausible number ("NaN", "", "-1")."""
    try:
        age = float(str(value).strip())
    except ValueError:
        return None
    return age if 0 <= age < 150 else None


def millivolts(digital: np.ndarray, gain: np.ndarray, baseline: np.ndarray,
               missing: np.ndarray | None = None) -> np.ndarray:
    """Stored integers (n, leads) as mV: (digital - baseline) / gain per lead, NaN where
    `missing`; the one conversion for files and streams alike."""
    signal = (digital - np.asarray(baseline, dtype=np.float64)) \
        / np.asarray(gain, dtype=np.float64)
    if missing is not None:
        signal[missing] = np.nan
    return signal


@dataclass(frozen=True)
class EcgRecord:
    fs: float
    """Sampling frequency, Hz."""
    leads: tuple[str, ...]
    signal: np.ndarray
    """float64 millivolts, shape (n_samples, n_leads); NaN where the stored sample has no value."""
    digital: np.ndarray | None
    """The integer samples as stored, shape (n_samples, n_leads), or None if never digitised."""
    gain: np.ndarray
    """ADC units per millivolt, one per lead."""
    baseline: np.ndarray
    """ADC value of 0 mV, one per lead."""
    sex: str | None = None
    """"M" or "F"; used for the sex-specific STEMI cut-points in V2-V3."""
    age: float | None = None
    """Years."""

    def __post_init__(self) -> None:
        n_leads = len(self.leads)
        if self.signal.ndim != 2 or self.signal.shape[1] != n_leads:
            raise ValueError(f"signal shape {self.signal.shape} does not match {n_leads} leads")
        if self.digital is not None and self.digital.shape != self.signal.shape:
            raise ValueError(f"digital shape {self.digital.shape} differs from signal shape "
                             f"{self.signal.shape}")
        if self.gain.shape != (n_leads,) or self.baseline.shape != (n_leads,):
            raise ValueError("gain and baseline need one value per lead")
        if not self.fs > 0:
            raise ValueError(f"sampling frequency must be positive, not {self.fs}")

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def lead(self, name: str) -> np.ndarray:
        """Millivolts of one lead, by any spelling of its name."""
        return self.signal[:, self.leads.index(canonical_lead(name))]

    @classmethod
    def from_digital(cls, digital: np.ndarray, fs: float, leads: tuple[str, ...],
                     gain: np.ndarray, baseline: np.ndarray,
                     missing: np.ndarray | None = None, *, sex: str | None = None,
                     age: float | None = None) -> EcgRecord:
        """A record from stored integers; `missing` marks samples that hold no value."""
        digital = np.asarray(digital)
        if not np.issubdtype(digital.dtype, np.integer):
            raise ValueError(f"digital samples must be integers, not {digital.dtype}")
        gain = np.asarray(gain, dtype=np.float64)
        baseline = np.asarray(baseline, dtype=np.float64)
        if np.any(gain == 0) or not np.all(np.isfinite(gain)):
            raise ValueError(f"every lead needs a finite, non-zero gain, not {gain.tolist()}")
        signal = millivolts(digital, gain, baseline, missing)
        return cls(float(fs), tuple(canonical_lead(n) for n in leads), signal, digital,
                   gain, baseline, canonical_sex(sex), age)

    @classmethod
    def from_millivolts(cls, signal: np.ndarray, fs: float, leads: tuple[str, ...],
                        gain: float = 1000.0, *, sex: str | None = None,
                        age: float | None = None) -> EcgRecord:
        """Digitise millivolts at `gain` ADC units per mV (1 uV steps by default).

        This is the one place where values are rounded, and it is explicit: use it for
        signals that never had integer samples (synthetic or computed leads). NaN becomes
        the 16-bit "no value" sample -32768.
        """
        signal = np.asarray(signal, dtype=np.float64)
        missing = np.isnan(signal)
        scaled = np.round(np.where(missing, 0.0, signal) * gain)
        if np.any(np.abs(scaled) > 32767):
            raise ValueError(f"signal exceeds the 16-bit range at {gain} ADC units per mV")
        digital = np.where(missing, -32768, scaled).astype(np.int32)
        n_leads = signal.shape[1]
        return cls.from_digital(digital, fs, leads, np.full(n_leads, float(gain)),
                                np.zeros(n_leads), missing, sex=sex, age=age)
