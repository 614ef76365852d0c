"""Rates and durations written the way tc writes them ("2mbit", "100ms"), parsed at the edge."""

from __future__ import annotations

import re

_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def _split(text: str, units: dict[str, float], what: str) -> float:
    match = _NUMBER.match(text)
    if match is None or match.group(2).lower() not in units:
        raise ValueError(f"bad {what} {text!r}: use a number with one of {', '.join(units)}")
    return float(match.group(1)) * units[match.group(2).lower()]


def parse_rate(value: str | float) -> float:
    """Bits per second from "500kbit", "2mbit", "8mbit" (decimal units, as tc uses) or a number."""
    rate = float(value) if isinstance(value, (int, float)) else _split(value, _RATE_UNITS, "rate")
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {value!r}")
    return rate


def parse_duration(value: str | float) -> float:
    """Seconds from "100ms", "0.1s", "250us" or a number of seconds."""
    seconds = float(value) if isinstance(value, (int, float)) else _split(value, _DURATION_UNITS,
                                                                          "duration")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, not {value!r}")
    return seconds


def format_rate(bps: float) -> str:
    """A rate for people: "2.000 Mbit/s"."""
    return f"{bps / 1e6:.3f} Mbit/s"
