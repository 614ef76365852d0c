"""Lossless pixel codecs, one registry entry per transfer syntax UID (in pydicom's spirit).

Each `Codec` names its syntax, its media type for WADO-RS frames (PS3.18), the packages it needs
and whether it can encode, decode or both. Registry encoders exist only for lossless syntaxes:
the registry never produces lossy output. Every encoded frame is decoded again and compared
with the source samples before it is returned; a difference raises `LosslessMismatch`, so
altered pixels are never served.

Lossy encoders (JPEG 2000 irreversible, HTJ2K irreversible, JPEG-LS near-lossless) live apart in
`LOSSY_ENCODERS`, each aiming at a compression ratio cap and verified by decoding; only
`transcode.derive_lossy` uses them, behind a per-institution policy (see the end of this file).

Frames are numpy arrays of the dataset's container type (`PixelFormat.dtype`, e.g. int16 for
Bits Allocated 16 with Pixel Representation 1), shaped (rows, columns) or (rows, columns,
samples), holding the pixel values as PS3.5 defines them (sign-extended from Bits Stored).

Signed samples: JPEG-LS and JPEG XL cannot mark samples as signed, so signed frames are coded
as their two's complement container bits (as pydicom and dicom-rs do); decoders sign-extend from
Bits Stored, which reads both that form and the masked Bits Stored form. JPEG 2000 and HTJ2K
code streams carry signed samples natively.

    codec = get_codec("1.2.840.10008.1.2.4.80")
    codec.is_available, codec.missing_dependencies
    data = codec.encode_frame(frame, fmt)      # verified bit-exact, or raises
    frame = codec.decode_frame(data, fmt)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

try:  # guarded as in pydicom's plugins: a missing package makes entries unavailable
    import imagecodecs
except ImportError:  # pragma: no cover - imagecodecs is a project dependency
    imagecodecs = None

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"
JPEG_XL_JPEG_RECOMPRESSION = "1.2.840.10008.1.2.4.111"
JPEG_XL = "1.2.840.10008.1.2.4.112"

JXL_EFFORT = 3  # libjxl effort: 3 is ~10x faster than the default 7 and ~12 % larger on the CT
RPCL_BASE_RESOLUTION = 64  # PS3.5 10.18: the base resolution of .202 is <= 64 pixels wide/high
RPCL, TLM = 2, b"\xff\x55"


class CodecError(Exception):
    """Base of the codec errors; each names the transfer syntax."""


class CodecUnavailable(CodecError, RuntimeError):
    """No codec for the syntax, or its packages are missing."""


class UnsupportedPixels(CodecError, ValueError):
    """The pixel layout cannot be coded in the syntax (e.g. 32-bit samples in JPEG-LS)."""


class LosslessMismatch(CodecError, RuntimeError):
    """An encoded frame does not decode to the source samples: nothing may be served."""


@dataclass(frozen=True)
class PixelFormat:
    """The Image Pixel module attributes that describe one frame."""

    rows: int
    columns: int
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    photometric_interpretation: str = "MONOCHROME2"
    number_of_frames: int = 1

    @classmethod
    def from_dataset(cls, ds: Any) -> PixelFormat:
        return cls(rows=int(ds.Rows), columns=int(ds.Columns),
                   samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
                   bits_allocated=int(ds.BitsAllocated),
                   bits_stored=int(ds.get("BitsStored", ds.BitsAllocated) or ds.BitsAllocated),
                   pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
                   photometric_interpretation=str(ds.get("PhotometricInterpretation", "")).strip(),
                   number_of_frames=int(ds.get("NumberOfFrames", 1) or 1))

    @property
    def signed(self) -> bool:
        return self.pixel_representation == 1

    @property
    def dtype(self) -> np.dtype:
        if self.bits_allocated not in (8, 16, 32):
            raise UnsupportedPixels(f"Bits Allocated {self.bits_allocated} is not handled")
        return np.dtype(f"<{'i' if self.signed else 'u'}{self.bits_allocated // 8}")

    @property
    def shape(self) -> tuple[int, ...]:
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)


def _as_container(arr: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Decoded samples in the container type, sign-extended from Bits Stored where signed."""
    dtype = fmt.dtype
    if arr.dtype.itemsize != dtype.itemsize:
        arr = arr.astype(arr.dtype.str[:-1] + str(dtype.itemsize))
    arr = np.ascontiguousarray(arr).view(dtype.newbyteorder("=")).astype(dtype, copy=False)
    shift = 8 * dtype.itemsize - fmt.bits_stored
    if fmt.signed and shift > 0:
        arr = (arr << shift) >> shift
    return arr.reshape(fmt.shape)


