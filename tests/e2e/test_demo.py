"""The demo (``strands-trio demo``): the page and its files, tokens, and a chat through the
broker with auth, roles, typed messages and the rate limit, as the page uses them."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from strands_trio._demo_chat import serve_demo
from strands_trio.broker import BrokerAddress

from .._net import http_get, open_client


async def sign_in(
    nursery: trio.Nursery, port: int, name: str, room: str = "lobby", forge: bool = False
) -> WebSocketConnection:
    """What the page does: get a token, then open /ws/<room>?token=..."""
    status, body = await http_get(port, f"/token?name={name}")
    assert status == 200
    token = json.loads(body)["token"]
    if forge:
        token = token[:-4] + "AAAA"
    return await open_client(nursery, port, f"/ws/{room}?token={token}")


async def next_of(ws: WebSocketConnection, kind: str) -> dict[str, Any]:
    """The next message of this type."""
    while True:
        message = json.loads(await ws.get_message())
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


@pytest.fixture
async def demo(nursery: trio.Nursery) -> BrokerAddress:
    address: BrokerAddress = await nursery.start(partial(serve_demo, "127.0.0.1", 0, 0))
    return address


async def test_page_and_tokens(demo: BrokerAddress) -> None:
    """The page and its files are served from the package; a token needs a sane name."""
    with trio.fail_after(10):
        status, page = await http_get(demo.ws_port, "/")
        assert status == 200
        assert b"<title>strands-trio chat</title>" in page
        for path in ("/app.js", "/style.css", "/favicon.svg"):
            assert (await http_get(demo.ws_port, path))[0] == 200
        assert (await http_get(demo.ws_port, "/token"))[0] == 400
        status, body = await http_get(demo.ws_port, "/token?name=ann")
        assert (status, json.loads(body)["expires_in"]) == (200, 600)


async def test_chat_with_auth_roles_and_rate_limit(
    demo: BrokerAddress, nursery: trio.Nursery
) -> None:
    """Two signed-in clients chat in a room; a forged token is refused before the upgrade; a
    member cannot announce and an admin can; a flood gets the rate limit's error frame."""
    with trio.fail_after(10):
        ann = await sign_in(nursery, demo.ws_port, "ann")
        assert await next_of(ann, "joined") == {"type": "joined", "name": "ann"}
        root = await sign_in(nursery, demo.ws_port, "admin")
        assert (await next_of(ann, "joined"))["name"] == "admin"

        await ann.send_message(json.dumps({"type": "chat.say", "text": "hello"}))
        said = await next_of(root, "said")
        assert (said["name"], said["text"]) == ("ann", "hello")

        mallory = await sign_in(nursery, demo.ws_port, "mallory", forge=True)
        with pytest.raises(ConnectionClosed) as refused:  # upgraded, then closed: 4401 and why
            await mallory.get_message()
        assert refused.value.reason.code == 4401

        await ann.send_message(json.dumps({"type": "chat.announce", "text": "all hail"}))
        assert (await next_of(ann, "error"))["code"] == "forbidden"
        await root.send_message(json.dumps({"type": "chat.announce", "text": "maintenance"}))
        assert (await next_of(ann, "announcement"))["text"] == "maintenance"

        for n in range(10):
            await ann.send_message(json.dumps({"type": "chat.say", "text": f"flood {n}"}))
        assert (await next_of(ann, "error"))["code"] == "rate_limited"


async def test_members_on_every_join_and_leave(demo: BrokerAddress, nursery: trio.Nursery) -> None:
    """The room gets the names of who is in it, oldest first, at every join and leave, from
    the Presence middleware; another room's people are not in it."""
    with trio.fail_after(10):
        ann = await sign_in(nursery, demo.ws_port, "ann", "trio")
        assert (await next_of(ann, "members"))["names"] == ["ann"]
        elsewhere = await sign_in(nursery, demo.ws_port, "eve", "other")
        assert (await next_of(elsewhere, "members"))["names"] == ["eve"]
        bob = await sign_in(nursery, demo.ws_port, "bob", "trio")
        assert (await next_of(ann, "members"))["names"] == ["ann", "bob"]
        assert (await next_of(bob, "members"))["names"] == ["ann", "bob"]
        await bob.aclose()
        assert (await next_of(ann, "left"))["name"] == "bob"
        assert (await next_of(ann, "members"))["names"] == ["ann"]


