"""The image viewer in real headless Chromium (Debian's, driven by Playwright) against the real
application: the GE head CT from ../shared/data/dicom is uploaded through STOW-RS for a consult,
an expert opens it, and the browser decodes the progressive HTJ2K streams with OpenJPH's
WebAssembly build. The slice in view is shown as a preview first and then as diagnostic; the
samples decoded in the browser equal pydicom's pixels bit for bit, and so does the window the
canvas shows; scrolling tells the server; two participants of a room read together; a dropped
connection resumes without anything sent twice; a very slow link shows a 1/8 level first."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import re
import struct
import time

import pydicom
import pytest
from playwright.async_api import Page
from pydicom.pixels import apply_modality_lut

from diagnosis.dicom import delivery
from diagnosis.dicom.render import Window, to_8bit
from telemed.store import accounts
from telemed.store.database import connect

CT_PATIENT = "QMNx85rKkkg"
"""The Patient ID of the GE head CT."""


@pytest.fixture
def ct_series(shared_data) -> list[pydicom.Dataset]:
    """The 28 slices, read in place, in the order the server numbers frames (instance number)."""
    slices = [pydicom.dcmread(p) for p in sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm"))]
    return sorted(slices, key=lambda ds: (int(ds.InstanceNumber), ds.SOPInstanceUID))


@pytest.fixture
async def ct_consult(world, shared_data) -> dict:
    """A radiology consult about the CT's patient, the series uploaded for it through STOW-RS."""
    conn = connect(world.data_dir / "telemed.sqlite3")
    accounts.create_patient(conn, {"id": CT_PATIENT, "name": "CT patient", "sex": "U",
                                   "home_institution_id": world.institutions["township"]})
    conn.close()
    consult = await world.request_consult(patient_id=CT_PATIENT, specialty="radiology")
    await world.stow(sorted((shared_data / "dicom" / "ct-head-ge").glob("*.dcm")),
                     query=f"?consult={consult['id']}", expect=200)
    return consult


async def new_page(browser, errors: list[str]) -> Page:
    """A page in its own context (own identity), recording uncaught script errors."""
    page = await (await browser.new_context()).new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


async def sign_in(page: Page, base: str, username: str, password: str) -> None:
    await page.goto(base)
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("#login-form button")
    await page.wait_for_selector("#consults:not([hidden])")


async def wait_for_slice(page: Page, index: int) -> None:
    await page.wait_for_selector(f"#image-figure[data-frame='{index}'][data-quality='diagnostic']")


ALL_DIAGNOSTIC = "document.getElementById('image-link').textContent.includes('28/28 slices diagnostic')"

SAMPLES_SHA256 = """async (frame) => {
  const samples = window.telemedViewer.frameSamples(frame);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", samples));
  return [samples.constructor.name, samples.length,
          Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("")];
}"""

# The canvas' grey levels (its red channel, where green and blue are equal): SHA-256, hex.
CANVAS_GREY_SHA256 = """async () => {
  const rgba = document.getElementById("image").getContext("2d").getImageData(0, 0, 512, 512).data;
  const grey = new Uint8Array(rgba.length / 4);
  for (let i = 0; i < grey.length; i += 1) {
    if (rgba[4 * i + 1] !== rgba[4 * i] || rgba[4 * i + 2] !== rgba[4 * i]) return "not grey";
    grey[i] = rgba[4 * i];
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", grey));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}"""

# Every state the figure goes through, as the page sets it (one entry per task that changed it).
RECORD_QUALITY = """() => {
  const figure = document.getElementById("image-figure");
  window.qualities = [];
  new MutationObserver(() => window.qualities.push([Number(figure.dataset.frame), figure.dataset.quality]))
    .observe(figure, { attributes: true, attributeFilter: ["data-quality", "data-frame"] });
}"""


