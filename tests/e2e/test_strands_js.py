"""``strands.js``, the browser client, in a real headless Chromium: served by our broker,
driven against it and a small StrandsApp backend (``_stack.py``), and its pure logic and
refusal handling unit-tested in the page (a fake ``WebSocket`` stands in for the close codes
the broker does not send yet).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import strands_trio
from strands_trio.broker import BrokerAddress

from ._chromium import WAIT_MS
from ._stack import Backend, running_stack

try:
    from playwright.sync_api import Browser, Page
except ImportError:  # pragma: no cover - the test extra installs it
    pytest.skip("playwright is not installed: pip install -e '.[test]'", allow_module_level=True)

#: Page-side helpers: wait for a condition (polled), and a fake WebSocket the test drives.
HELPERS = """
window.until = async (predicate, ms = 5000) => {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("timed out waiting for " + predicate);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};
window.installFakeWebSocket = () => {
  const sockets = [];
  class FakeWebSocket {
    static OPEN = 1;
    static CLOSED = 3;
    constructor(url, protocols) {
      Object.assign(this, { url, protocols: protocols ?? null, readyState: 0, sent: [] });
      sockets.push(this);
    }
    send(text) { this.sent.push(text); }
    close(code, reason) { this.drop(code ?? 1005, reason ?? ""); }
    open() { this.readyState = 1; this.onopen(); }
    drop(code, reason = "") { this.readyState = 3; this.onclose({ code, reason, wasClean: true }); }
  }
  window.WebSocket = FakeWebSocket;
  return sockets;
};
"""


@pytest.fixture(scope="module")
def backend() -> Backend:
    """The backend's records, shared by the module's stack."""
    return Backend()


@pytest.fixture(scope="module")
def stack(backend: Backend) -> Iterator[BrokerAddress]:
    """One broker and backend for the tests that do not restart them."""
    with running_stack(backend) as address:
        yield address


def open_test_page(browser: Browser, port: int) -> Page:
    """The test page of the broker on *port*, once it has imported ``/strands.js``."""
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_function("() => window.strands !== undefined")
    page.evaluate(f"() => {{ {HELPERS} }}")
    return page


def wait_event(page: Page, predicate: str) -> Any:
    """The first recorded event ``[name, ...args]`` for which the JS *predicate* holds,
    waiting for it."""
    return page.wait_for_function(f"() => window.events.find({predicate})").json_value()


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(60)
def test_broker_serves_the_module(browser: Browser, stack: BrokerAddress) -> None:
    """GET /strands.js (with or without ?v=) answers the file as JavaScript, never cached
    without revalidation, with the version of its first line, which is the package's."""
    page = open_test_page(browser, stack.ws_port)
    try:
        for target in ("/strands.js", f"/strands.js?v={strands_trio.__version__}"):
            response = page.request.get(f"http://127.0.0.1:{stack.ws_port}{target}")
            assert response.status == 200
            headers = response.headers
            assert headers["content-type"] == "text/javascript; charset=utf-8"
            assert headers["cache-control"] == "no-cache"
            assert headers["etag"].startswith('"')
            assert headers["x-strands-version"] == strands_trio.__version__
            assert response.text().startswith(f"// strands.js {strands_trio.__version__}\n")
        assert page.evaluate("() => strands.VERSION") == strands_trio.__version__
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_typed_messages_both_ways(browser: Browser, stack: BrokerAddress) -> None:
    """A client opens, sends a typed message, and gets the typed reply as its own event and
    as a parsed "message"; a reply that is not JSON comes as the raw string."""
    page = open_test_page(browser, stack.ws_port)
    try:
        page.evaluate("""() => {
            window.c = new strands.StrandsClient("/ws/typed");
            track(c, ["open", "message", "echoed", "error"]);
        }""")
        wait_event(page, "e => e[0] === 'open'")
        assert page.evaluate("() => c.state") == "open"
        assert page.evaluate("() => c.send('echo', {text: 'hi'})") is True
        assert wait_event(page, "e => e[0] === 'echoed'") == [
            "echoed",
            {"type": "echoed", "text": "hi"},
        ]
        message = wait_event(page, "e => e[0] === 'message'")
        assert message[1] == {"type": "echoed", "text": "hi"}
        assert json.loads(message[2]) == {"type": "echoed", "text": "hi"}
        page.evaluate("() => c.send('echo', {text: 'raw:plain words'})")
        raw = wait_event(page, "e => e[0] === 'message' && typeof e[1] === 'string'")
        assert raw == ["message", "plain words", "plain words"]
        assert page.evaluate("() => events.filter(e => e[0] === 'error')") == []
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_error_frames_become_error_events(browser: Browser, stack: BrokerAddress) -> None:
    """The middleware's error frames (an invalid typed message, the rate limit) reach the
    "error" listeners as {code, reason, source: "server"}."""
    page = open_test_page(browser, stack.ws_port)
    try:
        page.evaluate("""() => {
            window.c = new strands.StrandsClient("/ws/errors");
            track(c, ["open", "error"]);
        }""")
        wait_event(page, "e => e[0] === 'open'")
        page.evaluate("() => c.send('chat.say', {text: 'far too long a line'})")
        invalid = wait_event(page, "e => e[0] === 'error'")[1]
        assert invalid["code"] == "invalid_message"
        assert invalid["source"] == "server"
        assert invalid["reason"].startswith("invalid 'chat.say' message")
        page.evaluate("() => { for (let i = 0; i < 30; i++) c.send('echo', {text: `f${i}`}); }")
        limited = wait_event(page, "e => e[0] === 'error' && e[1].code === 'rate_limited'")[1]
        assert limited["source"] == "server"
        assert limited["reason"].startswith("too many messages")
    finally:
        page.context.close()


