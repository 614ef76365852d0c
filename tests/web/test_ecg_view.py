"""The ECG view in real headless Chromium (Debian's, driven by Playwright) against the real
application. An ambulance streams a real 12-lead (CinC 2021 HR06000 from ../shared/data, read in
place) with an inferior injury current added the way tests/diagnosis/ecg/test_st.py makes a
STEMI, and lead V6 disconnected, through the real sender at twice real time. The expert
following it sees the tracing drawn as it comes, every beat marked as the analysis labels it,
its heart rate, rhythm, ST and lead quality, and the STEMI alert as a banner until they
acknowledge it; an expert who opens the stream afterwards sees the alert too. Following a stream
that does not exist says so; a dropped follow socket is followed again; a posterior STEMI
equivalent (PTB s0010_re) is told apart from an elevation STEMI."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import numpy as np
import pytest
import wfdb
from playwright.async_api import Page, WebSocketRoute

from diagnosis.ecg import analysis
from diagnosis.ecg.formats import read_dicom
from diagnosis.ecg.formats.wfdb_io import read_wfdb
from diagnosis.ecg.frames import Frame, encode
from diagnosis.ecg.injury import with_injury
from diagnosis.ecg.sender import Recording, Sender, create_stream

STATE = "window.telemedEcg.state()"
INK = """() => {
  const canvas = document.getElementById("ecg-trace");
  if (!canvas.width || !canvas.height) return 0;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let dark = 0; // the trace and labels; the paper's grid is light
  for (let i = 0; i < pixels.length; i += 4) if (pixels[i] < 100 && pixels[i + 1] < 100 && pixels[i + 2] < 100) dark += 1;
  return dark;
}"""


@pytest.fixture(scope="module")
def stemi(shared_data) -> Recording:
    """HR06000 (10 s, 500 Hz, sinus rhythm, no ST code) with II, III and aVF lifted to 0.13 mV
    of ST elevation (aVL to -0.1), as the ambulance monitor would store it (1000 units/mV), and
    V6's electrode off (flat)."""
    record = read_wfdb(shared_data / "ecg" / "cinc2021-12lead" / "HR06000")
    elevation = dict(zip(record.leads, analysis.analyze(record).st[-1].elevation_mv))
    targets = {"II": 0.13, "III": 0.13, "aVF": 0.13, "aVL": -0.1}
    signal = with_injury(record.signal, record.fs, {record.leads.index(lead): mv - elevation[lead]
                                                    for lead, mv in targets.items()})
    samples = np.rint(signal * 1000.0).astype(np.int16)
    samples[:, record.leads.index("V6")] = 0
    return Recording(samples, record.fs, record.leads, (1000.0,) * len(record.leads))


async def new_page(browser, errors: list[str]) -> Page:
    """A page in its own context (own identity), recording uncaught script errors."""
    page = await (await browser.new_context()).new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


async def open_ecg(page: Page, world, username: str, stream_id: str) -> None:
    """Sign in and open the consult row's ECG button for the stream."""
    await page.goto(str(world.client.make_url("/")))
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", world.password)
    await page.click("#login-form button")
    await page.click(f"button[data-ecg='{stream_id}']")
    await page.wait_for_selector("#ecg:not([hidden])")


async def consult_stream(world) -> tuple[uuid.UUID, aiohttp.ClientWebSocketResponse]:
    """A new ECG stream attached to a new consult, and the monitor's ingest socket on it."""
    consult = await world.request_consult()
    created = await world.call("POST", "/api/ecg/streams", "clinician",
                               json={"patient_id": world.patient, "consult_id": consult["id"]},
                               expect=201)
    stream = uuid.UUID(created["id"])
    ingest = await world.client.ws_connect(f"/ecg/ingest/{stream}", headers=world.auth("clinician"))
    assert (await ingest.receive_json())["type"] == "ready"
    return stream, ingest


def base_url(world) -> str:
    return str(world.client.make_url("/")).rstrip("/")


