"""The demo's chat page (on strands.js) in a real headless Chromium, driven by Playwright: two
people sign in, talk and see who is in the room; a blank name and a forged token are refused
in words where the user looks; a flood meets the rate limit; a message typed while the broker
is down is delivered once it is back, to who reconnects later too; the page fits a phone and wraps long words. All against
``strands-trio demo`` in subprocesses (broker and backend apart for the restart).

The browser comes from the ``browser`` fixture (``conftest.py``, ``_chromium.py``): Debian's
Chromium, or ``STRANDS_BROWSER``; without one, these tests are skipped.
``STRANDS_SCREENSHOT=docs/images/demo-chat.png`` also saves the chat as the docs' screenshot,
and the phone-width one next to it (``demo-chat-phone.png``).
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
    from playwright.sync_api import Browser, Page, expect
except ImportError:  # pragma: no cover - the test extra installs it
    pytest.skip("playwright is not installed: pip install -e '.[test]'", allow_module_level=True)

#: How long (s) the demo may take to print its URL.
DEMO_START_SECONDS = 15


def read_banner(process: subprocess.Popen[bytes], stderr_log: Path, pattern: str) -> re.Match[str]:
    """The first line the demo prints on stdout, matched against *pattern*, read within
    DEMO_START_SECONDS; fails with the demo's stderr if it never comes."""
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
    match = re.search(pattern, banner)
    assert match, f"unexpected banner from the demo: {banner!r}"
    return match


#: The banner of a demo serving the page (the backends' port only with --broker-only).
PAGE_BANNER = r"open (http://\S+/) in two browser tabs(?: \(backends on port (\d+)\))?"

#: The secret that a --broker-only and a --backend-only demo share.
SECRET = "the-browser-tests-secret-shared-by-broker-and-backend"


@contextlib.contextmanager
def demo_process(
    stderr_log: Path, *options: str, banner: str = PAGE_BANNER
) -> Iterator[re.Match[str]]:
    """``strands-trio demo --host 127.0.0.1 <options>`` in a subprocess, yielding its banner
    matched against *banner*; killed (SIGKILL, like a crash) and reaped at the end."""
    command = [sys.executable, "-m", "strands_trio", "demo", "--host", "127.0.0.1", *options]
    environment = {**os.environ, "STRANDS_DEMO_SECRET": SECRET}
    with (
        stderr_log.open("wb") as stderr,
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=environment,
        ) as process,
    ):
        try:
            yield read_banner(process, stderr_log, banner)
        finally:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_demo(stderr_log: Path, ws_port: int = 0) -> Iterator[str]:
    """``strands-trio demo`` in one process (the page on *ws_port*, by default a free one),
    yielding the page's URL."""
    with demo_process(stderr_log, "--ws-port", str(ws_port), "--tcp-port", "0") as banner:
        yield banner.group(1)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One demo on free ports for the module's tests."""
    with running_demo(tmp_path_factory.mktemp("demo") / "stderr.log") as url:
        yield url


def open_page(browser: Browser, url: str, width: int = 1000, height: int = 650) -> Page:
    """The chat page in a fresh browser context (its own cookies and storage: another
    person), by default at the screenshot's size."""
    context = browser.new_context(viewport={"width": width, "height": height})
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
    order the broker delivered it, and (nothing being said before) only what happened in their
    room after they joined."""
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

        for reader in (ann, bob):
            expect(reader.locator("#members li")).to_have_text(["ann", "bob"], timeout=WAIT_MS)

        bob.context.close()
        expect(ann.locator("#log li").last).to_have_text("bob left", timeout=WAIT_MS)
        expect(ann.locator("#members li")).to_have_text(["ann"], timeout=WAIT_MS)
    finally:
        ann.context.close()
        bob.context.close()


@pytest.mark.timeout(30)
def test_blank_name_is_refused_in_words(browser: Browser, demo_url: str) -> None:
    """Signing in with a blank name shows why, visibly, next to the sign-in form, and opens
    no chat."""
    page = open_page(browser, demo_url)
    try:
        page.locator("#name").fill("   ")
        page.get_by_role("button", name="Sign in").click()
        error = page.locator("#signin-error")
        expect(error).to_be_visible(timeout=WAIT_MS)
        expect(error).to_have_text("Enter a name to sign in: 1 to 32 characters.")
        expect(page.locator("#chat")).to_be_hidden()
    finally:
        page.context.close()


@pytest.mark.timeout(30)
def test_forged_token_is_refused(browser: Browser, demo_url: str) -> None:
    """A forged token is refused, the page says so in its status and its log, and stops
    trying."""
    page = open_page(browser, demo_url)
    try:
        page.locator("#name").fill("mallory")
        page.get_by_role("button", name="Try a bad token").click()
        expect(page.get_by_role("status")).to_contain_text("refused: ", timeout=WAIT_MS)
        expect(page.locator("#log li.error")).to_contain_text(["refused"], timeout=WAIT_MS)
        assert page.evaluate("() => document.getElementById('status').textContent").startswith(
            "refused: "
        )
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
        expect(page.locator("#say-error")).to_contain_text("error (rate_limited)")
        expect(page.locator("#say-error")).to_be_visible()
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_page_reconnects_when_the_demo_restarts(browser: Browser, tmp_path: Path) -> None:
    """When the demo dies and comes back on the same port, the page reconnects by itself with
    a fresh token (the new process signs with a new secret) and the chat goes on; the new
    backend's history is not the old one's: the page says it could not recover the room, and
    reloads its lines (none yet), dropping the old backend's."""
    with running_demo(tmp_path / "first.log") as url:
        page = open_page(browser, url)
        sign_in(page, "ann", "lobby")
        say(page, "said to the first demo")
        expect(page.locator("#log")).to_contain_text("ann: said to the first demo")
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
            expect(page.locator("#log li.notice", has_text="could not recover")).to_have_text(
                [
                    "could not recover what was said in lobby (epoch_changed): reloading its recent lines"
                ]
            )
            expect(page.locator("#log li", has_text="said to the first demo")).to_have_count(0)
    finally:
        page.context.close()


