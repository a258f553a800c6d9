"""The quickstart's browser snippet, as shown, in a real headless Chromium: the page of the
```html block of docs/quickstart.md, served by our broker, talks through ``strands.js`` to the
quickstart's first backend (docs/examples/first_backend.py) with a token in the query string.

Needs Debian's chromium (or $STRANDS_BROWSER), as tests/e2e/test_browser.py; skipped, saying
why, when there is none or when the broker does not serve ``/strands.js``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    pytest.skip("playwright is not installed: pip install -e '.[test]'", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
HTML = re.compile(r"```html\n(.*?)```", re.DOTALL)

#: The broker (its defaults: the query goes to backends) with the snippet's page at / and the first
#: backend connected, in one process; prints the WebSocket port once both are up.
SERVER = """\
import sys, trio
from functools import partial
from strands_trio.broker import BrokerConfig, serve_broker
sys.path.insert(0, sys.argv[2])
from first_backend import ChatBackend, auth
page = open(sys.argv[1], "rb").read()

async def main():
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, tcp_port=0)
    routes = {"/": lambda query: (200, "text/html; charset=utf-8", page)}
    async with trio.open_nursery() as nursery:
        broker = await nursery.start(partial(serve_broker, config, extra_routes=routes))
        backend = ChatBackend("127.0.0.1", broker.tcp_port, middleware=[auth])
        await nursery.start(backend.run)
        print(broker.ws_port, flush=True)

trio.run(main)
"""


def chromium() -> str:
    override = os.environ.get("STRANDS_BROWSER")
    found = shutil.which(override or "/usr/bin/chromium")
    if found is None:
        if override:
            pytest.fail(f"STRANDS_BROWSER={override} is not an executable")
        pytest.skip("no browser: install Debian's chromium, or set STRANDS_BROWSER")
    return found


@pytest.fixture
def page_url(tmp_path: Path) -> Iterator[str]:
    """The snippet's page (the quickstart's only ```html block), served with its backend."""
    (snippet,) = HTML.findall((ROOT / "docs" / "quickstart.md").read_text())
    page = tmp_path / "index.html"
    page.write_text(f"<!doctype html>\n<meta charset='utf-8'>\n<title>chat</title>\n{snippet}")
    command = [sys.executable, "-c", SERVER, str(page), str(ROOT / "docs" / "examples")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()  # bounded by the test's timeout
            assert line, "the server exited before it was ready"
            url = f"http://127.0.0.1:{int(line)}/"
            try:
                urllib.request.urlopen(url + "strands.js", timeout=5).close()
            except urllib.error.HTTPError as exc:
                exc.close()
                pytest.skip(f"this broker does not serve /strands.js yet ({exc.code})")
            yield url
        finally:
            server.kill()
            server.wait()


def test_quickstart_snippet_chats(page_url: str) -> None:
    """The snippet connects with its token, sends what is typed, and shows the backend's
    echo with the name Auth verified."""
    executable = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"], timeout=20_000
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.goto(page_url)
            page.locator("input[name=text]").fill("hello")
            page.locator("button").click()
            expect(page.locator("#log li")).to_have_text(["ann: hello"])
            expect(page.locator("input[name=text]")).to_have_value("")
        finally:
            browser.close()
