"""The demo's chat page in a real headless Chromium, driven by Playwright: two people sign in
and talk in a room, a forged token is refused before the upgrade, and a flood meets the rate
limit, all against ``strands-trio demo`` running in a subprocess.

The browser comes from the ``browser`` fixture (``conftest.py``, ``_chromium.py``): Debian's
Chromium, or ``STRANDS_BROWSER``; without one, these tests are skipped.
``STRANDS_SCREENSHOT=docs/images/demo-chat.png`` also saves the chat as the docs' screenshot.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ._chromium import WAIT_MS

try:
    from playwright.sync_api import Browser, Page, WebSocket, expect
except ImportError:  # pragma: no cover - the test extra installs it
    pytest.skip("playwright is not installed: pip install -e '.[test]'", allow_module_level=True)

#: How long (s) the demo may take to print its URL.
DEMO_START_SECONDS = 15


def read_demo_url(process: subprocess.Popen[bytes], stderr_log: Path) -> str:
    """The page's URL from the demo's banner on stdout ("open http://... in two browser
    tabs"), read within DEMO_START_SECONDS; fails with the demo's stderr if it never comes."""
    assert process.stdout is not None
    deadline = time.monotonic() + DEMO_START_SECONDS
    seen = b""
    while b"\n" not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(remaining, 0))
        chunk = os.read(process.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            why = "exited" if ready else f"printed no URL within {DEMO_START_SECONDS} s"
            pytest.fail(f"the demo {why}; its stderr:\n{stderr_log.read_text()}")
        seen += chunk
    banner = seen.decode()
    match = re.search(r"open (http://\S+/) in two browser tabs", banner)
    assert match, f"unexpected banner from the demo: {banner!r}"
    return match.group(1)


@contextlib.contextmanager
def running_demo(stderr_log: Path, ws_port: int = 0) -> Iterator[str]:
    """``strands-trio demo`` in a subprocess (the page on *ws_port*, by default a free one),
    yielding the page's URL; killed, like a crash, and reaped at the end."""
    command = [sys.executable, "-m", "strands_trio", "demo"]
    command += ["--host", "127.0.0.1", "--ws-port", str(ws_port), "--tcp-port", "0"]
    with (
        stderr_log.open("wb") as stderr,
        subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
        ) as process,
    ):
        try:
            yield read_demo_url(process, stderr_log)
        finally:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One demo on free ports for the module's tests."""
    with running_demo(tmp_path_factory.mktemp("demo") / "stderr.log") as url:
        yield url


def open_page(browser: Browser, url: str) -> Page:
    """The chat page in a fresh browser context (its own cookies and storage: another
    person), at the screenshot's size."""
    context = browser.new_context(viewport={"width": 1000, "height": 650})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(url)
    return page


def sign_in(page: Page, name: str, room: str) -> None:
    """Sign in as *name* in *room* and wait until the page's WebSocket is open."""
    page.locator("#name").fill(name)
    page.locator("#room").fill(room)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status")).to_have_text(
        f"connected as {name} in {room}", timeout=WAIT_MS
    )


def say(page: Page, text: str) -> None:
    """Type a chat line and press Enter."""
    page.get_by_placeholder("Say something").fill(text)
    page.get_by_placeholder("Say something").press("Enter")


@pytest.mark.timeout(60)
def test_two_people_chat_in_a_room(browser: Browser, demo_url: str) -> None:
    """Two people signed in from two browser contexts see each other join and talk, in the
    order the broker delivered it, and only what happened in their room after they joined."""
    ann, bob = open_page(browser, demo_url), open_page(browser, demo_url)
    try:
        sign_in(ann, "ann", "trio")
        sign_in(bob, "bob", "trio")
        expect(ann.locator("#log")).to_contain_text("bob joined", timeout=WAIT_MS)

        lines = [
            (ann, "ann", "hi bob! the broker is up"),
            (bob, "bob", "hello ann: one nursery for everything?"),
            (ann, "ann", "yes: broker, backend and this page"),
            (bob, "bob", "nice. let me try the Flood button"),
        ]
        for page, name, text in lines:
            say(page, text)
            for reader in (ann, bob):
                expect(reader.locator("#log")).to_contain_text(f"{name}: {text}", timeout=WAIT_MS)

        said = [f"{name}: {text}" for _, name, text in lines]
        expect(ann.locator("#log li")).to_have_text(
            ["ann joined", "bob joined", *said], timeout=WAIT_MS
        )
        expect(bob.locator("#log li")).to_have_text(["bob joined", *said], timeout=WAIT_MS)

        if screenshot := os.environ.get("STRANDS_SCREENSHOT"):
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            ann.screenshot(path=screenshot)
    finally:
        ann.context.close()
        bob.context.close()


@pytest.mark.timeout(30)
def test_forged_token_is_refused(browser: Browser, demo_url: str) -> None:
    """A forged token is refused with a 403 before the WebSocket upgrade, and the page says
    the token is forged."""
    page = open_page(browser, demo_url)
    handshake_errors: list[str] = []

    def watch(socket: WebSocket) -> None:
        def record(error: str) -> None:
            handshake_errors.append(error)

        socket.on("socketerror", record)

    page.on("websocket", watch)
    try:
        page.locator("#name").fill("mallory")
        page.get_by_role("button", name="Try a bad token").click()
        expect(page.get_by_role("status")).to_have_text(
            "refused: the token is forged", timeout=WAIT_MS
        )
        expect(page.locator("#log")).to_contain_text(
            "refused at connect time: the token was not accepted", timeout=WAIT_MS
        )
        # Chromium's DevTools event for the failed handshake comes before the close event the
        # page reacts to, so it has arrived by now.
        assert any("403" in error for error in handshake_errors), handshake_errors
    finally:
        page.context.close()


@pytest.mark.timeout(30)
def test_flood_meets_the_rate_limit(browser: Browser, demo_url: str) -> None:
    """Ten messages at once from the Flood button: the burst of five passes, then the page
    shows the rate limit's error frame."""
    page = open_page(browser, demo_url)
    try:
        sign_in(page, "eve", "flood")
        page.get_by_role("button", name="Flood").click()
        expect(page.locator("#log li.error").first).to_contain_text(
            re.compile(r"^error \(rate_limited\): too many messages: retry in "), timeout=WAIT_MS
        )
        expect(page.locator("#log")).to_contain_text("eve: flood 5", timeout=WAIT_MS)
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_page_reconnects_when_the_demo_restarts(browser: Browser, tmp_path: Path) -> None:
    """When the demo dies and comes back on the same port, the page reconnects by itself with
    a fresh token (the new process signs with a new secret) and the chat goes on."""
    with running_demo(tmp_path / "first.log") as url:
        page = open_page(browser, url)
        sign_in(page, "ann", "lobby")
    try:
        expect(page.get_by_role("status")).to_contain_text("reconnecting in", timeout=WAIT_MS)
        port = urlsplit(url).port
        assert port is not None
        with running_demo(tmp_path / "second.log", ws_port=port):
            expect(page.get_by_role("status")).to_have_text(
                "connected as ann in lobby", timeout=WAIT_MS
            )
            say(page, "still here")
            expect(page.locator("#log")).to_contain_text("ann: still here", timeout=WAIT_MS)
    finally:
        page.context.close()