async def test_an_expert_opens_the_ct_preview_first_then_diagnostic_bit_exact(
        world, browser, ct_consult, ct_series):
    errors: list[str] = []
    page = await new_page(browser, errors)
    await sign_in(page, str(world.client.make_url("/")), "radiologist", world.password)
    await page.evaluate(RECORD_QUALITY)
    await page.click(f"button[data-images='{ct_consult['id']}']")
    await wait_for_slice(page, 0)
    assert "CT 2" in await page.inner_text("#series-list")
    assert "(28 images)" in await page.inner_text("#series-list")
    assert await page.inner_text("#image-quality") == "diagnostic (lossless)"
    assert await page.inner_text("#image-slice") == "slice 1 of 28"
    # The first look was the 1/4-resolution prefix, drawn the moment its bytes were in; full
    # quality came only once the whole stream was in and matched its SHA-256.
    shown = [quality for frame, quality in await page.evaluate("window.qualities")
             if frame == 0 and quality != "none"]
    full = shown.index("diagnostic")
    assert full >= 1 and set(shown[:full]) == {"preview"} and set(shown[full:]) == {"diagnostic"}, shown
    # Every slice the browser decoded is pydicom's pixel array, sample for sample.
    await page.wait_for_function(ALL_DIAGNOSTIC)
    for index, ds in enumerate(ct_series):
        kind, length, digest = await page.evaluate(SAMPLES_SHA256, index)
        expected = ds.pixel_array.astype("<i2")
        assert (kind, length) == ("Int16Array", expected.size)
        assert digest == hashlib.sha256(expected.tobytes()).hexdigest(), f"slice {index + 1}"
    # The canvas shows the stored window (35/100), computed in the browser exactly as the
    # server's WADO-RS /rendered computes it.
    assert await page.inner_text("#image-window") == "W 100 L 35"
    ds = ct_series[0]
    expected = to_8bit(apply_modality_lut(ds.pixel_array, ds), Window(35, 100))
    assert await page.evaluate(CANVAS_GREY_SHA256) == hashlib.sha256(expected.tobytes()).hexdigest()
    link = await page.inner_text("#image-link")
    assert re.fullmatch(r"link [0-9.]+ [MG]bit/s · RTT [0-9.]+ ms · 28/28 slices diagnostic", link), link
    assert await page.inner_text("#viewer-error") == ""
    assert errors == []


async def diagnostic_count(page: Page) -> int:
    return int(re.search(r"(\d+)/28 slices diagnostic", await page.inner_text("#image-link"))[1])


async def test_changing_slice_tells_the_server_and_the_new_slice_becomes_diagnostic(
        world, browser, ct_consult, ct_series):
    errors: list[str] = []
    page = await new_page(browser, errors)
    sent: list[dict] = []
    page.on("websocket", lambda ws: ws.on(
        "framesent", lambda payload: sent.append(json.loads(payload)) if isinstance(payload, str) else None))
    await sign_in(page, str(world.client.make_url("/")), "radiologist", world.password)
    # A 2 Mbit/s link (Chromium's network emulation, which WebSockets go through too): the
    # series takes seconds, so what the server sends after a move shows that it re-planned.
    devtools = await page.context.new_cdp_session(page)
    await devtools.send("Network.enable")
    await devtools.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 50, "downloadThroughput": 250_000, "uploadThroughput": 250_000})
    await page.click(f"button[data-images='{ct_consult['id']}']")
    await page.wait_for_selector("#image-figure[data-frame='0']:not([data-quality='none'])")
    await page.fill("#slice", "20")
    await wait_for_slice(page, 20)
    await page.wait_for_selector("#image-link[data-view='20']")
    assert await page.inner_text("#image-slice") == "slice 21 of 28"
    assert await diagnostic_count(page) < 20, "slice 21 came before most of the others"
    kind, length, digest = await page.evaluate(SAMPLES_SHA256, 20)
    assert digest == hashlib.sha256(ct_series[20].pixel_array.astype("<i2").tobytes()).hexdigest()
    # Arrow keys and the mouse wheel move the view too (now on the full-speed link).
    await devtools.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    await page.focus("#image")
    for _ in range(3):
        await page.keyboard.press("ArrowUp")
    await wait_for_slice(page, 17)
    await page.hover("#image")
    await page.mouse.wheel(0, 120)
    await wait_for_slice(page, 18)
    await page.wait_for_selector("#image-link[data-view='18']")
    views = [m for m in sent if m["type"] == "view"]
    assert [m["frame_index"] for m in views if "order" not in m] == [20, 19, 18, 17, 18]
    # Once the reader settles (300 ms), it asks for that slice's full quality next.
    settled = {"type": "view", "frame_index": 18, "order": "view"}
    for _ in range(50):
        if settled in sent:
            break
        await asyncio.sleep(0.1)
    assert settled in sent, sent
    assert await page.inner_text("#viewer-error") == ""
    assert errors == []


async def join_room(page: Page, consult_id: str) -> None:
    await page.click(f"button[data-consult='{consult_id}']")
    await page.wait_for_selector("#room:not([hidden])")


