"""``strands.js``, the browser client, in a real headless Chromium: served by our broker,
driven against it and a small StrandsApp backend (``_stack.py``), and its pure logic and
refusal handling unit-tested in the page (a fake ``WebSocket`` gives the codes our broker
does not send, such as 4401 with a provider that keeps its token, or a ``replaced`` 1008).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
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


@contextlib.contextmanager
def serving_page(html: str) -> Iterator[str]:
    """An HTTP server on another loopback port answering *html* to every GET, in a thread;
    its origin."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(5)


@pytest.mark.timeout(60)
def test_a_page_of_another_origin_imports_the_module(
    browser: Browser, stack: BrokerAddress
) -> None:
    """A page served elsewhere (another port) imports the module from the broker: a
    cross-origin module script, which the browser runs only with the
    Access-Control-Allow-Origin the broker gives it."""
    html = f"""<!doctype html><script type="module">
        import {{ VERSION }} from "http://127.0.0.1:{stack.ws_port}/strands.js";
        window.loaded = VERSION;
    </script>"""
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    console: list[str] = []
    try:
        with serving_page(html) as origin:
            page = context.new_page()
            page.on("console", lambda message: console.append(message.text))
            page.goto(f"{origin}/")
            page.wait_for_function("() => window.loaded !== undefined")
        assert page.evaluate("() => window.loaded") == strands_trio.__version__
        assert console == []
    finally:
        context.close()


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
    """A backend refusing the connection (accepted: false) is explained in words: our broker
    upgrades and closes with 4403, which gives "refused by the backend" and a "refused"
    event; with the same token every time, the client stops."""
    page = open_test_page(browser, stack.ws_port)
    try:
        page.evaluate("""() => {
            window.c = new strands.StrandsClient("/ws/refused", {token: "bad"});
            track(c, ["open", "close", "refused"]);
        }""")
        close = wait_event(page, "e => e[0] === 'close'")[1]
        assert close["willReconnect"] is False
        assert close["code"] == 4403
        assert close["explanation"] == "refused by the backend: refused by the backend"
        assert wait_event(page, "e => e[0] === 'refused'")[1]["code"] == 4403
        assert page.evaluate("() => c.state") == "closed"
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_sends_on_a_refused_socket_are_sent_again(browser: Browser, backend: Backend) -> None:
    """Sends queued before the first connection are written when its socket opens; that
    socket is refused (4403: the token is bad), so none of them was read; the provider's next
    token is accepted, and every send arrives once, in order."""
    with running_stack(backend) as address:
        page = open_test_page(browser, address.ws_port)
        try:
            page.evaluate("""() => {
                const tokens = ["bad", "good"];
                window.c = new strands.StrandsClient("/ws/requeue", {
                    token: () => tokens.shift() ?? "good",
                    reconnect: {minDelay: 10, maxDelay: 50},
                });
                track(c, ["open", "close", "refused", "error", "echoed"]);
                for (const n of [1, 2, 3]) c.send("echo", {text: "again " + n});
            }""")
            wait_event(page, "e => e[0] === 'refused' && e[1].code === 4403")
            for n in (1, 2, 3):
                wait_event(page, f"e => e[0] === 'echoed' && e[1].text === 'again {n}'")
            assert page.evaluate("() => c.queued") == 0
            assert page.evaluate("() => events.filter(e => e[0] === 'error')") == []
        finally:
            page.context.close()
    assert [text for text in backend.echoes if text.startswith("again")] == [
        "again 1",
        "again 2",
        "again 3",
    ]
    assert backend.tokens[-2:] == ["bad", "good"]


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


# ---------------------------------------------------------------- unit tests in the page


