"""Debian's Chromium, headless, driven through Playwright (never a downloaded browser)."""

from __future__ import annotations

import shutil

import pytest
from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
         "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run"]


@pytest.fixture
def browser_args() -> list[str]:
    """Flags a test module adds to FLAGS (override the fixture)."""
    return []


@pytest.fixture
async def browser(browser_args):
    if shutil.which("chromium") is None:
        pytest.fail("Debian chromium is missing; the README's test command installs it")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=[*FLAGS, *browser_args])
        yield browser
        await browser.close()
