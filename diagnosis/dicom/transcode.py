"""One stored instance in another transfer syntax, losslessly, cached on disk.

`derive` (a plain function of paths, run in the app's process pool) reads the stored instance,
decodes its frames (the codec registry, or pydicom for native, RLE and other syntaxes pydicom
decodes), encodes each frame in the target syntax (verified bit-exact by the codec), and writes
the same instance with its Pixel Data re-encapsulated and the file meta Transfer Syntax UID
changed. Every other element is kept; the only adjustments are the ones the new encoding
requires: Planar Configuration 0 for colour, RGB for YBR_RCT/YBR_ICT sources (their decoders
return RGB), the (Extended) Offset Table of the old encapsulation dropped, and retired group
lengths (gggg,0000) not written (PS3.5 7.2; they describe the old encoding). A source stored
lossy keeps Lossy Image Compression "01" and its ratio and method.

Derivatives live under `<data>/dicom/derived/<sha256(SOP Instance UID)>/<syntax>.dcm`, each with
a `.json` sidecar holding its SHA-256 and the source's; a derivative whose bytes no longer
match is deleted and computed again, never served.

Lossy derivatives are a separate path (`derive_lossy`, `Transcoder.lossy_instance`), reached
only when the caller's institution has the lossy imaging policy on and the client named the
syntax: each frame is coded at the largest ratio found that does not exceed the modality's CAR
cap (`CAR_RATIO_CAPS`; other modalities are refused), verified by decoding, and the instance is
labelled lossy (Lossy Image Compression "01", the ratio and method appended). They are cached
under `.../lossy/<syntax>-cap<N>.dcm` with sidecars marked "lossy-capped", never where a
lossless derivative is looked for. `Transcoder` owns the worker pool (one per
app, entered through cleanup_ctx) and collapses concurrent requests for the same derivative.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
import warnings
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
import pydicom
from aiohttp import web
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from diagnosis.dicom import codecs
from diagnosis.dicom.codecs import CodecError, PixelFormat
from telemed.api.context import SETTINGS

log = logging.getLogger(__name__)

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
          "1.2.840.10008.1.2.1.99"}
NATIVE_LITTLE_ENDIAN = NATIVE - {"1.2.840.10008.1.2.2"}
AS_STORED = "*"
COMPRESSED_PHOTOMETRICS = {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB"}
DECODED_AS_RGB = {"YBR_RCT", "YBR_ICT"}
NATIVE_ONLY = {"YBR_FULL"}


class NotTranscodable(Exception):
    """This instance cannot be given in the asked syntax; says why (the caller may try another)."""


class TranscodeFailed(RuntimeError):
    """The worker crashed or the derivative could not be written."""


# -- decoding and encoding (pure, run in the worker) --------------------------------------------

def _pydicom_frames(ds: pydicom.Dataset, fmt: PixelFormat) -> list[np.ndarray]:
    try:
        ds.pixel_array_options(as_rgb=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as exc:  # pydicom names the missing plugin or the bad data
        raise NotTranscodable(f"the stored pixel data ({ds.file_meta.TransferSyntaxUID}) cannot "
                              f"be decoded here: {exc}") from None
    return list(pixels) if fmt.number_of_frames > 1 else [pixels]


def decode_frames(ds: pydicom.Dataset) -> tuple[PixelFormat, list[np.ndarray]]:
    """The instance's frames as container-typed arrays of its pixel values."""
    if "PixelData" not in ds:
        raise NotTranscodable("the instance has no Pixel Data (only stored bytes are served)")
    stored = str(ds.file_meta.TransferSyntaxUID)
    try:
        fmt = PixelFormat.from_dataset(ds)
        fmt.dtype  # noqa: B018 - validates Bits Allocated
    except (AttributeError, TypeError, ValueError) as exc:
        raise NotTranscodable(f"the Image Pixel attributes cannot be coded: {exc}") from None
    if fmt.photometric_interpretation not in COMPRESSED_PHOTOMETRICS | DECODED_AS_RGB | NATIVE_ONLY:
        raise NotTranscodable(f"Photometric Interpretation {fmt.photometric_interpretation} is "
                              "not transcoded (it would need a colour conversion)")
    if stored in NATIVE or not codecs.can_decode(stored):
        return fmt, _pydicom_frames(ds, fmt)
    codec = codecs.get_codec(stored)
    encoded = generate_frames(ds.PixelData, number_of_frames=fmt.number_of_frames)
    return fmt, [codec.decode_frame(frame, fmt) for frame in encoded]