async def test_an_expert_follows_a_stemi_live_and_a_later_one_sees_its_alert(world, browser, stemi):
    consult = await world.request_consult(urgency="emergency")
    errors: list[str] = []
    expert = await new_page(browser, errors)
    async with aiohttp.ClientSession() as session:
        token = world.tokens["clinician"]
        stream_id = await create_stream(session, base_url(world), token, world.patient, consult["id"])
        await open_ecg(expert, world, "cardiologist", stream_id)
        await expert.wait_for_selector("#ecg-status:has-text('Waiting for the first samples')")
        sender = Sender(base_url(world), token, stemi, stream_id, speed=2.0)
        sending = asyncio.create_task(sender.run(session))

        # (a) The tracing is drawn while it comes in.
        await expert.wait_for_function(f"{STATE}.samples >= 500")
        first = await expert.evaluate(f"[{STATE}.samples, ({INK})()]")
        await expert.wait_for_function(f"{STATE}.samples >= {first[0] + 1000}")
        second = await expert.evaluate(f"[{STATE}.samples, ({INK})()]")
        assert first[0] < second[0] < len(stemi.samples), (first, second)
        assert 0 < first[1] < second[1], (first, second)

        # (b) The STEMI reaches the expert as a banner while the stream is still coming.
        banner = ".ecg-alert[data-kind='STEMI']:not(.acknowledged)"
        await expert.wait_for_selector(banner, timeout=15_000)
        assert not await expert.evaluate(f"{STATE}.complete")
        assert "STEMI in II, III, aVF at 0:01.8 of the recording" in await expert.inner_text(banner)
        assert await expert.eval_on_selector_all(
            "#ecg-leads tr.alerted", "rows => rows.map(r => r.dataset.lead)") == ["II", "III", "aVF"]
        report = await asyncio.wait_for(sending, 30)
    assert report.samples == len(stemi.samples)
    await expert.wait_for_function(f"{STATE}.complete && {STATE}.rhythm !== null")
    # Beats are marked at the next animation frame after they arrive: let the strip catch up.
    await expert.wait_for_function(f"(state => state.markers === state.beats.length)({STATE})")

    # What the page shows is what the analysis of the stored recording says (the live
    # analysis equals it, docs/ecg-stream.md).
    stored = await world.call("GET", f"/api/ecg/streams/{stream_id}/analysis", "cardiologist",
                              expect=200)
    shown = await expert.evaluate(STATE)
    assert shown["samples"] == len(stemi.samples)
    assert shown["beats"] == stored["beats"] and len(shown["beats"]) == 12
    assert shown["markers"] == 12  # the whole 10 s fit on the strip: every beat marked
    assert {b["label"] for b in shown["beats"]} == {"N"}
    assert abs(shown["heartRate"] - stored["heart_rate"]["mean_bpm"]) <= 3
    assert await expert.inner_text("#ecg-hr") == f"{round(shown['heartRate'])} bpm"
    assert shown["rhythm"] == stored["rhythms"][-1]["label"] == "SINUS"
    assert (await expert.inner_text("#ecg-rhythm")).startswith("SINUS")
    assert shown["st"] == stored["st_mv"]  # the last frame's values too, not only the finish's
    ii = await expert.inner_text("#ecg-leads tr[data-lead='II']")
    assert f"+{stored['st_mv']['II'] * 10:.1f} mm" in ii and stored["st_mv"]["II"] > 0.1
    assert shown["quality"]["V6"]["flags"] == ["lead_off"] and "lead_off" in stored["quality"]["V6"]["flags"]
    assert await expert.inner_text("#ecg-leads tr.poor[data-lead='V6']") == "V6\t—\tlead off"
    assert await expert.locator("#ecg-leads tr.poor").count() == 1
    assert "Recording complete — 12 leads at 500 Hz, 0:10.0 received" in await expert.inner_text("#ecg-status")

    # The expert downloads the recording for the PACS: the integers as the monitor sent them.
    async with expert.expect_download() as downloading:
        await expert.click("#ecg-export-dicom")
    downloaded = await downloading.value
    assert downloaded.suggested_filename == f"ecg-{stream_id}.dcm"
    exported = read_dicom(await downloaded.path())
    assert exported.leads == stemi.leads and np.array_equal(exported.digital, stemi.samples)

    # The banner stays until acknowledged, then the alert is listed as acknowledged.
    await expert.click(f"{banner} button")
    assert await expert.locator(".ecg-alert:not(.acknowledged)").count() == 0
    assert "acknowledged" in await expert.inner_text(".ecg-alert[data-kind='STEMI']")

    # An expert who opens the stream afterwards sees the alert raised before they came, with
    # the recording's last 10 s; no beat was analysed while they followed.
    later = await new_page(browser, errors)
    await open_ecg(later, world, "cardiologist2", stream_id)
    await later.wait_for_selector(banner)
    assert "STEMI in II, III, aVF" in await later.inner_text(banner)
    await later.wait_for_function(f"{STATE}.samples === {len(stemi.samples)}")
    joined = await later.evaluate(STATE)
    assert [(a["kind"], a["sample"], a["raised_at"]) for a in joined["alerts"]] == [
        (a["kind"], a["sample"], a["raised_at"]) for a in stored["alerts_raised"]]
    assert joined["beats"] == [] and await later.evaluate(INK) > 0
    for page in (expert, later):
        assert await page.inner_text("#ecg-error") == ""
    assert errors == []


