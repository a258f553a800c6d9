"""``strands.js`` room history in a real headless Chromium: ordering, dedupe, gaps and the
recovery protocol unit-tested in the page against a fake ``WebSocket``; and a page that
misses messages across a broker restart getting them back, in order, from our broker and a
backend with a :class:`~strands_trio.middleware.History`."""

from __future__ import annotations

from typing import Any

import pytest

from strands_trio.middleware import History, MemoryHistory

from ._stack import Backend, running_stack
from .test_strands_js import open_test_page, wait_event

try:
    from playwright.sync_api import Browser, Page
except ImportError:  # pragma: no cover - the test extra installs it
    pytest.skip("playwright is not installed: pip install -e '.[test]'", allow_module_level=True)


def texts(page: Page, client: str = "a") -> list[Any]:
    """``[text, offset]`` of every ``said`` event of *client*, in delivery order."""
    return page.evaluate(
        f"() => events.filter(e => e[0] === 'said' && e[2] === '{client}')"
        ".map(e => [e[1].text, e[1].offset])"
    )


@pytest.mark.timeout(60)
def test_ordering_dedupe_gaps_and_recovery_in_the_page(browser: Browser) -> None:
    """Against a fake socket: messages are delivered in offset order and once; a gap holds
    later messages back and asks for the room; after a reconnection every known room is
    asked for, live messages during the replay come after it, and a room that cannot be
    recovered gives ``recovery_failed`` and continues from the room's current offset."""
    with running_stack(Backend()) as address:
        page = open_test_page(browser, address.ws_port)
        try:
            result = page.evaluate("""async () => {
                const sockets = installFakeWebSocket();
                const c = new strands.StrandsClient("ws://x/ws/", {
                    reconnect: { minDelay: 0, maxDelay: 0, jitter: 0 } });
                const got = [];
                const failed = [];
                c.on("said", (m) => got.push(`${m.room}:${m.offset}`));
                c.on("recovery_failed", (e) => failed.push(e));
                await until(() => sockets.length === 1);
                const ws = sockets[0];
                ws.open();
                const say = (sock, room, offset, epoch = "e1") => sock.onmessage({
                    data: JSON.stringify({ type: "said", room, offset, epoch }) });
                const sent = (sock) => sock.sent.map((t) => JSON.parse(t));
                say(ws, "r", 4); say(ws, "r", 5); say(ws, "r", 5); say(ws, "q", 1);
                say(ws, "r", 7); // a gap: held, and r asked for
                const afterGap = [...got];
                const gapAsk = sent(ws).at(-1);
                say(ws, "r", 6); // the replay fills it
                ws.onmessage({ data: JSON.stringify({ type: "strands.recovered",
                    rooms: { r: { recovered: true, epoch: "e1", offset: 7 } } }) });
                const afterRecovery = [...got];
                ws.drop(1006);
                await until(() => sockets.length === 2);
                const ws2 = sockets[1];
                ws2.open();
                const reconnectAsk = sent(ws2)[0];
                say(ws2, "r", 9); // live, during the replay: held
                say(ws2, "r", 8); say(ws2, "r", 9); // the replay
                say(ws2, "q", 5, "e2"); // the live message of a room that lost its history
                ws2.onmessage({ data: JSON.stringify({ type: "strands.recovered", rooms: {
                    r: { recovered: true, epoch: "e1", offset: 8 },
                    q: { recovered: false, epoch: "e2", offset: 4, reason: "epoch_changed" },
                } }) });
                return { afterGap, gapAsk, afterRecovery, reconnectAsk, got, failed,
                    rooms: c.rooms };
            }""")
        finally:
            page.context.close()
    assert result["afterGap"] == ["r:4", "r:5", "q:1"]
    assert result["gapAsk"] == {
        "type": "strands.recover",
        "rooms": {"r": {"epoch": "e1", "offset": 5}},
    }
    assert result["afterRecovery"] == ["r:4", "r:5", "q:1", "r:6", "r:7"]
    assert result["reconnectAsk"] == {
        "type": "strands.recover",
        "rooms": {"r": {"epoch": "e1", "offset": 7}, "q": {"epoch": "e1", "offset": 1}},
    }
    assert result["got"] == ["r:4", "r:5", "q:1", "r:6", "r:7", "r:8", "r:9", "q:5"]
    assert result["failed"] == [{"room": "q", "reason": "epoch_changed"}]
    assert result["rooms"] == {"r": {"epoch": "e1", "offset": 9}, "q": {"epoch": "e2", "offset": 5}}


