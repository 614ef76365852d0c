"""Beat labels: normal ("N") or ventricular ("V"); "Q" for a window that cannot be judged.

A ventricular beat starts outside the conduction system, so its QRS is wide and its shape
differs from the patient's own normal beats; it usually also comes early. The labeller keeps a
running template of the beats it called normal and judges each new beat against it, which
adapts to the patient (bundle branch block, lead placement) instead of using fixed shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BEFORE_S = 0.10
"""Template window before the R peak: covers the Q wave without reaching the P wave."""
AFTER_S = 0.15
"""Template window after the R peak: covers a wide ventricular QRS."""
TEMPLATE_WEIGHT = 0.125


@dataclass(frozen=True)
class BeatFeatures:
    """What the label is decided from; NaN where undefined (no template yet, first beat)."""

    width_s: float
    correlation: float
    width_ratio: float
    prematurity: float
    """Preceding RR over the recent median RR; < 1 is early."""


def qrs_width_s(segment: np.ndarray, fs: float, fraction: float = 0.25) -> float:
    """Duration over which the multi-lead slope exceeds `fraction` of its peak, in seconds."""
    segment = np.asarray(segment, dtype=np.float64)
    if len(segment) < 3 or not segment.size:
        return float("nan")
    segment = segment.reshape(len(segment), -1)
    slope = np.sqrt(((segment[1:] - segment[:-1]) ** 2).sum(axis=1))
    peak = slope.max()
    if not peak > 0:
        return float("nan")
    above = np.flatnonzero(slope >= fraction * peak)
    return float(above[-1] - above[0] + 1) / fs


def detrend(window: np.ndarray) -> np.ndarray:
    """Subtract each lead's straight line between the window's ends: motion artefacts tilt
    whole windows, which would otherwise pass for a changed QRS shape. Windows are
    (samples, leads), or stacked (n, samples, leads)."""
    if window.shape[-2] < 2:
        return window
    first, last = window[..., :1, :], window[..., -1:, :]
    return window - first - _ramp(window.shape[-2]) * (last - first)


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


def best_correlation(windows: np.ndarray, templates: np.ndarray) -> float:
    """The highest Pearson correlation of any window (n, samples, leads) with any template
    (m, samples, leads), all leads together; NaN if every pair has a flat side."""
    a = windows.reshape(len(windows), -1)
    b = templates.reshape(len(templates), -1)
    a = a - np.add.reduce(a, axis=1)[:, None] / a.shape[1]
    b = b - np.add.reduce(b, axis=1)[:, None] / b.shape[1]
    norms = np.sqrt(np.einsum("ij,ij->i", a, a)[:, None] * np.einsum("ij,ij->i", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (a @ b.T) / norms
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
        """A beat correlating this well with the last ventricular beat is ventricular too: in
        a sustained run the median RR shortens and the beats stop looking premature."""

        def __post_init__(self) -> None:
            if not (0 < self.min_correlation < 1 and self.wide_ratio > 1
                    and self.wide_s > 0 and 0 < self.early < 1 and self.early_wide_ratio >= 1
                    and 0 < self.same_as_ventricular <= 1):
                raise ValueError("invalid BeatLabeler.Conf")

    def __init__(self, fs: float, conf: "BeatLabeler.Conf | None" = None) -> None:
        self.fs = float(fs)
        self.conf = conf or BeatLabeler.Conf()
        self.before = int(round(BEFORE_S * fs))
        self.after = int(round(AFTER_S * fs))
        self._template: np.ndarray | None = None
        self._template_width: float | None = None
        """QRS width of the template, None until asked for after the template changed."""
        self._last_ventricular: np.ndarray | None = None

    @property
    def window_length(self) -> int:
        return self.before + self.after

    def features(self, window: np.ndarray, rr_s: float, median_rr_s: float) -> BeatFeatures:
        return self._features(window, self._correlation(window), rr_s, median_rr_s)

    def _correlation(self, window: np.ndarray) -> float | None:
        """With the template; None while there is none of the window's shape."""
        if self._template is None or window.shape != self._template.shape:
            return None
        return correlation(window, self._template)

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
        """Label one beat from its window (BEFORE_S before to AFTER_S after R, all leads).

        "Q" (EC57: unclassifiable) when the window holds a missing or infinite sample: such a
        window can neither be judged nor be learnt, since one NaN in the running template
        would make every later correlation NaN and silence the labeller for good.
        """
        window = np.asarray(window, dtype=np.float64)
        if window.ndim == 1:
            window = window[:, None]
        if not np.isfinite(window).all():
            return "Q"
        window = detrend(window)
        c = self.conf
        corr = self._correlation(window)
        if corr is not None and corr >= c.min_correlation:
            label = "N"     # shaped like the template: normal, whatever its width and timing
        else:
            f = self._features(window, corr, rr_s, median_rr_s)
            differs = f.correlation < c.min_correlation
            wide = f.width_ratio > c.wide_ratio and f.width_s >= c.wide_s
            early = (f.prematurity < c.early and f.correlation < 0.5
                     and f.width_ratio > c.early_wide_ratio)
            label = "V" if differs and (wide or early or self._like_last_ventricular(window)) \
                else "N"
        if label == "N" and len(window) == self.window_length:
            self._learn(window)
        if label == "V":
            self._last_ventricular = window
        return label

    def _like_last_ventricular(self, window: np.ndarray) -> bool:
        last = self._last_ventricular
        return (last is not None and last.shape == window.shape
                and correlation(window, last) >= self.conf.same_as_ventricular)

    def _learn(self, window: np.ndarray) -> None:
        if self._template is None or self._template.shape != window.shape:
            self._template = window.copy()
        else:
            self._template += TEMPLATE_WEIGHT * (window - self._template)
        self._template_width = None

    def _width_of_template(self) -> float:
        """Measured when a beat that differs from the template needs it, not at every update."""
        if self._template_width is None:
            self._template_width = qrs_width_s(self._template, self.fs)
        return self._template_width
