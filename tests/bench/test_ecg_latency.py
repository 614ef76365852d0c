"""The alert-latency bench's recordings: each raises its alert, once, where the bench expects
it, when fed as the server feeds the live analysis (the bench itself times them through a real
server; tests/diagnosis/ecg/test_live_alerts.py tests that path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import ecg_latency
from diagnosis.ecg.analysis import analyze
from diagnosis.ecg.record import EcgRecord


def test_each_recording_raises_its_alert(shared_data: Path) -> None:
    cases = ecg_latency.cases(shared_data / "ecg")
    assert [case.kind for case in cases] == ["STEMI", "VT", "ASYSTOLE"]
    for case in cases:
        rec = case.recording
        assert rec.samples.dtype == np.int16
        record = EcgRecord.from_digital(rec.samples, rec.fs, rec.leads, np.asarray(rec.gain),
                                        np.zeros(len(rec.leads)))
        alerts = [a for a in analyze(record).alerts if a.kind == case.kind]
        assert len(alerts) == 1, (case.kind, alerts)
        settles = ecg_latency.settling_frame(case)
        # Final after the frame holding the alert's sample, and within 2 s of it.
        assert 0 <= settles - alerts[0].sample // case.frame <= 2 / ecg_latency.FRAME_S