def _unsigned_view(frame: np.ndarray) -> np.ndarray:
    return frame.view(frame.dtype.str.replace("i", "u")) if frame.dtype.kind == "i" else frame


def _siz(codestream: bytes) -> tuple[int, bool] | None:
    """Precision and signedness of the first component from a J2K SIZ marker segment."""
    at = codestream.find(b"\xff\x51", 0, 512)
    if at < 0 or len(codestream) < at + 41:
        return None
    ssiz = codestream[at + 40]
    return (ssiz & 0x7F) + 1, bool(ssiz & 0x80)


def _j2k_to_container(arr: np.ndarray, codestream: bytes, fmt: PixelFormat) -> np.ndarray:
    """J2K decoders return the code stream's signedness; conform it to Pixel Representation
    as pydicom's J2K sign correction does (shift by the code stream precision)."""
    dtype = fmt.dtype
    info = _siz(codestream)
    if arr.dtype.itemsize != dtype.itemsize:
        arr = arr.astype(arr.dtype.str[:-1] + str(dtype.itemsize))
    arr = np.ascontiguousarray(arr)
    if info is not None and info[1] != fmt.signed:
        arr = arr.view(dtype.newbyteorder("="))
        shift = 8 * dtype.itemsize - info[0]
        if shift > 0:
            arr = (arr << shift) >> shift
    return arr.view(dtype.newbyteorder("=")).astype(dtype, copy=False).reshape(fmt.shape)


# -- plugins: (encode(frame, fmt) -> bytes, decode(bytes, fmt) -> frame) ------------------------

def _native_encode(frame: np.ndarray, fmt: PixelFormat) -> bytes:
    return frame.astype(fmt.dtype, copy=False).tobytes()


def _native_decode(data: bytes, fmt: PixelFormat) -> np.ndarray:
    return np.frombuffer(data, dtype=fmt.dtype, count=math.prod(fmt.shape)).reshape(fmt.shape)


def _jls_encode(frame: np.ndarray, fmt: PixelFormat) -> bytes:
    return bytes(imagecodecs.jpegls_encode(_unsigned_view(frame)))


def _jls_decode(data: bytes, fmt: PixelFormat) -> np.ndarray:
    return _as_container(imagecodecs.jpegls_decode(data), fmt)


def _j2k_encode(frame: np.ndarray, fmt: PixelFormat) -> bytes:
    return bytes(imagecodecs.jpeg2k_encode(frame, codecformat="J2K", reversible=True, mct=False,
                                           bitspersample=fmt.bits_stored))


def _j2k_decode(data: bytes, fmt: PixelFormat) -> np.ndarray:
    return _j2k_to_container(imagecodecs.jpeg2k_decode(data, planar=False), data, fmt)


def _htj2k_encode(frame: np.ndarray, fmt: PixelFormat) -> bytes:
    # rgb=False: no reversible colour transform, so RGB stays RGB (no silent YBR_RCT)
    return bytes(imagecodecs.htj2k_encode(frame, reversible=True, rgb=False))


def rpcl_decompositions(fmt: PixelFormat) -> int:
    needed = max(0, math.ceil(math.log2(max(fmt.rows, fmt.columns) / RPCL_BASE_RESOLUTION)))
    return max(5, needed)


def _htj2k_rpcl_encode(frame: np.ndarray, fmt: PixelFormat) -> bytes:
    data = bytes(imagecodecs.htj2k_encode(
        frame, reversible=True, rgb=False, resolutions=rpcl_decompositions(fmt), tlm=True,
        tilepart=imagecodecs.HTJ2K.TILEPART.RESOLUTIONS))
    cod = data.find(b"\xff\x52", 0, 1024)
    if cod < 0 or data[cod + 5] != RPCL or data.find(TLM, 0, cod + 4096) < 0:
        raise UnsupportedPixels(f"{HTJ2K_LOSSLESS_RPCL}: the HTJ2K encoder did not write an RPCL "
                                "code stream with TLM markers (PS3.5 10.18)")
    return data


