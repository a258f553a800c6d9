"""Fixtures of the end-to-end tests: a headless Chromium per module (``_chromium.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ._chromium import launch_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium for the module's tests, each of which opens its own contexts;
    skips them without Playwright or a browser."""
    with launch_chromium() as browser:
        yield browser
