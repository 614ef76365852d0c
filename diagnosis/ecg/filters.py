"""ECG filters that run identically in one go or chunk by chunk.

Every filter is a cascade of IIR second-order sections whose state is carried between chunks
(`scipy.signal.sosfilt(..., zi=)`, or its compiled loop directly), so a stream filtered in pieces gives bit-for-bit the samples
of the whole record filtered at once. The state starts at the steady state of the first sample,
so a DC offset (common on ambulance front ends) does not ring through the first seconds.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from diagnosis.ecg.medians import all_finite

BASELINE_CUTOFF_HZ = 0.5
"""Below the slowest heart rate's fundamental (30 bpm) yet above respiration-driven wander."""
QRS_BAND_HZ = (10.0, 25.0)
"""Where QRS energy dominates P and T waves, muscle noise and mains."""
NOTCH_QUALITY = 30.0


def baseline_sos(fs: float, cutoff_hz: float = BASELINE_CUTOFF_HZ) -> np.ndarray:
    """First-order high-pass: its phase shift at QRS frequencies is < 3 degrees, so R peaks stay put."""
    return sps.butter(1, cutoff_hz, "highpass", fs=fs, output="sos")


def notch_sos(fs: float, mains_hz: float | None) -> np.ndarray:
    """Powerline notch; an empty cascade when there is no mains setting or it is above Nyquist."""
    if mains_hz is None or not 0 < mains_hz < fs / 2:
        return np.empty((0, 6))
    b, a = sps.iirnotch(mains_hz, NOTCH_QUALITY, fs=fs)
    return sps.tf2sos(b, a)


def qrs_band_sos(fs: float, band_hz: tuple[float, float] = QRS_BAND_HZ) -> np.ndarray:
    """Band-pass for QRS energy; the upper edge is clipped below Nyquist for low-rate Holters."""
    high = min(band_hz[1], 0.45 * fs)
    return sps.butter(2, [band_hz[0], high], "bandpass", fs=fs, output="sos")


def clean_sos(fs: float, mains_hz: float | None = 50.0) -> np.ndarray:
    """Baseline removal and mains notch as one cascade: the signal R peaks are located on."""
    return np.vstack([baseline_sos(fs), notch_sos(fs, mains_hz)])


def _compiled_sosfilt():
    """scipy's compiled sosfilt loop, `_sosfilt(sos, x, zi)` filtering C-ordered
    (channels, samples) in place with state (channels, sections, 2), or None.

    The public `sosfilt` wraps the same loop in validation and axis moves that cost twice the
    filtering of a 0.25 s, 12-lead chunk. The private loop is used only if it is there and gives
    the public function's result bit for bit on a probe; otherwise the public function is used.
    """
    try:
        from scipy.signal._sosfilt import _sosfilt
    except ImportError:
        return None
    rng = np.random.default_rng(5)
    sos = sps.butter(2, [10.0, 25.0], "bandpass", fs=360.0, output="sos")
    x = rng.standard_normal((3, 40))
    zi = rng.standard_normal((3, len(sos), 2))
    try:
        expected, expected_zi = sps.sosfilt(sos, x, axis=-1, zi=zi.transpose(1, 0, 2))
        y, z = x.copy(), zi.copy()
        _sosfilt(sos, y, z)
    except Exception:  # noqa: BLE001 - any change of the private signature means "do not use"
        return None
    if np.array_equal(y, expected) and np.array_equal(z, expected_zi.transpose(1, 0, 2)):
        return _sosfilt
    return None


_SOSFILT = _compiled_sosfilt()


