"""Debian's Chromium driven by Playwright, for the browser tests: no browser download
(Playwright is pointed at the `chromium` that `make` installs). Headless; without the
sandbox when running as root, where Chromium refuses to start with it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright


def chromium_path() -> str:
    path = shutil.which("chromium")
    assert path, "Debian's chromium is not installed (make installs it)"
    return path


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    args = ["--autoplay-policy=no-user-gesture-required"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                         args=args)
    yield browser
    browser.close()
