"""Signal quality per lead over fixed blocks of samples: lead off, saturation, noise, wander.

Blocks are `block_s` long and counted from the stream's first sample, so a block's verdict
depends only on its own samples, however the stream was chunked. Per block and lead:

* lead off: most samples missing, or the lead is flat (peak-to-peak under `flat_mv`, as a
  disconnected electrode or a lead held at the amplifier's rail reads). SQI 0.
* saturation: samples in runs of at least `rail_run_s` of one repeated value at the block's
  maximum or minimum, well away from its median or held for a quarter of the block (peaks
  cut off by the input range, or a stretch at the rail); a flat baseline that happens to be a
  block's lowest value, under all-positive complexes, does not count.
* high-frequency noise: a robust standard deviation of the second difference (its median,
  so QRS complexes, a tenth of the block, do not count); muscle and electrode noise.
* baseline wander: the peak-to-peak of the block's medians over `wander_step_s` steps.

Each is mapped to a score in 0..1 and the SQI is their product. The flags say which ones
fired (a score below one half, any saturation over `saturated_fraction`, lead off).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from diagnosis.ecg import medians
from diagnosis.ecg.buffers import BlockFiller

LEAD_OFF = 1
SATURATED = 2
NOISE = 4
WANDER = 8
FLAG_NAMES = {LEAD_OFF: "lead_off", SATURATED: "saturated", NOISE: "noise", WANDER: "wander"}


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if int(flags) & bit]


@dataclass(frozen=True)
class QualityConf:
    block_s: float = 1.0
    flat_mv: float = 0.01
    """Peak-to-peak below this over a whole block: no ECG reaches the amplifier."""
    missing_fraction: float = 0.5
    rail_run_s: float = 0.012
    """Shortest run of one repeated value that counts as clipping (at least 3 samples)."""
    saturated_fraction: float = 0.02
    rail_distance: float = 0.3
    """A rail lies at least this share of the block's peak-to-peak away from its median..."""
    rail_held_fraction: float = 0.25
    """...or holds the lead for at least this share of the block (the median is then on it)."""
    """At least this share of a block's samples stuck at its extremes flags saturation."""
    noise_mv: tuple[float, float] = (0.02, 0.08)
    """Noise SD from which the noise score falls from 1, and at which it reaches 0."""
    wander_mv: tuple[float, float] = (0.6, 2.0)
    """Baseline excursion per block from which the wander score falls, and where it is 0."""
    wander_step_s: float = 0.2
    min_block_fraction: float = 0.5
    """A last, partial block shorter than this share of a block is not judged."""

    def __post_init__(self) -> None:
        ok = (self.block_s > 0 and self.flat_mv >= 0 and 0 < self.missing_fraction <= 1
              and self.rail_run_s > 0 and 0 < self.saturated_fraction < 1
              and 0 <= self.noise_mv[0] < self.noise_mv[1]
              and 0 <= self.wander_mv[0] < self.wander_mv[1]
              and 0 < self.wander_step_s <= self.block_s
              and 0 < self.min_block_fraction <= 1)
        if not ok:
            raise ValueError("invalid QualityConf")


@dataclass(frozen=True)
class QualityBlock:
    start: int
    end: int
    sqi: np.ndarray
    """Per lead, 0 (unusable) .. 1 (clean)."""
    flags: np.ndarray
    """Per lead, a bitwise OR of LEAD_OFF, SATURATED, NOISE, WANDER."""


NOISE_SCALE = 1.4826 / np.sqrt(6.0)
"""A second difference's robust SD (1.4826 times its median magnitude) over sqrt(6): the SD of
white noise that gives it."""


def _score(value: np.ndarray, good: float | np.ndarray, bad: float | np.ndarray) -> np.ndarray:
    """1 at `good`, 0 at `bad`, linear between (np.clip's values, without its overhead)."""
    return np.minimum(np.maximum((bad - value) / (bad - good), 0.0), 1.0)


@lru_cache(maxsize=8)
def _noise_and_wander_bounds(conf: QualityConf) -> tuple[np.ndarray, np.ndarray]:
    """The good and bad ends of the noise and the wander score, stacked to score both in one
    go (the same values as scoring each on its own)."""
    good = np.array([conf.noise_mv[0], conf.wander_mv[0]])[:, None, None]
    bad = np.array([conf.noise_mv[1], conf.wander_mv[1]])[:, None, None]
    good.flags.writeable = bad.flags.writeable = False
    return good, bad