async def test_two_participants_read_the_ct_together(world, browser, ct_consult):
    base = str(world.client.make_url("/"))
    errors: list[str] = []
    clinic, expert = await new_page(browser, errors), await new_page(browser, errors)
    await sign_in(clinic, base, "clinician", world.password)
    await join_room(clinic, ct_consult["id"])
    await clinic.click("#room-images")
    await wait_for_slice(clinic, 0)
    # The clinic moves to slice 10, picks the bone window, points at the middle and shares.
    await clinic.fill("#slice", "9")
    await clinic.click("#window-presets button:text-is('Bone')")
    await clinic.hover("#image")
    await clinic.click("#share-view")
    assert await clinic.inner_text("#share-view") == "Stop sharing"
    # The expert comes in later: the room's snapshot opens the same slice in the same window.
    await sign_in(expert, base, "radiologist", world.password)
    await join_room(expert, ct_consult["id"])
    await wait_for_slice(expert, 9)
    assert await expert.inner_text("#image-window") == "W 2800 L 600"
    assert "Following clinician" in await expert.inner_text("#image-following")
    assert await expert.is_visible("#shared-pointer")
    # Then follows as the clinic scrolls and changes the window.
    await clinic.focus("#image")
    await clinic.keyboard.press("ArrowDown")
    await clinic.keyboard.press("ArrowDown")
    await wait_for_slice(expert, 11)
    await clinic.click("#window-presets button:text-is('Brain')")
    await expert.wait_for_function("document.getElementById('image-window').textContent === 'W 80 L 40'")
    # Sharing ends: the expert keeps the image and reads on alone.
    await clinic.click("#share-view")
    await expert.wait_for_function("document.getElementById('image-following').textContent === ''")
    assert await expert.get_attribute("#image-figure", "data-frame") == "11"
    for page in (clinic, expert):
        assert await page.inner_text("#viewer-error") == ""
        assert await page.inner_text("#room-error") == ""
    assert errors == []


async def test_a_series_that_does_not_exist_shows_an_error_not_a_blank_viewer(
        world, browser, ct_consult, ct_series):
    errors: list[str] = []
    page = await new_page(browser, errors)
    await sign_in(page, str(world.client.make_url("/")), "radiologist", world.password)
    await page.click(f"button[data-images='{ct_consult['id']}']")
    await wait_for_slice(page, 0)
    missing = "1.2.826.0.1.3680043.8.498.404"
    attempts: list[str] = []
    page.on("websocket", lambda ws: attempts.append(ws.url) if missing in ws.url else None)
    await page.evaluate("([study, series]) => window.telemedViewer.openSeries(study, series)",
                        [ct_series[0].StudyInstanceUID, missing])
    await page.wait_for_function("document.getElementById('viewer-error').textContent !== ''")
    error = await page.inner_text("#viewer-error")
    assert f"Series {missing} could not be shown" in error and "not found" in error.lower(), error
    assert await page.is_visible("#viewer-error")
    assert await page.get_attribute("#image-figure", "data-quality") == "none"
    # A refusal is final: no second attempt, even after the first retry would have come (0.6 s).
    await asyncio.sleep(1.0)
    assert len(attempts) == 1, attempts
    assert errors == []