@pytest.mark.timeout(90)
def test_broker_restart_queue_tokens_and_reconnection(browser: Browser) -> None:
    """Across a broker restart on the same ports: the close says "going away", sends while
    down are queued (send returns false) and arrive in order after the reconnection, which
    comes with backoff within about 2 s; the token provider is called before every
    connection and its token reaches the backend."""
    backend = Backend()
    with running_stack(backend) as first:
        page = open_test_page(browser, first.ws_port)
        page.evaluate("""() => {
            window.tokenCalls = 0;
            window.c = new strands.StrandsClient("/ws/restart", {
                token: async () => `t${++window.tokenCalls}`,
            });
            track(c, ["open", "close", "reconnecting", "echoed", "error"]);
        }""")
        wait_event(page, "e => e[0] === 'open'")
    try:
        close = wait_event(page, "e => e[0] === 'close'")[1]
        assert close["code"] == 1001
        assert close["explanation"].startswith("going away: the broker is shutting down")
        assert close["willReconnect"] is True
        sent = page.evaluate("() => ['q1', 'q2', 'q3'].map(t => c.send('echo', {text: t}))")
        assert sent == [False, False, False]
        assert page.evaluate("() => c.queued") == 3
        assert page.evaluate("() => c.state") == "reconnecting"
        # Let it fail a few attempts against the dead port, so the backoff shows.
        page.evaluate("() => until(() => events.filter(e => e[0] === 'reconnecting').length >= 3)")
        with running_stack(backend, first.ws_port, first.tcp_port):
            restarted = time.monotonic()
            page.wait_for_function("() => events.filter(e => e[0] === 'open').length === 2")
            took = time.monotonic() - restarted
            echoed = page.evaluate("""() => until(() => events.filter(e => e[0] === 'echoed')
                .length === 3).then(() => events.filter(e => e[0] === 'echoed')
                .map(e => e[1].text))""")
            assert echoed == ["q1", "q2", "q3"]
            calls = page.evaluate("() => tokenCalls")
            attempts = page.evaluate(
                "() => events.filter(e => e[0] === 'reconnecting').map(e => e[1])"
            )
        assert backend.echoes == ["q1", "q2", "q3"]
        assert backend.tokens == ["t1", f"t{calls}"]
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        assert calls == len(attempts) + 1  # once per connection attempt
        assert all(0 < a["delay"] <= 2000 for a in attempts)
        assert page.evaluate("() => events.filter(e => e[0] === 'error')") == []
        print(f"reconnected {took:.2f} s after the broker restarted; attempts: {attempts}")
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_refused_by_the_backend(browser: Browser, stack: BrokerAddress) -> None:
    """A backend refusing the connection (accepted: false) is explained in words: the broker
    on this branch answers HTTP 403 before the upgrade, which the browser sees as 1006 ("could
    not connect ..."); a broker that upgrades and closes with 4403 gives "refused by the
    backend" and a "refused" event."""
    page = open_test_page(browser, stack.ws_port)
    try:
        page.evaluate("""() => {
            window.c = new strands.StrandsClient("/ws/refused", {token: "bad", reconnect: false});
            track(c, ["open", "close", "refused"]);
        }""")
        close = wait_event(page, "e => e[0] === 'close'")[1]
        assert close["willReconnect"] is False
        assert close["wasOpen"] is False
        if close["code"] == 1006:
            assert close["explanation"].startswith("could not connect or the connection was cut")
        else:
            assert close["code"] == 4403
            assert close["explanation"].startswith("refused by the backend")
            wait_event(page, "e => e[0] === 'refused' && e[1].code === 4403")
        assert page.evaluate("() => c.state") == "closed"
        assert page.evaluate("() => events.some(e => e[0] === 'open')") is False
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_queue_bound_and_close_against_a_dead_port(browser: Browser, stack: BrokerAddress) -> None:
    """With nothing listening, sends queue up to maxQueue; the next one is an "error" event
    (queue_full) and is not queued; close() drops the queue with one error saying how many,
    and a send after close() is refused with an error."""
    page = open_test_page(browser, stack.ws_port)
    try:
        result = page.evaluate(f"""() => {{
            window.c = new strands.StrandsClient("ws://127.0.0.1:{free_port()}/ws/none",
                {{maxQueue: 2, reconnect: {{minDelay: 50, maxDelay: 100}}}});
            track(c, ["error", "close"]);
            const sent = [c.send("echo", {{text: "a"}}), c.sendRaw("b"), c.send("echo", {{text: "c"}})];
            const queued = c.queued;
            c.close();
            return {{sent, queued, afterClose: c.sendRaw("d"), state: c.state}};
        }}""")
        assert result == {
            "sent": [False, False, False],
            "queued": 2,
            "afterClose": False,
            "state": "closed",
        }
        errors = page.evaluate("() => events.filter(e => e[0] === 'error').map(e => e[1])")
        assert [(e["code"], e["source"]) for e in errors] == [
            ("queue_full", "client"),
            ("queue_dropped", "client"),
            ("closed", "client"),
        ]
        assert errors[1]["count"] == 2
        close = wait_event(page, "e => e[0] === 'close'")[1]
        assert close["willReconnect"] is False
    finally:
        page.context.close()