def split_demo(
    stack: contextlib.ExitStack, tmp_path: Path
) -> tuple[contextlib.ExitStack, str, str]:
    """The demo as two processes in *stack*: a broker (in a stack of its own, returned, whose
    ``close()`` kills it with SIGKILL) and a backend connected to it; the page's URL and the
    backends' port."""
    first = contextlib.ExitStack()
    stack.callback(first.close)
    banner = first.enter_context(
        demo_process(tmp_path / "broker-1.log", "--broker-only", "--ws-port", "0")
    )
    url, tcp_port = banner.group(1), banner.group(2)
    backend_options = ("--backend-only", "--tcp-port", tcp_port)
    stack.enter_context(
        demo_process(tmp_path / "backend.log", *backend_options, banner=r"backend connected to")
    )
    return first, url, tcp_port


def restart_broker(stack: contextlib.ExitStack, tmp_path: Path, url: str, tcp_port: str) -> None:
    """A new demo broker in *stack*, on the ports of the one at *url* that was killed."""
    port = str(urlsplit(url).port)
    options = ("--broker-only", "--ws-port", port, "--tcp-port", tcp_port)
    stack.enter_context(demo_process(tmp_path / "broker-2.log", *options))


@pytest.mark.timeout(90)
def test_nothing_lost_across_a_broker_restart(browser: Browser, tmp_path: Path) -> None:
    """With the broker killed (SIGKILL) under a running backend: a line typed meanwhile is kept,
    shown as pending, and delivered to the room once a new broker is up on the same ports; the
    other person, back only after it went out to the room, sees it too (strands.js recovers
    it from the backend's History), and each page shows each line exactly once, in order; both pages reconnect by
    themselves, show no error line (no token blamed) on the way, and talk again."""
    with contextlib.ExitStack() as stack:
        first, url, tcp_port = split_demo(stack, tmp_path)
        ann, bob = open_page(browser, url), open_page(browser, url)
        stack.callback(ann.context.close)
        stack.callback(bob.context.close)
        sign_in(ann, "ann", "lobby")
        sign_in(bob, "bob", "lobby")
        say(ann, "before the restart")
        expect(bob.locator("#log")).to_contain_text("ann: before the restart")

        first.close()  # SIGKILL: the broker dies without a word to anyone
        for page in (ann, bob):
            expect(page.get_by_role("status")).to_contain_text("reconnecting in", timeout=WAIT_MS)
        # Bob's network goes too: he is back only after ann's line went out to the room,
        # which reaches only who is connected then.
        bob.context.set_offline(True)
        say(ann, "typed while the broker is down")
        pending = ann.locator("#log li.pending")
        expect(pending).to_have_text(["ann: typed while the broker is down"], timeout=WAIT_MS)
        expect(ann.get_by_placeholder("Say something")).to_have_value("")

        restart_broker(stack, tmp_path, url, tcp_port)
        expect(ann.get_by_role("status")).to_have_text("connected as ann in lobby")
        # Delivered once, by the room: ann's line comes back from the backend (not the pending
        # line), while bob is still away.
        delivered = ann.locator("#log li:not(.pending)", has_text="typed while the broker")
        expect(delivered).to_have_text(["ann: typed while the broker is down"], timeout=WAIT_MS)
        expect(bob.get_by_role("status")).to_contain_text("reconnecting in")

        bob.context.set_offline(False)
        expect(bob.get_by_role("status")).to_have_text("connected as bob in lobby")
        said = ["ann: before the restart", "ann: typed while the broker is down"]
        for page in (ann, bob):
            chat_lines = page.locator("#log li:not(.pending)", has_text=re.compile(r"^ann: "))
            expect(chat_lines).to_have_text(said, timeout=WAIT_MS)
            expect(page.locator("#log li.pending")).to_have_count(0, timeout=WAIT_MS)
            expect(page.locator("#log li.error")).to_have_count(0, timeout=WAIT_MS)
            assert "token" not in page.locator("#log").inner_text()
            assert "could not recover" not in page.locator("#log").inner_text()
        say(bob, "and back")
        expect(ann.locator("#log")).to_contain_text("bob: and back", timeout=WAIT_MS)
        expect(bob.locator("#log li").last).to_have_text("bob: and back")


