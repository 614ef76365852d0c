"""Beat labels: normal ("N") or ventricular ("V"); "Q" for a window that cannot be judged.

A ventricular beat starts outside the conduction system, so its QRS is wide and its shape
differs from the patient's own normal beats; it usually also comes early. The labeller keeps a
running template of the beats it called normal and judges each new beat against it, which
adapts to the patient (bundle branch block, lead placement) instead of using fixed shapes. The
comparison is made at the best alignment within `Conf.align_s`: the R peak is a fiducial that
moves from R to S wave and back where both are as large.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from diagnosis.ecg.medians import all_finite, median, nanmedian

BEFORE_S = 0.10
"""Template window before the R peak: covers the Q wave without reaching the P wave."""
AFTER_S = 0.15
"""Template window after the R peak: covers a wide ventricular QRS."""
TEMPLATE_WEIGHT = 0.125
MIN_WEIGHT = 1e-3
"""The least say a lead has (`lead_weights`): never none, so its shape can still be learnt."""
FLAT_MV = 0.01
"""A lead whose beat window spans less than this carries no ECG (as `QualityConf.flat_mv`)."""
NOISE_FLOOR_MV = 1e-3
"""Noise is taken as at least this (1 uV, below any ECG front end's resolution)."""


@dataclass(frozen=True)
class BeatFeatures:
    """What the label is decided from; NaN where undefined (no template yet, first beat)."""

    width_s: float
    correlation: float
    width_ratio: float
    prematurity: float
    """Preceding RR over the recent median RR; < 1 is early."""


def qrs_width_s(segment: np.ndarray, fs: float, fraction: float = 0.25,
                gap_s: float = 0.02) -> float:
    """Duration of the run of samples around the steepest one where the multi-lead slope
    exceeds `fraction` of its peak, bridging dips of up to `gap_s`, in seconds.

    Within a QRS the slope dips only briefly, at each wave's apex; a noise spike or a T wave
    elsewhere in the window is a separate run and does not widen the QRS (first-to-last
    crossing did: 0.2 s "wide" beats in the noisy atrial fibrillation of CPSC 2021).
    """
    segment = np.asarray(segment, dtype=np.float64)
    if len(segment) < 3 or not segment.size:
        return float("nan")
    segment = segment.reshape(len(segment), -1)
    slope = np.sqrt(((segment[1:] - segment[:-1]) ** 2).sum(axis=1))
    steepest = int(slope.argmax())
    peak = slope[steepest]
    if not peak > 0:
        return float("nan")
    above = (slope >= fraction * peak).nonzero()[0]
    ends = ((above[1:] - above[:-1]) > max(int(round(gap_s * fs)), 1)).nonzero()[0]
    run = int(above.searchsorted(steepest))
    first = above[ends[ends < run][-1] + 1] if (ends < run).any() else above[0]
    last = above[ends[ends >= run][0]] if (ends >= run).any() else above[-1]
    return float(last - first + 1) / fs


def lead_weights(windows: np.ndarray) -> np.ndarray:
    """(n_beats, n_leads) say of each lead in comparing the shapes of beat windows (n_beats,
    length, n_leads) across leads: 1 for a lead whose QRS stands above its noise at least half
    as well as the median lead's, the square of that fraction below it. A lead under muscle
    tremor otherwise made beats look wide and unlike the template: CPSC 2021 101_6 with 0.3 mV
    of tremor on one lead had ~50 false V and 3-5 VT alarms. Noise: the median |second
    difference|, which a QRS, a fraction of the window, barely moves."""
    windows = np.asarray(windows, dtype=np.float64)
    n, length, leads = windows.shape
    if leads < 2 or length < 3:
        return np.ones((n, leads))
    noise = median(np.abs(windows[:, 2:] - 2 * windows[:, 1:-1] + windows[:, :-2]), axis=1)
    size = np.maximum.reduce(windows, axis=1) - np.minimum.reduce(windows, axis=1)
    # A lead with no ECG (flat, off: a filter's decaying residue is smooth, "noiseless")
    # tells nothing and is left out of the median.
    snr = np.where(size > FLAT_MV, size / np.maximum(noise, NOISE_FLOOR_MV), np.nan)
    with np.errstate(invalid="ignore"):
        ratio = 2.0 * snr / nanmedian(snr, axis=1)[:, None]
    return np.where(np.isfinite(ratio), np.clip(ratio * ratio, MIN_WEIGHT, 1.0), 1.0)


def detrend(window: np.ndarray) -> np.ndarray:
    """Subtract each lead's straight line between the window's ends: motion artefacts tilt
    whole windows, which would otherwise pass for a changed QRS shape. Windows are
    (samples, leads), or stacked (n, samples, leads)."""
    if window.shape[-2] < 2:
        return window
    first, last = window[..., :1, :], window[..., -1:, :]
    return window - first - _ramp(window.shape[-2]) * (last - first)


def as_rows(window: np.ndarray) -> np.ndarray:
    """A window as float (samples, leads); a single lead's 1-D samples become one column."""
    window = np.asarray(window, dtype=np.float64)
    return window[:, None] if window.ndim == 1 else window


def stepped_windows(x: np.ndarray, length: int, step: int, axis: int = 0,
                    start: int = 0) -> np.ndarray:
    """Windows of `length` along `axis`, starting at `start` and every `step` after it,
    stacked first: a read-only view, `sliding_window_view(x, length, axis)[start::step]` with
    the window axis in place of `axis`, for a twentieth of its call cost (a live stream takes
    some for every beat)."""
    x = np.ascontiguousarray(x)
    stride = x.strides[axis]
    n = max((x.shape[axis] - length - start) // step + 1, 0)
    shape = (n,) + x.shape[:axis] + (length,) + x.shape[axis + 1:]
    view = np.ndarray(shape, x.dtype, x, start * stride, (step * stride,) + x.strides)
    view.flags.writeable = False
    return view


@lru_cache(maxsize=8)
def _ramp(length: int) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, length)[:, None]
    ramp.flags.writeable = False
    return ramp


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped windows, all leads together; NaN if flat."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a.ravel() - np.add.reduce(a, axis=None) / a.size   # the means, without np.mean's
    b = b.ravel() - np.add.reduce(b, axis=None) / b.size   # overhead
    norm = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / norm) if norm > 0 else float("nan")


