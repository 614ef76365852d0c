"""Rendered views for browsers: modality LUT, window centre/width, 8-bit PNG or JPEG.

Plain functions over numpy arrays. Pixel values are only transformed for display here; the
stored instance is never touched, and a rendered image is labelled as a display copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import imagecodecs
import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut


@dataclass(frozen=True)
class Window:
    center: float
    width: float


def default_window(ds: pydicom.Dataset, values: np.ndarray) -> Window:
    """The window the modality stored, else the full range of the values."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        first = (lambda v: float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v))
        if first(width) > 0:
            return Window(first(center), first(width))
    low, high = float(np.min(values)), float(np.max(values))
    return Window((low + high) / 2, max(high - low, 1.0))


def to_8bit(values: np.ndarray, window: Window, invert: bool = False) -> np.ndarray:
    """The linear VOI function of PS3.3 C.11.2.1.2, vectorised, to 0..255."""
    low = window.center - 0.5 - (window.width - 1) / 2
    scaled = (values.astype(np.float64) - low) / max(window.width - 1, 1.0)
    out = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """Shrink by an integer factor with block means so the longer side fits `size`."""
    factor = max(1, int(np.ceil(max(image.shape[:2]) / size)))
    if factor == 1:
        return image
    rows, cols = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor, -1)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8).squeeze()


def render(ds: pydicom.Dataset, frame: int = 1, window: Window | None = None,
           size: int | None = None, media: str = "image/png") -> bytes:
    """One frame as an 8-bit image in `media` (image/png or image/jpeg)."""
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[frame - 1]
    colour = int(ds.get("SamplesPerPixel", 1)) > 1
    if colour:
        image = pixels.astype(np.uint8) if pixels.dtype != np.uint8 else pixels
    else:
        values = apply_modality_lut(pixels, ds)
        chosen = window or default_window(ds, values)
        image = to_8bit(values, chosen, invert=ds.get("PhotometricInterpretation") == "MONOCHROME1")
    if size is not None:
        image = thumbnail(image, size)
    if media == "image/jpeg":
        return imagecodecs.jpeg8_encode(image, level=90)
    return imagecodecs.png_encode(image)