def _htj2k_decode(data: bytes, fmt: PixelFormat) -> np.ndarray:
    return _j2k_to_container(imagecodecs.htj2k_decode(data, planar=False), data, fmt)


def _jxl_encode(frame: np.ndarray, fmt: PixelFormat) -> bytes:
    bits = None
    if not fmt.signed and fmt.bits_allocated == 16 and fmt.bits_stored < 16:
        bits = fmt.bits_stored
    return bytes(imagecodecs.jpegxl_encode(_unsigned_view(frame), lossless=True, effort=JXL_EFFORT,
                                           usecontainer=False, bitspersample=bits))


def _jxl_decode(data: bytes, fmt: PixelFormat) -> np.ndarray:
    return _as_container(imagecodecs.jpegxl_decode(data), fmt)


# -- the registry -------------------------------------------------------------------------------

def _imagecodecs_has(attribute: str, library: str) -> Callable[[], list[str]]:
    def missing() -> list[str]:
        if imagecodecs is None:
            return ["imagecodecs>=2024.1.1"]
        if not getattr(getattr(imagecodecs, attribute, None), "available", False):
            return [f"imagecodecs built with {library} ({attribute})"]
        return []
    return missing


@dataclass(frozen=True)
class Codec:
    uid: str
    name: str
    media_type: str
    lossless: bool
    plugin: str
    encoder: Callable[[np.ndarray, PixelFormat], bytes] | None
    decoder: Callable[[bytes, PixelFormat], np.ndarray] | None
    _missing: Callable[[], list[str]] = field(repr=False, default=lambda: [])
    bits_allocated: tuple[int, ...] = (8, 16)
    samples_per_pixel: tuple[int, ...] = (1, 3)

    @property
    def missing_dependencies(self) -> list[str]:
        return self._missing()

    @property
    def is_available(self) -> bool:
        return not self.missing_dependencies

    @property
    def can_encode(self) -> bool:
        return self.encoder is not None and self.lossless and self.is_available

    @property
    def encapsulated(self) -> bool:
        return self.uid != EXPLICIT_VR_LITTLE_ENDIAN

    def _require(self, what: str) -> None:
        missing = self.missing_dependencies
        if missing:
            raise CodecUnavailable(f"Unable to {what} '{self.name}' ({self.uid}): the "
                                   f"'{self.plugin}' plugin is missing {', '.join(missing)}")

    def check(self, fmt: PixelFormat) -> None:
        """Validate once, before any frame is coded (pydicom's EncodeRunner.validate)."""
        if fmt.bits_allocated not in self.bits_allocated:
            raise UnsupportedPixels(f"'{self.name}' ({self.uid}) cannot hold {fmt.bits_allocated}"
                                    f"-bit samples (only {self.bits_allocated})")
        if fmt.samples_per_pixel not in self.samples_per_pixel:
            raise UnsupportedPixels(f"'{self.name}' ({self.uid}) cannot hold "
                                    f"{fmt.samples_per_pixel} samples per pixel")
        if not 1 <= fmt.bits_stored <= fmt.bits_allocated:
            raise UnsupportedPixels(f"Bits Stored {fmt.bits_stored} does not fit Bits Allocated "
                                    f"{fmt.bits_allocated}")

    def encode_frame(self, frame: np.ndarray, fmt: PixelFormat) -> bytes:
        """One frame, encoded and verified bit-exact by decoding it again."""
        if self.encoder is None or not self.lossless:
            raise CodecUnavailable(f"No lossless encoder for '{self.name}' ({self.uid}): lossy "
                                   "output is never produced")
        self._require("encode as")
        self.check(fmt)
        if frame.dtype != fmt.dtype:
            if not np.can_cast(frame.dtype, fmt.dtype, casting="safe"):
                raise UnsupportedPixels(f"'{self.name}' ({self.uid}): {frame.dtype} samples do not "
                                        f"fit the {fmt.dtype} container")
            frame = frame.astype(fmt.dtype)
        frame = np.ascontiguousarray(frame).reshape(fmt.shape)
        data = self.encoder(frame, fmt)
        back = self.decode_frame(data, fmt)
        if back.shape != frame.shape or not np.array_equal(back, frame):
            differ = int(np.count_nonzero(back != frame)) if back.shape == frame.shape else -1
            raise LosslessMismatch(f"'{self.name}' ({self.uid}) via {self.plugin}: the encoded "
                                   f"frame decodes to different pixels ({differ} samples differ, "
                                   f"shape {back.shape} vs {frame.shape}); it is not served")
        return data

    def decode_frame(self, data: bytes, fmt: PixelFormat) -> np.ndarray:
        if self.decoder is None:
            raise CodecUnavailable(f"No decoder for '{self.name}' ({self.uid})")
        self._require("decode")
        return self.decoder(data, fmt)


