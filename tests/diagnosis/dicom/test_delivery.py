"""Progressive delivery end to end: the real app, a real WebSocket, the real CT series from
../shared/data/dicom uploaded through STOW-RS. The viewer gets the frame in view first, then a
preview of every frame, then full quality outward; a view change re-orders what is left; every
frame reassembles bit-exact, in HTJ2K and in JPEG XL pairs; bad input gets an error and the
stream goes on. Streams are prepared as images are stored (`dicom_prepare`), before anyone asks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from aiohttp import WSMsgType, WSServerHandshakeError

from diagnosis.dicom import link, plan, progressive, series_socket
from diagnosis.dicom.delivery import FRAME_END, HEADER, LEVEL_END
from diagnosis.dicom.link import read_tcp_info
from telemed.app import create_app
from telemed.settings import SettingsError
from telemed.store import accounts
from telemed.store.database import connect

CT_PATIENT = "QMNx85rKkkg"


def add_patient(world, patient_id: str) -> None:
    conn = connect(world.data_dir / "telemed.sqlite3")
    try:
        accounts.get_patient(conn, patient_id)
    except LookupError:
        accounts.create_patient(conn, {"id": patient_id, "name": patient_id, "sex": "U",
                                       "home_institution_id": world.institutions["township"]})
    conn.close()


async def stow_as_its_patient(world, path: Path) -> None:
    """Upload one file for its DICOM Patient ID (registered at the township), or for P-1."""
    patient_id = pydicom.dcmread(path, stop_before_pixels=True).get("PatientID")
    if patient_id:
        add_patient(world, patient_id)
        await world.stow([path], expect=200)
    else:
        await world.stow([path], query=f"?patient={world.patient}", expect=200)


def series_url(path: Path) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/progressive"


class Viewer:
    """A client that reassembles each frame's code stream and logs what came in what order."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.streams: dict[int, bytearray] = {}
        self.frames: dict[int, dict] = {}
        self.chunks: list[tuple[int, int, int, int, int]] = []  # frame, start, end, level, flags
        self.statuses: list[dict] = []
        self.errors: list[dict] = []
        self.series: dict | None = None

    async def next(self, timeout: float = 20.0):
        message = await self.ws.receive(timeout=timeout)
        if message.type == WSMsgType.BINARY:
            frame, offset, total, level, levels, flags = HEADER.unpack_from(message.data)
            body = message.data[HEADER.size:]
            info = self.frames[frame]
            assert total == info["length"] and levels == len(info["level_ends"])
            stream = self.streams.setdefault(frame, bytearray())
            assert offset == len(stream), "chunks of a frame arrive in order, without gaps"
            stream += body
            end = offset + len(body)
            assert bool(flags & LEVEL_END) == (end in info["level_ends"])
            assert bool(flags & FRAME_END) == (end == total)
            assert info["level_ends"][level] >= end > (info["level_ends"][level - 1]
                                                       if level else 0)
            self.chunks.append((frame, offset, end, level, flags))
            return ("chunk", frame)
        if message.type != WSMsgType.TEXT:
            return ("closed", message)
        body = json.loads(message.data)
        if body["type"] == "frame":
            assert body["frame_index"] not in self.frames, "each frame is announced once"
            self.frames[body["frame_index"]] = body
        elif body["type"] == "status":
            self.statuses.append(body)
        elif body["type"] == "error":
            self.errors.append(body)
        elif body["type"] == "series":
            self.series = body
        return (body["type"], body)

    def complete(self, count: int) -> bool:
        return len(self.streams) == count and all(
            i in self.frames and len(self.streams[i]) == self.frames[i]["length"]
            for i in range(count))

    async def until_complete(self, count: int, timeout: float = 30.0) -> None:
        while not self.complete(count):
            await self.next(timeout)
        while not self.statuses or self.statuses[-1]["plan"]["phase"] != "done":
            await self.next(timeout)


def outward(view: int, count: int) -> list[int]:
    order = [view]
    for step in range(1, count):
        order += [i for i in (view + step, view - step) if 0 <= i < count]
    return order


