"""Send a recording as an ambulance monitor would: frames in real time, buffered through link
drops, resent from the server's last acknowledgement until every frame is acknowledged."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from pathlib import Path

import aiohttp
import numpy as np

from diagnosis.ecg.formats import read_record
from diagnosis.ecg.frames import MISSING_SAMPLE, Frame, encode
from diagnosis.ecg.record import EcgRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recording:
    """What is sent: int16 samples as stored, with their meaning (mV = (sample - baseline) /
    gain)."""
    samples: np.ndarray
    fs: float
    leads: tuple[str, ...]
    gain: tuple[float, ...]
    baseline: tuple[int, ...] = ()
    """Empty: 0 for every lead."""
    requantised: tuple[str, ...] = ()
    """One line per lead whose stored integers could not be sent exactly, saying why."""

    @classmethod
    def from_record(cls, record: EcgRecord) -> Recording:
        """The record's samples as the frames carry them: int16 with their gain and baseline,
        and -32768 where a sample holds no value.

        A lead goes out as stored, with its baseline, when its values fit 16 bits (every 16-bit
        or 12-bit format); wider values go out less their baseline when that fits. Only a lead
        that fits neither way, or whose baseline is not a whole number of steps (some DICOM
        and aECG files), is requantised: divided by the smallest whole factor that fits (the
        gain with it) and rounded; `requantised` says which leads and by how much.
        """
        if record.digital is None:
            raise ValueError("the record has no stored integer samples to send")
        missing = np.isnan(record.signal)
        columns, gains, baselines, notes = [], [], [], []
        for ch, lead in enumerate(record.leads):
            column, gain, baseline, note = _lead_samples(
                record.digital[:, ch], missing[:, ch], float(record.gain[ch]),
                float(record.baseline[ch]))
            columns.append(column)
            gains.append(gain)
            baselines.append(baseline)
            if note:
                notes.append(f"{lead}: {note}")
        samples = (np.column_stack(columns) if columns
                   else np.zeros((record.n_samples, 0), np.int16))
        return cls(samples, record.fs, record.leads, tuple(gains), tuple(baselines),
                   tuple(notes))


@dataclass
class SendReport:
    stream_id: str
    frames: int
    samples: int
    connections: int
    resent: int
    requantised: tuple[str, ...] = ()


def load_recording(path: str | Path) -> Recording:
    """A WFDB record, DICOM ECG or HL7 aECG file, ready to send (EcgFormatError if unreadable);
    leads that had to be requantised are logged as warnings."""
    recording = Recording.from_record(read_record(path))
    for note in recording.requantised:
        log.warning("%s: lead %s", path, note)
    return recording


def _lead_samples(digital: np.ndarray, missing: np.ndarray, gain: float, baseline: float
                  ) -> tuple[np.ndarray, float, int, str | None]:
    """One lead's int16 samples, their gain and baseline, and why they are not exact (None if
    they are)."""
    present = digital[~missing].astype(np.int64)
    lowest, highest = MISSING_SAMPLE + 1, 32767

    def column_of(values: np.ndarray) -> np.ndarray:
        column = np.full(digital.shape, MISSING_SAMPLE, np.int16)
        column[~missing] = values
        return column

    def fits(values: np.ndarray) -> bool:
        return not values.size or (values.min() >= lowest and values.max() <= highest)

    if baseline == round(baseline) and -2**31 <= baseline < 2**31:
        if fits(present):
            return column_of(present), gain, int(baseline), None
        shifted = present - int(baseline)
        if fits(shifted):
            return column_of(shifted), gain, 0, None
        why = (f"stored values {present.min()}..{present.max()}, less the baseline "
               f"{baseline:g} {shifted.min()}..{shifted.max()}, are beyond 16 bits")
    else:
        why = f"the baseline {baseline!r} is not a whole number of steps within 32 bits"
    values = present - baseline
    factor = max(1, math.ceil(np.abs(values).max(initial=0.0) / highest))
    sent_gain = gain / factor
    error_uv = 500.0 / sent_gain
    return column_of(np.rint(values / factor)), sent_gain, 0, (
        f"{why}; requantised to gain {sent_gain:.6g}/mV (1/{factor} of {gain:.6g}), "
        f"error at most {error_uv:.2g} uV")


def split(recording: Recording, stream_id: uuid.UUID, frame_seconds: float) -> list[Frame]:
    per_frame = max(1, round(recording.fs * frame_seconds))
    starts = range(0, max(1, len(recording.samples)), per_frame)
    return [Frame(stream_id, seq, start, recording.fs, recording.leads, recording.gain,
                  recording.samples[start:start + per_frame], end=seq == len(starts) - 1,
                  baseline=recording.baseline)
            for seq, start in enumerate(starts)]


class Sender:
    def __init__(self, base_url: str, token: str, recording: Recording, stream_id: str,
                 speed: float = 1.0, frame_seconds: float = 0.25, max_backoff: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.frames = split(recording, uuid.UUID(stream_id), frame_seconds)
        self.requantised = recording.requantised
        self.stream_id = stream_id
        self.speed = speed
        self.frame_seconds = frame_seconds
        self.max_backoff = max_backoff
        self.unacked: OrderedDict[int, bytes] = OrderedDict()
        self.acked = -1
        self.released = 0
        self.connections = 0
        self.resent = 0
        self._new_frame = asyncio.Event()
        self._done = asyncio.Event()

    async def run(self, session: aiohttp.ClientSession) -> SendReport:
        producer = asyncio.create_task(self._produce(), name="ecg-produce")
        try:
            backoff = 0.2
            while not self._done.is_set():
                try:
                    await self._connection(session)
                    backoff = 0.2
                except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError) as exc:
                    log.info("link lost (%s); %d frames buffered", exc, len(self.unacked))
                if not self._done.is_set():
                    await asyncio.sleep(backoff)
                    backoff = min(self.max_backoff, backoff * 2)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
        return SendReport(self.stream_id, len(self.frames),
                          sum(f.n_samples for f in self.frames), self.connections, self.resent,
                          self.requantised)

    async def _produce(self) -> None:
        """Frames become available as the monitor records them (speed > 1 replays faster)."""
        started = time.monotonic()
        for frame in self.frames:
            due = started + (frame.first_sample + frame.n_samples) / frame.fs / self.speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self.unacked[frame.seq] = encode(frame)
            self.released = frame.seq + 1
            self._new_frame.set()

    def _acknowledge(self, ack: int) -> None:
        self.acked = max(self.acked, ack)
        for seq in [s for s in self.unacked if s <= self.acked]:
            del self.unacked[seq]
        if self.acked == len(self.frames) - 1:
            self._done.set()

    async def _connection(self, session: aiohttp.ClientSession) -> None:
        url = f"{self.base_url}/ecg/ingest/{self.stream_id}"
        async with session.ws_connect(url, headers=self.headers, heartbeat=10.0) as ws:
            self.connections += 1
            ready = await ws.receive_json(timeout=10)
            self._acknowledge(ready["ack"])
            sent_up_to = self.acked
            if self.connections > 1:
                self.resent += len(self.unacked)
            pump = asyncio.create_task(self._pump(ws, sent_up_to), name="ecg-pump")
            try:
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    reply = message.json()
                    if reply["type"] == "ack":
                        self._acknowledge(reply["ack"])
                        for first, last in reply["missing"]:
                            for seq in range(first, last + 1):
                                if seq in self.unacked:
                                    self.resent += 1
                                    await ws.send_bytes(self.unacked[seq])
                    elif reply["type"] == "error":
                        log.warning("server refused a frame: %s", reply)
                    if self._done.is_set():
                        return
            finally:
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse, sent_up_to: int) -> None:
        """Send what the server lacks, then each new frame as it is recorded."""
        while True:
            for seq, data in list(self.unacked.items()):
                if seq > sent_up_to:
                    await ws.send_bytes(data)
                    sent_up_to = seq
            self._new_frame.clear()
            if self.released == len(self.frames) and sent_up_to >= len(self.frames) - 1:
                await self._done.wait()
                return
            await self._new_frame.wait()


async def create_stream(session: aiohttp.ClientSession, base_url: str, token: str,
                        patient_id: str, consult_id: str | None = None) -> str:
    body = {"patient_id": patient_id, **({"consult_id": consult_id} if consult_id else {})}
    async with session.post(f"{base_url.rstrip('/')}/api/ecg/streams", json=body,
                            headers={"Authorization": f"Bearer {token}"}) as response:
        payload = await response.json(content_type=None)
        if response.status != 201:
            raise RuntimeError(f"could not create the stream: {payload.get('detail', payload)}")
        return payload["id"]