@pytest.mark.timeout(60)
def test_follow_asks_for_a_room_from_its_start_and_unfollow_forgets_it(browser: Browser) -> None:
    """Against a fake socket: a followed room with no message yet is asked for from its start
    after a reconnection ({epoch: "", offset: 0}) and takes the epoch of its first message;
    live and replayed messages of it are delivered once, in order; an unfollowed room is not
    asked for again."""
    with running_stack(Backend()) as address:
        page = open_test_page(browser, address.ws_port)
        try:
            result = page.evaluate("""async () => {
                const sockets = installFakeWebSocket();
                const c = new strands.StrandsClient("ws://x/ws/", {
                    reconnect: { minDelay: 0, maxDelay: 0, jitter: 0 } });
                const got = [];
                c.on("said", (m) => got.push(`${m.room}:${m.offset}`));
                c.follow("side").follow("gone").unfollow("gone");
                await until(() => sockets.length === 1);
                sockets[0].open();
                sockets[0].drop(1006);
                await until(() => sockets.length === 2);
                const ws = sockets[1];
                ws.open();
                const ask = JSON.parse(ws.sent[0]);
                const say = (offset) => ws.onmessage({
                    data: JSON.stringify({ type: "said", room: "side", offset, epoch: "e9" }) });
                say(2); say(1); // the live 2 first, then the replay: held until the answer
                ws.onmessage({ data: JSON.stringify({ type: "strands.recovered",
                    rooms: { side: { recovered: true, epoch: "e9", offset: 2 } } }) });
                say(3);
                return { ask, got, rooms: c.rooms };
            }""")
        finally:
            page.context.close()
    assert result["ask"] == {
        "type": "strands.recover",
        "rooms": {"side": {"epoch": "", "offset": 0}},
    }
    assert result["got"] == ["side:1", "side:2", "side:3"]
    assert result["rooms"] == {"side": {"epoch": "e9", "offset": 3}}


@pytest.mark.timeout(90)
def test_a_page_recovers_what_it_missed_across_a_broker_restart(browser: Browser) -> None:
    """A page posts, loses its broker, and while it is away (held back by its token
    provider) another client posts twice; reconnected, it gets those two, in order and
    once, then live ones; without ``recovery_failed``. When the backend's store restarts
    empty, a live message of the new epoch, or the next reconnection, says that the room
    could not be recovered."""
    store = MemoryHistory(size=50)
    backend = Backend(history=History(store=store))
    with running_stack(backend) as first:
        page = open_test_page(browser, first.ws_port)
        page.evaluate("""() => {
            window.gate = Promise.resolve("t");
            const make = (name, token) => {
                const c = new strands.StrandsClient("/ws/hist", { token,
                    reconnect: { minDelay: 100, maxDelay: 300, jitter: 0 } });
                for (const ev of ["said", "open", "close", "recovered", "recovery_failed"]) {
                    c.on(ev, (e) => window.events.push([ev, e, name]));
                }
                return c;
            };
            window.make = make;
            window.a = make("a", () => window.gate);
            a.on("close", () => {
                window.gate = new Promise((resolve) => { window.release = () => resolve("t"); });
            });
        }""")
        wait_event(page, "e => e[0] === 'open'")
        page.evaluate("() => { a.send('post', {text: 'm1'}); a.send('post', {text: 'm2'}); }")
        page.wait_for_function("() => events.filter(e => e[0] === 'said').length === 2")
    try:
        wait_event(page, "e => e[0] === 'close'")
        with running_stack(backend, first.ws_port, first.tcp_port):
            page.evaluate("""() => { window.b = make("b", "t");
                b.on("open", () => { b.send('post', {text: 'm3'}); b.send('post', {text: 'm4'}); });
            }""")
            page.wait_for_function(
                "() => events.filter(e => e[0] === 'said' && e[2] === 'b').length === 2"
            )
            page.evaluate("() => release()")
            recovered = wait_event(page, "e => e[0] === 'recovered' && e[2] === 'a'")[1]
            page.evaluate("() => b.send('post', {text: 'm5'})")
            page.wait_for_function(
                "() => events.filter(e => e[0] === 'said' && e[2] === 'a').length === 5"
            )
            assert texts(page) == [["m1", 1], ["m2", 2], ["m3", 3], ["m4", 4], ["m5", 5]]
            assert recovered["rooms"]["hist"]["recovered"] is True
            assert page.evaluate("() => a.rooms.hist.offset") == 5
            store.clear()  # as a backend restarted with an empty memory store
            page.evaluate("() => a.close()")  # then a again, as a page that lost its socket:
            page.evaluate("""() => { window.a = make("a", "t");
                a.on("open", () => a.send('post', {text: 'm6'})); }""")
            page.wait_for_function("() => a.rooms.hist?.offset === 1")
            # b, live, sees m6 in another epoch: it asks, and is told the room was lost
            failed = wait_event(page, "e => e[0] === 'recovery_failed' && e[2] === 'b'")[1]
            assert failed == {"room": "hist", "reason": "epoch_changed"}
        # a third run: the new client knows the new epoch; the store forgets it again
        page.wait_for_function("() => events.filter(e => e[0] === 'close').length >= 3")
        epoch = page.evaluate("() => a.rooms.hist.epoch")
        store.clear()
        with running_stack(backend, first.ws_port, first.tcp_port):
            failed = wait_event(page, "e => e[0] === 'recovery_failed' && e[2] === 'a'")[1]
            assert failed == {"room": "hist", "reason": "epoch_changed"}
            assert page.evaluate("() => a.rooms.hist.epoch") != epoch
        assert page.evaluate("() => events.filter(e => e[0] === 'error')") == []
    finally:
        page.context.close()