def shrink_receive_buffer(ws) -> None:
    """Keep the client's TCP window small, so the server is held back by flow control."""
    sock = ws._conn.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)


def preview_end(info: dict) -> int:
    return info["level_ends"][info["preview_level"]]


def check_bit_exact(viewer: Viewer, pixels: list[np.ndarray]) -> None:
    """Every frame decodes (from its `frame` message alone) to the original pixels, and its
    preview prefix to a 1/4-resolution image: for JPEG XL pairs, exactly the 4x4 floor mean."""
    for index, original in enumerate(pixels):
        stream, info = bytes(viewer.streams[index]), viewer.frames[index]
        assert hashlib.sha256(stream).hexdigest() == info["sha256"]
        decoded = progressive.decode_frame(stream, info)
        assert decoded.dtype == original.dtype and np.array_equal(decoded, original), index
        small = progressive.decode_frame(stream[:preview_end(info)], info, info["preview_level"])
        assert small.shape == tuple(-(-n // 4) for n in original.shape[:2]) + original.shape[2:]
        assert list(small.shape) == info["preview_shape"]
        if info["codec"] == "jxl":
            assert np.array_equal(small, progressive.preview_image(original))


async def test_ct_series_view_first_previews_then_full_outward_bit_exact(world, shared_data):
    paths = sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))
    add_patient(world, CT_PATIENT)
    await world.stow(paths, expect=200)
    pixels = [pydicom.dcmread(p).pixel_array for p in paths]
    count, view, moved = len(paths), 10, 24
    url = series_url(paths[0])

    # first viewer, nothing cached yet, order "view": the frame in view comes first (its
    # 1/4-resolution prefix, then the rest of its stream) although it is made on the fly
    async with world.client.ws_connect(url + f"?frame_index={view}&order=view",
                                       headers=world.auth("clinician")) as ws:
        viewer = Viewer(ws)
        kind, series = await viewer.next()
        assert kind == "series" and series["count"] == count and series["view"] == view
        assert series["codec"] == "htj2k" and series["order"] == "view"
        await viewer.until_complete(count)
    first = [c for c in viewer.chunks if c[0] == view]
    assert viewer.chunks[:len(first)] == first and first[0][1] == 0
    assert first[-1][4] & FRAME_END
    assert any(c[2] == preview_end(viewer.frames[view]) and c[4] & LEVEL_END for c in first)
    check_bit_exact(viewer, pixels)
    done = viewer.statuses[-1]
    assert done["frames"] == "d" * count and done["plan"]["items"] == 0
    assert done["sent_bytes"] == sum(f["length"] for f in viewer.frames.values())
    assert done["rtt_ms"] is not None and done["rate_bps"] > 0 and viewer.errors == []

    # second viewer (code streams cached): previews of every frame outward from the view before
    # any other frame's full quality; then the view moves while the server is held back by
    # flow control, and what is left follows the new view
    async with world.client.ws_connect(url + f"?frame_index={view}",
                                       headers=world.auth("clinician")) as ws:
        shrink_receive_buffer(ws)
        viewer = Viewer(ws)
        while not all(i in viewer.frames and len(viewer.streams.get(i, b"")) >= preview_end(
                viewer.frames[i]) for i in range(count)):
            await viewer.next()
        order = []
        for frame, _, _, _, _ in viewer.chunks:
            if frame not in order:
                order.append(frame)
        assert order == outward(view, count)
        assert all(end <= preview_end(viewer.frames[f]) for f, _, end, _, _ in viewer.chunks
                   if f != view), "no other frame beyond its preview before every preview"
        assert not viewer.complete(count)
        await ws.send_json({"type": "view", "frame_index": moved})
        while not viewer.statuses or viewer.statuses[-1]["view"] != moved:
            await viewer.next()
        mark = len(viewer.chunks)
        await viewer.until_complete(count)
    finished = [f for f, _, _, _, flags in viewer.chunks[mark:] if flags & FRAME_END]
    assert finished == [f for f in outward(moved, count) if f in finished]
    assert finished[0] == moved
    assert len(finished) >= count // 2, "the view moved while most frames were incomplete"
    check_bit_exact(viewer, pixels)
    assert viewer.statuses[-1]["sent_bytes"] == sum(f["length"] for f in viewer.frames.values())

    # third viewer, token in the first message (as browsers do), holding every frame already
    # but the last one's tail: only that tail is sent; a bad entry among the claims (a frame
    # the series no longer has) is answered and costs nothing else
    last = viewer.frames[count - 1]
    have = [{"frame_index": i, "bytes": f["length"], "sha256": f["sha256"]}
            for i, f in viewer.frames.items() if i != count - 1]
    have.append({"frame_index": count - 1, "bytes": preview_end(last), "sha256": last["sha256"]})
    async with world.client.ws_connect(url) as ws:
        bad = {"frame_index": count + 4, "bytes": 10, "sha256": last["sha256"]}
        await ws.send_json({"type": "auth", "token": world.tokens["clinician"], "frame_index": 3,
                            "have": have[:2] + [bad] + have[2:]})
        resumed = Viewer(ws)
        resumed.frames = {i: f for i, f in viewer.frames.items() if i != count - 1}
        resumed.streams = {i: bytearray(viewer.streams[i][:h["bytes"]]) for i, h in
                           zip([h["frame_index"] for h in have], have)}
        while not resumed.statuses or resumed.statuses[-1]["plan"]["phase"] != "done":
            kind, _ = await resumed.next()
            assert kind != "frame" or _["frame_index"] == count - 1
    assert {c[0] for c in resumed.chunks} == {count - 1}
    assert resumed.chunks[0][1] == preview_end(last) and resumed.complete(count)
    assert resumed.statuses[-1]["sent_bytes"] == last["length"] - preview_end(last)
    assert [e["code"] for e in resumed.errors] == ["bad_frame_index"]
    with world.db() as conn:
        reads = conn.execute("SELECT COUNT(*) FROM audit WHERE action = 'dicom.read' AND "
                             "object LIKE 'study:%'").fetchone()[0]
    assert reads >= 3, "each opening of the stream is an audited read"


