"""Two real headless Chromium browsers (Debian's, driven by Playwright) sign in, open the same
consult's room, see each other, chat, and show their fake camera."""

from __future__ import annotations

import shutil

import pytest
from playwright.async_api import Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
         "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run"]


@pytest.fixture
async def browser():
    if shutil.which("chromium") is None:
        pytest.fail("Debian chromium is missing; the README's test command installs it")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        await browser.close()


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