def _entry(uid: str, name: str, media: str, lossless: bool, plugin: str, enc: Any, dec: Any,
           missing: Callable[[], list[str]], **kw: Any) -> tuple[str, Codec]:
    return uid, Codec(uid, name, media, lossless, plugin, enc, dec, missing, **kw)


_JLS = _imagecodecs_has("JPEGLS", "CharLS")
_J2K = _imagecodecs_has("JPEG2K", "OpenJPEG")
_HT = _imagecodecs_has("HTJ2K", "OpenJPH")
_JXL = _imagecodecs_has("JPEGXL", "libjxl")

REGISTRY: dict[str, Codec] = dict([
    _entry(EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian", "application/octet-stream",
           True, "numpy", _native_encode, _native_decode, lambda: [], bits_allocated=(8, 16, 32),
           samples_per_pixel=(1, 3)),
    _entry(JPEG_LS_LOSSLESS, "JPEG-LS Lossless Image Compression", "image/jls", True,
           "imagecodecs", _jls_encode, _jls_decode, _JLS),
    _entry(JPEG_LS_NEAR_LOSSLESS, "JPEG-LS Lossy (Near-Lossless) Image Compression", "image/jls",
           False, "imagecodecs", None, _jls_decode, _JLS),
    _entry(JPEG_2000_LOSSLESS, "JPEG 2000 Image Compression (Lossless Only)", "image/jp2", True,
           "imagecodecs", _j2k_encode, _j2k_decode, _J2K),
    _entry(JPEG_2000, "JPEG 2000 Image Compression", "image/jp2", False, "imagecodecs", None,
           _j2k_decode, _J2K),
    _entry(HTJ2K_LOSSLESS, "High-Throughput JPEG 2000 Image Compression (Lossless Only)",
           "image/jphc", True, "imagecodecs", _htj2k_encode, _htj2k_decode, _HT),
    _entry(HTJ2K_LOSSLESS_RPCL, "High-Throughput JPEG 2000 with RPCL Options Image Compression "
           "(Lossless Only)", "image/jphc", True, "imagecodecs", _htj2k_rpcl_encode,
           _htj2k_decode, _HT),
    _entry(HTJ2K, "High-Throughput JPEG 2000 Image Compression", "image/jphc", False,
           "imagecodecs", None, _htj2k_decode, _HT),
    _entry(JPEG_XL_LOSSLESS, "JPEG XL Lossless", "image/jxl", True, "imagecodecs", _jxl_encode,
           _jxl_decode, _JXL),
    _entry(JPEG_XL, "JPEG XL", "image/jxl", False, "imagecodecs", None, _jxl_decode, _JXL),
])

# PS3.18 table 8.7.3-2 (frames): media type -> its default transfer syntax, and the syntaxes
# it may carry (including ones only served as stored)
MEDIA_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "application/octet-stream": (EXPLICIT_VR_LITTLE_ENDIAN, (EXPLICIT_VR_LITTLE_ENDIAN,)),
    "image/jls": (JPEG_LS_LOSSLESS, (JPEG_LS_LOSSLESS, JPEG_LS_NEAR_LOSSLESS)),
    "image/jp2": (JPEG_2000_LOSSLESS, (JPEG_2000_LOSSLESS, JPEG_2000)),
    "image/jphc": (HTJ2K_LOSSLESS, (HTJ2K_LOSSLESS, HTJ2K_LOSSLESS_RPCL, HTJ2K)),
    "image/jxl": (JPEG_XL_LOSSLESS, (JPEG_XL_LOSSLESS, JPEG_XL_JPEG_RECOMPRESSION, JPEG_XL)),
    "image/jpeg": ("1.2.840.10008.1.2.4.50", ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                                              "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")),
    "image/dicom-rle": ("1.2.840.10008.1.2.5", ("1.2.840.10008.1.2.5",)),
}