async def test_bad_input_gets_clear_errors_and_the_stream_goes_on(world, shared_data, monkeypatch):
    """A multi-frame JPEG-LS instance (10 frames, one series): unknown series, no or bad token,
    bad JSON, bad frame indexes; none of the in-stream mistakes stops delivery."""
    path = shared_data / "dicom" / "single" / "emri_small_jpeg_ls_lossless.dcm"
    await stow_as_its_patient(world, path)
    url = series_url(path)
    unknown = url.replace("/series/", "/series/9.9.9").split("/progressive")[0] + "/progressive"
    # with the token in a header, refusals are HTTP problems before the upgrade
    for target, headers, status in ((unknown, world.auth("clinician"), 404),
                                    (url, {"Authorization": "Bearer nonsense"}, 401)):
        with pytest.raises(WSServerHandshakeError) as refused:
            await world.client.ws_connect(target, headers=headers)
        assert refused.value.status == status

    # with the token in the first message, an error message and close code 1008
    async def refused_in_band(first: str | None, target: str = url) -> dict:
        async with world.client.ws_connect(target) as ws:
            if first is not None:
                await ws.send_str(first)
            message = await ws.receive_json(timeout=15)
            closing = await ws.receive(timeout=15)
            assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
            assert ws.close_code == 1008
            return message
    monkeypatch.setattr(series_socket, "AUTH_TIMEOUT_S", 0.3)
    for first, code in ((None, "unauthorized"),
                        ('{"type": "view", "frame_index": 0}', "unauthorized"),
                        ("not json", "unauthorized"),
                        ('{"type": "auth", "token": "nonsense"}', "unauthorized")):
        message = await refused_in_band(first)
        assert message["type"] == "error" and message["code"] == code, message
        assert message["message"]
    token = json.dumps({"type": "auth", "token": world.tokens["clinician"]})
    assert (await refused_in_band(token, unknown))["code"] == "not_found"
    other = json.dumps({"type": "auth", "token": world.tokens["other_clinician"]})
    assert (await refused_in_band(other))["code"] == "not_found", "another institution's patient"

    # in the stream, mistakes are answered and delivery goes on
    frames = progressive.frames_of(pydicom.dcmread(path))
    async with world.client.ws_connect(url + "?frame_index=99",
                                       headers=world.auth("clinician")) as ws:
        viewer = Viewer(ws)
        await ws.send_str("not json")
        await ws.send_bytes(b"\x00\x01")
        for bad in ({"type": "view", "frame_index": 10}, {"type": "view", "frame_index": "2"},
                    {"type": "view", "frame_index": True}, {"type": "view"}, {"type": "zoom"},
                    [1, 2], {"type": "have", "frames": [{"frame_index": 1}]},
                    {"type": "view", "frame_index": 2, "order": "sideways"}):
            await ws.send_json(bad)
        await ws.send_json({"type": "view", "frame_index": 7})
        await viewer.until_complete(len(frames))
        codes = [e["code"] for e in viewer.errors]
        assert codes == ["bad_frame_index", "bad_message", "bad_message", "bad_frame_index",
                         "bad_frame_index", "bad_frame_index", "bad_frame_index", "bad_message",
                         "bad_message", "bad_message", "bad_message"], codes
        assert all(e["message"] for e in viewer.errors)
        assert viewer.statuses[-1]["view"] == 7 and viewer.series["view"] == 0
        await ws.send_json({"type": "view", "frame_index": 2})
        while viewer.statuses[-1]["view"] != 2:
            await viewer.next()
        assert viewer.statuses[-1]["plan"]["phase"] == "done"
    check_bit_exact(viewer, frames)
    assert [viewer.frames[i]["frame_number"] for i in range(len(frames))] == list(range(1, 11))


