"""Progressive lossless frame streams, in two codecs (docs/imaging-delivery.md):

* "htj2k": one HTJ2K (JPEG 2000 Part 15) code stream, RPCL order, one tile, one tile-part per
  resolution level, listed in a TLM marker, so that any prefix ending at a tile-part boundary
  decodes to a lower resolution and the whole stream decodes bit-exact (DICOM's HTJ2K Lossless
  RPCL). Six levels for ordinary frames; the preview is the 1/4-resolution prefix.
* "jxl": two JPEG XL lossless code streams back to back, P + F: P codes the preview image (the
  floor mean of each 4x4 block), F the frame. Two levels: level 0 ends after P (the preview),
  level 1 after F (the frame, bit-exact). JPEG XL codes the CT in 25 % fewer bytes than HTJ2K,
  which more than pays for P (~11 % of F) not being part of F; JPEG XL's own progressive mode
  (squeeze) costs 15-75 % more than plain lossless, so it is not used.

Plain functions over numpy frames (the codecs are imagecodecs' OpenJPH and libjxl bindings;
nothing here is a codec of its own): `encode` / `encode_jxl` / `encode_best`, `layout`
(HTJ2K resolution-level ends read from the code-stream markers), `decode` (an HTJ2K prefix at
reduced resolution), `decode_level` (any codec, any level) and `verify`. `frames_of` takes the
frames out of a pydicom dataset as stored, and `derive` / `load` keep verified streams on disk;
those two do file I/O and run in the worker threads of a `Deriver`, which the app owns (the
codecs release the GIL, so threads encode in parallel).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import struct
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pydicom.pixels
from pydicom.encaps import generate_frames
from pydicom.uid import UID

log = logging.getLogger(__name__)

VERSION = "htj2k-rpcl-tlm-1"
"""Changes whenever the HTJ2K encoding changes, so caches made by older code are not used."""
JXL_VERSION = "jxl-pair-1"
"""The same for the "jxl" mode (JPEG XL pairs, or HTJ2K where that is smaller)."""
HTJ2K, JXL = "htj2k", "jxl"
MODES = (HTJ2K, JXL)
"""What a viewer accepts: "htj2k" only, or "jxl" (JPEG XL pairs, and HTJ2K for the frames
whose HTJ2K stream is smaller)."""
PREVIEW_SCALE = 4
"""The jxl preview image: the floor mean of each 4x4 block (1/4 of the rows and columns)."""
JXL_EFFORT, JXL_FAST_EFFORT, JXL_EFFORT_PIXELS = 7, 3, 512 * 640
"""libjxl effort for images up to 512x640 pixels (CT, MR, US: ~0.1 s a CT slice, 10 % fewer
bytes than effort 3); larger ones (radiographs: 1.8 s at effort 7) use effort 3."""
SOC, SIZ, COD, TLM, SOT, EOC = 0xFF4F, 0xFF51, 0xFF52, 0xFF55, 0xFF90, 0xFFD9
RPCL = 2
PREVIEW_REDUCE = 2
"""The preview is the 1/4-resolution image: two resolution levels fewer than the full one."""
DTYPES = ("uint8", "int8", "uint16", "int16")


class ProgressiveError(ValueError):
    """A frame cannot be coded progressively, or a code stream is not laid out as expected."""


@dataclass(frozen=True)
class Layout:
    """Where each level of a frame stream ends. level_ends[r] is the number of leading bytes
    that decode at level r (0 is the smallest image, the last is the full one and ends with the
    stream). HTJ2K: resolution levels, level r decodes with reduce = levels - 1 - r. JPEG XL
    pair: level 0 is the preview image's code stream, level 1 the frame's."""
    level_ends: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: str
    codec: str = HTJ2K

    @property
    def levels(self) -> int:
        return len(self.level_ends)

    @property
    def length(self) -> int:
        return self.level_ends[-1]

    @property
    def preview_level(self) -> int:
        if self.codec == JXL:
            return 0
        return max(0, self.levels - 1 - PREVIEW_REDUCE)

    def shape_at(self, level: int) -> tuple[int, ...]:
        if self.codec == JXL:
            scale = PREVIEW_SCALE if level < self.levels - 1 else 1
        else:
            scale = 2 ** (self.levels - 1 - level)
        rows, columns = (math.ceil(n / scale) for n in self.shape[:2])
        return (rows, columns, *self.shape[2:])

    def as_dict(self) -> dict:
        return {"level_ends": list(self.level_ends), "shape": list(self.shape), "dtype": self.dtype,
                "codec": self.codec}

    @classmethod
    def from_dict(cls, data: dict) -> "Layout":
        codec = str(data.get("codec", HTJ2K))
        if codec not in MODES:
            raise ValueError(f"unknown codec {codec!r}")
        return cls(tuple(int(n) for n in data["level_ends"]), tuple(int(n) for n in data["shape"]),
                   str(data["dtype"]), codec)


def decompositions_for(shape: tuple[int, ...]) -> int:
    """Five wavelet levels (six resolutions) for ordinary images; fewer for small ones so the
    smallest resolution stays at least 8 pixels on its short side (at least one level, as
    imagecodecs takes 0 to mean its default)."""
    short = min(shape[:2])
    return max(1, min(5, int(math.log2(short)) - 3)) if short > 0 else 1


def _check_frame(frame: np.ndarray) -> None:
    if frame.dtype.name not in DTYPES:
        raise ProgressiveError(f"{frame.dtype} pixels are not supported (8 or 16 bit integers)")
    if frame.ndim == 3 and frame.shape[2] not in (3, 4):
        raise ProgressiveError(f"a colour frame has 3 or 4 samples per pixel, not {frame.shape[2]}")
    if frame.ndim not in (2, 3) or 0 in frame.shape:
        raise ProgressiveError(f"a frame is rows x columns [x samples], not {frame.shape}")


def encode(frame: np.ndarray) -> tuple[bytes, Layout]:
    """One frame as an HTJ2K lossless RPCL code stream with a tile-part per resolution and TLM."""
    _check_frame(frame)
    frame = np.ascontiguousarray(frame)
    data = imagecodecs.htj2k_encode(frame, reversible=True, tlm=True,
                                    tilepart=imagecodecs.HTJ2K.TILEPART.RESOLUTIONS,
                                    resolutions=decompositions_for(frame.shape),
                                    rgb=frame.ndim == 3)
    data = bytes(data)
    return data, layout(data, frame.shape, frame.dtype.name)


def _markers(data: bytes) -> tuple[dict[int, list[bytes]], int]:
    """The main header's marker segment bodies by code, and the offset of the first SOT."""
    if data[:2] != SOC.to_bytes(2, "big"):
        raise ProgressiveError("not a JPEG 2000 code stream (no SOC marker)")
    found: dict[int, list[bytes]] = {}
    at = 2
    while at + 4 <= len(data):
        code, length = struct.unpack_from(">HH", data, at)
        if code == SOT:
            return found, at
        if code >> 8 != 0xFF or length < 2:
            break
        found.setdefault(code, []).append(data[at + 4:at + 2 + length])
        at += 2 + length
    raise ProgressiveError("the main header does not end in a tile-part (SOT)")


