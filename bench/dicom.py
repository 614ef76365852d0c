"""Imaging over an emulated slow link: our progressive delivery against Orthanc's DICOMweb, and
both against the physical line, in one run.

    python bench/dicom.py [--rates 0.5mbit,2mbit,8mbit] [--rtt 100ms] [--repeats 1]
                          [--images ct,cr,mr] [--view 14] [--orders view,previews,auto:jxl]
                          [--no-orthanc]
    python bench/dicom.py serve|setup|fetch ...      (started by the above, inside a namespace)

The link is bench/netlab's: two network namespaces joined by a user-space emulator (rate both
ways, half the RTT each way, BBR as this machine's default). In the server namespace run our
app (`serve`: telemed.app.create_app on the namespace's address) and Orthanc 1.10 with its
DICOMweb plugin (private configuration, see orthanc_dicomweb.py); `setup`, also in the server
namespace (so over its loopback, not the link), logs in, uploads every image to both (STOW-RS
to ours, POST /instances to Orthanc), and opens each series once on each side: that first
opening makes and verifies our code streams, so every timed fetch measures the steady state
(cached code streams), and it checks that Orthanc transcodes to JPEG-LS. Each timed fetch is a
fresh `fetch` process in the client namespace, across the link; its clock starts just before
the TCP connection is opened (connect()), so every time includes the TCP handshake and the
request's round trip.

Per image set (the 28-slice GE head CT, the single CR RG3_J2KR and MR MR2_UNCR) and rate:

* ours (`GET .../progressive?frame_index=VIEW&order=view|previews`, WebSocket with
  `Authorization: Bearer`): first look (bytes of the view frame reach
  `level_ends[preview_level]`, the 1/4-resolution prefix), first bit-exact image (the view
  frame complete, decoded and equal to the original pixels from pydicom), all previews (every
  frame's 1/4 prefix in), whole series bit-exact (every frame decoded and compared);
* Orthanc WADO-RS retrieve of the series (multipart/related application/dicom), with its
  default transfer syntax and with JPEG-LS lossless (transfer-syntax=1.2.840.10008.1.2.4.80):
  each part is parsed as it completes, its pixels decoded and compared, so "first image" is the
  first bit-exact instance in whatever order Orthanc sends, and every slice is viewable only
  once the whole series is in;
* Orthanc's rendered JPEG of every instance (lossy, 8-bit; the closest Orthanc has to a
  preview), requested outward from the view over 1 and over 6 keep-alive connections.

Bytes: "body" is what the client read (WebSocket payloads with their 16-byte chunk headers
and JSON; HTTP bodies), "wire" the IP bytes the emulator delivered server to client during the
fetch (headers, handshake and retransmissions included).

Lines (computed here from the same files, with the project's codecs): the physical line is the
smallest lossless coding of the series (the smallest total of JPEG-LS, HTJ2K and JPEG XL
effort 3, each frame verified bit-exact) / rate + one RTT; the preview line is the sum of the
HTJ2K 1/4-resolution prefixes / rate + one RTT. The rate counts IP bytes, so TCP/IP headers
alone (~3.5 %) keep any transfer above its line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402

SHARED = (REPO / ".." / "shared" / "data" / "dicom").resolve()
OURS_PORT, ORTHANC_PORT = 8080, 8042
USERNAME = "bench.clinician"
JPEG_LS = "1.2.840.10008.1.2.4.80"
NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
DICOM_ACCEPT = 'multipart/related; type="application/dicom"'
IMAGE_SETS = {
    "ct": ("CT", "ct-head-ge/*.dcm"),
    "cr": ("CR", "single/RG3_J2KR.dcm"),
    "mr": ("MR", "single/MR2_UNCR.dcm"),
}


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# -- the images --------------------------------------------------------------------------------

@dataclass
class ImageSet:
    key: str
    label: str
    files: list[Path]  # in instance order, as the server numbers frames
    study: str
    series: str
    sop_uids: list[str]
    patient_id: str
    view: int
    shape: str
    stored_syntax: str

    @property
    def count(self) -> int:
        return len(self.files)


def load_image_set(key: str, view: int) -> ImageSet:
    label, pattern = IMAGE_SETS[key]
    headers = []
    for path in sorted(SHARED.glob(pattern)):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        headers.append((int(ds.get("InstanceNumber", 0) or 0), path, ds))
    if not headers:
        raise SystemExit(f"no DICOM files match {SHARED / pattern}")
    headers.sort(key=lambda item: (item[0], item[1].name))
    first = headers[0][2]
    dtype = f"{'int' if int(first.PixelRepresentation) else 'uint'}{int(first.BitsAllocated)}"
    return ImageSet(key, label, [p for _, p, _ in headers], str(first.StudyInstanceUID),
                    str(first.SeriesInstanceUID), [str(ds.SOPInstanceUID) for _, _, ds in headers],
                    str(first.PatientID), min(view, len(headers) - 1) if len(headers) > 1 else 0,
                    f"{len(headers)} x {first.Rows}x{first.Columns} {dtype}",
                    str(first.file_meta.TransferSyntaxUID))


@dataclass
class Lines:
    """Byte counts of the series in each lossless coding, from the project's codecs."""
    codecs: dict[str, int]  # JPEG-LS, HTJ2K, JPEG XL totals
    smallest: str
    smallest_bytes: int
    htj2k_rpcl_bytes: int  # our progressive streams, whole
    preview_bytes: int  # their 1/4-resolution prefixes, all frames
    view_preview_bytes: int
    view_bytes: int
    native_bytes: int

    def line_s(self, nbytes: int, rate_bps: float, rtt_s: float) -> float:
        return nbytes * 8 / rate_bps + rtt_s