async def test_colour_and_multi_frame_series_arrive_bit_exact_to_viewers_at_once(world,
                                                                                 shared_data):
    """Two viewers open each series at the same moment (one encoding job serves both)."""
    single = shared_data / "dicom" / "single"
    for name in ("US1_UNCR.dcm", "eCT_Supplemental.dcm"):
        path = single / name
        await stow_as_its_patient(world, path)
        frames = progressive.frames_of(pydicom.dcmread(path))

        async def view() -> Viewer:
            async with world.client.ws_connect(series_url(path),
                                               headers=world.auth("clinician")) as ws:
                viewer = Viewer(ws)
                await viewer.until_complete(len(frames))
                return viewer

        for viewer in await asyncio.gather(view(), view()):
            check_bit_exact(viewer, frames)
            assert viewer.frames[0]["shape"] == list(frames[0].shape)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("progressive-")]


async def test_previews_first_order_and_a_viewer_leaving_mid_stream(world, shared_data):
    path = shared_data / "dicom" / "single" / "emri_small_jpeg_ls_lossless.dcm"
    await stow_as_its_patient(world, path)
    frames = progressive.frames_of(pydicom.dcmread(path))
    async with world.client.ws_connect(series_url(path) + "?frame_index=4&order=previews"
                                       "&codec=webp", headers=world.auth("clinician")) as ws:
        viewer = Viewer(ws)
        await viewer.until_complete(len(frames))
    assert viewer.series["order"] == "previews" and viewer.statuses[-1]["order"] == "previews"
    assert viewer.series["codec"] == "htj2k", "an unknown codec: the default, and an error"
    assert [e["code"] for e in viewer.errors] == ["bad_message"]
    assert "codec" in viewer.errors[0]["message"]
    whole = [n for n, c in enumerate(viewer.chunks) if c[4] & FRAME_END]
    beyond = [n for n, c in enumerate(viewer.chunks) if c[2] > preview_end(viewer.frames[c[0]])]
    assert viewer.chunks[0][0] == 4 and viewer.chunks[beyond[0]][0] == 4
    assert {c[0] for c in viewer.chunks[:beyond[0]]} == set(range(len(frames))), \
        "every frame has its preview before the view's full quality"
    assert [viewer.chunks[n][0] for n in whole] == outward(4, len(frames))
    check_bit_exact(viewer, frames)

    ct = sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))[:6]
    add_patient(world, CT_PATIENT)
    await world.stow(ct, expect=200)
    async with world.client.ws_connect(series_url(ct[0]), headers=world.auth("clinician")) as ws:
        shrink_receive_buffer(ws)
        viewer = Viewer(ws)
        while len(viewer.chunks) < 3:
            await viewer.next()
    for _ in range(100):  # the server notices the close and ends both tasks
        if not [t for t in asyncio.all_tasks() if t.get_name().startswith("progressive-")]:
            break
        await asyncio.sleep(0.02)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("progressive-")]