class PhoneLink:
    """The phone's mobile network between the browser and the app: a TCP relay that carries
    every connection as it is, and can drop the image socket (the series' progressive
    WebSocket) once it has carried a given number of bytes towards the browser, then refuse
    connections for a moment, as a 4G link that loses its cell does. Nothing in the viewer or
    the server knows. (Chromium's DevTools "offline" emulation only pauses an open WebSocket,
    which goes on where it stopped once back online: no drop.)"""

    def __init__(self, app_port: int, drop_image_socket_after: int, down_s: float) -> None:
        self.app_port, self.drop_after, self.down_s = app_port, drop_image_socket_after, down_s
        self.down_until = 0.0
        self.dropped = False
        self.refused = 0
        self.image_sockets: list[int] = []
        """Bytes carried towards the browser on each image socket (WebSocket framing and all)."""
        self._connections: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._carry, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    async def __aexit__(self, *exc_info) -> None:
        self._server.close()
        for writer in self._connections:
            writer.transport.abort()

    async def _carry(self, from_browser: asyncio.StreamReader, to_browser: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.down_until:
            self.refused += 1
            to_browser.transport.abort()
            return
        from_app, to_app = await asyncio.open_connection("127.0.0.1", self.app_port)
        self._connections |= {to_browser, to_app}
        request = await from_browser.read(64 * 1024)
        to_app.write(request)
        image_socket = b"/progressive " in request.split(b"\r\n", 1)[0]
        limit = self.drop_after if image_socket and not self.dropped else None
        if image_socket:
            self.image_sockets.append(0)
        pumps = [asyncio.create_task(self._pump(from_browser, to_app)),
                 asyncio.create_task(self._pump(from_app, to_browser, limit, image_socket))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        if limit is not None and self.image_sockets[-1] == limit:
            self.dropped, self.down_until = True, time.monotonic() + self.down_s
        for writer in (to_browser, to_app):  # ended as a lost link ends it: no WebSocket close
            writer.transport.abort()
            self._connections.discard(writer)
        for pump in pumps:
            pump.cancel()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    limit: int | None = None, image_socket: bool = False) -> None:
        with contextlib.suppress(ConnectionError):
            carried = 0
            while data := await reader.read(64 * 1024):
                if limit is not None:
                    data = data[:limit - carried]
                writer.write(data)
                await writer.drain()
                carried += len(data)
                if image_socket:
                    self.image_sockets[-1] += len(data)
                if carried == limit:
                    return


def chunk_starts(payloads: list) -> dict[int, int]:
    """Where each frame's first chunk among these WebSocket messages starts in its stream."""
    starts: dict[int, int] = {}
    for payload in payloads:
        if isinstance(payload, bytes):
            frame, offset = struct.unpack_from(">II", payload)
            starts.setdefault(frame, offset)
    return starts


STREAM_STATS = "window.telemedViewer.streamStats()"


async def test_a_dropped_connection_resumes_where_it_stopped_and_nothing_is_sent_twice(
        world, browser, ct_consult, ct_series):
    errors: list[str] = []
    page = await new_page(browser, errors)
    sockets: list[dict] = []  # per image socket: what the page sent and received
    def watch(ws) -> None:
        socket = {"sent": [], "received": []}
        sockets.append(socket)
        ws.on("framesent", lambda payload: socket["sent"].append(payload))
        ws.on("framereceived", lambda payload: socket["received"].append(payload))
    page.on("websocket", watch)
    # The link drops the image socket after 1 MB towards the browser (under a third of the
    # series) and is down for 1 s: the first attempt to resume (after 0.4-0.6 s) is refused.
    link = PhoneLink(world.client.make_url("/").port, drop_image_socket_after=1_000_000, down_s=1.0)
    async with link as base:
        await sign_in(page, base, "radiologist", world.password)
        await page.click(f"button[data-images='{ct_consult['id']}']")
        await page.wait_for_function(
            "document.getElementById('image-link').textContent.includes('reconnecting…')")
        # What the page held when the connection dropped: some slices whole, the others a
        # prefix (at least their 1/4 preview), one of them cut inside its rest.
        at_drop = await page.evaluate(STREAM_STATS)
        held = {int(k): received for k, (received, length, verified) in at_drop["frames"].items()}
        lengths = {int(k): length for k, (received, length, verified) in at_drop["frames"].items()}
        whole = {i for i in held if held[i] == lengths[i]}
        assert len(held) == 28 and 0 < len(whole) < 28, at_drop
        assert any(0 < held[i] < lengths[i] for i in held), at_drop
        assert await page.get_attribute("#image-figure", "data-quality") == "diagnostic"
        # The reader scrolls on while the link is down: slice 7 shows its preview at once.
        await page.fill("#slice", "6")
        await page.wait_for_selector("#image-figure[data-frame='6'][data-quality='preview']")
        # The viewer comes back by itself, tells the server what it holds and where it is,
        # and every slice ends diagnostic: bit for bit pydicom's pixels.
        await page.wait_for_function(ALL_DIAGNOSTIC)
        await wait_for_slice(page, 6)
    assert link.refused >= 1 and len(sockets) == 2 + link.refused, (link.refused, len(sockets))
    resumed = sockets[-1]
    auth = json.loads(resumed["sent"][0])
    assert auth["type"] == "auth" and auth["frame_index"] == 6
    assert {entry["frame_index"]: entry["bytes"] for entry in auth["have"]} == {
        i: size for i, size in held.items() if size}
    for index, ds in enumerate(ct_series):
        kind, length, digest = await page.evaluate(SAMPLES_SHA256, index)
        assert digest == hashlib.sha256(ds.pixel_array.astype("<i2").tobytes()).hexdigest(), index
    # Nothing was sent twice. The resumed socket carried no byte of a slice whole before the
    # drop (those stayed diagnostic), and began every other slice exactly where the page's
    # prefix ended.
    assert chunk_starts(resumed["received"]) == {i: held[i] for i in held if i not in whole}
    # And the code-stream bytes the page received over both connections are exactly the
    # streams' lengths. Exactly, not "plus what was in flight": the server had sent more than
    # the relay carried, and the relay cut a chunk message short, but a browser hands the page
    # whole WebSocket messages only, so those bytes never reached it; it claimed what it had
    # appended, and they came once, on the new connection.
    total = await page.evaluate(STREAM_STATS)
    assert sum(lengths.values()) == 3_296_205
    assert total["streamBytes"] == sum(lengths.values()), (total["streamBytes"], at_drop["streamBytes"])
    assert total["connections"] == len(sockets)
    assert await page.inner_text("#viewer-error") == ""
    assert errors == []


# Every label the figure shows, as the page sets it: [frame, text].
RECORD_LABELS = """() => {
  const figure = document.getElementById("image-figure");
  const label = document.getElementById("image-quality");
  window.labels = [];
  new MutationObserver(() => window.labels.push([Number(figure.dataset.frame), label.textContent]))
    .observe(label, { childList: true, characterData: true, subtree: true });
}"""


async def test_on_a_very_slow_link_a_1_8_level_comes_first_and_is_labelled_so(
        world, browser, ct_consult, monkeypatch):
    # 200 kbit/s, where the 1/4 preview of a CT slice (13-16 KB) takes 0.5 s or more and the
    # server's first look is the 1/8 level (4-5 KB) instead. Chromium's DevTools throttling
    # slows the WebSocket inside the browser, after its socket: on loopback the server's
    # TCP_INFO measures tens of Gbit/s. A real 200 kbit/s link is measured as such
    # (bench/netlab), so here the kernel's rate samples say what DevTools emulates; the rest of
    # TCP_INFO (RTT, bytes acknowledged) is the socket's own.
    rate_bps = 200_000
    measure = delivery.read_tcp_info
    def measured_at_emulated_rate(sock):
        info = measure(sock)
        return info and dataclasses.replace(info, delivery_rate_bps=rate_bps, app_limited=False)
    monkeypatch.setattr(delivery, "read_tcp_info", measured_at_emulated_rate)
    errors: list[str] = []
    page = await new_page(browser, errors)
    messages: list[dict] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: messages.append(
        json.loads(payload)) if isinstance(payload, str) else None))
    await sign_in(page, str(world.client.make_url("/")), "radiologist", world.password)
    await page.evaluate(RECORD_LABELS)
    # The decoder is in the browser already (a returning reader), not fetched over the slow link.
    await page.evaluate("import('/web/htj2k.js').then((htj2k) => htj2k.loadDecoder())")
    devtools = await page.context.new_cdp_session(page)
    await devtools.send("Network.enable")
    await devtools.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 100, "downloadThroughput": rate_bps / 8,
        "uploadThroughput": rate_bps / 8})
    await page.click(f"button[data-images='{ct_consult['id']}']")
    await page.wait_for_function("window.labels.some(([, text]) => text.includes('1/4'))")
    # The server sent the first look up to the 1/8 level's end, then planned the 1/4 level next.
    frame = next(m for m in messages if m["type"] == "frame")
    status = next(m for m in messages if m["type"] == "status")
    ends = frame["level_ends"]
    assert frame["frame_index"] == 0 and frame["preview_level"] == 3
    assert status["plan"]["next"][0] == {"frame_index": 0, "start": ends[2], "end": ends[3],
                                         "label": "preview", "level": 3}, status
    # Then, back on a fast link, the rest.
    await devtools.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    await wait_for_slice(page, 0)
    # The viewer drew every level as it came, each labelled with its resolution: the 1/8 level
    # before the 1/4 preview, the 1/2 level, then the checked frame.
    shown = [text for index, text in await page.evaluate("window.labels") if index == 0]
    shown = [text for n, text in enumerate(shown) if n == 0 or text != shown[n - 1]]
    assert shown == ["waiting for this slice…", *(f"preview · 1/{scale} resolution"
                                                  for scale in (32, 16, 8, 4, 2)),
                     "diagnostic (lossless)"], shown
    assert await page.inner_text("#viewer-error") == ""
    assert errors == []
