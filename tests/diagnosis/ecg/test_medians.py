"""The cheap medians give numpy's results: `median` bit for bit (signed zeros, NaN, infinities,
integers, any axis), `nanmedian` as np.nanmedian."""

from __future__ import annotations

import numpy as np
import pytest

from diagnosis.ecg.medians import median, nanmedian


def test_median_is_numpys_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    for _ in range(3000):
        shape = tuple(rng.integers(1, 9, size=rng.integers(1, 4)))
        x = rng.standard_normal(shape)
        kind = rng.integers(0, 4)
        if kind == 1:
            x[rng.random(shape) < 0.2] = np.nan
        elif kind == 2:
            x[rng.random(shape) < 0.3] = rng.choice([np.inf, -np.inf, -0.0, 0.0])
        elif kind == 3:
            x = rng.integers(-5, 5, size=shape)
        axis = int(rng.integers(-x.ndim, x.ndim))
        with np.errstate(invalid="ignore"):
            expected = np.median(x, axis=axis)
        got = median(x, axis=axis)
        assert type(got) is type(expected) and np.shape(got) == np.shape(expected)
        assert np.asarray(got).tobytes() == np.asarray(expected).tobytes(), (x, axis)


def test_nanmedian_matches_numpy() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 7, 9))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[0, :, 0] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmedian(x, axis=1)
    assert np.allclose(nanmedian(x, axis=1), expected, equal_nan=True)