async def test_jxl_pairs_arrive_bit_exact_in_fewer_bytes_and_auto_order_follows_the_link(
        world, shared_data, monkeypatch):
    """codec=jxl on eight CT slices: each frame announced as a JPEG XL pair (preview, then the
    frame) and reassembled bit-exact, in ~20 % fewer bytes than HTJ2K. The default order
    "auto" follows the measured link (made to read 2 Mbit/s, then 1 Gbit/s, at 100 ms RTT):
    every preview before the rest of the view on the slow one, the view whole first on the
    fast one, and each status says which. A viewer that kept some frames gets only the rest."""
    paths = sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))[8:16]
    add_patient(world, CT_PATIENT)
    await world.stow(paths, expect=200)
    pixels = [pydicom.dcmread(p).pixel_array for p in paths]
    count, view, url = len(paths), 3, series_url(paths[0])

    # cold: the pairs are made while the first viewer waits
    async with world.client.ws_connect(url + f"?frame_index={view}&codec=jxl&order=previews",
                                       headers=world.auth("clinician")) as ws:
        viewer = Viewer(ws)
        await viewer.until_complete(count)
    assert viewer.series["codec"] == "jxl" and viewer.errors == []
    assert {f["codec"] for f in viewer.frames.values()} == {"jxl"}
    assert all(len(f["level_ends"]) == 2 and f["preview_level"] == 0 and
               f["preview_shape"] == [128, 128] for f in viewer.frames.values())
    check_bit_exact(viewer, pixels)
    pair_bytes = sum(f["length"] for f in viewer.frames.values())
    htj2k_bytes = sum(progressive.encode(p)[1].length for p in pixels)
    assert pair_bytes < 0.85 * htj2k_bytes, (pair_bytes, htj2k_bytes)
    assert viewer.statuses[-1]["sent_bytes"] == pair_bytes
    assert viewer.statuses[-1]["codec"] == "jxl"

    # warm, default order, token and codec in the auth message, a 2 Mbit/s link: the view's
    # preview, every other preview, then the rest of the view and the others outward
    monkeypatch.setattr(link.LinkMeter, "link", lambda self: plan.Link(2e6, 0.1))
    async with world.client.ws_connect(url) as ws:
        await ws.send_json({"type": "auth", "token": world.tokens["clinician"],
                            "frame_index": view, "codec": "jxl"})
        viewer = Viewer(ws)
        await viewer.until_complete(count)
    assert viewer.series["order"] == "auto" and viewer.series["codec"] == "jxl"
    firsts = []
    for frame, _, _, _, _ in viewer.chunks:
        if frame not in firsts:
            firsts.append(frame)
    assert firsts == outward(view, count)
    beyond = [n for n, c in enumerate(viewer.chunks) if c[2] > preview_end(viewer.frames[c[0]])]
    assert viewer.chunks[beyond[0]][0] == view, "the view's frame part leads the full parts"
    assert {c[0] for c in viewer.chunks[:beyond[0]]} == set(range(count)), \
        "every preview before the rest of the view"
    finished = [c[0] for c in viewer.chunks if c[4] & FRAME_END]
    assert finished == outward(view, count)
    plans = [s["plan"] for s in viewer.statuses]
    assert plans[0]["view_first"] is False and plans[-1]["phase"] == "done"
    check_bit_exact(viewer, pixels)

    monkeypatch.setattr(link.LinkMeter, "link", lambda self: plan.Link(1e9, 0.1))
    async with world.client.ws_connect(url + f"?frame_index={view}&codec=jxl",
                                       headers=world.auth("clinician")) as ws:
        fast = Viewer(ws)
        await fast.until_complete(count)
    assert [c[0] for c in fast.chunks[:2]] == [view, view] and fast.chunks[1][4] & FRAME_END
    assert fast.statuses[0]["plan"]["view_first"] is True
    check_bit_exact(fast, pixels)

    # a viewer that kept frames 0-5 whole and frame 6's preview gets the rest only
    have = [{"frame_index": i, "bytes": f["length"] if i < 6 else preview_end(f),
             "sha256": f["sha256"]} for i, f in viewer.frames.items() if i < 7]
    async with world.client.ws_connect(url) as ws:
        await ws.send_json({"type": "auth", "token": world.tokens["clinician"], "codec": "jxl",
                            "have": have})
        resumed = Viewer(ws)
        resumed.frames = {i: f for i, f in viewer.frames.items() if i < 6}
        resumed.streams = {h["frame_index"]: bytearray(viewer.streams[h["frame_index"]]
                                                       [:h["bytes"]]) for h in have}
        await resumed.until_complete(count)
    assert {c[0] for c in resumed.chunks} == {6, 7}
    assert resumed.statuses[-1]["sent_bytes"] == (viewer.frames[6]["length"]
                                                  - preview_end(viewer.frames[6])
                                                  + viewer.frames[7]["length"])
    check_bit_exact(resumed, pixels)


