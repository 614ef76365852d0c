"""The stream buffers: any chunking gives the same blocks and the same retained samples."""

from __future__ import annotations

import numpy as np
import pytest

from diagnosis.ecg.buffers import BlockFiller, SampleBuffer


@pytest.mark.parametrize("chunk", [1, 7, 10, 23, 100])
def test_blocks_come_out_whole_and_in_order_however_the_stream_is_cut(chunk: int) -> None:
    stream = np.arange(230 * 2, dtype=np.float64).reshape(230, 2)
    filler = BlockFiller(10, 2)
    blocks = [filler.push(stream[i:i + chunk]) for i in range(0, len(stream), chunk)]
    assert all(b.shape[1:] == (10, 2) for b in blocks)
    assert np.array_equal(np.concatenate(blocks), stream[:230].reshape(23, 10, 2))
    assert filler.drain().shape == (0, 2)


def test_a_block_handed_out_is_not_overwritten_by_the_next_chunk() -> None:
    filler = BlockFiller(4, 1)
    first = filler.push(np.arange(6.0)[:, None])
    second = filler.push(np.full((3, 1), -1.0))
    assert first[:, :, 0].tolist() == [[0, 1, 2, 3]]
    assert second[:, :, 0].tolist() == [[4, 5, -1, -1]]
    assert filler.drain()[:, 0].tolist() == [-1]


def test_drain_hands_out_the_incomplete_block_once() -> None:
    filler = BlockFiller(4, 1)
    filler.push(np.arange(6.0)[:, None])
    assert filler.drain()[:, 0].tolist() == [4.0, 5.0]
    assert len(filler.drain()) == 0
    assert filler.push(np.arange(4.0)[:, None])[0, :, 0].tolist() == [0, 1, 2, 3]


def test_sample_buffer_keeps_the_newest_samples_by_absolute_index() -> None:
    buffer = SampleBuffer(1, keep=5)
    for start in range(0, 100, 3):
        buffer.append(np.arange(start, min(start + 3, 100), dtype=np.float64))
    assert buffer.end == 100 and buffer.start <= 95
    assert buffer.window(95, 100)[:, 0].tolist() == [95, 96, 97, 98, 99]
    assert buffer.window(98, 200)[:, 0].tolist() == [98, 99]   # clipped to what is there
    assert buffer.start > 0 and len(buffer.window(0, buffer.start)) == 0  # old ones dropped


@pytest.mark.parametrize("chunk", [1, 7, 10, 23, 100])
def test_channels_first_blocks_hold_the_same_samples(chunk: int) -> None:
    stream = np.arange(235 * 2, dtype=np.float64).reshape(235, 2)
    filler = BlockFiller(10, 2, channels_first=True)
    blocks = [filler.push(stream[i:i + chunk]) for i in range(0, len(stream), chunk)]
    assert all(b.shape[1:] == (2, 10) for b in blocks)
    assert np.array_equal(np.concatenate(blocks),
                          stream[:230].reshape(23, 10, 2).transpose(0, 2, 1))
    assert np.array_equal(filler.drain(), stream[230:].T)
    assert filler.drain().shape == (2, 0)


def test_a_channels_first_block_is_not_overwritten_by_the_next_chunk() -> None:
    filler = BlockFiller(4, 1, channels_first=True)
    filler.push(np.arange(2.0)[:, None])
    first = filler.push(np.arange(2.0, 6.0)[:, None])      # completes one block exactly
    filler.push(np.full((3, 1), -1.0))
    assert first[:, 0].tolist() == [[0, 1, 2, 3]]