@pytest.mark.timeout(90)
def test_a_joined_rooms_line_survives_a_broker_restart(browser: Browser, tmp_path: Path) -> None:
    """A line typed for a joined room while the broker is down waits on the page (a new
    connection is in its first room only) until the page has joined that room again, then
    reaches the room once: bob, who is in it, sees it; ann's page shows it once."""
    with contextlib.ExitStack() as stack:
        first, url, tcp_port = split_demo(stack, tmp_path)
        ann, bob = open_page(browser, url), open_page(browser, url)
        stack.callback(ann.context.close)
        stack.callback(bob.context.close)
        sign_in(ann, "ann", "main")
        sign_in(bob, "bob", "side")
        ann.get_by_placeholder("Another room").fill("side")
        ann.get_by_role("button", name="Join").click()
        expect(bob.locator("#members li")).to_have_text(["bob", "ann"])

        first.close()  # SIGKILL
        expect(ann.get_by_role("status")).to_contain_text("reconnecting in", timeout=WAIT_MS)
        expect(ann.locator("#target")).to_have_value("side")
        say(ann, "for side while down")
        expect(ann.locator("#log li.pending")).to_have_text(["ann: for side while down"])

        restart_broker(stack, tmp_path, url, tcp_port)
        line = "ann: for side while down"
        for page in (ann, bob):
            expect(page.locator("#log li:not(.pending)", has_text=line)).to_have_count(
                1, timeout=WAIT_MS
            )
            expect(page.locator("#log li:not(.pending)", has_text=line)).to_have_attribute(
                "data-room", "side"
            )
        expect(ann.locator("#log li.pending")).to_have_count(0)
        expect(ann.locator("#say-error")).to_have_text("")


#: Says *count* lines ("line 1", ...) in a room, five per WebSocket (the rate limit's burst),
#: one socket after the other, each waiting for the room's copy of its last line.
SEED_LINES = """async ([room, count]) => {
  const {token} = await (await fetch("/token?name=seed")).json();
  for (let first = 1; first <= count; first += 5) {
    const ws = new WebSocket(`/ws/${room}?token=${token}`);
    await new Promise((resolve) => { ws.onopen = resolve; });
    const last = Math.min(first + 4, count);
    const echoed = new Promise((resolve) => {
      ws.onmessage = (event) => { if (JSON.parse(event.data).text === `line ${last}`) resolve(); };
    });
    for (let n = first; n <= last; n++) ws.send(JSON.stringify({type: "chat.say", text: `line ${n}`}));
    await echoed;
    ws.close();
  }
}"""