def fresh_tcp_floor_s(nbytes: int, rate_bps: float, rtt_s: float, mss: int = 1448,
                      initial_segments: int = 10) -> float:
    """The least time a new TCP connection takes to bring `nbytes` to the client: the handshake
    and the request (the first byte arrives two RTTs after the SYN), then one RTT per round of
    slow start (RFC 6928's initial window, doubling) until the window fills the path, then the
    rest at the link rate. The line counts one RTT and no slow start, so at 8 Mbit/s and
    100 ms a few hundred kilobytes cannot come within 1.2x of it over a fresh connection."""
    path_bytes = rate_bps / 8 * rtt_s
    window, sent, rounds = initial_segments * mss, 0, 0
    while window < path_bytes and sent + window < nbytes:
        sent, window, rounds = sent + window, window * 2, rounds + 1
    return 2 * rtt_s + rounds * rtt_s + (nbytes - sent) * 8 / rate_bps


def compute_lines(images: ImageSet) -> Lines:
    from diagnosis.dicom import codecs, progressive
    names = {codecs.JPEG_LS_LOSSLESS: "JPEG-LS", codecs.HTJ2K_LOSSLESS: "HTJ2K",
             codecs.JPEG_XL_LOSSLESS: f"JPEG XL e{codecs.JXL_EFFORT}"}
    totals = dict.fromkeys(names.values(), 0)
    rpcl = previews = view_preview = view_bytes = native = 0
    for index, path in enumerate(images.files):
        ds = pydicom.dcmread(path)
        fmt = codecs.PixelFormat.from_dataset(ds)
        for frame in progressive.frames_of(ds):
            native += frame.nbytes
            for uid in codecs.SMALLEST_CANDIDATES:
                totals[names[uid]] += len(codecs.get_codec(uid).encode_frame(frame, fmt))
            data, lay = progressive.encode(frame)
            progressive.verify(frame, data, lay)
            rpcl += lay.length
            previews += lay.level_ends[lay.preview_level]
            if index == images.view:
                view_preview, view_bytes = lay.level_ends[lay.preview_level], lay.length
    smallest = min(totals, key=totals.get)
    return Lines(totals, smallest, totals[smallest], rpcl, previews, view_preview, view_bytes,
                 native)


def load_originals(files: list[str]) -> dict[tuple[str, int], np.ndarray]:
    """The original pixels of every frame, decoded by pydicom, keyed by (SOP UID, frame number)."""
    originals = {}
    for path in files:
        ds = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
        count = int(ds.get("NumberOfFrames", 1) or 1)
        for number in range(1, count + 1):
            frame = pixels[number - 1] if count > 1 else pixels
            originals[(str(ds.SOPInstanceUID), number)] = frame
    return originals


def outward(view: int, count: int) -> list[int]:
    order = [view]
    for step in range(1, count):
        order += [i for i in (view + step, view - step) if 0 <= i < count]
    return order


# -- clients (run by `fetch` in the client namespace, and by `setup` to warm up) -----------------

@dataclass
class Timing:
    """Seconds from just before connect(); None when it did not happen."""
    first_look: float | None = None
    first_exact: float | None = None
    all_previews: float | None = None
    whole_exact: float | None = None
    opened: float | None = None
    body_bytes: int = 0
    stream_bytes: int = 0
    frames: int = 0
    exact: int = 0
    mismatched: int = 0
    first_frame: int | None = None
    syntaxes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _same(decoded: np.ndarray, original: np.ndarray) -> bool:
    return decoded.shape == original.shape and np.array_equal(decoded, original)


