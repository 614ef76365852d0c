"""The stream frame: round trip, and every way a frame can be broken is refused by name."""

from __future__ import annotations

import struct
import uuid
import zlib

import numpy as np
import pytest

from diagnosis.ecg.frames import CRC, HEADER, Frame, FrameError, decode, encode

STREAM = uuid.UUID("12345678-1234-5678-1234-567812345678")


def frame(**overrides) -> Frame:
    values = dict(stream_id=STREAM, seq=7, first_sample=1750, fs=500.0, leads=("I", "II", "V2"),
                  gain=(200.0, 200.0, 400.0),
                  samples=np.arange(-300, 300, dtype=np.int16).reshape(200, 3))
    values.update(overrides)
    return Frame(**values)


def reseal(body: bytes) -> bytes:
    """Fix the checksum after tampering, to reach the checks behind it."""
    return body[:-CRC.size] + CRC.pack(zlib.crc32(body[:-CRC.size]))


def test_round_trip_is_exact():
    original = frame(end=True, fs=360.0)
    decoded = decode(encode(original))
    assert decoded.samples.dtype == np.int16
    assert np.array_equal(decoded.samples, original.samples)
    assert (decoded.stream_id, decoded.seq, decoded.first_sample, decoded.fs, decoded.leads,
            decoded.gain, decoded.end) == (STREAM, 7, 1750, 360.0, ("I", "II", "V2"),
                                           (200.0, 200.0, 400.0), True)


def test_extreme_values_survive():
    samples = np.array([[-32768, 32767], [0, -1]], dtype=np.int16)
    decoded = decode(encode(frame(samples=samples, leads=("a", "b"), gain=(1.0, 1.0))))
    assert np.array_equal(decoded.samples, samples)


@pytest.mark.parametrize("mangle,needle", [
    (lambda b: b[:10], "shorter than its header"),
    (lambda b: b[:-7] + b[-6:], "checksum"),
    (lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:], "checksum"),
    (lambda b: reseal(b"XXXX" + b[4:]), "bad magic"),
    (lambda b: reseal(b[:4] + bytes([9]) + b[5:]), "version 9"),
    (lambda b: reseal(b[:-CRC.size - 2] + CRC.pack(0)[:0] + b[-CRC.size:]), "promises"),
    (lambda b: b"", "shorter"),
    (lambda b: bytes(200), "checksum"),
])
def test_broken_frames_are_refused(mangle, needle):
    with pytest.raises(FrameError, match=needle):
        decode(mangle(encode(frame())))


def _with_header(**fields) -> bytes:
    values = dict(magic=b"ECG1", version=1, flags=0, stream=STREAM.bytes, seq=0, first=0,
                  fs=500000, leads=1, samples=1)
    values.update(fields)
    head = HEADER.pack(*values.values())
    body = head + struct.pack("<f", 200.0) + b"\x01I" + struct.pack("<h", 5)
    return body + CRC.pack(zlib.crc32(body))


@pytest.mark.parametrize("fields,needle", [
    ({"leads": 0}, "leads"), ({"leads": 40}, "leads"), ({"samples": 60000}, "samples per lead"),
    ({"fs": 0}, "sample rate"),
])
def test_impossible_headers(fields, needle):
    with pytest.raises(FrameError, match=needle):
        decode(_with_header(**fields))


def test_bad_gain_and_lead_names():
    with pytest.raises(FrameError, match="gains"):
        decode(encode(frame(gain=(200.0, float("nan"), 1.0))))
    with pytest.raises(FrameError, match="repeat"):
        decode(encode(frame(leads=("I", "I", "V2"))))
    with pytest.raises(FrameError, match="shaped"):
        encode(frame(leads=("I",), gain=(1.0,)))


def test_baselines_and_exact_gains_survive():
    """Version 2 carries each lead's baseline and its gain as a double: CPSC 2021 stores
    0 mV at -199006 with 38777.46675997201 units per mV, neither of which version 1 could say."""
    original = frame(leads=("I", "II"), gain=(38777.46675997201, 47660.88631984586),
                     baseline=(-199006, -230655), samples=np.array([[-8918, 24065], [0, -1]],
                                                                   dtype=np.int16))
    decoded = decode(encode(original))
    assert decoded.gain == original.gain and decoded.baseline == (-199006, -230655)
    assert frame().baseline == (0, 0, 0) and decode(encode(frame())).baseline == (0, 0, 0)


def test_version_1_frames_are_still_read():
    decoded = decode(_with_header(version=1))
    assert (decoded.gain, decoded.baseline, decoded.samples.tolist()) == ((200.0,), (0,), [[5]])


@pytest.mark.parametrize("cut,needle", [(HEADER.size + 4, "shorter than its gains"),
                                        (HEADER.size + 3 * 12, "inside its lead names")])
def test_frames_cut_inside_their_descriptions(cut, needle):
    body = encode(frame())[:cut]
    with pytest.raises(FrameError, match=needle):
        decode(body + CRC.pack(zlib.crc32(body)))


def test_baselines_must_fit():
    with pytest.raises(FrameError, match="32 bits"):
        encode(frame(baseline=(0, 2**31, 0)))
    with pytest.raises(FrameError, match="one baseline per lead"):
        encode(frame(baseline=(0, 0)))
