"""Headless Chromium for the browser tests, driven by Playwright's sync API.

The browser is Debian's ``chromium`` (``apt-get install chromium``), never a Playwright
download; ``STRANDS_BROWSER`` names another Chromium executable. Without one, or without
Playwright, the tests that use the ``browser`` fixture (``conftest.py``) are skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

#: Debian's Chromium, unless STRANDS_BROWSER names another executable.
DEFAULT_BROWSER = "/usr/bin/chromium"

#: As root, in a sandbox, on a closed network: no setuid sandbox, no GPU, no calls home.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: How long (ms) a page may take to show what a step expects: everything is on loopback.
WAIT_MS = 10_000


def chromium_executable() -> str:
    """The Chromium to drive: $STRANDS_BROWSER, or Debian's; skips the test when neither is
    there, fails when $STRANDS_BROWSER names something that is not an executable."""
    override = os.environ.get("STRANDS_BROWSER")
    if override:
        found = shutil.which(override)
        if found is None:
            pytest.fail(f"STRANDS_BROWSER={override} is not an executable")
        return found
    found = shutil.which(DEFAULT_BROWSER)
    if found is None:
        pytest.skip(
            f"no browser: {DEFAULT_BROWSER} is missing; install it with "
            "`apt-get install chromium` (Debian), or set STRANDS_BROWSER to a Chromium"
        )
    return found


@contextlib.contextmanager
def launch_chromium() -> Iterator[Browser]:
    """A headless Chromium, closed at the end; skips without Playwright or a browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    executable = chromium_executable()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_FLAGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()