async def test_history_on_every_connection(demo: BrokerAddress, nursery: trio.Nursery) -> None:
    """Every ``said`` has an id, increasing in its room; a client that connects is sent the
    room's lines so far, oldest first, privately (before it is announced), and another room's
    lines are not in it."""
    with trio.fail_after(10):
        ann = await sign_in(nursery, demo.ws_port, "ann", "past")
        assert await next_of(ann, "history") == {"type": "history", "lines": []}
        eve = await sign_in(nursery, demo.ws_port, "eve", "elsewhere")
        await eve.send_message(json.dumps({"type": "chat.say", "text": "not in past"}))
        await next_of(eve, "said")
        said = []
        for text in ("one", "two"):
            await ann.send_message(json.dumps({"type": "chat.say", "text": text}))
            said.append(await next_of(ann, "said"))
        assert [(line["name"], line["text"]) for line in said] == [("ann", "one"), ("ann", "two")]
        assert said[0]["id"] < said[1]["id"]

        bob = await sign_in(nursery, demo.ws_port, "bob", "past")
        first = json.loads(await bob.get_message())
        assert first == {
            "type": "history",
            "lines": [{key: line[key] for key in ("id", "name", "text")} for line in said],
        }
        assert (await next_of(bob, "joined"))["name"] == "bob"


def test_room_history_keeps_the_last_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A room keeps its last *size* lines; ids increase in a room even when the clock goes
    back, and a new history's ids (a restarted backend's) follow the old one's."""
    from strands_trio import _demo_chat

    clock = iter([5_000_000, 4_000_000, 4_000_000, 3_000_000, 6_000_000, 6_000_001])
    monkeypatch.setattr(_demo_chat.time, "time_ns", lambda: next(clock) * 1000)
    history = _demo_chat.RoomHistory(size=3)
    lines = [history.add("r", "ann", str(n)) for n in range(4)]
    assert [line.id for line in lines] == [5_000_000, 5_000_001, 5_000_002, 5_000_003]
    assert history.lines("r") == lines[1:]
    assert history.lines("elsewhere") == []
    restarted = _demo_chat.RoomHistory(size=3)
    assert restarted.add("r", "bob", "back").id == 6_000_000
    assert history.add("other", "eve", "x").id == 6_000_001


def test_split_demo_needs_a_shared_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--broker-only`` and ``--backend-only`` refuse to start without $STRANDS_DEMO_SECRET or
    with a short one, and ``--backend-only`` without the broker's port, each in one line."""
    from strands_trio.__main__ import main

    monkeypatch.delenv("STRANDS_DEMO_SECRET", raising=False)
    assert main(["demo", "--broker-only"]) == 1
    assert "--broker-only needs $STRANDS_DEMO_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("STRANDS_DEMO_SECRET", "s3cr3t")
    assert main(["demo", "--backend-only", "--tcp-port", "8081"]) == 1
    assert capsys.readouterr().err == (
        "strands-trio demo: $STRANDS_DEMO_SECRET is too short: 32 bytes at least\n"
    )
    monkeypatch.setenv("STRANDS_DEMO_SECRET", "s3cr3t" * 6)
    assert main(["demo", "--backend-only"]) == 1
    assert capsys.readouterr().err == (
        "strands-trio demo: --backend-only needs --tcp-port, the broker's\n"
    )
    with pytest.raises(SystemExit):
        main(["demo", "--broker-only", "--backend-only"])


def test_demo_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo on a port already in use is one line on stderr and exit status 1."""
    import socket

    from strands_trio.__main__ import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", "--ws-port", str(port)]) == 1
    assert capsys.readouterr().err == (
        f"strands-trio demo: cannot listen for WebSocket clients on 127.0.0.1:{port}: "
        "address already in use\n"
    )