SMALLEST_CANDIDATES = (JPEG_LS_LOSSLESS, HTJ2K_LOSSLESS, JPEG_XL_LOSSLESS)


def get_codec(uid: str) -> Codec:
    try:
        return REGISTRY[str(uid)]
    except KeyError:
        raise CodecUnavailable(f"No codec is registered for the transfer syntax {uid}") from None


def is_available(uid: str) -> bool:
    codec = REGISTRY.get(str(uid))
    return codec is not None and codec.is_available


def can_decode(uid: str) -> bool:
    codec = REGISTRY.get(str(uid))
    return codec is not None and codec.decoder is not None and codec.is_available


def lossless_targets() -> list[str]:
    """The transfer syntaxes this node can produce (lossless only), in registry order."""
    return [uid for uid, codec in REGISTRY.items() if codec.can_encode]


def media_type(uid: str) -> str:
    """The frames media type of a transfer syntax (application/octet-stream for native ones)."""
    for media, (_default, syntaxes) in MEDIA_TYPES.items():
        if str(uid) in syntaxes:
            return media
    return "application/octet-stream"


# -- lossy encoders -----------------------------------------------------------------------------
#
# Kept apart from REGISTRY, whose encoders are lossless only (`Codec.can_encode` stays False for
# every lossy syntax and `Codec.encode_frame` refuses them). These are reached only through
# `transcode.derive_lossy`, which the WADO-RS handlers call when the caller's institution has
# the lossy imaging policy on and the client named the syntax in Accept. Each encoder aims at a
# compression ratio cap (uncompressed frame bytes in the container / code stream bytes) with
# the codec's own rate parameter, keeps the largest ratio found that does not exceed the cap,
# and verifies the result by decoding it with the registry's decoder: the ratio is at most the
# cap, every sample is inside the Bits Stored range, no sample is off by half that range or
# more (a wrapped sample), and JPEG-LS errors are at most NEAR. A frame that fails is refused
# (`LossyUnsuitable`), never served.

RATIO_SEARCH_STEPS = 14   # search steps after the two ends, at most
RATIO_GOOD_ENOUGH = 0.95  # stop searching once the ratio is within 5 % below the cap
J2K_QUALITY = (10.0, 150.0)  # OpenJPEG fixed-quality targets (PSNR, dB) searched between
HTJ2K_QSTEP = (2e-5, 1.0)    # OpenJPH irreversible quantisation steps searched between


class LossyUnsuitable(CodecError, ValueError):
    """No lossy code stream of this frame meets the cap and the checks; nothing is served."""


@dataclass(frozen=True)
class LossyFrame:
    """One verified lossy frame: its code stream, the achieved ratio, the codec setting that
    gave it, and the fidelity found (PSNR against the frame's own dynamic range, and the
    largest sample error)."""

    data: bytes
    ratio: float
    setting: float
    psnr_db: float
    max_error: int


def sample_range(fmt: PixelFormat) -> tuple[int, int]:
    """The smallest and largest pixel value Bits Stored allows."""
    if fmt.signed:
        return -(1 << (fmt.bits_stored - 1)), (1 << (fmt.bits_stored - 1)) - 1
    return 0, (1 << fmt.bits_stored) - 1


def _ratio(raw: int, data: bytes) -> float:
    return raw / max(1, len(data))