async def fetch_ours(spec: dict) -> Timing:
    """The progressive WebSocket, every frame reassembled, decoded and compared."""
    from aiohttp import WSMsgType

    from diagnosis.dicom import progressive
    from diagnosis.dicom.delivery import FRAME_END, HEADER
    originals = load_originals(spec["files"])
    view, result = spec["view"], Timing()
    order, _, codec = spec["order"].partition(":")
    url = (f"{spec['base']}/dicomweb/studies/{spec['study']}/series/{spec['series']}/progressive"
           f"?frame_index={view}&order={order}&codec={codec or 'htj2k'}")
    headers = {"Authorization": f"Bearer {spec['token']}"}
    frames: dict[int, dict] = {}
    streams: dict[int, bytearray] = {}
    previewed: set[int] = set()
    finished: set[int] = set()
    count = None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        start = time.monotonic()
        async with session.ws_connect(url, headers=headers, compress=0, autoclose=False,
                                      max_msg_size=16 << 20, heartbeat=None) as ws:
            result.opened = time.monotonic() - start
            while count is None or len(finished) < count:
                message = await ws.receive(timeout=spec["timeout"])
                now = time.monotonic() - start
                if message.type == WSMsgType.BINARY:
                    data = message.data
                    result.body_bytes += len(data)
                    index, offset, total, _level, levels, flags = HEADER.unpack_from(data)
                    stream = streams.setdefault(index, bytearray())
                    if offset != len(stream):
                        raise RuntimeError(f"frame {index}: chunk at {offset}, have {len(stream)}")
                    stream += memoryview(data)[HEADER.size:]
                    result.stream_bytes += len(data) - HEADER.size
                    info = frames[index]
                    preview_end = info["level_ends"][info["preview_level"]]
                    if index not in previewed and len(stream) >= preview_end:
                        previewed.add(index)
                        if index == view:
                            result.first_look = now
                        if len(previewed) == count:
                            result.all_previews = now
                        small = progressive.decode_frame(bytes(stream), info,
                                                         info["preview_level"])
                        expected = tuple(-(-n // 4) for n in info["shape"][:2])
                        if (codec == "jxl" or levels > 2) and small.shape[:2] != expected:
                            result.notes.append(f"frame {index}: preview {small.shape}")
                    if flags & FRAME_END:
                        decoded = progressive.decode_frame(bytes(stream), info)
                        original = originals[(info["sop_instance_uid"], info["frame_number"])]
                        done = time.monotonic() - start
                        finished.add(index)
                        result.frames += 1
                        if _same(decoded, original):
                            result.exact += 1
                            if index == view:
                                result.first_exact = done
                        else:
                            result.mismatched += 1
                        if len(finished) == count and result.mismatched == 0:
                            result.whole_exact = done
                elif message.type == WSMsgType.TEXT:
                    result.body_bytes += len(message.data.encode())
                    body = json.loads(message.data)
                    if body["type"] == "series":
                        count = body["count"]
                    elif body["type"] == "frame":
                        frames[body["frame_index"]] = body
                        if result.first_frame is None:
                            result.first_frame = body["frame_index"]
                    elif body["type"] == "error":
                        result.notes.append(f"error {body.get('code')}: {body.get('message')}")
                else:
                    raise RuntimeError(f"the socket closed early ({message.type.name})")
            await ws.close()
    result.syntaxes = [f"{codec or 'htj2k'} progressive streams"]
    return result


class Multipart:
    """An incremental multipart/related reader: feed bytes, get each part (headers, body) as soon
    as the delimiter after it has arrived."""

    def __init__(self, boundary: str) -> None:
        self.delimiter = b"\r\n--" + boundary.encode()
        self.buffer = bytearray(b"\r\n")  # the first delimiter has no CRLF before it
        self.scanned = 0
        self.done = False

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buffer += data
        parts = []
        while not self.done:
            start = self.buffer.find(self.delimiter)
            if start < 0:
                break
            after = start + len(self.delimiter)
            if len(self.buffer) < after + 2:
                break
            if self.buffer[after:after + 2] == b"--":
                self.done = True
                break
            head_end = self.buffer.find(b"\r\n\r\n", after)
            if head_end < 0:
                break
            body_start = head_end + 4
            end = self.buffer.find(self.delimiter, max(body_start, self.scanned))
            if end < 0:
                self.scanned = max(body_start, len(self.buffer) - len(self.delimiter))
                break
            parts.append((bytes(self.buffer[after:head_end]), bytes(self.buffer[body_start:end])))
            del self.buffer[:end]
            self.scanned = 0
        return parts


async def _orthanc_error(response: aiohttp.ClientResponse) -> str:
    text = await response.text()
    with contextlib.suppress(ValueError, AttributeError):
        text = json.loads(text).get("Message", text)
    return f"Orthanc answered {response.status} ({text.strip()[:200]})"


def _boundary(content_type: str) -> str:
    message = Message()
    message["Content-Type"] = content_type
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str):
        raise RuntimeError(f"no multipart boundary in {content_type!r}")
    return boundary


async def fetch_wado(spec: dict) -> Timing:
    """WADO-RS retrieve of the series; each instance parsed, decoded and compared on arrival."""
    from diagnosis.dicom import transcode
    originals = load_originals(spec["files"])
    index_of = {uid: i for i, uid in enumerate(spec["sop_uids"])}
    accept = DICOM_ACCEPT + (f"; transfer-syntax={spec['syntax']}" if spec.get("syntax") else "")
    url = f"{spec['base']}/dicom-web/studies/{spec['study']}/series/{spec['series']}"
    result, syntaxes, done = Timing(), set(), None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        start = time.monotonic()
        async with session.get(url, headers={"Accept": accept},
                               timeout=aiohttp.ClientTimeout(total=spec["timeout"])) as response:
            result.opened = time.monotonic() - start
            if response.status != 200:
                raise RuntimeError(await _orthanc_error(response))
            encoding = response.headers.get("Content-Encoding")
            if encoding:
                result.notes.append(f"Content-Encoding {encoding}")
            reader = Multipart(_boundary(response.headers["Content-Type"]))
            async for data in response.content.iter_any():
                result.body_bytes += len(data)
                for _head, body in reader.feed(data):
                    ds = pydicom.dcmread(io.BytesIO(body))
                    syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
                    _fmt, decoded = transcode.decode_frames(ds)
                    uid = str(ds.SOPInstanceUID)
                    ok = all(_same(frame, originals[(uid, n)])
                             for n, frame in enumerate(decoded, start=1))
                    done = time.monotonic() - start
                    result.frames += len(decoded)
                    result.stream_bytes += len(body)
                    if ok:
                        result.exact += len(decoded)
                        if result.first_exact is None:
                            result.first_exact = result.first_look = done
                            result.first_frame = index_of.get(uid)
                    else:
                        result.mismatched += len(decoded)
    if result.frames == len(originals) and result.mismatched == 0:
        result.whole_exact = result.all_previews = done
    elif result.frames != len(originals):
        result.notes.append(f"{result.frames} of {len(originals)} frames came")
    result.syntaxes = sorted(syntaxes)
    return result


async def fetch_rendered(spec: dict) -> Timing:
    """Orthanc's rendered JPEG of every instance, outward from the view, over N connections."""
    import imagecodecs
    uids, view = spec["sop_uids"], spec["view"]
    todo = deque(outward(view, len(uids)))
    result, connections = Timing(), spec["connections"]
    base = f"{spec['base']}/dicom-web/studies/{spec['study']}/series/{spec['series']}/instances"
    done_at: dict[int, float] = {}

    async def worker(session: aiohttp.ClientSession) -> None:
        while todo:
            index = todo.popleft()
            async with session.get(f"{base}/{uids[index]}/rendered",
                                   headers={"Accept": "image/jpeg"}) as response:
                if response.status != 200:
                    raise RuntimeError(await _orthanc_error(response))
                body = await response.read()
            done_at[index] = time.monotonic() - start
            result.body_bytes += len(body)
            image = imagecodecs.jpeg8_decode(body)
            result.frames += 1
            if image.shape[:2] != tuple(spec["shape"]):
                result.notes.append(f"rendered {index}: {image.shape}")
            if index == view:
                result.first_look = done_at[index]

    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec["timeout"])
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    result.all_previews = max(done_at.values())
    result.first_frame = view
    result.stream_bytes = result.body_bytes
    result.syntaxes = ["image/jpeg (lossy, rendered)"]
    return result