def test_tcp_info_is_read_from_a_real_socket():
    """TCP_INFO from a loopback connection after sending: RTT measured, bytes acknowledged."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            client.sendall(b"x" * 200_000)
            received = 0
            while received < 200_000:
                received += len(peer.recv(65536))
            info = read_tcp_info(client)
            link.set_notsent_lowat(client, 16384)
            assert client.getsockopt(socket.IPPROTO_TCP, link.TCP_NOTSENT_LOWAT) == 16384
    assert info is not None and info.bytes_acked >= 200_000 and info.mss > 0
    assert 0 < info.rtt_s < 0.1 and info.notsent_bytes == 0
    assert read_tcp_info(None) is None


@pytest.mark.settings(dicom_prepare=("htj2k", "jxl"))
async def test_stored_images_are_prepared_in_every_configured_codec(imaging, shared_data,
                                                                   prepared):
    world = imaging
    paths = sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))[:4]
    await world.stow(paths + [shared_data / "ecg" / "dicom" / "waveform_ecg.dcm"], expect=200)
    with world.db() as conn:
        rows = conn.execute("SELECT sha256, is_image FROM dicom_instances").fetchall()
    images = [row["sha256"] for row in rows if row["is_image"]]
    assert len(images) == 4 and len(rows) == 5
    for sha256 in images:
        for mode in ("htj2k", "jxl"):
            assert await prepared(sha256, mode), (sha256, mode)
    cache = world.data_dir / "dicom" / "progressive"
    ecg = next(row["sha256"] for row in rows if not row["is_image"])
    assert not [p for p in cache.rglob("*") if ecg in str(p)], "no streams for a waveform"

    async with world.client.ws_connect(series_url(paths[0]) + "?codec=jxl",
                                       headers=world.auth("clinician")) as ws:
        viewer = Viewer(ws)
        await viewer.next()
        await viewer.until_complete(len(paths))
    assert viewer.errors == []


async def test_unknown_codec_to_prepare_stops_the_start(settings, aiohttp_client):
    with pytest.raises(SettingsError, match="webp"):
        await aiohttp_client(create_app(replace(settings, dicom_prepare=("htj2k", "webp"))))


async def test_a_failure_to_prepare_streams_loses_nothing(imaging, shared_data, monkeypatch,
                                                          caplog):
    """Streams that cannot be made at ingest (here the encoder fails) are logged; the upload
    still succeeds and the instance is stored byte for byte."""
    def failing(*_args):
        raise progressive.ProgressiveError("the encoder is out of order")

    monkeypatch.setattr(progressive, "derive", failing)
    path = sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))[0]
    await imaging.stow([path], expect=200)
    for _ in range(100):
        if "the encoder is out of order" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "no htj2k streams" in caplog.text
    with imaging.db() as conn:
        (stored,) = conn.execute("SELECT path FROM dicom_instances").fetchall()
    assert (imaging.data_dir / stored["path"]).read_bytes() == path.read_bytes()