async def test_following_a_stream_that_does_not_exist_says_so(world, browser):
    consult = await world.request_consult()
    await world.call("POST", f"/api/consults/{consult['id']}/attachments", "clinician",
                     json={"kind": "ecg", "ref": "no-such-stream"}, expect=201)
    errors: list[str] = []
    expert = await new_page(browser, errors)
    await open_ecg(expert, world, "cardiologist", "no-such-stream")
    await expert.wait_for_selector("#ecg-error:has-text('not found')")
    assert await expert.inner_text("#ecg-error") == (
        "Cannot follow this ECG: ECG stream 'no-such-stream' not found (not_found)")
    await asyncio.sleep(1.0)  # a refusal is final: no reconnecting
    assert "reconnecting" not in await expert.inner_text("#ecg-status")
    assert (await expert.evaluate(STATE))["samples"] == 0
    await expert.click("#ecg-export-wfdb")
    await expert.wait_for_selector("#ecg-error:has-text('Cannot download')")
    assert await expert.inner_text("#ecg-error") == (
        "Cannot download this ECG: ECG stream 'no-such-stream' not found")
    await expert.click("#ecg-close")
    assert await expert.is_hidden("#ecg")
    assert errors == []


async def test_a_dropped_follow_socket_is_followed_again(world, browser, stemi):
    """The follow socket closes under the page (1001, as when a server restarts) while the
    stream runs: the page says so, follows again, and goes on drawing what comes next."""
    stream, ingest = await consult_stream(world)
    per_frame = 125

    async def send(seqs: range) -> None:
        for seq in seqs:
            chunk = stemi.samples[seq * per_frame:(seq + 1) * per_frame]
            await ingest.send_bytes(encode(Frame(stream, seq, seq * per_frame, stemi.fs,
                                                 stemi.leads, stemi.gain, chunk)))
            assert (await ingest.receive_json())["ack"] == seq

    await send(range(8))  # 2 s
    sockets: list[WebSocketRoute] = []

    async def through(route: WebSocketRoute) -> None:
        route.connect_to_server()
        sockets.append(route)

    errors: list[str] = []
    expert = await new_page(browser, errors)
    await expert.route_web_socket("**/ecg/follow/**", through)
    await open_ecg(expert, world, "cardiologist", str(stream))
    await expert.wait_for_function(f"{STATE}.samples === 1000")
    await sockets[0].close(code=1001, reason="going away")
    await expert.wait_for_selector("#ecg-status:has-text('reconnecting')")
    await expert.wait_for_selector("#ecg-status:has-text('Live')")
    assert len(sockets) == 2
    await send(range(8, 16))
    await expert.wait_for_function(f"{STATE}.samples === 2000")
    await ingest.close()
    assert await expert.inner_text("#ecg-error") == ""
    assert errors == []


async def test_a_posterior_stemi_equivalent_is_named_as_such(world, browser, shared_data):
    """The first 8 s of PTB s0010_re, streamed before the expert opens it: the banner says the
    STEMI is read from ST depression with upright T waves in V2-V3 and asks for V7-V9."""
    record = wfdb.rdrecord(str(shared_data / "ecg" / "ptb" / "s0010_re"), physical=False,
                           sampto=8000)
    samples = record.d_signal.astype(np.int16)
    stream, ingest = await consult_stream(world)
    per_frame = 500
    for seq in range(len(samples) // per_frame):
        await ingest.send_bytes(encode(Frame(
            stream, seq, seq * per_frame, record.fs, tuple(record.sig_name),
            tuple(record.adc_gain), samples[seq * per_frame:(seq + 1) * per_frame])))
        assert (await ingest.receive_json())["ack"] == seq
    await ingest.close()
    errors: list[str] = []
    expert = await new_page(browser, errors)
    await open_ecg(expert, world, "cardiologist", str(stream))
    banner = ".ecg-alert[data-kind='STEMI']"
    await expert.wait_for_selector(banner)
    assert (await expert.inner_text(banner)).startswith(
        "STEMI equivalent, posterior: ST depression with upright T in V2, V3"
        " (record V7–V9 to confirm) at 0:02.1 of the recording")
    assert errors == []
