"""The annotated recordings QRS detection is scored on, loaded the same way for tests and benches.

Three sources, each read in place from the shared data folder (`ecg/` under it):

* WFDB records with a beat annotation file `.atr` (MIT-BIH `mitdb/`, CPSC 2021 `cpsc2021/`): the
  reference beats are the annotations with an EC57 beat symbol, scored over the whole record.
* CPSC 2019 (`cpsc2019/data_NNNNN.mat` with `R_NNNNN.mat`): 10 s single-lead records at 500 Hz
  with reference R-peak sample indices, used as stored (0-based, as the challenge's own Python
  scorer and torch_ecg read them). Scored, as the challenge scores them, between 0.5 s and
  9.5 s: the annotators left beats cut by the record's edges unmarked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import wfdb

from diagnosis.ecg.formats.errors import EcgFormatError
from diagnosis.ecg.formats.wfdb_io import read_wfdb
from diagnosis.ecg.scoring import reference_beats

CPSC2019_FS = 500.0
CPSC2019_EDGE_S = 0.5


@dataclass(frozen=True)
class AnnotatedRecord:
    name: str
    """`<database>/<record>`, e.g. `mitdb/100`."""
    signal: np.ndarray
    """Millivolts, (n_samples, n_leads)."""
    fs: float
    reference: np.ndarray
    """Reference beat (R peak) sample indices, ascending."""
    span: tuple[int, int] | None = None
    """First and last sample scored (inclusive), or None for the whole record."""

    @property
    def database(self) -> str:
        return self.name.split("/", 1)[0]


def wfdb_annotated(ecg_dir: Path) -> list[AnnotatedRecord]:
    """Every WFDB record under `ecg_dir` that has a `.atr` beat annotation file."""
    records = []
    for atr in sorted(Path(ecg_dir).glob("*/*.atr")):
        base = atr.with_suffix("")
        record = read_wfdb(base)
        annotation = wfdb.rdann(str(base), "atr")
        records.append(AnnotatedRecord(f"{atr.parent.name}/{base.name}", record.signal, record.fs,
                                       reference_beats(annotation.sample, annotation.symbol)))
    return records


def cpsc2019(ecg_dir: Path) -> list[AnnotatedRecord]:
    """The CPSC 2019 records under `ecg_dir/cpsc2019` with their reference R peaks."""
    records = []
    edge = int(round(CPSC2019_EDGE_S * CPSC2019_FS))
    for data in sorted((Path(ecg_dir) / "cpsc2019").glob("data_*.mat")):
        peaks = data.with_name("R_" + data.name.removeprefix("data_"))
        try:
            signal = np.asarray(scipy.io.loadmat(data)["ecg"], dtype=np.float64)
            reference = np.asarray(scipy.io.loadmat(peaks)["R_peak"], dtype=np.int64).ravel()
        except (OSError, KeyError, ValueError) as exc:
            raise EcgFormatError(data, f"not a CPSC 2019 record with R references ({exc})") from exc
        signal = signal.reshape(len(signal), -1)
        records.append(AnnotatedRecord(f"cpsc2019/{data.stem}", signal, CPSC2019_FS,
                                       np.sort(reference), (edge, len(signal) - edge)))
    return records


def annotated_records(ecg_dir: Path) -> list[AnnotatedRecord]:
    """All annotated records: WFDB ones first, then CPSC 2019."""
    return wfdb_annotated(ecg_dir) + cpsc2019(ecg_dir)
