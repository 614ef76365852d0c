"""STOW-RS then WADO-RS in every offered transfer syntax, on the real files in ../shared/data/dicom:
what comes back decodes (independently of the server's codec code) to pixels bit-exact to the
original's, keeps every other element, and frames, q-values, 406, Range, non-image objects and a
corrupted cache behave as PS3.18 and the archive's promises say."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from aiohttp import MultipartReader, hdrs
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from diagnosis.dicom import codecs, transcode

EXPLICIT_LE = codecs.EXPLICIT_VR_LITTLE_ENDIAN
SYNTAXES = codecs.lossless_targets()
MATRIX = ("01.dcm", "15.dcm", "693_UNCR.dcm", "MR2_UNCR.dcm", "RG1_J2KI.dcm", "RG3_J2KR.dcm",
          "US1_UNCR.dcm", "eCT_Supplemental.dcm", "emri_small_jpeg_ls_lossless.dcm")


async def parts(response) -> list[tuple[str, bytes]]:
    reader = MultipartReader.from_response(response)
    found = []
    while (part := await reader.next()) is not None:
        found.append((part.headers[hdrs.CONTENT_TYPE], bytes(await part.read(decode=False))))
    return found


async def stow(world, paths_or_blobs) -> None:
    """STOW-RS; files without a Patient ID go in their own request naming the patient."""
    blobs = [p.read_bytes() if isinstance(p, Path) else p for p in paths_or_blobs]
    named = [b for b in blobs
             if pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True).get("PatientID")]
    anonymous = [b for b in blobs if b not in named]
    for group, query in ((named, ""), (anonymous, "?patient=ANON-1")):
        if group:
            await world.stow(group, query=query, expect=200)


def url_of(ds_or_path) -> str:
    ds = ds_or_path if isinstance(ds_or_path, Dataset) else pydicom.dcmread(
        ds_or_path, stop_before_pixels=True)
    return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}")


def dicom_accept(syntax: str) -> dict[str, str]:
    return {"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={syntax}'}


# -- an independent decoder: pydicom where it can, Pillow (OpenJPEG) for HTJ2K, and the one
# -- library there is for JPEG-LS (CharLS) and JPEG XL (libjxl) -- never diagnosis.dicom.codecs

def _sign_extend(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    dtype = np.dtype(f"{'i' if ds.PixelRepresentation else 'u'}{ds.BitsAllocated // 8}")
    arr = arr.astype(arr.dtype.str[:-1] + str(dtype.itemsize)).view(dtype)
    shift = 8 * dtype.itemsize - ds.BitsStored
    return (arr << shift) >> shift if ds.PixelRepresentation and shift else arr


def _pillow_j2k(codestream: bytes, ds: Dataset) -> np.ndarray:
    at = codestream.find(b"\xff\x51")
    ssiz = codestream[at + 40]
    arr = np.array(Image.open(io.BytesIO(codestream)))
    if ssiz & 0x80:  # Pillow offsets signed samples by 2**(precision - 1)
        arr = (arr.astype(np.int64) - (1 << (ssiz & 0x7F))).astype(np.int16)
    return _sign_extend(arr, ds)


def frames_of(ds: Dataset) -> list[np.ndarray]:
    syntax = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    if syntax in (EXPLICIT_LE, codecs.JPEG_2000_LOSSLESS, codecs.JPEG_2000):
        pixels = ds.pixel_array
        return list(pixels) if count > 1 else [pixels]
    decode = {codecs.JPEG_LS_LOSSLESS: lambda b: _sign_extend(imagecodecs.jpegls_decode(b), ds),
              codecs.JPEG_XL_LOSSLESS: lambda b: _sign_extend(imagecodecs.jpegxl_decode(b), ds),
              codecs.HTJ2K_LOSSLESS: lambda b: _pillow_j2k(b, ds),
              codecs.HTJ2K_LOSSLESS_RPCL: lambda b: _pillow_j2k(b, ds)}[syntax]
    return [decode(f) for f in generate_frames(ds.PixelData, number_of_frames=count)]


_REFERENCE: dict[Path, list[np.ndarray]] = {}


def reference(path: Path) -> list[np.ndarray]:
    if path not in _REFERENCE:
        _REFERENCE[path] = frames_of(pydicom.dcmread(path))
    return _REFERENCE[path]


def _without_group_lengths(ds: Dataset) -> Dataset:
    """Retired group lengths (gggg,0000) describe an encoding; PS3.5 7.2 lets writers drop them
    and they would be wrong for a new one, so pydicom does not write them."""
    for tag in [e.tag for e in ds if e.tag.element == 0]:
        del ds[tag]
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _without_group_lengths(item)
    return ds


def original_bytes(ds: Dataset) -> bytes:
    return Path(ds.filename).read_bytes()


def assert_same_instance(served: Dataset, original: Dataset, syntax: str) -> None:
    """Every element but Pixel Data kept, values and all; the file meta names the new syntax."""
    assert str(served.file_meta.TransferSyntaxUID) == syntax
    assert served.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    original = _without_group_lengths(pydicom.dcmread(io.BytesIO(original_bytes(original))))
    kept = [e.tag for e in original if e.tag != 0x7FE00010]
    assert [e.tag for e in served if e.tag != 0x7FE00010] == kept
    for tag in kept:
        assert served[tag].value == original[tag].value, (syntax, served[tag])


async def test_every_file_in_every_syntax_is_bit_exact(imaging, files):
    world = imaging
    await stow(world, [files[n] for n in MATRIX])
    auth = world.auth("clinician")
    for name in MATRIX:
        original = pydicom.dcmread(files[name])
        for syntax in [*SYNTAXES, "*"]:
            response = await world.client.get(url_of(original), headers={**dicom_accept(syntax),
                                                                          **auth})
            assert response.status == 200, (name, syntax, await response.text())
            assert f"transfer-syntax={syntax}" in response.headers[hdrs.CONTENT_TYPE]
            ((part_type, blob),) = await parts(response)
            expected = str(original.file_meta.TransferSyntaxUID) if syntax == "*" else syntax
            assert part_type == f"application/dicom; transfer-syntax={expected}"
            if syntax == "*" or expected == str(original.file_meta.TransferSyntaxUID):
                assert blob == files[name].read_bytes(), "the stored bytes, untouched"
                continue
            served = pydicom.dcmread(io.BytesIO(blob))
            assert_same_instance(served, original, syntax)
            got, want = frames_of(served), reference(files[name])
            assert len(got) == len(want)
            for a, b in zip(got, want):
                assert a.dtype == b.dtype and np.array_equal(a, b), (name, syntax)
    rg1 = pydicom.dcmread(io.BytesIO((await parts(await world.client.get(
        url_of(files["RG1_J2KI.dcm"]), headers={**dicom_accept(codecs.JPEG_LS_LOSSLESS),
                                                **auth})))[0][1]))
    assert rg1.LossyImageCompression == "01", "a lossy original stays marked lossy"
    metadata = await (await world.client.get(url_of(files["MR2_UNCR.dcm"]) + "/metadata",
                                             headers=auth)).json(content_type=None)
    mr = pydicom.dcmread(files["MR2_UNCR.dcm"], stop_before_pixels=True)
    assert metadata[0]["00080018"]["Value"] == [mr.SOPInstanceUID]
    assert metadata[0]["00280101"]["Value"] == [12] and metadata[0]["00280010"]["Value"] == [1024]


async def test_the_whole_ct_series_in_jpeg_ls(imaging, files):
    world = imaging
    ct = sorted(p for p in files.values() if p.parent.name == "ct-head-ge")
    assert len(ct) == 28
    await stow(world, ct)
    first = pydicom.dcmread(ct[0], stop_before_pixels=True)
    response = await world.client.get(
        f"/dicomweb/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}",
        headers={**dicom_accept(codecs.JPEG_LS_LOSSLESS), **world.auth("clinician")})
    assert response.status == 200
    served = [pydicom.dcmread(io.BytesIO(blob)) for _t, blob in await parts(response)]
    by_uid = {ds.SOPInstanceUID: ds for ds in served}
    assert len(by_uid) == 28
    raw = packed = 0
    for path in ct:
        original = pydicom.dcmread(path)
        ds = by_uid[original.SOPInstanceUID]
        assert str(ds.file_meta.TransferSyntaxUID) == codecs.JPEG_LS_LOSSLESS
        assert np.array_equal(frames_of(ds)[0], original.pixel_array), path.name
        raw, packed = raw + len(original.PixelData), packed + len(ds.PixelData)
    assert raw / packed > 3, "JPEG-LS packs the head CT about 4x"


async def test_frames_in_each_media_type(imaging, files):
    world = imaging
    names = ("eCT_Supplemental.dcm", "emri_small_jpeg_ls_lossless.dcm", "US1_UNCR.dcm")
    await stow(world, [files[n] for n in names])
    auth = world.auth("clinician")
    for name in names:
        original = pydicom.dcmread(files[name])
        want = reference(files[name])
        asked = "1,2" if len(want) > 1 else "1"
        for media in codecs.MEDIA_TYPES:
            if media in ("image/jpeg", "image/dicom-rle"):
                continue
            for syntax in codecs.MEDIA_TYPES[media][1]:
                if syntax not in SYNTAXES:
                    continue
                response = await world.client.get(url_of(original) + f"/frames/{asked}", headers={
                    "Accept": f'multipart/related; type="{media}"; transfer-syntax={syntax}',
                    **auth})
                assert response.status == 200, (name, media, await response.text())
                got = await parts(response)
                assert [t for t, _b in got] == [f"{media}; transfer-syntax={syntax}"] * len(got)
                for (_t, data), expected in zip(got, want):
                    single = copy.deepcopy(original)
                    single.file_meta = FileMetaDataset(original.file_meta)
                    single.file_meta.TransferSyntaxUID = syntax
                    single.NumberOfFrames = 1
                    if syntax == EXPLICIT_LE:
                        frame = np.frombuffer(data, expected.dtype).reshape(expected.shape)
                    else:
                        single.PixelData = pydicom.encaps.encapsulate([data])
                        single["PixelData"].is_undefined_length = True
                        (frame,) = frames_of(single)
                    assert np.array_equal(frame, expected), (name, syntax)
        stored = await world.client.get(url_of(original) + "/frames/1", headers={
            "Accept": 'multipart/related; type="image/jls"; transfer-syntax=*', **auth})
        ((_t, data),) = await parts(stored)
        if original["PixelData"].is_undefined_length:
            assert data == next(generate_frames(original.PixelData, number_of_frames=10))


async def test_accept_order_q_values_and_406(imaging, files):
    world = imaging
    await stow(world, [files["01.dcm"]])
    auth, url = world.auth("clinician"), url_of(files["01.dcm"])
    lossy = "1.2.840.10008.1.2.4.91"

    async def chosen(accept: str) -> str:
        response = await world.client.get(url, headers={"Accept": accept, **auth})
        assert response.status == 200, await response.text()
        ((part_type, _blob),) = await parts(response)
        return part_type.rsplit("=", 1)[1]

    dicom = 'multipart/related; type="application/dicom"'
    assert await chosen(f"{dicom}; transfer-syntax={lossy}, "
                        f"{dicom}; transfer-syntax={codecs.JPEG_LS_LOSSLESS}; q=0.5") == \
        codecs.JPEG_LS_LOSSLESS, "an unservable first choice falls through to the next"
    assert await chosen(f"{dicom}; transfer-syntax={codecs.JPEG_2000_LOSSLESS}; q=0.2, "
                        f"{dicom}; transfer-syntax={codecs.HTJ2K_LOSSLESS}; q=0.9") == \
        codecs.HTJ2K_LOSSLESS, "the higher q-value wins"
    assert await chosen(f"{dicom}; transfer-syntax=\"{codecs.JPEG_XL_LOSSLESS}\"") == \
        codecs.JPEG_XL_LOSSLESS, "quoted parameters"
    assert await chosen("*/*") == EXPLICIT_LE
    refused = await world.client.get(url, headers={"Accept": f"{dicom}; transfer-syntax={lossy}, "
                                                             f"{dicom}; transfer-syntax=1.2.3; q=0",
                                                   **auth})
    assert refused.status == 406
    assert refused.content_type == "application/problem+json"
    problem = await refused.json(content_type=None)
    assert lossy in problem["detail"] and "transfer-syntax=*" in problem["detail"]
    assert codecs.HTJ2K_LOSSLESS_RPCL in problem["detail"], "it lists what is offered"
    frames = await world.client.get(url + "/frames/1", headers={
        "Accept": 'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.90',
        **auth})
    assert frames.status == 406, "a transfer syntax the media type cannot carry"


async def test_range_on_a_single_frame(imaging, files):
    world = imaging
    await stow(world, [files["MR2_UNCR.dcm"]])
    url = url_of(files["MR2_UNCR.dcm"]) + "/frames/1"
    accept = {"Accept": f"image/jphc; transfer-syntax={codecs.HTJ2K_LOSSLESS_RPCL}",
              **world.auth("clinician")}
    whole = await world.client.get(url, headers=accept)
    assert whole.status == 200 and whole.headers[hdrs.ACCEPT_RANGES] == "bytes"
    assert whole.headers[hdrs.CONTENT_TYPE] == (
        f"image/jphc; transfer-syntax={codecs.HTJ2K_LOSSLESS_RPCL}")
    stream = await whole.read()
    total = len(stream)
    head = await world.client.get(url, headers={**accept, "Range": "bytes=0-9999"})
    assert head.status == 206 and head.headers[hdrs.CONTENT_RANGE] == f"bytes 0-9999/{total}"
    assert await head.read() == stream[:10000]
    tail = await world.client.get(url, headers={**accept, "Range": "bytes=-100"})
    assert tail.status == 206 and await tail.read() == stream[-100:]
    beyond = await world.client.get(url, headers={**accept, "Range": f"bytes={total}-"})
    assert beyond.status == 416 and beyond.headers[hdrs.CONTENT_RANGE] == f"bytes */{total}"
    # the first resolutions of the RPCL stream, from a prefix of it, are the image at 1/8
    prefix = await (await world.client.get(url, headers={
        **accept, "Range": f"bytes=0-{total // 8}"})).read()
    small = imagecodecs.htj2k_decode(prefix, skipres=3, resilient=True)
    assert small.shape == (128, 128)


async def test_non_image_objects_are_served_as_stored(imaging, shared_data):
    world = imaging
    ecg = (shared_data / "ecg" / "dicom" / "waveform_ecg.dcm").read_bytes()
    report = basic_text_sr()
    await stow(world, [ecg, report])
    for blob in (ecg, report):
        ds = pydicom.dcmread(io.BytesIO(blob))
        for syntax in (codecs.JPEG_LS_LOSSLESS, codecs.HTJ2K_LOSSLESS, EXPLICIT_LE):
            response = await world.client.get(url_of(ds), headers={
                **dicom_accept(syntax), **world.auth("clinician")})
            assert response.status == 200
            ((part_type, served),) = await parts(response)
            assert served == blob and part_type.endswith(str(ds.file_meta.TransferSyntaxUID))


def basic_text_sr() -> bytes:
    """A small Basic Text SR (there is none among the shared files), for patient P-1."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "P-1", "Li^Na", "SR"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    item = Dataset()
    item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", "No acute findings."
    ds.ContentSequence = [item]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
        ds.SOPClassUID, ds.SOPInstanceUID)
    ds.file_meta.TransferSyntaxUID = EXPLICIT_LE
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def test_a_corrupted_cache_file_is_recomputed_not_served(imaging, files):
    world = imaging
    await stow(world, [files["693_UNCR.dcm"]])
    original = pydicom.dcmread(files["693_UNCR.dcm"])
    headers = {**dicom_accept(codecs.JPEG_XL_LOSSLESS), **world.auth("clinician")}
    first = (await parts(await world.client.get(url_of(original), headers=headers)))[0][1]
    cached = transcode.derived_path(world.data_dir, original.SOPInstanceUID,
                                    codecs.JPEG_XL_LOSSLESS)
    sidecar = json.loads(cached.with_suffix(".json").read_text())
    assert cached.read_bytes() == first and sidecar["sha256"] == hashlib.sha256(first).hexdigest()
    assert sidecar["verified"] == "bit-exact"
    damaged = bytearray(first)
    damaged[len(damaged) // 2] ^= 0x40  # one bit inside the JPEG XL code stream
    cached.write_bytes(bytes(damaged))
    second = (await parts(await world.client.get(url_of(original), headers=headers)))[0][1]
    assert second == first, "recomputed, not the damaged bytes"
    assert cached.read_bytes() == first
    cached.with_suffix(".json").unlink()
    third = (await parts(await world.client.get(url_of(original), headers=headers)))[0][1]
    assert third == first and cached.with_suffix(".json").exists()
    assert np.array_equal(frames_of(pydicom.dcmread(io.BytesIO(third)))[0], original.pixel_array)


async def test_smallest_lossless_and_verification_failure(tmp_path, files, monkeypatch):
    """Full transfers get the smallest of JPEG-LS, HTJ2K and JPEG XL (each cached); a codec
    that alters pixels leaves nothing behind."""
    path = files["US1_UNCR.dcm"]
    blob = path.read_bytes()
    (tmp_path / "stored.dcm").write_bytes(blob)
    row = {"sop_instance_uid": "1.2.3.4", "sha256": hashlib.sha256(blob).hexdigest(),
           "path": "stored.dcm", "transfer_syntax_uid": EXPLICIT_LE, "is_image": 1,
           "bits_allocated": 8}
    transcoder = transcode.Transcoder(tmp_path)
    try:
        chosen, syntax = await transcoder.smallest(row, list(codecs.SMALLEST_CANDIDATES))
        sizes = {s: transcode.derived_path(tmp_path, "1.2.3.4", s).stat().st_size
                 for s in codecs.SMALLEST_CANDIDATES}
        assert syntax == min(sizes, key=sizes.get) == codecs.JPEG_XL_LOSSLESS
        stamp = chosen.stat().st_mtime_ns
        assert await transcoder.smallest(row, list(codecs.SMALLEST_CANDIDATES)) == (chosen, syntax)
        assert chosen.stat().st_mtime_ns == stamp, "served from the cache"
        as_stored = await transcoder.smallest(row, [EXPLICIT_LE, codecs.JPEG_LS_LOSSLESS])
        assert as_stored == (transcode.derived_path(tmp_path, "1.2.3.4", codecs.JPEG_LS_LOSSLESS),
                             codecs.JPEG_LS_LOSSLESS)
    finally:
        await transcoder.close()
    honest = codecs.REGISTRY[codecs.JPEG_2000_LOSSLESS]
    monkeypatch.setitem(codecs.REGISTRY, codecs.JPEG_2000_LOSSLESS, dataclasses.replace(
        honest, encoder=lambda frame, fmt: honest.encoder(frame ^ np.uint8(1), fmt)))
    target = tmp_path / "bad.dcm"
    with pytest.raises(codecs.LosslessMismatch):
        transcode.derive(str(tmp_path / "stored.dcm"), codecs.JPEG_2000_LOSSLESS, str(target), "x")
    assert not target.exists() and not target.with_suffix(".json").exists()


def test_colour_by_plane_and_implicit_vr_sources(tmp_path, files):
    """The ultrasound rewritten colour-by-plane in Implicit VR Little Endian (layouts other
    archives send): every lossless target gives the same RGB pixels, pixel-interleaved."""
    original = pydicom.dcmread(files["US1_UNCR.dcm"])
    rgb = original.pixel_array
    variant = copy.deepcopy(original)
    variant.PixelData = np.ascontiguousarray(np.moveaxis(rgb, -1, 0)).tobytes()
    variant.PlanarConfiguration = 1
    variant.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    source = tmp_path / "planar.dcm"
    variant.save_as(source, enforce_file_format=True)
    for syntax in SYNTAXES:
        target = tmp_path / f"{syntax}.dcm"
        info = transcode.derive(str(source), syntax, str(target), "src")
        served = pydicom.dcmread(target)
        assert info["verified"] == "bit-exact" and served.PlanarConfiguration == 0
        assert served.PhotometricInterpretation == "RGB", "no colour transform introduced"
        assert np.array_equal(frames_of(served)[0], rgb), syntax
