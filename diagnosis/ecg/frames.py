"""The binary ECG stream frame (docs/ecg-stream.md): one chunk of int16 samples with what it
takes to interpret it, checked by CRC-32 so a garbled frame is refused rather than stored.

Layout, little-endian:
    magic b"ECG1" | version u8 | flags u8 | stream id 16 bytes | sequence u64 |
    first sample u64 | sample rate mHz u32 | leads u8 | samples per lead u16 |
    gain f64 x leads (ADC units per mV) | baseline i32 x leads (the value of 0 mV) |
    lead names (u8 length + ASCII) x leads |
    samples int16 x (samples per lead x leads), interleaved by sample | CRC-32 u32 of all before

Version 2 (written): mV = (sample - baseline) / gain, exactly as a WFDB or DICOM file means
its integers, so a file replayed by `telemed ecg send` reaches the server unchanged. Version 1
(still read): gain f32 and no baseline (0).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"ECG1"
VERSION = 2
GAIN_TYPES = {1: "<f4", 2: "<f8"}
"""Versions read, with how each stores the gains; only version 2 carries baselines."""
FLAG_END = 0x01
HEADER = struct.Struct("<4sBB16sQQIBH")
CRC = struct.Struct("<I")
MAX_LEADS = 16
MAX_SAMPLES_PER_FRAME = 10_000
MISSING_SAMPLE = -32768
"""WFDB's 'no value' for 16-bit samples; counted, never interpolated."""


class FrameError(ValueError):
    """The bytes are not a valid frame; says what is wrong."""


@dataclass(frozen=True)
class Frame:
    stream_id: uuid.UUID
    seq: int
    first_sample: int
    fs: float
    leads: tuple[str, ...]
    gain: tuple[float, ...]
    samples: np.ndarray
    """int16, shape (samples per lead, leads)."""
    end: bool = False
    baseline: tuple[int, ...] = ()
    """Per lead, the sample value that means 0 mV; empty: 0 for every lead."""

    def __post_init__(self) -> None:
        if not self.baseline:
            object.__setattr__(self, "baseline", (0,) * len(self.leads))

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[0])


def encode(frame: Frame) -> bytes:
    samples = np.ascontiguousarray(frame.samples, dtype="<i2")
    if not frame.leads or samples.ndim != 2 or samples.shape[1] != len(frame.leads):
        raise FrameError("samples must be shaped (samples, leads)")
    if len(frame.gain) != len(frame.leads) or len(frame.baseline) != len(frame.leads):
        raise FrameError("one gain and one baseline per lead")
    if any(not -2**31 <= b < 2**31 for b in frame.baseline):
        raise FrameError("baselines must fit 32 bits")
    names = b"".join(bytes([len(n.encode("ascii"))]) + n.encode("ascii") for n in frame.leads)
    head = HEADER.pack(MAGIC, VERSION, FLAG_END if frame.end else 0, frame.stream_id.bytes,
                       frame.seq, frame.first_sample, round(frame.fs * 1000), len(frame.leads),
                       samples.shape[0])
    body = (head + np.asarray(frame.gain, dtype="<f8").tobytes()
            + np.asarray(frame.baseline, dtype="<i4").tobytes() + names + samples.tobytes())
    return body + CRC.pack(zlib.crc32(body))


def decode(data: bytes) -> Frame:
    if len(data) < HEADER.size + CRC.size:
        raise FrameError(f"frame of {len(data)} bytes is shorter than its header")
    (expected_crc,) = CRC.unpack_from(data, len(data) - CRC.size)
    if zlib.crc32(data[:-CRC.size]) != expected_crc:
        raise FrameError("checksum mismatch: the frame is corrupt or truncated")
    magic, version, flags, stream, seq, first, fs_mhz, n_leads, n_samples = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError("not an ECG stream frame (bad magic)")
    if version not in GAIN_TYPES:
        raise FrameError(f"frame version {version} is not supported (1 or {VERSION})")
    if not 0 < n_leads <= MAX_LEADS:
        raise FrameError(f"{n_leads} leads; 1 to {MAX_LEADS} are supported")
    if n_samples > MAX_SAMPLES_PER_FRAME:
        raise FrameError(f"{n_samples} samples per lead; at most {MAX_SAMPLES_PER_FRAME}")
    if fs_mhz == 0:
        raise FrameError("sample rate is zero")
    offset = HEADER.size
    gain_type = np.dtype(GAIN_TYPES[version])
    names_at = offset + n_leads * (gain_type.itemsize + (4 if version >= 2 else 0))
    if len(data) < names_at + CRC.size:
        raise FrameError(f"frame of {len(data)} bytes is shorter than its gains")
    gain = np.frombuffer(data, dtype=gain_type, count=n_leads, offset=offset)
    offset += gain_type.itemsize * n_leads
    if not np.all(np.isfinite(gain)) or np.any(gain <= 0):
        raise FrameError("gains must be positive finite numbers")
    baseline = np.zeros(n_leads, dtype=np.int64)
    if version >= 2:
        baseline = np.frombuffer(data, dtype="<i4", count=n_leads, offset=offset)
        offset += 4 * n_leads
    leads = []
    for _ in range(n_leads):
        if offset >= len(data) - CRC.size:
            raise FrameError("frame ends inside its lead names")
        length = data[offset]
        name = data[offset + 1:offset + 1 + length]
        if length == 0 or not name.isascii() or len(name) != length:
            raise FrameError("lead names must be non-empty ASCII")
        leads.append(name.decode("ascii"))
        offset += 1 + length
    if len(set(leads)) != n_leads:
        raise FrameError("lead names repeat")
    expected = offset + 2 * n_samples * n_leads + CRC.size
    if len(data) != expected:
        raise FrameError(f"frame is {len(data)} bytes; its header promises {expected}")
    samples = np.frombuffer(data, dtype="<i2", count=n_samples * n_leads, offset=offset)
    return Frame(uuid.UUID(bytes=stream), seq, first, fs_mhz / 1000, tuple(leads),
                 tuple(float(g) for g in gain), samples.reshape(n_samples, n_leads).astype(np.int16),
                 end=bool(flags & FLAG_END), baseline=tuple(int(b) for b in baseline))
