"""QRS detection when leads misbehave, as they do in an ambulance: each disturbance put on the
shared recordings one lead at a time, our detector run on the disturbed and on the untouched
recording in one run, both scored the EC57 way (150 ms) with `diagnosis.ecg.scoring`.

    python bench/ecg_robustness.py [--data DIR] [--scenarios flat missing ...]

Recordings: the annotated multi-lead records (`diagnosis.ecg.references`: MIT-BIH 100 and SVDB
800, the nine CPSC 2021 records; the single-lead CPSC 2019 has no other lead to fall back on)
against their reference beats, the disturbance on the middle third of the record; and the 25
CinC 2021 twelve-lead records against our own beats on the untouched record (they have no beat
annotations), the disturbance from a third of the way in to the end. Each lead in turn, so a
scenario is 22 + 300 runs. Scenarios:

  flat      the lead at 0 mV (an electrode off; some monitors send zeros)
  missing   the lead's samples missing (NaN: the stream's "no sample" marker)
  shrunk    the lead at 5 % (an electrode that slipped, a gain set wrong)
  emg       + 0.3 mV RMS of 20-150 Hz noise on the lead (muscle tremor)
  motion    + 0.3 mV RMS of 1-10 Hz noise on the lead (electrode motion)
  dropped   every 10th beat's QRS and T replaced by a straight line, its P wave kept (Mobitz II
            block; all leads at once, annotated records only): the beats left are the
            reference, so a beat found in a gap is a false one

Noise comes from one seeded generator: the same figures on every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.signal import butter, sosfilt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diagnosis.ecg import qrs, references, scoring  # noqa: E402
from diagnosis.ecg.analysis import analyze  # noqa: E402
from diagnosis.ecg.formats.wfdb_io import read_wfdb  # noqa: E402
from diagnosis.ecg.record import EcgRecord  # noqa: E402

DEFAULT_DATA = (ROOT / ".." / "shared" / "data" / "ecg").resolve()
NOISE_MV = 0.3
SHRUNK = 0.05
DROP_EVERY = 10


@dataclass(frozen=True)
class Recording:
    name: str
    signal: np.ndarray
    fs: float
    reference: np.ndarray
    span: tuple[int, int]
    """Where a disturbance goes: [start, stop)."""
    record: EcgRecord | None = None
    """The record as read, for the whole analysis (its lead names, sex and age)."""

    def alerts(self, signal: np.ndarray) -> Counter:
        """Alerts of the whole analysis of the record with this signal, by kind."""
        record = dataclasses.replace(self.record, signal=signal, digital=None)
        return Counter(alert.kind for alert in analyze(record).alerts)


@dataclass
class Tally:
    runs: int = 0
    beats: int = 0
    missed: int = 0
    false: int = 0
    clean_missed: int = 0
    clean_false: int = 0
    alerts: Counter = field(default_factory=Counter)
    """Alerts of the whole analysis beyond those on the untouched recording."""
    worst: tuple[int, str] = (0, "")

    def add(self, name: str, reference: np.ndarray, found: np.ndarray, clean: scoring.BeatMatch,
            fs: float) -> None:
        match = scoring.match_beats(reference, found, fs)
        self.runs += 1
        self.beats += len(reference)
        self.missed += match.fn
        self.false += match.fp
        self.clean_missed += clean.fn
        self.clean_false += clean.fp
        self.worst = max(self.worst, (match.fn + match.fp, name))


def recordings(data: Path) -> list[Recording]:
    annotated = [r for r in references.wfdb_annotated(data) if r.signal.shape[1] > 1]
    out = [Recording(r.name, r.signal, r.fs, r.reference,
                     (len(r.signal) // 3, 2 * len(r.signal) // 3), read_wfdb(data / r.name))
           for r in annotated]
    for header in sorted((data / "cinc2021-12lead").glob("*.hea")):
        record = read_wfdb(header.with_suffix(""))
        out.append(Recording(f"cinc2021-12lead/{header.stem}", record.signal, record.fs,
                             qrs.detect_qrs(record.signal, record.fs),
                             (len(record.signal) // 3, len(record.signal)), record))
    return out


def noise(rng: np.random.Generator, n: int, fs: float, band_hz: tuple[float, float]) -> np.ndarray:
    """`NOISE_MV` RMS of white noise band-limited to `band_hz` (capped below Nyquist)."""
    low, high = band_hz[0], min(band_hz[1], 0.45 * fs)
    white = rng.normal(0.0, 1.0, n + int(fs))     # a second to let the filter settle
    shaped = sosfilt(butter(4, [low, high], btype="band", fs=fs, output="sos"), white)[-n:]
    return NOISE_MV * shaped / np.std(shaped)


def one_lead(kind: str) -> Callable[[np.ndarray, Recording, int, np.random.Generator], None]:
    def disturb(signal: np.ndarray, rec: Recording, lead: int, rng: np.random.Generator) -> None:
        part = slice(*rec.span)
        n = rec.span[1] - rec.span[0]
        if kind == "flat":
            signal[part, lead] = 0.0
        elif kind == "missing":
            signal[part, lead] = np.nan
        elif kind == "shrunk":
            signal[part, lead] *= SHRUNK
        elif kind == "emg":
            signal[part, lead] += noise(rng, n, rec.fs, (20.0, 150.0))
        else:
            signal[part, lead] += noise(rng, n, rec.fs, (1.0, 10.0))
    return disturb


ONE_LEAD = ("flat", "missing", "shrunk", "emg", "motion")


def run_one_lead(kind: str, recs: list[Recording], rng: np.random.Generator,
                 clean: dict[str, scoring.BeatMatch], alerts: dict[str, Counter] | None) -> Tally:
    tally, disturb = Tally(), one_lead(kind)
    for rec in recs:
        for lead in range(rec.signal.shape[1]):
            signal = rec.signal.copy()
            disturb(signal, rec, lead, rng)
            tally.add(f"{rec.name} lead {lead}", rec.reference, qrs.detect_qrs(signal, rec.fs),
                      clean[rec.name], rec.fs)
            if alerts is not None:
                tally.alerts += rec.alerts(signal) - alerts[rec.name]
    return tally


def run_dropped(recs: list[Recording], clean: dict[str, scoring.BeatMatch]) -> Tally:
    tally = Tally()
    for rec in recs:
        if rec.name.startswith("cinc2021"):
            continue
        signal, beats = rec.signal.copy(), rec.reference
        blocked = list(range(DROP_EVERY // 2, len(beats) - 1, DROP_EVERY))
        for i in blocked:
            start = beats[i] - int(0.06 * rec.fs)
            stop = min(beats[i] + int(0.45 * rec.fs), beats[i + 1] - int(0.25 * rec.fs))
            signal[start:stop] = np.linspace(signal[start], signal[stop], stop - start)
        tally.add(rec.name, np.delete(beats, blocked), qrs.detect_qrs(signal, rec.fs),
                  clean[rec.name], rec.fs)
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--scenarios", nargs="+", default=list(ONE_LEAD) + ["dropped"],
                        choices=list(ONE_LEAD) + ["dropped"])
    parser.add_argument("--no-alerts", action="store_true",
                        help="skip the whole analysis (alerts) of each disturbed recording")
    args = parser.parse_args(argv)
    started = time.monotonic()
    recs = recordings(args.data)
    clean = {r.name: scoring.match_beats(r.reference, qrs.detect_qrs(r.signal, r.fs), r.fs)
             for r in recs}
    alerts = None if args.no_alerts else {r.name: r.alerts(r.signal) for r in recs}
    print(f"bench/ecg_robustness.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"recordings: {sum(not r.name.startswith('cinc') for r in recs)} annotated multi-lead,"
          f" {sum(r.name.startswith('cinc') for r in recs)} twelve-lead (see the docstring)\n")
    print(f"{'scenario':9s} {'runs':>5s} {'beats':>8s} | {'missed':>7s} {'false':>6s} | "
          f"{'untouched: missed':>17s} {'false':>6s} | {'false alerts':18s} | worst run")
    rng = np.random.default_rng(2026)
    for kind in args.scenarios:
        tally = (run_dropped(recs, clean) if kind == "dropped"
                 else run_one_lead(kind, recs, rng, clean, alerts))
        raised = ("-" if alerts is None or kind == "dropped" else
                  ", ".join(f"{n} {k}" for k, n in sorted(tally.alerts.items())) or "none")
        print(f"{kind:9s} {tally.runs:5d} {tally.beats:8d} | {tally.missed:7d} {tally.false:6d} | "
              f"{tally.clean_missed:17d} {tally.clean_false:6d} | {raised:18s} | {tally.worst[1]} "
              f"({tally.worst[0]} missed + false)")
    print("\n  'untouched' sums, over the same runs, what the detector misses and adds on the"
          " recordings as they are;\n  'false alerts': alerts of the whole analysis"
          " (diagnosis.ecg.analysis.analyze) that the untouched recording does not raise.")
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