def _tlm_lengths(segments: list[bytes]) -> list[int]:
    """Tile-part lengths from the TLM segments, in their Ztlm order."""
    lengths = []
    for body in sorted(segments, key=lambda b: b[0]):
        stlm = body[1]
        tile_size, length_size = (stlm >> 4) & 0x3, 4 if (stlm >> 6) & 1 else 2
        if tile_size == 3:
            raise ProgressiveError("a TLM marker with an invalid Stlm")
        entry = tile_size + length_size
        for at in range(2, len(body) - entry + 1, entry):
            lengths.append(int.from_bytes(body[at + tile_size:at + entry], "big"))
    return lengths


def layout(data: bytes, shape: tuple[int, ...] | None = None, dtype: str | None = None) -> Layout:
    """Resolution-level ends from the markers: RPCL progression (COD), one tile, and one
    tile-part per resolution whose lengths the TLM marker lists (checked against each SOT)."""
    try:
        return _layout(data, shape, dtype)
    except (struct.error, IndexError, ZeroDivisionError) as exc:
        raise ProgressiveError(f"the code stream's markers are cut short or broken: {exc}") from None


def _layout(data: bytes, shape: tuple[int, ...] | None, dtype: str | None) -> Layout:
    segments, first = _markers(data)
    if SIZ not in segments or COD not in segments:
        raise ProgressiveError("the main header has no SIZ or COD marker")
    siz, cod = segments[SIZ][0], segments[COD][0]
    width, height, x0, y0, tile_w, tile_h, tx0, ty0 = struct.unpack_from(">8I", siz, 2)
    components = struct.unpack_from(">H", siz, 34)[0]
    if cod[1] != RPCL:
        raise ProgressiveError(f"progression order {cod[1]} is not RPCL")
    levels = cod[5] + 1
    if math.ceil((width - tx0) / tile_w) * math.ceil((height - ty0) / tile_h) != 1:
        raise ProgressiveError("the code stream has more than one tile")
    if TLM not in segments:
        raise ProgressiveError("the code stream has no TLM marker")
    lengths = _tlm_lengths(segments[TLM])
    if len(lengths) != levels:
        raise ProgressiveError(f"{len(lengths)} tile-parts for {levels} resolution levels")
    ends, at = [], first
    for index, length in enumerate(lengths):
        marker, _, _, psot, tpsot, _ = struct.unpack_from(">HHHIBB", data, at)
        if marker != SOT or tpsot != index or psot not in (length, 0):
            raise ProgressiveError(f"tile-part {index} does not match the TLM marker")
        at += length
        ends.append(at)
    if data[at:at + 2] != EOC.to_bytes(2, "big") or at + 2 != len(data):
        raise ProgressiveError("the code stream does not end after its last tile-part")
    ends[-1] = len(data)
    if shape is None:
        shape = (height - y0, width - x0) if components == 1 else (height - y0, width - x0,
                                                                   components)
    if dtype is None:
        depth, signed = (siz[36] & 0x7F) + 1, bool(siz[36] & 0x80)
        dtype = f"{'int' if signed else 'uint'}{8 if depth <= 8 else 16}"
    return Layout(tuple(ends), tuple(shape), dtype)