class StreamingFilter:
    """An SOS cascade over (n_samples, n_channels) chunks that keeps its state between chunks."""

    def __init__(self, sos: np.ndarray, n_channels: int) -> None:
        self.sos = np.ascontiguousarray(np.atleast_2d(np.asarray(sos, dtype=np.float64)))
        self.n_channels = n_channels
        self._state: np.ndarray | None = None
        """Per channel and section, the two delay values: (channels, sections, 2), C order."""
        self._hold = np.zeros(n_channels)
        """Each channel's last finite input, carried over missing samples (0 before the first)."""

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Filter the next chunk.

        Missing samples (NaN, or +-inf as some front ends mark saturation) repeat the channel's
        last finite value, carried across chunks: one gap cannot poison the filter state, and a
        signal with a DC offset does not step to 0 mV and back, which would ring through the
        filters like a QRS complex.
        """
        chunk = self._fill_gaps(np.asarray(chunk, dtype=np.float64).reshape(-1, self.n_channels))
        if not len(self.sos) or not len(chunk):
            return chunk.copy()
        return self.filter_channels(np.array(chunk.T, order="C")).T

    def filter_channels(self, samples: np.ndarray) -> np.ndarray:
        """Filter the next C-ordered (channels, n) samples in place and return them; they must
        have no gap (all finite), as another filter's output has none.

        Feeding one filter's output to the next this way saves the gap check and two transposes
        that `process` spends on every chunk. One filter is fed by one of the two, not both:
        this one carries no held value over gaps.
        """
        if not len(self.sos) or not samples.shape[1]:
            return samples
        if self._state is None:
            steady = sps.sosfilt_zi(self.sos)
            self._state = np.ascontiguousarray(steady[None, :, :] * samples[:, 0, None, None])
        if _SOSFILT is not None:
            _SOSFILT(self.sos, samples, self._state)
            return samples
        samples, state = sps.sosfilt(self.sos, samples, axis=-1, zi=self._state.transpose(1, 0, 2))
        self._state = np.ascontiguousarray(state.transpose(1, 0, 2))
        return samples

    def _fill_gaps(self, chunk: np.ndarray) -> np.ndarray:
        if not len(chunk):
            return chunk
        if not all_finite(chunk):     # a gap (the common case is none)
            bad = ~np.isfinite(chunk)
            # Index of the latest finite sample at or before each position (-1: none in this chunk,
            # take the held value), then one gather: no per-sample loop.
            latest = np.where(bad, -1, np.arange(len(chunk))[:, None])
            np.maximum.accumulate(latest, axis=0, out=latest)
            source = np.vstack([self._hold[None, :], np.where(bad, 0.0, chunk)])
            chunk = np.take_along_axis(source, latest + 1, axis=0)
        self._hold = chunk[-1].copy()
        return chunk


def apply_sos(sos: np.ndarray, signal: np.ndarray) -> np.ndarray:
    """Batch form of `StreamingFilter`: the same samples a stream would produce."""
    signal = np.asarray(signal, dtype=np.float64)
    two_d = signal.reshape(len(signal), -1)
    out = StreamingFilter(sos, two_d.shape[1]).process(two_d)
    return out.reshape(signal.shape)


def remove_baseline(signal: np.ndarray, fs: float,
                    cutoff_hz: float = BASELINE_CUTOFF_HZ) -> np.ndarray:
    """Baseline wander removed, in mV, same shape as `signal`."""
    return apply_sos(baseline_sos(fs, cutoff_hz), signal)


def remove_powerline(signal: np.ndarray, fs: float, mains_hz: float = 50.0) -> np.ndarray:
    """Mains interference (50 or 60 Hz) notched out, in mV, same shape as `signal`."""
    return apply_sos(notch_sos(fs, mains_hz), signal)


def qrs_band(signal: np.ndarray, fs: float,
             band_hz: tuple[float, float] = QRS_BAND_HZ) -> np.ndarray:
    """The QRS-energy band of `signal`, in mV, same shape."""
    return apply_sos(qrs_band_sos(fs, band_hz), signal)


def group_delay_s(sos: np.ndarray, fs: float, frequency_hz: float) -> float:
    """Delay a causal cascade imposes at one frequency, used to look back for the R peak."""
    if not len(sos):
        return 0.0
    b, a = sps.sos2tf(sos)
    _, delay = sps.group_delay((b, a), w=[frequency_hz], fs=fs)
    return float(delay[0]) / fs