def _file_bytes(ds: pydicom.Dataset, syntax: str) -> bytes:
    """Preamble, file meta and data set, written directly so syntaxes pydicom does not know yet
    (JPEG XL) are written like the others; the data set is Explicit VR Little Endian."""
    meta = ds.file_meta
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    out = DicomBytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return out.getvalue() + body.getvalue()


def _decoded_for(ds: pydicom.Dataset, check: Callable[[PixelFormat], None]
                 ) -> tuple[PixelFormat, list[np.ndarray], str]:
    """The frames of `ds` once an encoder's pixel `check` accepts them, and the photometric
    interpretation they decode to."""
    fmt, frames = decode_frames(ds)
    try:
        check(fmt)
    except codecs.UnsupportedPixels as exc:
        raise NotTranscodable(str(exc)) from None
    photometric = fmt.photometric_interpretation
    return fmt, frames, "RGB" if photometric in DECODED_AS_RGB else photometric


def transcode_dataset(ds: pydicom.Dataset, syntax: str) -> pydicom.Dataset:
    """`ds` changed in place to `syntax` (lossless targets only)."""
    codec = codecs.get_codec(syntax)
    if not codec.can_encode:
        raise NotTranscodable(f"this node does not produce {codec.name} ({syntax})"
                              if codec.is_available else str(_missing(codec)))
    fmt, frames, photometric = _decoded_for(ds, codec.check)
    if codec.encapsulated and photometric not in COMPRESSED_PHOTOMETRICS:
        raise NotTranscodable(f"Photometric Interpretation {photometric} is kept only in native "
                              f"syntaxes, not in {codec.name}")
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)
    if codec.encapsulated:
        ds.PixelData = encapsulate([codec.encode_frame(f, fmt) for f in frames], has_bot=True)
        element = ds["PixelData"]
        element.VR, element.is_undefined_length = "OB", True
    else:
        raw = b"".join(codec.encode_frame(f, fmt) for f in frames)
        ds.PixelData = raw + (b"\x00" if len(raw) % 2 else b"")
        element = ds["PixelData"]
        element.VR, element.is_undefined_length = ("OW" if fmt.bits_allocated > 8 else "OB"), False
    if photometric != fmt.photometric_interpretation:
        ds.PhotometricInterpretation = photometric
    if fmt.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    return ds