@pytest.mark.timeout(60)
def test_pure_logic(browser: Browser, stack: BrokerAddress) -> None:
    """backoffDelay doubles from minDelay up to maxDelay, jittered down by at most `jitter`;
    buildUrl turns paths and http(s) into ws(s) and puts the token in the query; the
    subprotocol mode offers "strands" and "bearer.<token>"; bad options are TypeErrors."""
    page = open_test_page(browser, stack.ws_port)
    try:
        result = page.evaluate("""() => {
            const s = strands;
            const opts = {minDelay: 250, maxDelay: 2000, factor: 2, jitter: 0.5};
            const error = (fn) => { try { fn(); return null; } catch (e) { return e.name; } };
            return {
                top: [1, 2, 3, 4, 5, 9].map((n) => s.backoffDelay(n, opts, () => 0)),
                bottom: [1, 4].map((n) => s.backoffDelay(n, opts, () => 0.9999999)),
                flat: s.backoffDelay(3, {...opts, jitter: 0}, () => 0.7),
                urls: [
                    s.buildUrl("/ws/lobby", {}, "http://h:8080/app/page"),
                    s.buildUrl("ws/room", {token: "a b&c"}, "https://h/app/"),
                    s.buildUrl("ws://x:1/ws/a?k=1", {token: "t", tokenParam: "jwt"}),
                    s.buildUrl("/ws/a", {token: "t", tokenIn: "subprotocol"}, "http://h/"),
                    s.buildUrl("http://h/ws/a", {token: null}),
                ],
                protocols: [s.subprotocols("t.k", "subprotocol"), s.subprotocols(null, "subprotocol"),
                            s.subprotocols("t", "query")],
                errors: [
                    error(() => s.buildUrl("ftp://x/ws/a", {})),
                    error(() => new s.StrandsClient("/ws/a", {tokenIn: "header"})),
                    error(() => new s.StrandsClient("/ws/a", {maxQueue: -1})),
                    error(() => new s.StrandsClient("/ws/a", {reconnect: {factor: 0.5}})),
                    error(() => new s.StrandsClient("ftp://x/ws/a")),
                ],
                refusals: s.REFUSAL_CODES,
            };
        }""")
        assert result["top"] == [250, 500, 1000, 2000, 2000, 2000]
        assert result["bottom"] == [125, 1000]
        assert result["flat"] == 1000
        assert result["urls"] == [
            "ws://h:8080/ws/lobby",
            "wss://h/app/ws/room?token=a+b%26c",
            "ws://x:1/ws/a?k=1&jwt=t",
            "ws://h/ws/a",
            "ws://h/ws/a",
        ]
        assert result["protocols"] == [["strands", "bearer.t.k"], None, None]
        assert result["errors"] == ["TypeError"] * 5
        assert result["refusals"] == [4401, 4403, 4429, 4503, 4504]
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_explain_close(browser: Browser, stack: BrokerAddress) -> None:
    """explainClose has words for the standard codes, the refusal codes and the ranges, and
    appends the reason when there is one."""
    page = open_test_page(browser, stack.ws_port)
    try:
        words = page.evaluate("""() => Object.fromEntries(
            [1000, 1001, 1006, 1008, 1009, 1011, 4401, 4403, 4429, 4503, 4504, 4000, 3001, 1234]
                .map((code) => [code, strands.explainClose(code, "")]))""")
        assert words == {
            "1000": "closed normally",
            "1001": "going away: the broker is shutting down or restarting",
            "1006": "could not connect or the connection was cut (the broker may be down, "
            "unreachable, full, or refused the handshake)",
            "1008": "policy violation (for instance a client too slow to read its messages)",
            "1009": "message too big",
            "1011": "server error",
            "4401": "not authenticated: the token is missing, expired or invalid",
            "4403": "refused by the backend",
            "4429": "too many requests or connections: slow down",
            "4503": "no backend is connected to the broker",
            "4504": "the backend did not answer in time",
            "4000": "closed by the application (code 4000)",
            "3001": "closed by a library or framework (code 3001)",
            "1234": "closed with code 1234",
        }
        with_reason = page.evaluate("() => strands.explainClose(4403, 'banned')")
        assert with_reason == "refused by the backend: banned"
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_auth_refusals_and_stops(browser: Browser, stack: BrokerAddress) -> None:
    """With a fake WebSocket: an auth refusal (4403/4401) stops when the token provider gives
    the same token again, and reconnects at once with a new token when it gives one; other
    refusals (4503) reconnect; a normal close by the server (1000) and a replaced connection
    stop; the queue is flushed in order before "open", and subprotocol mode offers the token."""
    page = open_test_page(browser, stack.ws_port)
    try:
        result = page.evaluate("""async () => {
            const sockets = installFakeWebSocket();
            const out = {};
            const tokens = ["same", "same", "old", "new", "x", "y", "z", "w"];
            let calls = 0;
            const make = (name) => {
                const c = new strands.StrandsClient("/ws/fake", {
                    token: () => tokens[calls++], tokenIn: "subprotocol",
                    reconnect: {minDelay: 10, maxDelay: 10},
                });
                track(c, ["open", "close", "refused", "reconnecting"]);
                return c;
            };
            const last = () => sockets[sockets.length - 1];
            const names = () => events.map((e) => e[0]);

            // 1. the same token again after 4403: stop, "close" then "refused".
            let c = make();
            await until(() => sockets.length === 1);
            out.protocols = last().protocols;
            last().open();
            last().drop(4403, "banned");
            await until(() => c.state === "closed");
            out.sameToken = {calls, events: events.map((e) => [e[0], e[1]?.code ?? null,
                e[1]?.willReconnect ?? null])};
            out.refused = events.find((e) => e[0] === "refused")[1];

            // 2. a new token after 4401: reconnect with it, without asking again.
            events.length = 0;
            c = make();
            await until(() => sockets.length === 2);
            c.send("echo", {text: "queued 1"}); c.sendRaw("queued 2");
            c.on("open", () => { out.sentAtOpen ??= [...last().sent]; });
            last().open();
            out.afterOpen = last().sent;
            last().drop(4401, "expired");
            await until(() => sockets.length === 3);
            out.newToken = {calls, protocols: last().protocols, events: names()};

            // 3. 4503: reconnect (asking for a token), with a "refused" event.
            events.length = 0;
            last().drop(4503, "");
            await until(() => sockets.length === 4);
            out.noBackend = {calls, events: names()};

            // 4. 1000 from the server, and a replaced connection: stop.
            events.length = 0;
            last().open();
            last().drop(1000, "bye");
            out.normal = {state: c.state, events: names()};
            c = make();
            await until(() => sockets.length === 5);
            last().open();
            last().drop(1008, "replaced by a new connection with the same client id");
            out.replaced = {state: c.state};
            return out;
        }""")
        assert result["protocols"] == ["strands", "bearer.same"]
        assert result["sameToken"] == {
            "calls": 2,
            "events": [["open", None, None], ["close", 4403, False], ["refused", 4403, None]],
        }
        assert result["refused"] == {
            "code": 4403,
            "reason": "banned",
            "explanation": "refused by the backend: banned",
        }
        assert result["sentAtOpen"] == ['{"text":"queued 1","type":"echo"}', "queued 2"]
        assert result["afterOpen"] == result["sentAtOpen"]
        assert result["newToken"] == {
            "calls": 4,
            "protocols": ["strands", "bearer.new"],
            "events": ["open", "close", "refused", "reconnecting"],
        }
        assert result["noBackend"] == {"calls": 5, "events": ["close", "refused", "reconnecting"]}
        assert result["normal"] == {"state": "closed", "events": ["open", "close"]}
        assert result["replaced"] == {"state": "closed"}
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_a_throwing_listener_does_not_stop_the_others(
    browser: Browser, stack: BrokerAddress
) -> None:
    """A listener that throws is reported (reportError) and the next listeners still run;
    off() removes a listener; typed messages named like lifecycle events are not emitted as
    those events."""
    page = open_test_page(browser, stack.ws_port)
    try:
        result = page.evaluate("""async () => {
            const sockets = installFakeWebSocket();
            const seen = [];
            const c = new strands.StrandsClient("/ws/fake");
            await until(() => sockets.length === 1);
            const removed = () => seen.push("removed");
            c.on("said", () => { throw new Error("a bug"); });
            c.on("said", (m) => seen.push(m.text));
            c.on("said", removed).off("said", removed);
            c.on("open", (e) => seen.push(["open", e]));
            sockets[0].open();
            sockets[0].onmessage({data: '{"type": "said", "text": "still delivered"}'});
            sockets[0].onmessage({data: '{"type": "open", "text": "not an open"}'});
            return seen;
        }""")
        assert result == [["open", {}], "still delivered"]
    finally:
        page.context.close()
