"""The robustness bench's disturbances do what its docstring says, on the real recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ecg_robustness


@pytest.fixture(scope="module")
def recs(shared_data: Path) -> list[ecg_robustness.Recording]:
    return ecg_robustness.recordings(shared_data / "ecg")


def test_recordings_are_the_multi_lead_ones(recs) -> None:
    names = [r.name for r in recs]
    assert len(names) == 36 and "mitdb/100" in names and "cinc2021-12lead/JS20008" in names
    assert all(r.signal.shape[1] > 1 and len(r.reference) for r in recs)


@pytest.mark.parametrize("kind", ecg_robustness.ONE_LEAD)
def test_a_disturbance_touches_one_lead_inside_its_span(recs, kind: str) -> None:
    rec = next(r for r in recs if r.name == "mitdb/100")
    signal = rec.signal.copy()
    ecg_robustness.one_lead(kind)(signal, rec, 1, np.random.default_rng(0))
    changed = ~np.isclose(signal, rec.signal, equal_nan=True)
    rows = changed.any(axis=1).nonzero()[0]
    assert not changed[:, 0].any()
    assert rows[0] >= rec.span[0] and rows[-1] < rec.span[1] and len(rows) > 0.9 * (
        rec.span[1] - rec.span[0])
    if kind in ("emg", "motion"):
        added = (signal - rec.signal)[rec.span[0]:rec.span[1], 1]
        assert abs(np.std(added) - ecg_robustness.NOISE_MV) < 1e-9


def test_dropped_beats_leave_the_rest_for_the_detector(recs) -> None:
    clean = {r.name: ecg_robustness.scoring.match_beats(r.reference, r.reference, r.fs)
             for r in recs}
    tally = ecg_robustness.run_dropped([r for r in recs if r.name == "mitdb/100"], clean)
    assert tally.runs == 1 and tally.beats == 2273 - len(range(5, 2272, 10))
    assert tally.missed + tally.false <= 2