def _runs_at_least(mask: np.ndarray, run: int) -> np.ndarray:
    """Along the last axis: True where a sample lies in a run of >= `run` True values."""
    if run <= 1:
        return mask.copy()
    counts = _counts_before(mask)
    full = (counts[..., run:] - counts[..., :-run]) == run   # window [t, t + run) all True
    # A sample is covered if some full window starts in (t - run, t].
    starts = _counts_before(full)
    t = np.arange(mask.shape[-1])
    hi = np.minimum(t + 1, full.shape[-1])
    lo = np.minimum(np.maximum(t - run + 1, 0), full.shape[-1])
    return (starts[..., hi] - starts[..., lo]) > 0


def _counts_before(mask: np.ndarray) -> np.ndarray:
    """Along the last axis, entry k: how many of the first k values are True (0 .. n)."""
    counts = np.zeros(mask.shape[:-1] + (mask.shape[-1] + 1,), dtype=np.int32)
    np.add.accumulate(mask, axis=-1, dtype=np.int32, out=counts[..., 1:])
    return counts


def _saturated_share(x: np.ndarray, at_high: np.ndarray, at_low: np.ndarray, high: np.ndarray,
                     low: np.ndarray, span: np.ndarray, median, run: int,
                     conf: QualityConf) -> np.ndarray:
    """Per row of samples `x` (rows, samples), the share in runs of at least `run` repeated
    values at its maximum or minimum; only an extreme well away from the row's median is a
    rail (a flat baseline that happens to be the lowest value, under all-positive complexes,
    is not), or one that holds the lead for `rail_held_fraction` of it."""
    same = np.zeros(x.shape, dtype=bool)
    same[:, 1:] = x[:, 1:] == x[:, :-1]
    same[:, :-1] |= same[:, 1:]
    at_high &= same
    at_low &= same
    high_count, low_count = at_high.sum(axis=-1), at_low.sum(axis=-1)
    candidates = (high_count >= run) | (low_count >= run)
    if not candidates.any():
        return np.zeros(len(x))
    middle = median(x, axis=-1)
    held = conf.rail_held_fraction * x.shape[1]
    far_high = ((high - middle) >= conf.rail_distance * span) | (high_count >= held)
    far_low = ((middle - low) >= conf.rail_distance * span) | (low_count >= held)
    stuck = _runs_at_least((at_high & far_high[:, None]) | (at_low & far_low[:, None]), run)
    return np.where(candidates, stuck.mean(axis=-1), 0.0)


def assess(blocks: np.ndarray, fs: float, conf: QualityConf = QualityConf()
           ) -> tuple[np.ndarray, np.ndarray]:
    """SQI and flags, each (n_blocks, n_leads), for blocks (n_blocks, block_len, n_leads) mV."""
    return assess_leads_first(np.ascontiguousarray(
        np.asarray(blocks, dtype=np.float64).transpose(0, 2, 1)), fs, conf)


