"""The browser fixture: skipped with one line where no browser is found, failed under CI."""

from __future__ import annotations

import os

import pytest

from tests.browser.chromium import find_chromium, launch


@pytest.fixture(scope="session")
def browser():
    executable, reason = find_chromium()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests need a browser under CI: {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p, executable)
        yield b
        b.close()