def _search_rate(encode: Callable[[float], bytes], raw: int, cap: float, ok: float,
                 over: float) -> tuple[bytes, float]:
    """The code stream with the largest ratio found that is at most `cap`, for a setting
    between `ok` (whose ratio is at most the cap) and `over` (whose ratio exceeds it): false
    position on the code stream size (Illinois variant, so one stuck end cannot stall it);
    stops once the ratio is within RATIO_GOOD_ENOUGH below the cap."""
    target = raw / (cap * (1 + RATIO_GOOD_ENOUGH) / 2)  # aim inside the accepted band
    best, data_over = encode(ok), encode(over)
    if _ratio(raw, best) > cap:
        raise LossyUnsuitable(f"the least lossy setting already compresses this frame "
                              f"{_ratio(raw, best):.1f}:1, past the {cap:g}:1 cap; ask for a "
                              "lossless syntax")
    if _ratio(raw, data_over) <= cap:
        return data_over, over
    f_ok, f_over = len(best) - target, len(data_over) - target
    side = 0
    for _ in range(RATIO_SEARCH_STEPS):
        if _ratio(raw, best) >= cap * RATIO_GOOD_ENOUGH:
            break
        guess = ok - f_ok * (over - ok) / (f_over - f_ok) if f_over != f_ok else (ok + over) / 2
        if not min(ok, over) < guess < max(ok, over):
            guess = (ok + over) / 2
        data = encode(guess)
        if _ratio(raw, data) <= cap:
            ok, best, f_ok = guess, data, len(data) - target
            if side == -1:
                f_over /= 2
            side = -1
        else:
            over, f_over = guess, len(data) - target
            if side == 1:
                f_ok /= 2
            side = 1
    return best, ok


def _j2k_lossy(frame: np.ndarray, fmt: PixelFormat, cap: float) -> tuple[bytes, float]:
    """JPEG 2000 irreversible (9/7 wavelet, one quality layer, no colour transform, code
    stream precision = Bits Stored): imagecodecs exposes OpenJPEG's fixed-quality layer target
    (PSNR in dB) rather than its rate target, so the quality is searched: the lowest quality
    whose ratio is at most the cap."""
    def encode(quality: float) -> bytes:
        return bytes(imagecodecs.jpeg2k_encode(frame, quality, codecformat="J2K",
                                               reversible=False, mct=False,
                                               bitspersample=fmt.bits_stored))

    low, high = J2K_QUALITY
    return _search_rate(encode, frame.nbytes, cap, ok=high, over=low)


def _htj2k_lossy(frame: np.ndarray, fmt: PixelFormat, cap: float) -> tuple[bytes, float]:
    """HTJ2K irreversible (OpenJPH has no rate control): the quantisation step is searched on
    a log scale, the coarsest step whose ratio is at most the cap."""
    def encode(log_step: float) -> bytes:
        return bytes(imagecodecs.htj2k_encode(frame, math.exp(log_step), reversible=False,
                                              rgb=False))

    fine, coarse = (math.log(q) for q in HTJ2K_QSTEP)
    data, log_step = _search_rate(encode, frame.nbytes, cap, ok=fine, over=coarse)
    return data, math.exp(log_step)