@pytest.mark.timeout(60)
def test_load_older_messages(browser: Browser, demo_url: str) -> None:
    """With 25 lines said before, signing in shows the last 20 (one chat.older call); "Load
    older messages" puts the 5 before them above, in order, without duplicates; once more, the
    page says there is nothing older."""
    page = open_page(browser, demo_url)
    try:
        page.evaluate(SEED_LINES, ["older", 25])
        sign_in(page, "ann", "older")
        lines = page.locator("#log li", has_text=re.compile(r"^seed: "))
        expect(lines).to_have_text([f"seed: line {n}" for n in range(6, 26)], timeout=WAIT_MS)
        page.get_by_role("button", name="Load older messages").click()
        expect(lines).to_have_text([f"seed: line {n}" for n in range(1, 26)], timeout=WAIT_MS)
        page.get_by_role("button", name="Load older messages").click()
        expect(page.locator("#older-note")).to_have_text("no older lines in older")
        expect(lines).to_have_count(25)
        say(page, "and a new one")
        expect(page.locator("#log li").last).to_have_text("ann: and a new one")
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_second_room(browser: Browser, demo_url: str) -> None:
    """Ann, signed in to "main", joins "side" where bob is: a bad room name is refused next to
    the Join button; the "Here:" list follows the room selected; a line said in "side" reaches
    both once, one said in "main" only ann; after ann leaves "side", its lines stop reaching
    her."""
    ann, bob = open_page(browser, demo_url), open_page(browser, demo_url)
    try:
        sign_in(ann, "ann", "main")
        sign_in(bob, "bob", "side")
        ann.get_by_placeholder("Another room").fill("no spaces!")
        ann.get_by_role("button", name="Join").click()
        expect(ann.locator("#room-error")).to_contain_text("cannot join no spaces! (bad_room)")

        ann.get_by_placeholder("Another room").fill("side")
        ann.get_by_role("button", name="Join").click()
        expect(ann.locator("#target")).to_have_value("side")
        expect(ann.locator("#room-error")).to_have_text("")
        expect(ann.locator("#members li")).to_have_text(["bob", "ann"])
        expect(bob.locator("#members li")).to_have_text(["bob", "ann"])
        expect(bob.locator("#log li").last).to_have_text("ann joined")

        say(ann, "hi side")
        say(bob, "hello ann")
        for page in (ann, bob):
            for line in ("ann: hi side", "bob: hello ann"):
                expect(page.locator("#log li", has_text=line)).to_have_count(1, timeout=WAIT_MS)
                expect(page.locator("#log li", has_text=line)).to_have_attribute(
                    "data-room", "side"
                )

        if screenshot := os.environ.get("STRANDS_SCREENSHOT"):
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            ann.screenshot(path=screenshot)

        ann.locator("#target").select_option("main")
        expect(ann.locator("#members li")).to_have_text(["ann"])
        say(ann, "only in main")
        expect(ann.locator("#log li").last).to_have_text("ann: only in main")

        ann.locator("#target").select_option("side")
        ann.get_by_role("button", name="Leave").click()
        expect(ann.locator("#log li").last).to_have_text("you left side")
        expect(ann.locator("#target option")).to_have_text(["main"])
        expect(bob.locator("#log li").last).to_have_text("ann left")
        expect(bob.locator("#members li")).to_have_text(["bob"])
        say(bob, "after ann left")
        expect(bob.locator("#log li").last).to_have_text("bob: after ann left")
        # Ann's own line comes back after anything the room sent her before it.
        say(ann, "still in main")
        expect(ann.locator("#log li").last).to_have_text("ann: still in main")
        expect(ann.locator("#log li", has_text="after ann left")).to_have_count(0)
        expect(bob.locator("#log li", has_text="only in main")).to_have_count(0)
    finally:
        ann.context.close()
        bob.context.close()


@pytest.mark.timeout(30)
def test_phone_width(browser: Browser, demo_url: str, tmp_path: Path) -> None:
    """At 375 px wide the page has no horizontal scroll, a long word included, and the input
    is on screen."""
    page = open_page(browser, demo_url, width=375, height=740)
    try:
        sign_in(page, "ann", "phone")
        say(page, "a long word: " + "supercalifragilistic" * 8)
        expect(page.locator("#log")).to_contain_text("supercalifragilisticsuper")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, f"the page scrolls sideways: {width} px wide"
        log = page.evaluate(
            "() => { const log = document.getElementById('log');"
            " return [log.scrollWidth, log.clientWidth]; }"
        )
        assert log[0] <= log[1], f"the log scrolls sideways: {log}"
        expect(page.get_by_placeholder("Say something")).to_be_in_viewport()
        expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
        if screenshot := os.environ.get("STRANDS_SCREENSHOT"):
            path = Path(screenshot)
            page.screenshot(path=path.with_name(f"{path.stem}-phone{path.suffix}"))
    finally:
        page.context.close()


@pytest.mark.timeout(30)
def test_long_word_wraps(browser: Browser, demo_url: str) -> None:
    """A word longer than the log is wide wraps inside it: the log does not scroll sideways."""
    page = open_page(browser, demo_url)
    try:
        sign_in(page, "ann", "words")
        say(page, "x" * 400)
        expect(page.locator("#log")).to_contain_text("ann: " + "x" * 400)
        sizes = page.evaluate(
            "() => { const log = document.getElementById('log');"
            " return [log.scrollWidth, log.clientWidth, log.lastElementChild.offsetHeight]; }"
        )
        scroll_width, client_width, line_height = sizes
        assert scroll_width <= client_width, sizes
        assert line_height > 40, f"the long line is not wrapped over several lines: {sizes}"

    finally:
        page.context.close()


@pytest.mark.timeout(30)
def test_favicon(browser: Browser, demo_url: str) -> None:
    """The page names an SVG favicon that the broker serves."""
    page = open_page(browser, demo_url)
    try:
        href = page.locator("link[rel=icon]").get_attribute("href")
        assert href == "/favicon.svg"
        reply = page.request.get(demo_url.rstrip("/") + href)
        assert (reply.status, reply.headers["content-type"]) == (200, "image/svg+xml")
        assert reply.text().startswith("<svg")
    finally:
        page.context.close()
