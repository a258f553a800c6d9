"""``client.call()`` of ``strands.js`` in a real headless Chromium, against our broker and a
StrandsApp whose typed routes answer (``_stack.py``): the reply's data, every server error
code as a rejection (never also a global "error" event), the client's own timeout, a call
lost with its socket across a broker restart, and calls queued while disconnected."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from strands_trio.broker import BrokerAddress

from ._stack import Backend, running_stack
from .test_strands_js import open_test_page, wait_event

try:
    from playwright.sync_api import Browser
except ImportError:  # pragma: no cover - the test extra installs it
    pytest.skip("playwright is not installed: pip install -e '.[test]'", allow_module_level=True)

#: settle(promise): what a call came to, as JSON the test can compare.
SETTLE = """
window.settle = (promise) => promise.then(
  (data) => ({ok: data}),
  (e) => ({name: e.name, code: e.code, source: e.source, reason: e.reason,
           isError: e instanceof Error, isCallError: e instanceof strands.StrandsCallError}),
);
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[BrokerAddress]:
    """One broker and backend for the tests that do not restart them."""
    with running_stack(Backend(burst=20)) as address:
        yield address


@pytest.mark.timeout(60)
def test_call_resolves_with_the_handlers_return_value(
    browser: Browser, stack: BrokerAddress
) -> None:
    """call() resolves with the reply's data: a model's fields (no type tag), or null for a
    handler that returns nothing; the reply is no event, and a plain send still gets none."""
    page = open_test_page(browser, stack.ws_port)
    try:
        page.evaluate(f"""() => {{
            {SETTLE}
            window.c = new strands.StrandsClient("/ws/calls");
            track(c, ["open", "message", "reply", "error"]);
        }}""")
        wait_event(page, "e => e[0] === 'open'")
        results = page.evaluate("""() => Promise.all([
            settle(c.call("calc.add", {a: 2, b: 3})),
            settle(c.call("calc.none")),
            settle(c.call("calc.add", {a: 40, b: 2}, {timeout: 5000})),
        ])""")
        assert results == [{"ok": {"total": 5}}, {"ok": None}, {"ok": {"total": 42}}]
        assert page.evaluate("() => c.pendingCalls") == 0
        assert page.evaluate("() => events.filter(e => e[0] !== 'open')") == []
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_call_rejects_with_each_server_code(browser: Browser, stack: BrokerAddress) -> None:
    """Each server failure rejects the call with a StrandsCallError (an Error) carrying the
    code and reason, source "server": invalid payload, unknown type, guard, handler error
    (generic reason), the route's deadline, the rate limit; none is also an "error" event."""
    page = open_test_page(browser, stack.ws_port)
    try:
        page.evaluate(f"""() => {{
            {SETTLE}
            window.c = new strands.StrandsClient("/ws/call-errors");
            track(c, ["open", "error"]);
        }}""")
        wait_event(page, "e => e[0] === 'open'")
        results = page.evaluate("""() => Promise.all([
            settle(c.call("chat.say", {text: "far too long a line"})),
            settle(c.call("calc.nope")),
            settle(c.call("calc.secret")),
            settle(c.call("calc.fail")),
            settle(c.call("calc.slow", {seconds: 5})),
        ])""")
        assert [(r["code"], r["source"]) for r in results] == [
            ("invalid_message", "server"),
            ("unknown_type", "server"),
            ("forbidden", "server"),
            ("internal_error", "server"),
            ("timeout", "server"),
        ]
        assert all(r["name"] == "StrandsCallError" and r["isError"] for r in results)
        assert all(r["isCallError"] for r in results)
        assert results[0]["reason"].startswith("invalid 'chat.say' message")
        assert results[1]["reason"] == "unknown message type 'calc.nope'"
        assert "secret" not in results[3]["reason"]
        assert results[4]["reason"] == "no answer within 0.5 s"
        # The module's backend allows a burst of 20 messages per client: 5 are spent.
        codes = page.evaluate("""() => Promise.all(Array.from({length: 20},
            (_, i) => settle(c.call("calc.add", {a: i, b: 0})))).then(rs => rs.map(
            r => r.code ?? "ok"))""")
        assert codes.count("ok") == 15
        assert codes.count("rate_limited") == 5
        assert page.evaluate("() => events.filter(e => e[0] === 'error')") == []
    finally:
        page.context.close()


@pytest.mark.timeout(60)
def test_call_times_out_on_the_client(browser: Browser, stack: BrokerAddress) -> None:
    """A call with no answer within its timeout rejects with code "timeout", source
    "client"; the reply that comes later matches no call and is an ordinary "reply" event."""
    page = open_test_page(browser, stack.ws_port)
    try:
        page.evaluate(f"""() => {{
            {SETTLE}
            window.c = new strands.StrandsClient("/ws/call-timeout");
            track(c, ["open", "reply", "error"]);
        }}""")
        wait_event(page, "e => e[0] === 'open'")
        result = page.evaluate("() => settle(c.call('calc.slow', {seconds: 0.3}, {timeout: 50}))")
        assert result["code"] == "timeout"
        assert result["source"] == "client"
        assert result["reason"] == "no answer within 50 ms"
        late = wait_event(page, "e => e[0] === 'reply'")[1]
        assert late == {"type": "reply", "ref": 1, "data": "awake"}
        assert page.evaluate("() => c.pendingCalls") == 0
        bad = page.evaluate("() => settle(c.call('calc.add', {a: 1n}))")
        assert (bad["code"], bad["source"]) == ("not_json", "client")
    finally:
        page.context.close()


@pytest.mark.timeout(90)
def test_calls_across_a_broker_restart(browser: Browser) -> None:
    """A call out when the broker goes down rejects with "connection_lost"; calls made while
    it is down are queued (their timeout counts from the call): one that times out meanwhile
    leaves the queue and never runs, the other is sent once the client reconnects and
    resolves; close() rejects what is still pending with "closed"."""
    backend = Backend()
    with running_stack(backend) as first:
        page = open_test_page(browser, first.ws_port)
        page.evaluate(f"""() => {{
            {SETTLE}
            window.c = new strands.StrandsClient("/ws/call-restart",
                {{reconnect: {{minDelay: 50, maxDelay: 200}}}});
            track(c, ["open", "close", "error"]);
            window.lost = settle(c.call("calc.hang"));
        }}""")
        wait_event(page, "e => e[0] === 'open'")
        page.wait_for_function("() => c.pendingCalls === 1")
    try:
        lost = page.evaluate("() => lost")
        assert (lost["code"], lost["source"]) == ("connection_lost", "client")
        assert "going away" in lost["reason"]
        page.evaluate("""() => {
            window.gone = settle(c.call("calc.add", {a: 100, b: 0}, {timeout: 100}));
            window.later = settle(c.call("calc.add", {a: 7, b: 0}, {timeout: 20000}));
        }""")
        assert page.evaluate("() => c.queued") == 2
        gone = page.evaluate("() => gone")
        assert (gone["code"], gone["source"]) == ("timeout", "client")
        assert page.evaluate("() => c.queued") == 1
        with running_stack(backend, first.ws_port, first.tcp_port):
            assert page.evaluate("() => later") == {"ok": {"total": 7}}
            closed = page.evaluate("""() => {
                const last = settle(c.call("calc.hang"));
                c.close();
                return last;
            }""")
            assert (closed["code"], closed["source"]) == ("closed", "client")
        assert backend.calls == [7]  # the call that timed out while queued never ran
        assert page.evaluate("() => events.filter(e => e[0] === 'error')") == []
    finally:
        page.context.close()
