"""Many rooms in Chromium: two pages' clients of strands.js, each in a room of its own; the
backend makes one join the other's room, and the room's messages reach both, once each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs
import pytest

from strands_trio import Context, StrandsApp
from strands_trio.broker import BrokerAddress

from ._stack import Backend, running_stack
from .test_strands_js import open_test_page, wait_event

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@attrs.frozen
class Join:
    room: str


@attrs.frozen
class Say:
    room: str
    text: str


class RoomsBackend(Backend):
    """The stack's backend plus ``room.join`` and ``room.say``."""

    def make_app(self) -> StrandsApp:
        app = super().make_app()

        @app.on_message("room.join", model=Join)
        async def join(payload: Join, context: Context) -> None:
            await app.join_room(context.client_id, payload.room)
            said = {"type": "room.said", "text": f"{context.client_id} joined"}
            await app.send_room_message(payload.room, json.dumps(said))

        @app.on_message("room.say", model=Say)
        async def say(payload: Say, context: Context) -> None:
            said = {"type": "room.said", "text": payload.text}
            await app.send_room_message(payload.room, json.dumps(said))

        return app


@pytest.fixture(scope="module")
def stack() -> Iterator[BrokerAddress]:
    with running_stack(RoomsBackend()) as address:
        yield address


@pytest.mark.timeout(60)
def test_a_joined_room_reaches_the_page_once(browser: Browser, stack: BrokerAddress) -> None:
    page = open_test_page(browser, stack.ws_port)
    try:
        page.evaluate("""() => {
            window.said = {a: [], b: []};
            window.a = new strands.StrandsClient("/ws/alpha");
            window.b = new strands.StrandsClient("/ws/beta");
            a.on("room.said", (m) => said.a.push(m.text));
            b.on("room.said", (m) => said.b.push(m.text));
            track(a, ["open"]);
            track(b, ["open"]);
        }""")
        page.wait_for_function("() => window.events.filter(e => e[0] === 'open').length === 2")
        page.evaluate("() => a.send('room.join', {room: 'beta'})")
        page.wait_for_function("() => said.a.length === 1 && said.b.length === 1")
        page.evaluate("() => b.send('room.say', {room: 'beta', text: 'hello beta'})")
        page.evaluate("() => b.send('room.say', {room: 'alpha', text: 'hello alpha'})")
        page.wait_for_function("() => said.a.length === 3 && said.b.length === 2")
        said = page.evaluate("() => said")
        assert said["a"][1:] == ["hello beta", "hello alpha"]  # each once, in order
        assert said["b"][1:] == ["hello beta"]  # not in alpha
        assert said["a"][0] == said["b"][0]
        assert said["a"][0].endswith(" joined")
        wait_event(page, "e => e[0] === 'open'")
    finally:
        page.context.close()