def correlations(windows: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Pearson correlations (n, m) of each window (n, samples, leads) with each template
    (m, samples, leads), all leads together; NaN where a side is flat."""
    a = windows.reshape(len(windows), -1)
    b = templates.reshape(len(templates), -1)
    a = a - np.add.reduce(a, axis=1)[:, None] / a.shape[1]
    b = b - np.add.reduce(b, axis=1)[:, None] / b.shape[1]
    norms = np.sqrt(np.einsum("ij,ij->i", a, a)[:, None] * np.einsum("ij,ij->i", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a @ b.T) / norms


def best_correlation(windows: np.ndarray, templates: np.ndarray) -> float:
    """The highest of `correlations`; NaN if every pair has a flat side."""
    values = correlations(windows, templates)
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size else float("nan")


class BeatLabeler:
    """Labels beats in order from their clean-signal windows; keeps the normal-beat template."""

    @dataclass(frozen=True)
    class Conf:
        min_correlation: float = 0.80
        """Below this a beat's shape differs from the template."""
        wide_ratio: float = 1.3
        """QRS this much wider than the template's is wide."""
        wide_s: float = 0.10
        early: float = 0.85
        """Preceding RR below this fraction of the median is premature."""
        early_wide_ratio: float = 1.1
        """A premature beat of another shape is ventricular only with a QRS this much wider
        than the template's (over a sample at 200 Hz): premature narrow beats of another shape
        are supraventricular, or noise in the AF of CPSC 2021 (a fifth of its false V)."""
        same_as_ventricular: float = 0.95
        """A beat correlating this well with the ventricular beat just before it is ventricular
        too: in a sustained run the median RR shortens and the beats stop looking premature."""
        align_s: float = 0.03
        """Shapes are compared at the best alignment within this much: where R and S are about
        as large, the R peak lands on one or the other from beat to beat (CPSC 2021 data_8_3:
        the same complex 20 ms apart correlates about 0)."""

        def __post_init__(self) -> None:
            if not (0 < self.min_correlation < 1 and self.wide_ratio > 1 and self.align_s >= 0
                    and self.wide_s > 0 and 0 < self.early < 1 and self.early_wide_ratio >= 1
                    and 0 < self.same_as_ventricular <= 1):
                raise ValueError("invalid BeatLabeler.Conf")

    def __init__(self, fs: float, conf: "BeatLabeler.Conf | None" = None) -> None:
        self.fs = float(fs)
        self.conf = conf or BeatLabeler.Conf()
        self.margin = int(round(self.conf.align_s * fs))
        self.before = int(round(BEFORE_S * fs)) + self.margin
        """Samples before the R peak in a label window: the template's and the margin."""
        self.after = int(round(AFTER_S * fs)) + self.margin
        self._template: np.ndarray | None = None
        self._template_width: float | None = None
        self._compared: np.ndarray | None = None
        """The template as this beat is compared with it: each lead at the beat's say."""
        self._compared_width: float | None = None
        """QRS width of the template, None until asked for after the template changed."""
        self._last_ventricular: np.ndarray | None = None

    @property
    def window_length(self) -> int:
        """Samples in a label window: the template's with `margin` on either side."""
        return self.before + self.after

    def features(self, window: np.ndarray, rr_s: float, median_rr_s: float) -> BeatFeatures:
        return self._features(*self._aligned(as_rows(window)), rr_s, median_rr_s)

    def _aligned(self, window: np.ndarray) -> tuple[np.ndarray, float | None]:
        """`_centred`, or the part best aligned with the template when that correlates
        better with it and the centred part differs."""
        centred, corr = self._centred(window)
        if corr is None or corr >= self.conf.min_correlation:
            return centred, corr
        best = self._best_aligned(window)
        return best if best is not None and best[1] > corr else (centred, corr)

    def _centred(self, window: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The detrended template-length part of a label window around its R peak and its
        correlation with the template; None while there is no template of the window's shape
        (or for a window cut by the record's start)."""
        margin = self.margin
        centred = detrend(window[margin:len(window) - margin])
        template = self._compared
        if (template is None or len(window) != self.window_length
                or centred.shape != template.shape):
            return centred, None
        return centred, correlation(centred, template)

    def _best_aligned(self, window: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The part of a whole label window that correlates best with the template, and that
        correlation; None without a margin or if every part is flat."""
        if not self.margin:
            return None
        shifted = self._shifts(window)
        values = correlations(shifted, self._compared.T[None])[:, 0]
        if not np.isfinite(values).any():
            return None
        best = int(np.where(np.isnan(values), -np.inf, values).argmax())  # np.nanargmax's
        return shifted[best].T, float(values[best])

    def _shifts(self, window: np.ndarray) -> np.ndarray:
        """The detrended template-length parts of a whole label window, leads first (shifts,
        leads, samples): the centred one among them, in steps of a quarter of the margin (a
        QRS correlates ~0.97 with itself an eighth of the margin off). Leads first because
        numpy broadcasts slowly over a 12-lead inner axis; the values are `detrend`'s."""
        margin = self.margin
        step = max(margin // 4, 1)
        length = len(window) - 2 * margin
        parts = stepped_windows(window.T, length, step, axis=1, start=margin % step)
        first, last = parts[..., :1], parts[..., -1:]
        return parts - first - _ramp(length)[:, 0] * (last - first)

    def _features(self, window: np.ndarray, corr: float | None, rr_s: float,
                  median_rr_s: float) -> BeatFeatures:
        width = qrs_width_s(window, self.fs)
        if corr is None:
            corr, ratio = float("nan"), float("nan")
        else:
            template_width = self._width_of_template()
            ratio = width / template_width if template_width > 0 else float("nan")
        prematurity = rr_s / median_rr_s if median_rr_s > 0 else float("nan")
        return BeatFeatures(width, corr, ratio, prematurity)

    def label(self, window: np.ndarray, rr_s: float, median_rr_s: float) -> str:
        """Label one beat from its window (`before` samples before to `after` after R, all
        leads).

        "Q" (EC57: unclassifiable) when the window holds a missing or infinite sample: such a
        window can neither be judged nor be learnt, since one NaN in the running template
        would make every later correlation NaN and silence the labeller for good.

        A beat that looks ventricular is judged again with each lead at its say
        (`lead_weights`), beat and template alike, when some lead is much noisier than the
        others; the template learns the beat as it is.
        """
        window = as_rows(window)
        if not all_finite(window) and not np.isfinite(window).all():    # the first is cheap
            return "Q"
        self._compared, self._compared_width = self._template, self._template_width
        shape, corr = self._aligned(window)
        label = self._judge(shape, corr, window, rr_s, median_rr_s)
        weights = None
        if label == "V":
            say = lead_weights(window[None])[0]
            if (say < 1).any():
                weights, window = say, window * say
                self._compared, self._compared_width = self._template * say, None
                shape, corr = self._aligned(window)
                label = self._judge(shape, corr, window, rr_s, median_rr_s)
        if label == "N" and len(window) == self.window_length:
            self._learn(shape if weights is None else shape / weights)
        # Only a run continues: the beat right after a V is compared with it.
        self._last_ventricular = shape if label == "V" else None
        return label

    def _judge(self, shape: np.ndarray, corr: float | None, window: np.ndarray, rr_s: float,
               median_rr_s: float) -> str:
        c = self.conf
        if corr is not None and corr >= c.min_correlation:
            return "N"      # shaped like the template: normal, whatever its width and timing
        f = self._features(shape, corr, rr_s, median_rr_s)
        differs = f.correlation < c.min_correlation
        wide = f.width_ratio > c.wide_ratio and f.width_s >= c.wide_s
        early = f.prematurity < c.early and f.width_ratio > c.early_wide_ratio
        return "V" if differs and (wide or early or self._like_last_ventricular(window)) \
            else "N"

    def _like_last_ventricular(self, window: np.ndarray) -> bool:
        """At the best alignment: a run's beats are placed on their own R or S as well."""
        last = self._last_ventricular
        if last is None or len(window) != self.window_length or last.shape[1] != window.shape[1]:
            return False
        values = correlations(self._shifts(window), last.T[None])
        return bool(np.nanmax(values, initial=-1.0) >= self.conf.same_as_ventricular)

    def _learn(self, window: np.ndarray) -> None:
        if self._template is None or self._template.shape != window.shape:
            self._template = window.copy()
        else:
            self._template += TEMPLATE_WEIGHT * (window - self._template)
        self._template_width = None

    def _width_of_template(self) -> float:
        """Of the template as compared; measured when a beat that differs from it needs it,
        not at every update (nor, unweighted, at every beat)."""
        if self._compared_width is None:
            self._compared_width = qrs_width_s(self._compared, self.fs)
            if self._compared is self._template:
                self._template_width = self._compared_width
        return self._compared_width
