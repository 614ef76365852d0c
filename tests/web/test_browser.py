"""Two real headless Chromium browsers (Debian's, driven by Playwright) sign in, open the same
consult's room, see each other, chat, and show their fake camera; their cameras reach each other
through the server's SFU, and a ward round's viewer watches the presenter without publishing."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Page

from signaling.routes import ROOMS


@pytest.fixture(scope="session")
def voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loud, syllable-like warble for the fake microphone: Chromium's own fake beep is too quiet
    (about -70 dBov after audio processing) for the server to call anyone the active speaker."""
    path = tmp_path_factory.mktemp("audio") / "voice.wav"
    rate = 48000
    t = np.arange(2 * rate) / rate
    syllables = (t % 0.5) < 0.3
    pitch = 2 * np.pi * (220 * t + 80 / (2 * np.pi * 3) * (1 - np.cos(2 * np.pi * 3 * t)))
    samples = (0.5 * 32767 * syllables * np.sin(pitch)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


@pytest.fixture
def browser_args(voice) -> list[str]:
    return [f"--use-file-for-fake-audio-capture={voice}"]


async def sign_in_and_join(page: Page, base: str, username: str, password: str,
                           consult_id: str) -> None:
    await page.goto(base)
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("#login-form button")
    await page.click(f"button[data-consult='{consult_id}']")
    await page.wait_for_selector("#room:not([hidden])")


async def test_two_browsers_meet_in_a_consult_room(world, browser):
    consult = await world.request_consult()
    base = str(world.client.make_url("/"))
    clinic = await (await browser.new_context()).new_page()
    expert = await (await browser.new_context()).new_page()
    await sign_in_and_join(clinic, base, "clinician", world.password, consult["id"])
    await sign_in_and_join(expert, base, "cardiologist", world.password, consult["id"])
    for page in (clinic, expert):
        await page.wait_for_function("document.querySelectorAll('#participants li').length === 2")
    assert "(you)" in await clinic.inner_text("#participants")
    await clinic.fill("#chat-form input", "BP 90/60, sweating")
    await clinic.click("#chat-form button")
    await expert.wait_for_function(
        "document.querySelector('#chat').innerText.includes('BP 90/60, sweating')")
    playing = await clinic.wait_for_function(
        "() => { const v = document.getElementById('local');"
        " return v.srcObject && v.srcObject.getVideoTracks().length === 1 && v.readyState >= 2; }")
    assert await playing.json_value()
    await expert.click("#leave")
    await clinic.wait_for_function("document.querySelectorAll('#participants li').length === 1")


# -- media through the SFU ---------------------------------------------------------------------

DECODED = """async () => {
  const pc = window.telemed.subscriber;
  if (!pc) return 0;
  let frames = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
  });
  return frames;
}"""


async def frames_decoded(page: Page, more_than: int = 0, timeout: float = 20.0) -> int:
    """The video frames the page's subscriber connection decoded, once more than `more_than`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (frames := await page.evaluate(DECODED)) <= more_than:
        if loop.time() > deadline:
            raise AssertionError(f"{frames} video frames decoded, expected more than {more_than}")
        await asyncio.sleep(0.2)
    return frames


async def assert_video_flowing(page: Page) -> None:
    first = await frames_decoded(page)
    await asyncio.sleep(1.0)
    second = await page.evaluate(DECODED)
    assert second > first, (first, second)


def tile(name: str) -> str:
    return f"#remote figure:has(figcaption:text-is('{name}')) video"


async def new_page(browser, errors: list[str]) -> Page:
    """A page in its own context (own identity), recording uncaught script errors."""
    page = await (await browser.new_context()).new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


async def test_two_browsers_see_each_other_through_the_sfu(world, browser):
    consult = await world.request_consult()
    base = str(world.client.make_url("/"))
    errors: list[str] = []
    clinic, expert = await new_page(browser, errors), await new_page(browser, errors)
    await sign_in_and_join(clinic, base, "clinician", world.password, consult["id"])
    await sign_in_and_join(expert, base, "cardiologist", world.password, consult["id"])
    for page, other in ((clinic, "cardiologist"), (expert, "clinician")):
        await page.wait_for_selector(tile(other))
        await assert_video_flowing(page)
        size = await page.eval_on_selector(tile(other), "v => [v.readyState, v.videoWidth]")
        assert size[0] >= 2 and size[1] > 0, size
        assert await page.locator("#remote figure").count() == 1  # the other one, not ourselves
    # The host (the requesting clinic) starts recording: everyone is told, visibly; the
    # expert, not assigned yet and so not a host, has no such button.
    assert await expert.is_hidden("#record")
    await clinic.click("#record")
    for page in (clinic, expert):
        await page.wait_for_selector("#recording:not([hidden])")
        assert "Recording — everyone is told" in await page.inner_text("#recording")
    assert world.client.app[ROOMS].rooms[consult["id"]].recording
    assert await clinic.inner_text("#record") == "Stop recording"
    # Only the clinic talks (the expert's microphone is off): the server names the clinician
    # the active speaker from the audio level in the RTP headers, and both pages highlight them.
    await expert.evaluate("document.getElementById('local').srcObject.getAudioTracks()[0].enabled = false")
    await expert.wait_for_selector("#remote figure.speaking figcaption:text-is('clinician')")
    await expert.wait_for_selector("#participants li.speaking:has-text('clinician')")
    await clinic.wait_for_selector("#local-tile.speaking")
    # Leaving closes both connections, and the others drop the tile.
    await expert.click("#leave")
    assert await expert.evaluate("[window.telemed.publisher, window.telemed.subscriber]") == [None, None]
    await clinic.wait_for_function("document.querySelectorAll('#remote figure').length === 0")
    await clinic.wait_for_function("document.querySelectorAll('#participants li').length === 1")
    # Coming back publishes new tracks: the clinic's subscriber connection is renegotiated.
    subscriber = await clinic.evaluate_handle("window.telemed.subscriber")
    await expert.click(f"button[data-consult='{consult['id']}']")
    await clinic.wait_for_selector(tile("cardiologist"))
    await assert_video_flowing(clinic)
    assert await clinic.evaluate("s => s === window.telemed.subscriber", subscriber)
    for page in (clinic, expert):
        assert await page.locator("#room-error").inner_text() == ""
    assert errors == []


async def test_a_ward_round_viewer_receives_the_presenter_without_publishing(world, browser):
    ward_round = await world.request_consult(kind="round")  # the clinician presents
    base = str(world.client.make_url("/"))
    errors: list[str] = []
    presenter, viewer = await new_page(browser, errors), await new_page(browser, errors)
    await viewer.add_init_script(
        "window.cameraRequests = 0; const devices = navigator.mediaDevices;"
        " const ask = devices.getUserMedia.bind(devices);"
        " devices.getUserMedia = (c) => { window.cameraRequests += 1; return ask(c); };")
    await sign_in_and_join(presenter, base, "clinician", world.password, ward_round["id"])
    await sign_in_and_join(viewer, base, "cardiologist", world.password, ward_round["id"])
    await viewer.wait_for_selector(tile("clinician"))
    await assert_video_flowing(viewer)
    assert await viewer.evaluate("[window.cameraRequests, window.telemed.publisher]") == [0, None]
    assert await viewer.is_hidden("#local-tile")
    assert "only the presenter shares" in await viewer.inner_text("#media-status")
    assert "cardiologist (you) · viewer" in await viewer.inner_text("#participants")
    # Nobody else publishes, so the presenter subscribes to nothing and shows no remote tile.
    assert await presenter.evaluate("window.telemed.subscriber") is None
    assert await presenter.locator("#remote figure").count() == 0
    for page in (presenter, viewer):
        assert await page.locator("#room-error").inner_text() == ""
    assert errors == []


async def test_a_dropped_link_resumes_the_seat_and_keeps_the_video(world, browser):
    """A cart's mobile link drops the signaling socket: the page comes back into the same seat
    by itself, the other side sees it reconnect and return, and the video never stops."""
    consult = await world.request_consult()
    base = str(world.client.make_url("/"))
    errors: list[str] = []
    clinic, expert = await new_page(browser, errors), await new_page(browser, errors)
    await sign_in_and_join(clinic, base, "clinician", world.password, consult["id"])
    await sign_in_and_join(expert, base, "cardiologist", world.password, consult["id"])
    await expert.wait_for_selector(tile("clinician"))
    await assert_video_flowing(expert)
    room = world.client.app[ROOMS].rooms[consult["id"]]
    seats = set(room.participants)
    subscriber = await clinic.evaluate_handle("window.telemed.subscriber")
    # The link dies under the socket: no close handshake, the page sees 1006.
    registry = world.client.app[ROOMS]
    cart = next(p for p in room.participants.values() if p.name == "clinician")
    registry.sinks[cart.id].ws._req.transport.abort()
    await expert.wait_for_selector("#participants li:has-text('clinician'):has-text('(reconnecting)')")
    await expert.wait_for_function(
        "!document.querySelector('#participants').innerText.includes('reconnecting')")
    assert set(room.participants) == seats  # the same seat, not a new one
    assert await clinic.evaluate("s => s === window.telemed.subscriber", subscriber)
    await assert_video_flowing(expert)
    await assert_video_flowing(clinic)
    await clinic.fill("#chat-form input", "back on the 4G link")
    await clinic.click("#chat-form button")
    await expert.wait_for_function(
        "document.querySelector('#chat').innerText.includes('back on the 4G link')")
    for page in (clinic, expert):
        assert await page.locator("#room-error").inner_text() == ""
    assert errors == []
