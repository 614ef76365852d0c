"""Buffers for streams of (samples, channels) chunks, whose cost per sample stays constant
however small the chunks are."""

from __future__ import annotations

import numpy as np


class SampleBuffer:
    """The most recent samples of a stream (at least `keep`), addressed by absolute index.

    Appends copy into spare capacity and compact only when it runs out, so the cost per sample
    stays constant however small the chunks are.
    """

    def __init__(self, n_channels: int, keep: int) -> None:
        self.keep = max(int(keep), 1)
        self._data = np.zeros((max(4 * self.keep, 64), n_channels))
        self._length = 0
        self.start = 0
        """Absolute index of the oldest retained sample."""

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample."""
        return self.start + self._length

    def append(self, chunk: np.ndarray) -> None:
        n = len(chunk)
        if chunk.shape[1:] != self._data.shape[1:]:     # 1-D, or a mismatch reshape refuses
            chunk = chunk.reshape(n, self._data.shape[1])
        if self._length + n > len(self._data):
            drop = max(self._length - self.keep, 0)
            kept = self._data[drop:self._length]
            data = np.empty((max(len(self._data), 2 * (len(kept) + n)), self._data.shape[1]))
            data[:len(kept)] = kept
            self._data, self._length = data, len(kept)
            self.start += drop
        self._data[self._length:self._length + n] = chunk
        self._length += n

    def window(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) clipped to what is retained; a view, do not modify."""
        lo = min(max(start - self.start, 0), self._length)
        hi = min(max(stop - self.start, lo), self._length)
        return self._data[lo:hi]


class BlockFiller:
    """Cuts a stream into consecutive blocks of `size` samples as they complete.

    The block being filled is kept in place: a chunk costs a copy of itself, not of what came
    before it. `channels_first` keeps and hands out blocks as (channels, size), the layout
    per-channel work along the last axis wants, without a gather and transpose per block.
    """

    def __init__(self, size: int, n_channels: int, channels_first: bool = False) -> None:
        self.size = size
        self.channels_first = channels_first
        self._pending = np.empty((n_channels, size) if channels_first else (size, n_channels))
        self._held = 0
        self._none = np.empty((0,) + self._pending.shape)
        """What a push that completes no block returns (most do): one array, read only."""
        self._none.flags.writeable = False

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """The blocks (n, size, n_channels), or (n, n_channels, size) channels first, that
        `chunk` (samples, n_channels) completes; n is 0 while the current block is filling."""
        first = self.size - self._held
        if len(chunk) < first:
            self._keep(chunk)
            return self._none
        used = first + (len(chunk) - first) // self.size * self.size
        if not self.channels_first:
            blocks = np.concatenate([self._pending[:self._held], chunk[:used]])
            blocks = blocks.reshape((-1,) + self._pending.shape)
        elif used == first:     # one block: the held samples and this chunk's first ones
            self._pending[:, self._held:] = chunk[:first].T
            blocks = self._pending[None].copy()
        else:
            blocks = np.concatenate([self._pending[:, :self._held].T, chunk[:used]])
            blocks = np.ascontiguousarray(
                blocks.reshape(-1, self.size, len(self._pending)).transpose(0, 2, 1))
        self._held = 0
        self._keep(chunk[used:])
        return blocks

    def _keep(self, samples: np.ndarray) -> None:
        end = self._held + len(samples)
        if self.channels_first:
            self._pending[:, self._held:end] = samples.T
        else:
            self._pending[self._held:end] = samples
        self._held = end

    def drain(self) -> np.ndarray:
        """The incomplete block's samples, (held, n_channels) or channels first (n_channels,
        held): a view, valid until the next push; the filler starts empty again."""
        held = self._pending[:, :self._held] if self.channels_first \
            else self._pending[:self._held]
        self._held = 0
        return held