FETCHERS = {"ours": fetch_ours, "wado": fetch_wado, "rendered": fetch_rendered}


def cmd_fetch(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = asyncio.run(FETCHERS[spec["kind"]](spec))
    print(json.dumps(result.as_dict()), flush=True)


# -- the server side (in the server namespace) ---------------------------------------------------

def seed(data_dir: Path, password: str, patient_ids: list[str]) -> None:
    """One township, one clinician, the images' patients (registered there), before the app runs."""
    from telemed import auth
    from telemed.store import accounts
    from telemed.store.database import connect
    conn = connect(data_dir / "telemed.sqlite3")
    try:
        township = accounts.create_institution(conn, "Bench Township", "township")["id"]
        accounts.create_staff(conn, USERNAME, auth.hash_password(password), "Bench Clinician",
                              "clinician", township)
        for patient_id in sorted(set(patient_ids)):
            accounts.create_patient(conn, {"id": patient_id, "name": patient_id, "sex": "U",
                                           "home_institution_id": township})
    finally:
        conn.close()


def cmd_serve(args: argparse.Namespace) -> None:
    """Our app on the server namespace's address until SIGTERM or until stdin closes."""
    import logging

    from aiohttp import web

    from telemed.app import create_app
    from telemed.settings import Settings
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(data_dir=Path(args.data), host=args.host, port=args.port,
                        log_level="WARNING")

    async def main() -> None:
        runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                         daemon=True).start()
        print(json.dumps({"listening": f"http://{settings.host}:{settings.port}"}), flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


async def _wait_http(session: aiohttp.ClientSession, url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {seconds:g} s")
        await asyncio.sleep(0.2)


async def _stow(session: aiohttp.ClientSession, base: str, token: str, files: list[str]) -> None:
    writer = aiohttp.MultipartWriter("related")
    for path in files:
        writer.append(Path(path).read_bytes(), {"Content-Type": "application/dicom"})
    content_type = (f'multipart/related; type="application/dicom"; '
                    f"boundary={writer.boundary}")
    async with session.post(f"{base}/dicomweb/studies", data=writer, headers={
            "Authorization": f"Bearer {token}", "Content-Type": content_type}) as response:
        if response.status != 200:
            raise RuntimeError(f"STOW-RS answered {response.status}: {await response.text()}")


async def setup(spec: dict) -> dict:
    """Login, upload everything to both servers, and open every series once on each side (our
    code streams are made and verified then; Orthanc's JPEG-LS transcoding is checked)."""
    ours, orthanc = spec["ours"], spec.get("orthanc")
    out: dict[str, Any] = {"warm": {}}
    async with aiohttp.ClientSession() as session:
        await _wait_http(session, f"{ours}/healthz", 30)
        if orthanc:
            await _wait_http(session, f"{orthanc}/system", 60)
            async with session.get(f"{orthanc}/system") as response:
                system = await response.json()
            out["orthanc_version"] = system.get("Version")
        async with session.post(f"{ours}/api/login", json={
                "username": USERNAME, "password": spec["password"]}) as response:
            if response.status != 200:
                raise RuntimeError(f"login answered {response.status}: {await response.text()}")
            token = (await response.json())["token"]
        out["token"] = token
        for images in spec["images"]:
            await _stow(session, ours, token, images["files"])
            if orthanc:
                for path in images["files"]:
                    async with session.post(f"{orthanc}/instances",
                                            data=Path(path).read_bytes()) as response:
                        if response.status != 200:
                            raise RuntimeError(f"Orthanc upload of {path}: {response.status}")
    for images in spec["images"]:
        common = {**images, "token": token, "timeout": 600}
        warm = {}
        start = time.monotonic()
        first = await fetch_ours({**common, "base": ours, "order": "view"})
        warm["ours_cold_s"] = round(time.monotonic() - start, 3)
        warm["ours_cold_exact"] = first.exact
        pairs = await fetch_ours({**common, "base": ours, "order": "view:jxl"})
        warm["ours_jxl_cold_exact"] = pairs.exact
        if orthanc:
            for name, kind, extra in (("wado_default", "wado", {}),
                                      ("wado_jpegls", "wado", {"syntax": JPEG_LS}),
                                      ("wado_stored", "wado", {"syntax": "*"}),
                                      ("rendered", "rendered", {"connections": 1})):
                try:
                    result = await FETCHERS[kind]({**common, "base": orthanc, **extra})
                except (RuntimeError, aiohttp.ClientError) as exc:
                    warm[name] = {"error": str(exc)}
                    continue
                warm[name] = {"exact": result.exact, "frames": result.frames,
                              "syntaxes": result.syntaxes}
        out["warm"][images["key"]] = warm
    return out


def cmd_setup(spec_json: str) -> None:
    print(json.dumps(asyncio.run(setup(json.loads(spec_json)))), flush=True)


# -- the run -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    key: str
    label: str
    kind: str
    extra: tuple[tuple[str, Any], ...] = ()
    orthanc: bool = False
    series_only: bool = False  # only worth running on multi-frame series
    compressed_only: bool = False  # only where the files are stored compressed


def ours_methods(orders: list[str]) -> list[Method]:
    """One per order; single-frame series only with the first (the orders differ only in when
    the view's full stream goes relative to the other frames' previews)."""
    return [Method(order, f"ours, order={order}", "ours", (("order", order),),
                   series_only=n > 0) for n, order in enumerate(orders)]


ORTHANC_METHODS = (
    Method("wado", "Orthanc WADO-RS, default", "wado", (), orthanc=True),
    Method("jls", "Orthanc WADO-RS, JPEG-LS", "wado", (("syntax", JPEG_LS),), orthanc=True),
    Method("stored", "Orthanc WADO-RS, as stored (*)", "wado", (("syntax", "*"),), orthanc=True,
           compressed_only=True),
    Method("jpeg1", "Orthanc rendered JPEG, 1 conn", "rendered", (("connections", 1),),
           orthanc=True),
    Method("jpeg6", "Orthanc rendered JPEG, 6 conns", "rendered", (("connections", 6),),
           orthanc=True, series_only=True),
)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present and len(present) == len(values) else None


def _machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{platform.machine()}, {os.cpu_count()} cores, {model}, Linux {platform.release()}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(value: float | None, reference: float | None) -> str:
    return "-" if value is None or not reference else f"{value / reference:.2f}x"


def _format_rate(bps: float) -> str:
    return f"{bps / 1e6:g} Mbit/s"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from netlab import parse_duration, parse_rate
        self.args = args
        self.rates = [(text, parse_rate(text)) for text in args.rates.split(",")]
        self.rtt_s = parse_duration(args.rtt)
        self.images = [load_image_set(key, args.view) for key in args.images.split(",")]
        self.orthanc = not args.no_orthanc
        self.orders = [o.strip() for o in args.orders.split(",") if o.strip()]
        self.methods = ours_methods(self.orders) + [m for m in ORTHANC_METHODS if self.orthanc]
        self.lines: dict[str, Lines] = {}
        # results[rate_text][image key][method key] -> list of dicts
        self.results: dict[str, dict[str, dict[str, list[dict]]]] = {}
        self.notes: list[str] = []

    def run(self) -> None:
        from netlab import Link, Shape
        started = datetime.datetime.now().astimezone()
        print(f"bench/dicom.py, {started:%Y-%m-%d %H:%M %Z}; {_machine()}")
        for images in self.images:
            log(f"computing the lines of {images.label} ({images.shape}) ...")
            self.lines[images.key] = compute_lines(images)
        workdir = Path(tempfile.mkdtemp(prefix="telemed-dicom-bench-"))
        try:
            password = secrets.token_urlsafe(18)
            seed(workdir / "telemed", password, [i.patient_id for i in self.images])
            first_rate = self.rates[0][0]
            with Link.symmetric(first_rate, self.rtt_s) as link:
                self._sysctl(link)
                ours = f"http://{link.server.address}:{OURS_PORT}"
                orthanc = f"http://{link.server.address}:{ORTHANC_PORT}" if self.orthanc else None
                self._start_servers(link, workdir)
                setup_out = self._setup(link, ours, orthanc, password)
                token = setup_out["token"]
                self._describe(setup_out)
                for rate_text, rate_bps in self.rates:
                    shape = Shape(rate_bps, self.rtt_s / 2)
                    link.set(down=shape, up=shape)
                    self.results[rate_text] = {}
                    for images in self.images:
                        self._measure(link, rate_text, rate_bps, images, ours, orthanc, token)
                    self._print_rate(rate_text, rate_bps)
            self._print_targets()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    # -- setting up ----------------------------------------------------------------------------

    def _sysctl(self, link: Any) -> None:
        """No TCP metrics cached between connections: every fetch starts from scratch."""
        for endpoint in (link.server, link.client):
            done = endpoint.run(["sysctl", "-qw", "net.ipv4.tcp_no_metrics_save=1"],
                                capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"sysctl in {endpoint.netns}: {done.stderr.strip()}")

    def _start_servers(self, link: Any, workdir: Path) -> None:
        self.server_log = workdir / "telemed.log"
        server = link.server.popen(
            [sys.executable, __file__, "serve", "--data", str(workdir / "telemed"),
             "--host", link.server.address, "--port", str(OURS_PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.server_log.open("wb"))
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            raise SystemExit(f"our server did not start:\n{self._tail(self.server_log)}")
        if self.orthanc:
            import orthanc_dicomweb
            config = orthanc_dicomweb.write_config(workdir / "orthanc", ORTHANC_PORT)
            self.orthanc_log = workdir / "orthanc.log"
            link.server.popen(orthanc_dicomweb.command(config), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=self.orthanc_log.open("wb"))
            self.orthanc_versions = orthanc_dicomweb.versions()

    @staticmethod
    def _tail(path: Path, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _image_spec(self, images: ImageSet) -> dict:
        return {"key": images.key, "files": [str(p) for p in images.files],
                "study": images.study, "series": images.series, "sop_uids": images.sop_uids,
                "view": images.view, "shape": list(self._shape(images))}

    @staticmethod
    def _shape(images: ImageSet) -> tuple[int, int]:
        ds = pydicom.dcmread(images.files[0], stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)

    def _setup(self, link: Any, ours: str, orthanc: str | None, password: str) -> dict:
        log("uploading to both servers and opening every series once (warm-up) ...")
        spec = {"ours": ours, "orthanc": orthanc, "password": password,
                "images": [self._image_spec(i) for i in self.images]}
        done = link.server.run([sys.executable, __file__, "setup", json.dumps(spec)],
                               capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"setup failed:\n{done.stderr[-4000:]}\n--- telemed log:\n"
                             f"{self._tail(self.server_log)}"
                             + (f"\n--- Orthanc log:\n{self._tail(self.orthanc_log)}"
                                if self.orthanc else ""))
        return json.loads(done.stdout.strip().splitlines()[-1])

    def _describe(self, setup_out: dict) -> None:
        import imagecodecs
        print(f"link: bench/netlab between two namespaces, rates {self.args.rates} both ways, "
              f"RTT {self.rtt_s * 1e3:g} ms (half each way), BBR, default queue "
              "(100 ms of the rate + 10 packets); no TCP metrics kept between connections")
        print(f"ours: telemed progressive delivery (imagecodecs {imagecodecs.__version__}), "
              "code streams made at the warm-up opening and served from the cache (steady state)")
        if self.orthanc:
            print(f"Orthanc: {self.orthanc_versions} (server reports "
                  f"{setup_out.get('orthanc_version')}), private config, DICOMweb plugin only, "
                  "HTTP on the server namespace")
        print("times: seconds from just before the client's TCP connect(); medians of "
              f"{self.args.repeats} run(s)")
        print("columns: first look = ours: the view frame's 1/4-resolution prefix in; Orthanc: "
              "the first instance complete (WADO-RS) or the view slice's JPEG (rendered) | first "
              "exact = ours: the view frame decoded equal to the original; WADO-RS: the first "
              "instance decoded equal | all prev. = ours: every frame's 1/4 prefix in; WADO-RS: "
              "every instance complete; rendered: every JPEG in | whole exact = every frame "
              "decoded and equal | body = bytes the client read (after HTTP decompression), "
              "wire = IP bytes the link delivered to the client | whole/line, prev/pline: over "
              "the physical and preview lines | whole/O.JLS, whole/O.best: ours over Orthanc's "
              "JPEG-LS retrieval and over its fastest bit-exact one")
        for key, warm in setup_out["warm"].items():
            parts = [f"ours cold opening {warm['ours_cold_s']:.2f} s over the namespace's "
                     f"loopback ({warm['ours_cold_exact']} frames bit-exact)"]
            for name in ("wado_default", "wado_jpegls", "wado_stored", "rendered"):
                if name in warm and "error" in warm[name]:
                    parts.append(f"Orthanc {name}: {warm[name]['error']}")
                elif name in warm:
                    w = warm[name]
                    got = (f"{w['frames']} rendered" if name == "rendered"
                           else f"{w['exact']}/{w['frames']} bit-exact")
                    parts.append(f"Orthanc {name}: {got}, {', '.join(w['syntaxes'])}")
            print(f"warm-up {key.upper()}: " + "; ".join(parts))
        for images in self.images:
            lines = self.lines[images.key]
            sizes = ", ".join(f"{name} {size:,}" for name, size in lines.codecs.items())
            print(f"{images.label} ({images.shape}, view = frame {images.view}): native "
                  f"{lines.native_bytes:,} B; lossless {sizes} B; smallest {lines.smallest}; "
                  f"our HTJ2K RPCL streams {lines.htj2k_rpcl_bytes:,} B, 1/4 prefixes "
                  f"{lines.preview_bytes:,} B (view {lines.view_preview_bytes:,} of "
                  f"{lines.view_bytes:,})")

    # -- measuring -----------------------------------------------------------------------------

    def _measure(self, link: Any, rate_text: str, rate_bps: float, images: ImageSet, ours: str,
                 orthanc: str | None, token: str) -> None:
        lines = self.lines[images.key]
        timeout = max(120.0, 2.5 * lines.native_bytes * 8 / rate_bps + 60)
        spec_base = {**self._image_spec(images), "token": token, "timeout": timeout}
        per_method: dict[str, list[dict]] = {}
        self.results[rate_text][images.key] = per_method
        for repeat in range(self.args.repeats):
            for method in self.methods:
                if (method.series_only and images.count == 1) or (
                        method.compressed_only and images.stored_syntax in NATIVE_SYNTAXES):
                    continue
                spec = {**spec_base, "kind": method.kind, **dict(method.extra),
                        "base": orthanc if method.orthanc else ours}
                for endpoint in (link.server, link.client):
                    endpoint.run(["ip", "tcp_metrics", "flush", "all"], capture_output=True)
                before = link.stats()["down"]
                done = link.client.run([sys.executable, __file__, "fetch", json.dumps(spec)],
                                       capture_output=True, text=True, timeout=timeout + 60)
                time.sleep(self.rtt_s + 0.3)  # the closing packets, then an idle link
                after = link.stats()["down"]
                if done.returncode != 0:
                    message = (done.stderr.strip().splitlines() or ["?"])[-1]
                    if method.orthanc:
                        errors = [line for line in self._tail(self.orthanc_log, 20).splitlines()
                                  if line.startswith("E")]
                        if errors:
                            message += f"; Orthanc log: {errors[0].split('] ', 1)[-1]}"
                    self.notes.append(f"{images.label} {method.label}: {message}")
                    log(f"  {rate_text} {images.label} #{repeat + 1} {method.label:32} FAILED: "
                        f"{message}")
                    per_method.setdefault(method.key, []).append({"failed": message})
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                result["wire_bytes"] = after.delivered_bytes - before.delivered_bytes
                result["dropped"] = (after.overflowed - before.overflowed
                                     + after.lost - before.lost)
                per_method.setdefault(method.key, []).append(result)
                log(f"  {rate_text} {images.label} #{repeat + 1} {method.label:32} first look "
                    f"{_seconds(result['first_look'])}  first exact "
                    f"{_seconds(result['first_exact'])}  previews "
                    f"{_seconds(result['all_previews'])}  whole {_seconds(result['whole_exact'])}"
                    f"  {result['body_bytes']:,} B body, {result['wire_bytes']:,} B wire"
                    + (f"  notes: {result['notes']}" if result["notes"] else ""))

    def _summary(self, rate_text: str, image: str, method: str) -> dict | None:
        runs = self.results.get(rate_text, {}).get(image, {}).get(method)
        if not runs or any(r.get("failed") for r in runs):
            return None
        keys = ("first_look", "first_exact", "all_previews", "whole_exact", "body_bytes",
                "wire_bytes", "dropped")
        summary = {k: _median([r[k] for r in runs]) for k in keys}
        summary["runs"] = runs
        summary["mismatched"] = sum(r["mismatched"] for r in runs)
        summary["syntaxes"] = sorted({s for r in runs for s in r["syntaxes"]})
        summary["notes"] = sorted({n for r in runs for n in r["notes"]})
        summary["first_frame"] = runs[0]["first_frame"]
        return summary

    def _print_rate(self, rate_text: str, rate_bps: float) -> None:
        print()
        print(f"== {_format_rate(rate_bps)}, RTT {self.rtt_s * 1e3:g} ms " + "=" * 70)
        header = (f"{'':4} {'':31} {'first':>6} {'first':>6} {'all':>7} {'whole':>7} "
                  f"{'body':>11} {'wire':>11} {'whole/':>7} {'prev/':>6} {'whole/':>7} "
                  f"{'whole/':>7}")
        header2 = (f"{'':4} {'':31} {'look':>6} {'exact':>6} {'prev.':>7} {'exact':>7} "
                   f"{'bytes':>11} {'bytes':>11} {'line':>7} {'pline':>6} {'O.JLS':>7} "
                   f"{'O.best':>7}")
        for images in self.images:
            lines = self.lines[images.key]
            line_s = lines.line_s(lines.smallest_bytes, rate_bps, self.rtt_s)
            preview_s = lines.line_s(lines.preview_bytes, rate_bps, self.rtt_s)
            own_s = lines.line_s(lines.htj2k_rpcl_bytes, rate_bps, self.rtt_s)
            look_s = lines.line_s(lines.view_preview_bytes, rate_bps, self.rtt_s)
            print(f"{images.label}: line {lines.smallest_bytes:,} B ({lines.smallest}) "
                  f"{line_s:.2f} s; preview line {lines.preview_bytes:,} B {preview_s:.2f} s; "
                  f"HTJ2K line {lines.htj2k_rpcl_bytes:,} B {own_s:.2f} s; view 1/4 "
                  f"{lines.view_preview_bytes:,} B {look_s:.2f} s")
            print(header)
            print(header2)
            jls = self._summary(rate_text, images.key, "jls")
            wholes = [s["whole_exact"] for s in (self._summary(rate_text, images.key, m.key)
                                                 for m in self.methods if m.kind == "wado")
                      if s is not None and s["whole_exact"] is not None]
            best = min(wholes) if wholes else None
            for method in self.methods:
                summary = self._summary(rate_text, images.key, method.key)
                if method.key not in self.results[rate_text][images.key]:
                    continue
                if summary is None:
                    print(f"{images.label:4} {method.label:31} failed (see the notes)")
                    continue
                ours = not method.orthanc
                whole = summary["whole_exact"]
                print(f"{images.label:4} {method.label:31} {_seconds(summary['first_look']):>6} "
                      f"{_seconds(summary['first_exact']):>6} "
                      f"{_seconds(summary['all_previews']):>7} {_seconds(whole):>7} "
                      f"{summary['body_bytes']:>11,.0f} {summary['wire_bytes']:>11,.0f} "
                      f"{_ratio(whole, line_s):>7} "
                      f"{_ratio(summary['all_previews'], preview_s):>6} "
                      f"{_ratio(whole, jls and jls['whole_exact']) if ours else '':>7} "
                      f"{_ratio(whole, best) if ours else '':>7}"
                      + ("  PIXELS DIFFER" if summary["mismatched"] else ""))
            for method in self.methods:
                summary = self._summary(rate_text, images.key, method.key)
                if summary and method.kind == "wado":
                    print(f"     {method.label}: got {', '.join(summary['syntaxes'])}; first "
                          f"instance frame {summary['first_frame']}"
                          + (f"; {'; '.join(summary['notes'])}" if summary["notes"] else ""))
                elif summary and summary["notes"]:
                    print(f"     {method.label}: {'; '.join(summary['notes'])}")

    # -- targets -------------------------------------------------------------------------------

    def _print_targets(self) -> None:
        ct = next((i for i in self.images if i.key == "ct"), None)
        print()
        print("targets (CT, ours against the lines and Orthanc):")
        if ct is None:
            print("  (the CT was not measured)")
            return
        lines, verdicts = self.lines["ct"], []

        def verdict(text: str, ok: bool | None) -> None:
            mark = "n/a" if ok is None else ("met" if ok else "MISSED")
            verdicts.append(ok)
            print(f"  {text:<96} {mark}")

        for rate_text, rate_bps in self.rates:
            name = _format_rate(rate_bps)
            preview_s = lines.line_s(lines.preview_bytes, rate_bps, self.rtt_s)
            line_s = lines.line_s(lines.smallest_bytes, rate_bps, self.rtt_s)
            jls = self._summary(rate_text, "ct", "jls")
            for key in self.orders:
                s = self._summary(rate_text, "ct", key)
                if s is None:
                    continue
                tag = f"order={key}"
                if abs(rate_bps - 0.5e6) < 1:
                    look = s["first_look"]
                    verdict(f"{name} {tag}: first look at the view slice {_seconds(look)} s "
                            "<= 0.5 s",
                            None if look is None else look <= 0.5)
                prev = s["all_previews"]
                verdict(f"{name} {tag}: all previews {_seconds(prev)} s <= 1.2 x preview line "
                        f"{preview_s:.2f} s ({_ratio(prev, preview_s)})",
                        None if prev is None else prev <= 1.2 * preview_s)
                floor_s = fresh_tcp_floor_s(lines.preview_bytes, rate_bps, self.rtt_s)
                print(f"    (a fresh TCP connection needs >= {floor_s:.2f} s for the preview "
                      f"line's bytes = {floor_s / preview_s:.2f} x its line; ours "
                      f"{_ratio(prev, floor_s)} of that)")
                whole = s["whole_exact"]
                verdict(f"{name} {tag}: whole series bit-exact {_seconds(whole)} s <= 1.15 x "
                        f"physical line {line_s:.2f} s ({_ratio(whole, line_s)})",
                        None if whole is None else whole <= 1.15 * line_s)
                if jls is not None:
                    other = jls["whole_exact"]
                    verdict(f"{name} {tag}: whole series bit-exact {_seconds(whole)} s < Orthanc "
                            f"JPEG-LS {_seconds(other)} s",
                            None if whole is None or other is None else whole < other)
        met = sum(1 for v in verdicts if v)
        print(f"  {met} of {len(verdicts)} met")
        for note in dict.fromkeys(self.notes):
            print(f"  note: {note}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="0.5mbit,2mbit,8mbit")
    parser.add_argument("--rtt", default="100ms")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--images", default="ct,cr,mr", help="any of ct, cr, mr")
    parser.add_argument("--view", type=int, default=14, help="the CT slice in view (0-based)")
    parser.add_argument("--orders", default="view,previews,auto:jxl",
                        help="our orders to measure, as the endpoint's ?order= takes them; "
                             "ORDER:CODEC also picks the ?codec= (htj2k by default, or jxl)")
    parser.add_argument("--no-orthanc", action="store_true")
    commands = parser.add_subparsers(dest="command")
    serve_args = commands.add_parser("serve", help="(internal) our app in the server namespace")
    serve_args.add_argument("--data", required=True)
    serve_args.add_argument("--host", required=True)
    serve_args.add_argument("--port", type=int, default=OURS_PORT)
    commands.add_parser("setup", help="(internal) upload and warm up").add_argument("spec")
    commands.add_parser("fetch", help="(internal) one timed fetch").add_argument("spec")
    args = parser.parse_args(argv)
    if args.command == "serve":
        cmd_serve(args)
    elif args.command == "setup":
        cmd_setup(args.spec)
    elif args.command == "fetch":
        cmd_fetch(args.spec)
    else:
        # SIGTERM unwinds like Ctrl-C, so the link, its processes and the temporary folder go
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
        Bench(args).run()


if __name__ == "__main__":
    main()