def decode(data: bytes, reduce: int = 0) -> np.ndarray:
    """Decode an HTJ2K code stream, or a prefix of it ending at a resolution level's end, with
    `reduce` resolution levels left out (0: full size; 2: 1/4 of the rows and columns)."""
    return imagecodecs.htj2k_decode(data, skipres=(reduce, reduce))


# -- JPEG XL pairs ---------------------------------------------------------------------------

def preview_image(frame: np.ndarray, scale: int = PREVIEW_SCALE) -> np.ndarray:
    """The floor of the mean of each scale x scale block, per sample, in the frame's dtype;
    blocks at the right and bottom edges average the pixels they have."""
    rows, columns = frame.shape[:2]
    starts_r, starts_c = np.arange(0, rows, scale), np.arange(0, columns, scale)
    sums = np.add.reduceat(np.add.reduceat(frame.astype(np.int64), starts_r, 0), starts_c, 1)
    counts = np.outer(np.diff(np.append(starts_r, rows)), np.diff(np.append(starts_c, columns)))
    if frame.ndim == 3:
        counts = counts[..., np.newaxis]
    return np.floor_divide(sums, counts).astype(frame.dtype)


def _to_jxl(frame: np.ndarray) -> np.ndarray:
    """JPEG XL codes unsigned samples: signed ones with their sign bit flipped (v + 2^(n-1) as
    an unsigned n-bit number), which keeps neighbouring values neighbours (two's complement bits
    would put -1 and 0 65535 apart and cost the CT 10 % more)."""
    if frame.dtype.kind != "i":
        return frame
    unsigned = np.dtype(frame.dtype.str.replace("i", "u"))
    return frame.view(unsigned) ^ unsigned.type(1 << (8 * frame.itemsize - 1))


def _from_jxl(decoded: np.ndarray, dtype: str) -> np.ndarray:
    target = np.dtype(dtype)
    unsigned = np.dtype(target.str.replace("i", "u"))
    samples = np.ascontiguousarray(decoded)
    if samples.dtype != unsigned:
        raise ProgressiveError(f"a JPEG XL stream decodes to {samples.dtype}, not {unsigned}")
    if target.kind == "i":
        samples = (samples ^ unsigned.type(1 << (8 * target.itemsize - 1))).view(target)
    return samples


def jxl_effort(shape: tuple[int, ...]) -> int:
    return JXL_EFFORT if shape[0] * shape[1] <= JXL_EFFORT_PIXELS else JXL_FAST_EFFORT


def _jxl_encode(image: np.ndarray) -> bytes:
    return bytes(imagecodecs.jpegxl_encode(np.ascontiguousarray(_to_jxl(image)), lossless=True,
                                           effort=jxl_effort(image.shape), usecontainer=False))


def encode_jxl(frame: np.ndarray) -> tuple[bytes, Layout]:
    """One frame as a JPEG XL pair: the preview image's lossless code stream, then the frame's."""
    _check_frame(frame)
    frame = np.ascontiguousarray(frame)
    preview, full = _jxl_encode(preview_image(frame)), _jxl_encode(frame)
    return preview + full, Layout((len(preview), len(preview) + len(full)), frame.shape,
                                  frame.dtype.name, JXL)


