"""Exactly-once reception, frame by frame, without sockets."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from diagnosis.ecg.frames import Frame
from diagnosis.ecg.ingest import StreamError, StreamFormat, StreamReceiver

STREAM = uuid.uuid4()
PER_FRAME = 100


def frame(seq: int, *, end: bool = False, **overrides) -> Frame:
    values = dict(stream_id=STREAM, seq=seq, first_sample=seq * PER_FRAME, fs=250.0,
                  leads=("II",), gain=(200.0,),
                  samples=np.full((PER_FRAME, 1), seq, dtype=np.int16), end=end)
    values.update(overrides)
    return Frame(**values)


def receiver() -> StreamReceiver:
    return StreamReceiver(str(STREAM), window=8)


def test_in_order_frames_are_released_and_acknowledged():
    r = receiver()
    for seq in range(3):
        result = r.accept(frame(seq))
        assert result.ack == seq and [f.seq for f in result.ready] == [seq]
    assert r.format == StreamFormat(250.0, ("II",), (200.0,))
    assert r.next_sample == 300


def test_duplicates_are_dropped_and_reacknowledged():
    r = receiver()
    r.accept(frame(0))
    r.accept(frame(1))
    again = r.accept(frame(0))
    assert again.duplicate and again.ack == 1 and again.ready == []


def test_early_frames_wait_for_the_gap_which_is_reported():
    r = receiver()
    r.accept(frame(0))
    result = r.accept(frame(3))
    assert result.ack == 0 and result.ready == [] and result.missing == [(1, 2)]
    assert r.accept(frame(3)).duplicate
    result = r.accept(frame(5))
    assert result.missing == [(1, 2), (4, 4)]
    result = r.accept(frame(2))
    assert result.missing == [(1, 1), (4, 4)]
    result = r.accept(frame(1))
    assert [f.seq for f in result.ready] == [1, 2, 3] and result.ack == 3
    assert result.missing == [(4, 4)]


def test_far_future_frame_is_refused_without_harm():
    r = receiver()
    r.accept(frame(0))
    with pytest.raises(StreamError) as caught:
        r.accept(frame(50))
    assert caught.value.code == "too_far_ahead"
    assert r.accept(frame(1)).ack == 1


@pytest.mark.parametrize("change", [{"fs": 500.0}, {"leads": ("V1",)}, {"gain": (100.0,)},
                                    {"baseline": (1024,)}])
def test_format_change_mid_stream_is_refused_and_stream_kept(change):
    r = receiver()
    r.accept(frame(0))
    with pytest.raises(StreamError, match="changes the stream's") as caught:
        r.accept(frame(1, **change))
    assert caught.value.code == "format_changed"
    assert r.accept(frame(1)).ack == 1


def test_wrong_sample_index_is_rejected_and_resent_frame_accepted():
    r = receiver()
    r.accept(frame(0))
    result = r.accept(frame(1, first_sample=999))
    assert result.ack == 0 and result.rejected[0].code == "bad_sample_index"
    assert r.accept(frame(1)).ack == 1


def test_end_frame_completes_the_stream():
    r = receiver()
    r.accept(frame(0))
    result = r.accept(frame(1, end=True))
    assert result.complete and result.ack == 1
    assert r.accept(frame(1)).duplicate
    with pytest.raises(StreamError, match="ended"):
        r.accept(frame(2))


def test_wrong_stream_is_refused():
    with pytest.raises(StreamError, match="stream"):
        receiver().accept(frame(0, stream_id=uuid.uuid4()))


def test_missing_and_saturated_samples_are_kept_and_reported():
    samples = np.zeros((PER_FRAME, 1), dtype=np.int16)
    samples[:3] = -32768
    samples[10:15] = 32767
    result = receiver().accept(frame(0, samples=samples))
    assert np.array_equal(result.ready[0].samples, samples)
    assert result.warnings == ["lead II: 3 missing samples in frame 0",
                               "lead II: 5 saturated samples in frame 0"]


def test_resumes_from_stored_progress():
    r = StreamReceiver(str(STREAM), StreamFormat(250.0, ("II",), (200.0,)), next_seq=4,
                       next_sample=400)
    assert r.ack == 3 and r.accept(frame(2)).duplicate
    assert r.accept(frame(4)).ack == 4