def _missing(codec: codecs.Codec) -> str:
    return (f"'{codec.name}' ({codec.uid}) is unavailable: missing "
            f"{', '.join(codec.missing_dependencies)}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def derive(source: str, syntax: str, target: str, source_sha256: str) -> dict[str, Any]:
    """Worker entry point: write `source` in `syntax` to `target` (atomically) with its sidecar."""
    started = time.perf_counter()
    ds = pydicom.dcmread(source)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        blob = _file_bytes(transcode_dataset(ds, syntax), syntax)
    except (codecs.CodecUnavailable, codecs.UnsupportedPixels) as exc:
        raise NotTranscodable(str(exc)) from None
    return _write_derivative(target, blob, {
        "syntax": syntax, "source_sha256": source_sha256, "frames": frames,
        "source_size": os.path.getsize(source), "verified": "bit-exact",
        "seconds": round(time.perf_counter() - started, 4)})


def _write_derivative(target: str | Path, blob: bytes, info: dict[str, Any]) -> dict[str, Any]:
    """The derivative and its JSON sidecar (with the file's size and SHA-256), each written to
    a temporary name and renamed, so a reader never sees half a file."""
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {**info, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    for suffix, data in ((".dcm", blob), (".json", json.dumps(info).encode())):
        temporary = path.with_name(f".{path.stem}.{os.getpid()}{suffix}")
        temporary.write_bytes(data)
        os.replace(temporary, path.with_suffix(suffix))
    return info


def derived_path(root: Path, sop_instance_uid: str, syntax: str) -> Path:
    digest = hashlib.sha256(sop_instance_uid.encode()).hexdigest()
    return root / "dicom" / "derived" / digest[:2] / digest / f"{syntax}.dcm"


def cached(path: Path, source_sha256: str, verified: str = "bit-exact") -> dict[str, Any] | None:
    """The sidecar of an intact derivative, else None (and a corrupt one is removed); its
    `verified` must be the kind asked for, so lossless and lossy files are never mixed up."""
    sidecar = path.with_suffix(".json")
    if not path.exists() and not sidecar.exists():
        return None
    try:
        info = json.loads(sidecar.read_text())
        if (info["source_sha256"] == source_sha256 and path.stat().st_size == info["size"]
                and info.get("verified") == verified and _sha256(path) == info["sha256"]):
            return info
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log.warning("derived DICOM %s does not match its checksum; removed, computing it again", path)
    for stale in (path, sidecar):
        stale.unlink(missing_ok=True)
    return None


def derive_cached(root: Path, row: dict[str, Any], syntax: str) -> tuple[Path, dict[str, Any]]:
    """Synchronous form: the verified derivative of `row` in `syntax`, computed if needed."""
    path = derived_path(root, row["sop_instance_uid"], syntax)
    info = cached(path, row["sha256"])
    if info is None:
        info = derive(str(root / row["path"]), syntax, str(path), row["sha256"])
    return path, info


# -- lossy derivatives: only behind a per-institution policy, capped per modality ---------------
#
# The Canadian Association of Radiologists' maximum compression ratios (CAR Standards for
# Irreversible Compression in Digital Diagnostic Imaging within Radiology, 2011), as
# uncompressed pixel bytes / compressed bytes. Modalities without a cap are never served lossy.

CAR_RATIO_CAPS: dict[str, float] = {"CT": 15.0, "MR": 24.0, "CR": 30.0, "DX": 30.0, "US": 12.0}
LOSSY_VERIFIED = "lossy-capped"


def ratio_cap(modality: str | None) -> float | None:
    return CAR_RATIO_CAPS.get(str(modality or "").strip().upper())


def _caps_text() -> str:
    return "CT 15:1, MR 24:1, CR/DX 30:1, US 12:1"


def _values(ds: pydicom.Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    return [str(v) for v in items]


def label_lossy(ds: pydicom.Dataset, ratio: float, method: str) -> None:
    """PS3.3 C.7.6.1.1.5: Lossy Image Compression "01" (never reset), the achieved ratio and
    the method appended to any earlier ones; methods padded with empty values so the two stay
    in step when an earlier step named no method (nothing is guessed)."""
    ratios = _values(ds, "LossyImageCompressionRatio")
    methods = _values(ds, "LossyImageCompressionMethod")
    methods += [""] * (len(ratios) - len(methods))
    shown = math.floor(ratio * 100) / 100  # never overstated past what was achieved
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = [*ratios, f"{shown:.2f}"]
    ds.LossyImageCompressionMethod = [*methods, method]


def lossy_dataset(ds: pydicom.Dataset, syntax: str,
                  cap: float) -> tuple[pydicom.Dataset, dict[str, Any]]:
    """`ds` changed in place to the lossy `syntax`, every frame at most `cap`:1 and verified,
    and labelled lossy. The SOP Instance UID is kept: this is a lossy representation of the
    stored instance for one retrieval (PS3.18 lets a user agent ask for a lossy syntax), not a
    new instance; the stored file stays as it was."""
    encoder = codecs.LOSSY_ENCODERS.get(syntax)
    if encoder is None:
        raise NotTranscodable(f"{syntax} is not a lossy syntax produced here")
    if not encoder.is_available:
        raise NotTranscodable(_missing(encoder.codec))
    fmt, frames, photometric = _decoded_for(ds, encoder.check)
    if photometric not in {"MONOCHROME1", "MONOCHROME2", "RGB"}:
        raise NotTranscodable(f"Photometric Interpretation {photometric} is not compressed lossy "
                              "(palette indices and subsampled colour are kept exact)")
    try:
        coded = [encoder.encode_frame(frame, fmt, cap) for frame in frames]
    except (codecs.CodecUnavailable, codecs.UnsupportedPixels) as exc:
        raise NotTranscodable(str(exc)) from None
    raw = sum(frame.nbytes for frame in frames)
    ratio = raw / sum(len(c.data) + len(c.data) % 2 for c in coded)  # as encapsulated (even)
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PixelData = encapsulate([c.data for c in coded], has_bot=True)
    element = ds["PixelData"]
    element.VR, element.is_undefined_length = "OB", True
    if photometric != fmt.photometric_interpretation:
        ds.PhotometricInterpretation = photometric
    if fmt.samples_per_pixel > 1:
        ds.PlanarConfiguration = 0
    label_lossy(ds, ratio, encoder.method)
    stats = {"method": encoder.method, "cap": cap, "ratio": round(ratio, 4),
             "frame_ratios": [round(c.ratio, 4) for c in coded],
             "psnr_db": round(min(c.psnr_db for c in coded), 2),
             "max_error": max(c.max_error for c in coded), "setting": encoder.setting,
             "settings": [round(c.setting, 6) for c in coded]}
    return ds, stats


def derive_lossy(source: str, syntax: str, target: str, source_sha256: str,
                 cap: float) -> dict[str, Any]:
    """Worker entry point: `source` in the lossy `syntax` at most `cap`:1, written atomically
    to `target` with a sidecar that says it is lossy and how much."""
    started = time.perf_counter()
    ds = pydicom.dcmread(source)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        ds, stats = lossy_dataset(ds, syntax, cap)
    except (codecs.CodecUnavailable, codecs.UnsupportedPixels, codecs.LossyUnsuitable) as exc:
        raise NotTranscodable(str(exc)) from None
    blob = _file_bytes(ds, syntax)
    return _write_derivative(target, blob, {
        "syntax": syntax, "source_sha256": source_sha256, "frames": frames,
        "source_size": os.path.getsize(source), "verified": LOSSY_VERIFIED, "lossy": stats,
        "seconds": round(time.perf_counter() - started, 4)})


def lossy_path(root: Path, sop_instance_uid: str, syntax: str, cap: float) -> Path:
    """Lossy derivatives in their own folder, named with the cap they were made under."""
    lossless = derived_path(root, sop_instance_uid, syntax)
    return lossless.parent / "lossy" / f"{syntax}-cap{cap:g}.dcm"


def lossy_refusal(row: dict[str, Any], syntax: str) -> str | None:
    """Why the image `row` cannot be made lossy in `syntax` (None when it can), judged from the
    index alone; the institution's policy is checked by the caller."""
    encoder = codecs.LOSSY_ENCODERS.get(syntax)
    if encoder is None:
        return f"{syntax} is not a lossy syntax produced here"
    if not encoder.is_available:
        return _missing(encoder.codec)
    modality = str(row.get("modality") or "").strip() or "(none)"
    if ratio_cap(modality) is None:
        return (f"modality {modality} has no CAR compression ratio cap ({_caps_text()}), so it "
                "is never served lossy")
    if row.get("bits_allocated") not in encoder.codec.bits_allocated:
        return f"{encoder.name} cannot hold {row.get('bits_allocated')}-bit samples"
    stored = row["transfer_syntax_uid"]
    if stored not in NATIVE and not codecs.can_decode(stored) and not _pydicom_decodes(stored):
        return f"the stored syntax {stored} cannot be decoded here"
    return None


def servable(row: dict[str, Any], syntax: str) -> str | None:
    """Why `row` cannot be sent in `syntax` (None when it can), judged from the index alone."""
    stored = row["transfer_syntax_uid"]
    if syntax in (AS_STORED, stored) or not row["is_image"]:
        return None
    codec = codecs.REGISTRY.get(syntax)
    if codec is None or not codec.lossless or codec.encoder is None:
        offered = ", ".join(codecs.lossless_targets())
        return f"{syntax} is not produced here (lossless syntaxes only: {offered})"
    if not codec.is_available:
        return _missing(codec)
    if row.get("bits_allocated") not in codec.bits_allocated:
        return f"{codec.name} cannot hold {row.get('bits_allocated')}-bit samples"
    if stored not in NATIVE and not codecs.can_decode(stored) and not _pydicom_decodes(stored):
        return f"the stored syntax {stored} cannot be decoded here"
    return None


def _pydicom_decodes(syntax: str) -> bool:
    try:
        from pydicom.pixels.decoders.base import get_decoder
        return get_decoder(syntax).is_available
    except (NotImplementedError, ValueError, KeyError):
        return False


# -- the app's worker pool ----------------------------------------------------------------------

def _context() -> multiprocessing.context.BaseContext:
    # forkserver: workers are forked from a clean server process (never from the threaded
    # event-loop process) that has the codecs imported once
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class Transcoder:
    """Derivatives of stored instances, computed in a process pool and cached on disk.

    A process pool rather than threads: the C codecs run on uploaded, untrusted code streams,
    so a codec crash takes down a worker (answered 500, the pool is renewed), not the server;
    and pydicom's (de)encapsulation is Python that would otherwise hold the event loop's GIL.
    Workers fork from a forkserver with this module preloaded, so starting one is cheap and
    never forks the threaded server process. The pool is made on first use."""

    def __init__(self, root: Path, workers: int | None = None) -> None:
        self.root = root
        self.workers = workers or max(1, min(2, os.cpu_count() or 1))
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pending: dict[Path, asyncio.Future] = {}

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=_context())
        return self._pool

    async def instance(self, row: dict[str, Any], syntax: str) -> tuple[Path, str]:
        """(path, transfer syntax) of `row` in `syntax`: the stored file when no change is due."""
        stored = row["transfer_syntax_uid"]
        if syntax in (AS_STORED, stored) or not row["is_image"]:
            return self.root / row["path"], stored
        path = derived_path(self.root, row["sop_instance_uid"], syntax)
        if await asyncio.to_thread(cached, path, row["sha256"]) is not None:
            return path, syntax
        future = self._pending.get(path)
        if future is None:
            future = asyncio.ensure_future(self._derive(row, syntax, path))
            self._pending[path] = future
            future.add_done_callback(lambda _f: self._pending.pop(path, None))
        await asyncio.shield(future)
        return path, syntax

    async def lossy_instance(self, row: dict[str, Any], syntax: str) -> tuple[Path, dict[str, Any]]:
        """(path, sidecar) of `row` in the lossy `syntax` under its modality's CAR cap, made
        once and cached apart from the lossless derivatives. The caller checks the policy."""
        cap = ratio_cap(row.get("modality"))
        if cap is None or not row["is_image"]:
            raise NotTranscodable(lossy_refusal(row, syntax) or "not an image")
        path = lossy_path(self.root, row["sop_instance_uid"], syntax, cap)
        info = await asyncio.to_thread(cached, path, row["sha256"], LOSSY_VERIFIED)
        if info is not None:
            return path, info
        future = self._pending.get(path)
        if future is None:
            future = asyncio.ensure_future(self._derive(row, syntax, path, derive_lossy, cap))
            self._pending[path] = future
            future.add_done_callback(lambda _f: self._pending.pop(path, None))
        return path, await asyncio.shield(future)

    async def _derive(self, row: dict[str, Any], syntax: str, path: Path,
                      worker: Any = derive, *extra: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), worker,
                                              str(self.root / row["path"]), syntax, str(path),
                                              row["sha256"], *extra)
        except concurrent.futures.process.BrokenProcessPool:
            broken, self._pool = self._pool, None  # the next request gets a fresh pool
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            raise TranscodeFailed(f"the transcoding worker died on {row['sop_instance_uid']} "
                                  f"-> {syntax}") from None

    async def smallest(self, row: dict[str, Any], candidates: list[str]) -> tuple[Path, str]:
        """(path, syntax) of whichever lossless `candidates` codes `row` in the fewest bytes
        (the stored file when it is one of them); each is made once and cached."""
        options = [await self.instance(row, syntax) for syntax in candidates
                   if servable(row, syntax) is None]
        if not options:
            raise NotTranscodable(f"none of {', '.join(candidates)} can hold this instance")
        return min(options, key=lambda option: option[0].stat().st_size)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


TRANSCODER = web.AppKey("dicom_transcoder", Transcoder)


async def transcoder_ctx(app: web.Application) -> AsyncIterator[None]:
    transcoder = Transcoder(app[SETTINGS].data_dir)
    app[TRANSCODER] = transcoder
    yield
    await transcoder.close()


def read_frames(path: Path, syntax: str, wanted: list[int]) -> tuple[int, list[bytes]]:
    """The frame count and the wanted frames (1-based) of a file, encoded as they are in it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if any(n < 1 or n > count for n in wanted):
        return count, []
    if syntax in NATIVE:
        size = len(ds.PixelData) // count
        return count, [ds.PixelData[(n - 1) * size:n * size] for n in wanted]
    frames = list(generate_frames(ds.PixelData, number_of_frames=count))
    return count, [frames[n - 1] for n in wanted]


__all__ = ["Transcoder", "TRANSCODER", "transcoder_ctx", "derive", "derive_cached",
           "servable", "read_frames", "decode_frames", "transcode_dataset",
           "derive_lossy", "lossy_dataset", "lossy_refusal", "ratio_cap", "CAR_RATIO_CAPS",
           "NotTranscodable", "TranscodeFailed", "CodecError"]