def assess_leads_first(x: np.ndarray, fs: float, conf: QualityConf = QualityConf()
                       ) -> tuple[np.ndarray, np.ndarray]:
    """`assess` of blocks laid out (n_blocks, n_leads, block_len), C-contiguous: the layout it
    works in, along the last axis."""
    n_blocks, n_leads, length = x.shape
    if not n_blocks or not length:
        return np.zeros((n_blocks, n_leads)), np.full((n_blocks, n_leads), LEAD_OFF, np.int64)
    complete = medians.all_finite(x)     # the usual: no gap
    if complete:
        high, low = np.maximum.reduce(x, axis=-1), np.minimum.reduce(x, axis=-1)
        median = medians.median
    else:
        finite = np.isfinite(x)
        missing = 1.0 - finite.mean(axis=-1)
        x = np.where(finite, x, np.nan)
        present = finite.any(axis=-1)
        high = np.where(present, np.max(np.where(finite, x, -np.inf), axis=-1), 0.0)
        low = np.where(present, np.min(np.where(finite, x, np.inf), axis=-1), 0.0)
        median = medians.nanmedian
    span = high - low
    lead_off = span < conf.flat_mv
    if not complete:
        lead_off |= missing > conf.missing_fraction

    # Saturation. Samples in runs at an extreme are among the samples at it: only leads with
    # `run` of those can be saturated, and only they are looked at closer (not a lead that is
    # off: its verdict is LEAD_OFF and SQI 0 whatever else is found).
    run = max(int(round(conf.rail_run_s * fs)), 3)
    at_high, at_low = x == high[..., None], x == low[..., None]
    maybe = ~lead_off & (np.maximum(np.add.reduce(at_high, axis=-1),
                                    np.add.reduce(at_low, axis=-1)) >= run)
    railed = bool(np.logical_or.reduce(maybe, axis=None))
    if railed:
        saturated_share = np.zeros((n_blocks, n_leads))
        saturated_share[maybe] = _saturated_share(x[maybe], at_high[maybe], at_low[maybe],
                                                  high[maybe], low[maybe], span[maybe], median,
                                                  run, conf)

    # High-frequency noise: robust SD of the second difference, scaled to the signal's SD
    # for white noise (a second difference has sqrt(6) times its SD); every other second
    # difference is enough for a median and halves its cost.
    second = x[..., 2::2] - 2 * x[..., 1:-1:2]
    second += x[..., :-2:2]
    np.abs(second, out=second)
    noise = NOISE_SCALE * median(second, axis=-1) if length > 2 \
        else np.zeros((n_blocks, n_leads))
    step = max(int(round(conf.wander_step_s * fs)), 1)
    n_steps = length // step
    if n_steps >= 2:
        levels = median(x[..., :n_steps * step].reshape(n_blocks, n_leads, n_steps, step)
                        [..., ::2], axis=-1)
        if complete:
            wander = np.maximum.reduce(levels, axis=-1) - np.minimum.reduce(levels, axis=-1)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN leads: NaN, then 0
                wander = np.nan_to_num(np.nanmax(levels, axis=-1) - np.nanmin(levels, axis=-1))
    else:
        wander = np.zeros((n_blocks, n_leads))
    if not complete:
        noise = np.nan_to_num(noise, nan=0.0)

    scores = _score(np.array([noise, wander]), *_noise_and_wander_bounds(conf))
    sqi = scores[0] * scores[1]
    poor = scores < 0.5
    problems = NOISE * poor[0] | WANDER * poor[1]
    # Nothing at a rail, nothing missing: those factors are exactly 1, not multiplied in.
    if railed:
        sqi = sqi * _score(saturated_share, 0.0, 10 * conf.saturated_fraction)
        problems = problems | SATURATED * (saturated_share >= conf.saturated_fraction)
    if not complete:
        sqi = sqi * (1 - missing)
    sqi = np.where(lead_off, 0.0, sqi)
    return sqi, np.where(lead_off, LEAD_OFF, problems).astype(np.int64, copy=False)


class QualityMonitor:
    """Judges each complete block of a stream as it fills; `finish` judges a long enough tail.

    The block being filled is kept leads first, the layout `assess` works in, so a completed
    block is judged without being gathered and transposed again.
    """

    def __init__(self, fs: float, n_leads: int, conf: QualityConf | None = None) -> None:
        self.fs = float(fs)
        self.n_leads = n_leads
        self.conf = conf or QualityConf()
        self.block = max(int(round(self.conf.block_s * fs)), 1)
        self._filler = BlockFiller(self.block, n_leads, channels_first=True)
        self._start = 0
        """Absolute index of the first pending sample (always a block boundary)."""

    def push(self, chunk: np.ndarray) -> list[QualityBlock]:
        chunk = np.asarray(chunk, dtype=np.float64).reshape(-1, self.n_leads)
        return self._judge(self._filler.push(chunk))

    def finish(self) -> list[QualityBlock]:
        tail = self._filler.drain()
        if tail.shape[1] < self.conf.min_block_fraction * self.block:
            self._start += tail.shape[1]
            return []
        return self._judge(np.ascontiguousarray(tail)[None])

    def _judge(self, blocks: np.ndarray) -> list[QualityBlock]:
        """Blocks (n, n_leads, block_len), leads first."""
        if not len(blocks):
            return []
        sqi, flags = assess_leads_first(blocks, self.fs, self.conf)
        out = []
        for i in range(len(blocks)):
            start = self._start + i * blocks.shape[2]
            out.append(QualityBlock(start, start + blocks.shape[2], sqi[i], flags[i]))
        self._start += blocks.shape[0] * blocks.shape[2]
        return out