def _jls_lossy(frame: np.ndarray, fmt: PixelFormat, cap: float) -> tuple[bytes, float]:
    """JPEG-LS near-lossless: NEAR searched upward from 1 (doubling, then bisecting), the
    largest NEAR whose ratio is at most the cap."""
    if fmt.signed:
        raise LossyUnsuitable("JPEG-LS cannot mark samples as signed, so near-lossless coding "
                              "is offered for unsigned samples only; ask for JPEG 2000 "
                              f"({JPEG_2000})")
    raw = frame.nbytes
    most = max(1, min(255, ((1 << fmt.bits_stored) - 1) // 2))

    def encode(near: int) -> bytes:
        return bytes(imagecodecs.jpegls_encode(frame, int(near)))

    good, best = 1, encode(1)
    if _ratio(raw, best) > cap:
        raise LossyUnsuitable(
            f"JPEG-LS with NEAR=1 already compresses this frame {_ratio(raw, best):.1f}:1, past "
            f"the {cap:g}:1 cap; ask for a lossless syntax")
    bad = None
    while bad is None and good < most and _ratio(raw, best) < cap * RATIO_GOOD_ENOUGH:
        near = min(good * 2, most)
        data = encode(near)
        if _ratio(raw, data) <= cap:
            good, best = near, data
        else:
            bad = near
    while bad is not None and bad - good > 1 and _ratio(raw, best) < cap * RATIO_GOOD_ENOUGH:
        near = (good + bad) // 2
        data = encode(near)
        if _ratio(raw, data) <= cap:
            good, best = near, data
        else:
            bad = near
    return best, float(good)


@dataclass(frozen=True)
class LossyEncoder:
    """A lossy target: its syntax, the Lossy Image Compression Method defined term (PS3.3
    C.7.6.1.1.5.1) and the rate search."""

    uid: str
    method: str
    search: Callable[[np.ndarray, PixelFormat, float], tuple[bytes, float]]
    setting: str
    exact_bound: bool = False  # the setting is a guaranteed maximum error (JPEG-LS NEAR)

    @property
    def codec(self) -> Codec:
        return REGISTRY[self.uid]

    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def missing_dependencies(self) -> list[str]:
        return self.codec.missing_dependencies

    @property
    def is_available(self) -> bool:
        return self.codec.is_available

    def check(self, fmt: PixelFormat) -> None:
        self.codec.check(fmt)

    def encode_frame(self, frame: np.ndarray, fmt: PixelFormat, cap: float) -> LossyFrame:
        """One frame at the largest ratio found that is at most `cap`, verified."""
        if not cap or cap <= 1:
            raise LossyUnsuitable(f"no compression ratio cap for '{self.name}' ({self.uid})")
        self.codec._require("encode as")
        self.check(fmt)
        if frame.dtype != fmt.dtype:
            frame = frame.astype(fmt.dtype)
        frame = np.ascontiguousarray(frame).reshape(fmt.shape)
        try:
            data, setting = self.search(frame, fmt, cap)
        except LossyUnsuitable as exc:
            raise LossyUnsuitable(f"'{self.name}' ({self.uid}): {exc}") from None
        except (RuntimeError, ValueError) as exc:  # the imagecodecs encoder refused this frame
            raise LossyUnsuitable(f"'{self.name}' ({self.uid}) via {self.codec.plugin} cannot "
                                  f"code this frame: {exc}") from None
        return self.verify(data, frame, fmt, cap, setting)

    def verify(self, data: bytes, frame: np.ndarray, fmt: PixelFormat, cap: float,
               setting: float) -> LossyFrame:
        where = f"'{self.name}' ({self.uid}) via {self.codec.plugin}"
        ratio = _ratio(frame.nbytes, data)
        if ratio > cap:
            raise LossyUnsuitable(f"{where}: ratio {ratio:.2f}:1 exceeds the {cap:g}:1 cap")
        back = self.codec.decode_frame(data, fmt)
        if back.shape != frame.shape:
            raise LossyUnsuitable(f"{where}: decodes to shape {back.shape}, not {frame.shape}")
        low, high = sample_range(fmt)
        instead = (f"ask for JPEG 2000 ({JPEG_2000}) or a lossless syntax"
                   if self.uid != JPEG_2000 else "ask for a lossless syntax")
        if int(back.min()) < low or int(back.max()) > high:
            raise LossyUnsuitable(
                f"{where}: decoded samples ({int(back.min())}..{int(back.max())}) fall outside "
                f"the Bits Stored range {low}..{high}; not served, {instead}")
        error = np.abs(back.astype(np.int64) - frame.astype(np.int64))
        worst = int(error.max())
        if worst * 2 >= high - low or (self.exact_bound and worst > setting):
            raise LossyUnsuitable(f"{where}: a decoded sample is off by {worst} (wrapped or "
                                  f"beyond the codec's bound); not served, {instead}")
        mse = float(np.mean(error.astype(np.float64) ** 2))
        peak = max(1, int(frame.max()) - int(frame.min()))  # the frame's own dynamic range
        psnr = math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)
        return LossyFrame(data, ratio, setting, psnr, worst)


LOSSY_ENCODERS: dict[str, LossyEncoder] = {
    JPEG_2000: LossyEncoder(JPEG_2000, "ISO_15444_1", _j2k_lossy, "quality_db"),
    HTJ2K: LossyEncoder(HTJ2K, "ISO_15444_15", _htj2k_lossy, "quantization_step"),
    JPEG_LS_NEAR_LOSSLESS: LossyEncoder(JPEG_LS_NEAR_LOSSLESS, "ISO_14495_1", _jls_lossy, "near",
                                        exact_bound=True),
}


def lossy_targets() -> list[str]:
    """The lossy syntaxes this node can produce when a policy allows it (none by default)."""
    return [uid for uid, encoder in LOSSY_ENCODERS.items() if encoder.is_available]