def encode_best(frame: np.ndarray) -> tuple[bytes, Layout]:
    """For a viewer that decodes both: the JPEG XL pair, or the HTJ2K stream where that is
    smaller (noisy images such as a radiograph decoded from lossy JPEG 2000)."""
    pair = encode_jxl(frame)
    htj2k = encode(frame)
    return htj2k if htj2k[1].length < pair[1].length else pair


def encode_for(frame: np.ndarray, mode: str) -> tuple[bytes, Layout]:
    if mode not in MODES:
        raise ProgressiveError(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    return encode_best(frame) if mode == JXL else encode(frame)


def decode_level(data: bytes, lay: Layout, level: int | None = None) -> np.ndarray:
    """Level `level` (default: the whole frame) of a frame stream, or of a prefix holding at
    least its bytes, in the frame's dtype: an HTJ2K prefix at reduced resolution, or one of
    the two JPEG XL code streams of a pair."""
    level = lay.levels - 1 if level is None else level
    if not 0 <= level < lay.levels:
        raise ProgressiveError(f"no level {level} in a stream of {lay.levels}")
    if len(data) < lay.level_ends[level]:
        raise ProgressiveError(f"level {level} needs {lay.level_ends[level]} bytes, "
                               f"not {len(data)}")
    if lay.codec == HTJ2K:
        return decode(bytes(data[:lay.level_ends[level]]), lay.levels - 1 - level)
    start = lay.level_ends[level - 1] if level else 0
    return _from_jxl(imagecodecs.jpegxl_decode(bytes(data[start:lay.level_ends[level]])),
                     lay.dtype)


def decode_frame(data: bytes, frame: dict, level: int | None = None) -> np.ndarray:
    """decode_level for a viewer holding a `frame` message of the progressive endpoint."""
    return decode_level(data, Layout.from_dict(frame), level)


def verify(frame: np.ndarray, data: bytes, lay: Layout) -> None:
    """The whole stream decodes to exactly `frame`; each level's prefix decodes to its size
    (and a JPEG XL preview to exactly the preview image)."""
    if lay.length != len(data):
        raise ProgressiveError(f"the stream has {len(data)} bytes, its layout says {lay.length}")
    try:
        full = decode_level(data, lay)
        if full.dtype != frame.dtype or not np.array_equal(full, frame):
            raise ProgressiveError("the code stream does not decode to the original pixels")
        for level in sorted({0, lay.preview_level} - {lay.levels - 1}):
            reduced = decode_level(data[:lay.level_ends[level]], lay, level)
            if reduced.shape != lay.shape_at(level):
                raise ProgressiveError(f"level {level} decodes to {reduced.shape}, "
                                       f"not {lay.shape_at(level)}")
            if lay.codec == JXL and not np.array_equal(reduced, preview_image(frame)):
                raise ProgressiveError("the preview does not decode to the preview image")
    except (imagecodecs.JpegxlError, imagecodecs.Htj2kError) as exc:
        raise ProgressiveError(f"the stream does not decode: {exc}") from None


def frames_of(ds: pydicom.Dataset) -> list[np.ndarray]:
    """Every frame's stored samples (no colour conversion, signed data sign-extended)."""
    count = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        pixels = pydicom.pixels.pixel_array(ds, raw=True)
    except (NotImplementedError, RuntimeError):
        pixels = np.stack(_decode_encapsulated(ds, count))
    if count == 1 and pixels.ndim == len(_frame_shape(ds)):
        pixels = pixels[np.newaxis]
    return [np.ascontiguousarray(frame) for frame in pixels]


def _frame_shape(ds: pydicom.Dataset) -> tuple[int, ...]:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    return (int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())


def _decode_encapsulated(ds: pydicom.Dataset, count: int) -> list[np.ndarray]:
    """Syntaxes pydicom has no plugin for here (JPEG-LS) through imagecodecs."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if not syntax.is_encapsulated:
        raise ProgressiveError(f"cannot read pixels stored as {syntax.name}")
    bits, signed = int(ds.get("BitsStored", 16)), int(ds.get("PixelRepresentation", 0)) == 1
    frames = []
    for fragment in generate_frames(ds.PixelData, number_of_frames=count):
        frame = imagecodecs.imread(fragment)
        if signed and frame.dtype.kind == "u":
            wide = frame.astype(np.int32)
            wide[wide >= 1 << (bits - 1)] -= 1 << bits
            frame = wide.astype(np.int8 if frame.itemsize == 1 else np.int16)
        frames.append(frame)
    return frames


# -- derivatives on disk (run these in a worker) ------------------------------------------------

EXTENSIONS = {HTJ2K: "j2c", JXL: "jxlp"}


@dataclass(frozen=True)
class Derivative:
    """One frame's verified stream on disk."""
    path: Path
    layout: Layout
    sha256: str


def cache_folder(cache_root: Path, sha256: str, mode: str = HTJ2K) -> Path:
    return cache_root / (JXL_VERSION if mode == JXL else VERSION) / sha256[:2] / sha256


def derive(source: Path, sha256: str, cache_root: Path, mode: str = HTJ2K) -> list[Derivative]:
    """The instance's frames as verified progressive streams for `mode`, made once and kept
    under cache_root (keyed by the stored file's SHA-256). Written to a temporary name and
    renamed, the index last, so a crash leaves no half-made cache that `load` would accept."""
    cached = load(sha256, cache_root, mode)
    if cached is not None:
        return cached
    ds = pydicom.dcmread(source)
    folder = cache_folder(cache_root, sha256, mode)
    folder.mkdir(parents=True, exist_ok=True)
    entries, made = [], []
    for number, frame in enumerate(frames_of(ds), start=1):
        data, lay = encode_for(frame, mode)
        verify(frame, data, lay)
        path = folder / f"{number}.{EXTENSIONS[lay.codec]}"
        _write_atomic(path, data)
        digest = hashlib.sha256(data).hexdigest()
        entries.append({**lay.as_dict(), "sha256": digest})
        made.append(Derivative(path, lay, digest))
    version = JXL_VERSION if mode == JXL else VERSION
    _write_atomic(folder / "index.json", json.dumps({"version": version, "frames": entries,
                                                      "verified": True}).encode())
    return made


def load(sha256: str, cache_root: Path, mode: str = HTJ2K) -> list[Derivative] | None:
    """A complete cache entry whose files still hash to what was verified; else None."""
    folder = cache_folder(cache_root, sha256, mode)
    try:
        index = json.loads((folder / "index.json").read_bytes())
        if index.get("version") != (JXL_VERSION if mode == JXL else VERSION) or not index.get(
                "verified"):
            return None
        found = []
        for number, entry in enumerate(index["frames"], start=1):
            lay = Layout.from_dict(entry)
            path = folder / f"{number}.{EXTENSIONS[lay.codec]}"
            if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                return None
            found.append(Derivative(path, lay, entry["sha256"]))
        return found
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as out:
        out.write(data)
    os.replace(temporary, path)


class Deriver:
    """Owns the worker threads that make and verify frame streams; one job per instance and
    mode at a time however many viewers ask, and results remembered while the cache files
    stay valid. Newly stored instances are prepared in the background, one at a time, so the
    first viewer finds their streams made and ingest never takes more than one worker."""

    def __init__(self, cache_root: Path, workers: int | None = None) -> None:
        self.cache_root = cache_root
        self.workers = workers or min(2, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="progressive")
        self._running: dict[tuple[str, str], asyncio.Future] = {}
        self._known: dict[tuple[str, str], list[Derivative]] = {}
        self._waiting: deque[tuple[Path, str, str]] = deque()
        self._preparing: asyncio.Task | None = None

    def prepare(self, source: Path, sha256: str, modes: tuple[str, ...]) -> None:
        """Queue a stored instance's streams for `modes`; returns at once."""
        self._waiting.extend((source, sha256, mode) for mode in modes)
        if self._waiting and (self._preparing is None or self._preparing.done()):
            self._preparing = asyncio.get_running_loop().create_task(self._prepare_waiting())

    async def _prepare_waiting(self) -> None:
        while self._waiting:
            source, sha256, mode = self._waiting.popleft()
            try:
                await self.derivatives(source, sha256, mode)
            except Exception as exc:  # unsupported pixels stay viewable as stored, say why
                log.warning("no %s streams for %s: %s", mode, source.name, exc)

    def known(self, sha256: str, mode: str = HTJ2K) -> list[Derivative] | None:
        """The instance's streams if this node made or checked them already."""
        known = self._known.get((sha256, mode))
        return known if known is not None and all(d.path.exists() for d in known) else None

    async def derivatives(self, source: Path, sha256: str, mode: str = HTJ2K) -> list[Derivative]:
        known = self.known(sha256, mode)
        if known is not None:
            return known
        key = (sha256, mode)
        future = self._running.get(key)
        if future is None:
            future = asyncio.get_running_loop().run_in_executor(
                self._pool, derive, source, sha256, self.cache_root, mode)
            self._running[key] = future
            future.add_done_callback(lambda _: self._running.pop(key, None))
        made = await asyncio.shield(future)
        if len(self._known) > 4096:
            self._known.clear()
        self._known[key] = made
        return made

    async def close(self) -> None:
        self._waiting.clear()
        if self._preparing is not None:
            self._preparing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._preparing
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
