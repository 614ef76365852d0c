"""Progressive HTJ2K code streams on the real images in ../shared/data/dicom (read in place):
the 1/4-resolution prefix is a small share of the bytes and decodes to the right shape, the
whole stream decodes bit-exact, and the layout comes from the code-stream markers."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest

from diagnosis.dicom import progressive
from diagnosis.dicom.progressive import Layout, ProgressiveError

SINGLE = ("693_UNCR.dcm", "MR2_UNCR.dcm", "RG1_J2KI.dcm", "RG3_J2KR.dcm", "US1_UNCR.dcm",
          "eCT_Supplemental.dcm", "emri_small_jpeg_ls_lossless.dcm")


def markers(data: bytes) -> dict[int, list[int]]:
    """Offsets of each marker code in the main header and of each tile-part, walked with their
    lengths."""
    found: dict[int, list[int]] = {}
    at = 2
    while at < len(data):
        code = struct.unpack_from(">H", data, at)[0]
        found.setdefault(code, []).append(at)
        if code == progressive.EOC:
            break
        if code == progressive.SOT:
            at += struct.unpack_from(">I", data, at + 6)[0]
        else:
            at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return found


@pytest.fixture(scope="module")
def ct_frames(shared_data) -> list[np.ndarray]:
    paths = sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))
    return [progressive.frames_of(pydicom.dcmread(p))[0] for p in paths]


def test_ct_slices_quarter_resolution_prefix_is_8_to_14_percent_and_full_is_bit_exact(ct_frames):
    fractions = []
    for frame in ct_frames:
        data, lay = progressive.encode(frame)
        assert lay.levels == 6 and lay.preview_level == 3 and lay.length == len(data)
        preview = data[:lay.level_ends[lay.preview_level]]
        fractions.append(len(preview) / len(data))
        small = progressive.decode(preview, 2)
        assert small.shape == (128, 128) and small.dtype == np.int16
        assert np.array_equal(small, progressive.decode(data, 2)), "the prefix holds all of 1/4"
        full = progressive.decode(data)
        assert full.dtype == frame.dtype and np.array_equal(full, frame)
    assert 0.08 <= min(fractions) and max(fractions) <= 0.14, fractions
    assert 0.11 <= float(np.mean(fractions)) <= 0.13


def test_code_stream_is_rpcl_with_tlm_and_a_tile_part_per_resolution(ct_frames):
    data, lay = progressive.encode(ct_frames[0])
    found = markers(data)
    assert found[progressive.SIZ] == [2] and progressive.TLM in found
    assert len(found[progressive.SOT]) == lay.levels
    assert found[progressive.EOC] == [len(data) - 2]
    cod = data[found[progressive.COD][0] + 4:]
    assert cod[1] == progressive.RPCL and cod[5] == lay.levels - 1
    assert cod[9] == 1, "reversible 5/3 wavelet (lossless)"
    assert progressive.layout(data) == Layout(lay.level_ends, (512, 512), "int16")
    for level, end in enumerate(lay.level_ends[:-1]):
        assert data[end:end + 2] == b"\xff\x90", f"level {level} ends where a tile-part starts"
        shape = progressive.decode(data[:end], lay.levels - 1 - level).shape
        assert shape == lay.shape_at(level)


@pytest.mark.parametrize("name", SINGLE)
def test_every_single_file_round_trips_bit_exact_with_a_smaller_preview(shared_data, name):
    ds = pydicom.dcmread(shared_data / "dicom" / "single" / name)
    frames = progressive.frames_of(ds)
    assert len(frames) == int(ds.get("NumberOfFrames", 1) or 1)
    for frame in frames[:3]:
        data, lay = progressive.encode(frame)
        progressive.verify(frame, data, lay)
        preview = lay.level_ends[lay.preview_level]
        assert 0.04 < preview / lay.length < 0.2, (name, preview / lay.length)
        small = progressive.decode(data[:preview], lay.levels - 1 - lay.preview_level)
        assert small.shape == tuple(-(-n // 4) for n in frame.shape[:2]) + frame.shape[2:]
        assert np.array_equal(progressive.decode(data), frame)


def test_frames_keep_the_stored_samples(shared_data):
    single = shared_data / "dicom" / "single"
    ct = progressive.frames_of(pydicom.dcmread(single / "693_UNCR.dcm"))[0]
    assert ct.dtype == np.int16 and ct.min() < 0, "signed CT stays signed"
    us = progressive.frames_of(pydicom.dcmread(single / "US1_UNCR.dcm"))[0]
    assert us.shape == (480, 640, 3) and us.dtype == np.uint8
    mr = progressive.frames_of(pydicom.dcmread(single / "emri_small_jpeg_ls_lossless.dcm"))
    assert len(mr) == 10 and mr[0].shape == (64, 64) and mr[0].dtype == np.uint16


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
@pytest.mark.parametrize("shape", [(37, 53), (300, 200), (64, 64, 3), (5, 7)])
def test_extreme_values_of_every_depth_and_odd_shapes_are_lossless(dtype, shape):
    info = np.iinfo(dtype)
    frame = np.random.default_rng(7).integers(info.min, info.max, size=shape, endpoint=True,
                                              dtype=dtype)
    frame.flat[0], frame.flat[-1] = info.min, info.max
    data, lay = progressive.encode(frame)
    progressive.verify(frame, data, lay)
    assert lay.dtype == dtype and lay.shape == shape


def test_unsupported_frames_are_refused_by_name():
    with pytest.raises(ProgressiveError, match="float"):
        progressive.encode(np.zeros((8, 8), np.float32))
    with pytest.raises(ProgressiveError, match="samples"):
        progressive.encode(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ProgressiveError, match="SOC"):
        progressive.layout(b"not a code stream")
    data, _ = progressive.encode(np.arange(4096, dtype=np.uint16).reshape(64, 64))
    for cut in (len(data) - 40, 200, 120, 60, 10):
        with pytest.raises(ProgressiveError):
            progressive.layout(data[:cut])
    plain = bytes(__import__("imagecodecs").htj2k_encode(np.zeros((64, 64), np.uint8)))
    with pytest.raises(ProgressiveError, match="TLM"):
        progressive.layout(plain)


def test_derivatives_are_cached_verified_and_rejected_when_altered(shared_data, tmp_path):
    source = shared_data / "dicom" / "single" / "eCT_Supplemental.dcm"
    made = progressive.derive(source, "ab" * 32, tmp_path)
    assert len(made) == 2 and all(d.path.exists() for d in made)
    index = json.loads((progressive.cache_folder(tmp_path, "ab" * 32) / "index.json").read_text())
    assert index["verified"] and index["version"] == progressive.VERSION
    again = progressive.load("ab" * 32, tmp_path)
    assert again == made
    frames = progressive.frames_of(pydicom.dcmread(source))
    assert np.array_equal(progressive.decode(made[1].path.read_bytes()), frames[1])
    made[0].path.write_bytes(made[0].path.read_bytes()[:-10] + b"\x00" * 10)
    assert progressive.load("ab" * 32, tmp_path) is None, "an altered file is not used"
    remade = progressive.derive(source, "ab" * 32, tmp_path)
    assert remade == made and np.array_equal(progressive.decode(remade[0].path.read_bytes()),
                                             frames[0])
    assert progressive.load("cd" * 32, tmp_path) is None


def test_encode_speed_on_a_ct_slice(ct_frames):
    """Well above the link: a 512x512 CT slice encodes in milliseconds (loose bound: 2 shared
    cores)."""
    import time
    start = time.perf_counter()
    for frame in ct_frames:
        progressive.encode(frame)
    per_slice = (time.perf_counter() - start) / len(ct_frames)
    assert per_slice < 0.05, per_slice
