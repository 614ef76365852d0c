"""The lossless codec registry: one entry per transfer syntax, clear errors naming the syntax and
the missing package, every encode verified bit-exact (a codec that alters pixels is caught), and
the sample layouts of the shared files (8/10/12/14/15/16-bit, signed, RGB) at their extremes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from diagnosis.dicom import codecs
from diagnosis.dicom.codecs import PixelFormat

TARGETS = [uid for uid in codecs.REGISTRY if codecs.REGISTRY[uid].lossless]


def test_every_lossless_syntax_is_registered_and_available():
    assert codecs.lossless_targets() == [
        codecs.EXPLICIT_VR_LITTLE_ENDIAN, codecs.JPEG_LS_LOSSLESS, codecs.JPEG_2000_LOSSLESS,
        codecs.HTJ2K_LOSSLESS, codecs.HTJ2K_LOSSLESS_RPCL, codecs.JPEG_XL_LOSSLESS]
    for uid in codecs.lossless_targets():
        codec = codecs.get_codec(uid)
        assert codec.uid == uid and codec.is_available and codec.missing_dependencies == []
    assert [codecs.media_type(u) for u in codecs.lossless_targets()] == [
        "application/octet-stream", "image/jls", "image/jp2", "image/jphc", "image/jphc",
        "image/jxl"]
    for lossy in (codecs.JPEG_LS_NEAR_LOSSLESS, codecs.JPEG_2000, codecs.HTJ2K, codecs.JPEG_XL):
        assert not codecs.get_codec(lossy).can_encode, "lossy output is never produced"
        assert codecs.can_decode(lossy), "but stored lossy images can be decoded"
    # lossy encoders live apart (policy-gated, capped; see test_lossy.py), never in the registry
    assert codecs.lossy_targets() == [codecs.JPEG_2000, codecs.HTJ2K, codecs.JPEG_LS_NEAR_LOSSLESS]
    assert not set(codecs.lossy_targets()) & set(codecs.lossless_targets())


def test_errors_name_the_syntax_and_the_missing_package():
    with pytest.raises(codecs.CodecUnavailable, match=r"1\.2\.3\.4"):
        codecs.get_codec("1.2.3.4")
    fmt = PixelFormat(8, 8)
    frame = np.zeros((8, 8), np.uint16)
    missing = dataclasses.replace(codecs.get_codec(codecs.JPEG_LS_LOSSLESS),
                                  _missing=lambda: ["imagecodecs built with CharLS (JPEGLS)"])
    assert not missing.is_available and not missing.can_encode
    with pytest.raises(codecs.CodecUnavailable) as caught:
        missing.encode_frame(frame, fmt)
    message = str(caught.value)
    assert "JPEG-LS Lossless" in message and codecs.JPEG_LS_LOSSLESS in message
    assert "CharLS" in message and "'imagecodecs' plugin" in message
    with pytest.raises(codecs.CodecUnavailable, match="lossy output is never produced"):
        codecs.get_codec(codecs.JPEG_2000).encode_frame(frame, fmt)
    with pytest.raises(codecs.UnsupportedPixels, match=r"32-bit samples"):
        codecs.get_codec(codecs.JPEG_LS_LOSSLESS).encode_frame(
            np.zeros((8, 8), np.uint32), PixelFormat(8, 8, bits_allocated=32, bits_stored=32))
    with pytest.raises(codecs.UnsupportedPixels, match="do not fit"):
        codecs.get_codec(codecs.JPEG_LS_LOSSLESS).encode_frame(
            np.zeros((8, 8), np.int32), PixelFormat(8, 8))


def test_a_codec_that_alters_pixels_fails_loudly():
    honest = codecs.get_codec(codecs.HTJ2K_LOSSLESS)

    def off_by_one(frame, fmt):
        return honest.encoder(frame + np.uint16(1), fmt)

    broken = dataclasses.replace(honest, encoder=off_by_one)
    fmt = PixelFormat(16, 16, bits_stored=12)
    frame = np.arange(256, dtype=np.uint16).reshape(16, 16)
    with pytest.raises(codecs.LosslessMismatch, match="256 samples differ.*not served"):
        broken.encode_frame(frame, fmt)


def _layouts():
    rng = np.random.default_rng(7)
    cases = []
    for bits_stored, signed in ((8, False), (10, False), (12, False), (12, True), (14, True),
                                (15, False), (16, False), (16, True)):
        allocated = 8 if bits_stored == 8 else 16
        fmt = PixelFormat(37, 53, 1, allocated, bits_stored, int(signed))
        low, high = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (
            0, (1 << bits_stored) - 1)
        frame = rng.integers(low, high + 1, size=fmt.shape, dtype=np.int64)
        frame[0, :4] = [low, high, 0, -1 if signed else 1]  # the extremes and the sign change
        frame[1:9, 1:9] = low  # a flat block next to noise
        cases.append(pytest.param(fmt, frame.astype(fmt.dtype),
                                  id=f"{'s' if signed else 'u'}{bits_stored}"))
    for bits in (8, 16):
        fmt = PixelFormat(29, 41, 3, bits, bits, 0, "RGB")
        frame = rng.integers(0, 1 << bits, size=fmt.shape, dtype=np.int64).astype(fmt.dtype)
        frame[..., 1] = frame[..., 0]  # correlated channels, where a colour transform would help
        cases.append(pytest.param(fmt, frame, id=f"rgb{bits}"))
    return cases


@pytest.mark.parametrize("uid", TARGETS)
@pytest.mark.parametrize(("fmt", "frame"), _layouts())
def test_round_trip_is_bit_exact_at_the_extremes(uid, fmt, frame):
    codec = codecs.get_codec(uid)
    data = codec.encode_frame(frame, fmt)
    back = codec.decode_frame(data, fmt)
    assert back.dtype == fmt.dtype and back.shape == fmt.shape
    assert np.array_equal(back, frame)


def _cod(codestream: bytes) -> dict[str, int]:
    at = codestream.find(b"\xff\x52")
    return {"progression": codestream[at + 5], "mct": codestream[at + 8],
            "decompositions": codestream[at + 9]}


def test_rgb_stays_rgb_without_a_colour_transform():
    fmt = PixelFormat(32, 32, 3, 8, 8, 0, "RGB")
    frame = np.random.default_rng(1).integers(0, 256, fmt.shape, dtype=np.uint8)
    for uid in (codecs.JPEG_2000_LOSSLESS, codecs.HTJ2K_LOSSLESS, codecs.HTJ2K_LOSSLESS_RPCL):
        assert _cod(codecs.get_codec(uid).encode_frame(frame, fmt))["mct"] == 0, uid


@pytest.mark.parametrize(("rows", "columns", "levels"), [(64, 64, 5), (1955, 1841, 5),
                                                         (4096, 3000, 6)])
def test_htj2k_rpcl_meets_ps3_5(rows, columns, levels):
    """PS3.5 10.18: RPCL progression, base resolution <= 64, TLM markers present."""
    fmt = PixelFormat(rows, columns, bits_stored=12)
    assert codecs.rpcl_decompositions(fmt) == levels
    assert max(rows, columns) / 2 ** levels <= codecs.RPCL_BASE_RESOLUTION
    if rows > 2000:
        return  # the arithmetic is enough for the large case
    frame = (np.arange(rows * columns, dtype=np.uint32) % 4096).astype(np.uint16).reshape(rows,
                                                                                          columns)
    data = codecs.get_codec(codecs.HTJ2K_LOSSLESS_RPCL).encode_frame(frame, fmt)
    cod = _cod(data)
    assert cod["progression"] == codecs.RPCL and cod["decompositions"] == levels
    assert data.find(b"\xff\x55") > 0, "TLM marker segment"
