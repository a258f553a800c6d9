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
        assert await next_of(ann, "joined") == {"type": "joined", "name": "ann", "room": "lobby"}
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


async def call(ws: WebSocketConnection, kind: str, ref: int, **payload: Any) -> dict[str, Any]:
    """What ``client.call`` does: send *kind* with a ref; the reply or error frame with it."""
    await ws.send_message(json.dumps({"type": kind, "ref": ref, **payload}))
    while True:
        message = json.loads(await ws.get_message())
        if message.get("ref") == ref:
            return message  # type: ignore[no-any-return]


async def test_lines_are_kept_and_older_ones_are_called_for(
    demo: BrokerAddress, nursery: trio.Nursery
) -> None:
    """Every ``said`` goes through ``History``: it carries its room, an offset counting from 1
    and an epoch; ``chat.older`` answers the caller alone with up to 20 lines before an offset
    (or the last ones), oldest first, and whether there are more; another room's lines are not
    in it."""
    with trio.fail_after(10):
        ann = await sign_in(nursery, demo.ws_port, "ann", "past")
        empty = await call(ann, "chat.older", 1, room="past")
        assert empty == {
            "type": "reply",
            "ref": 1,
            "data": {"room": "past", "epoch": "", "lines": [], "more": False},
        }
        eve = await sign_in(nursery, demo.ws_port, "eve", "elsewhere")
        await eve.send_message(json.dumps({"type": "chat.say", "text": "not in past"}))
        await next_of(eve, "said")
        said = []
        for text in ("one", "two"):
            await ann.send_message(json.dumps({"type": "chat.say", "text": text}))
            said.append(await next_of(ann, "said"))
        assert [(line["name"], line["text"], line["room"]) for line in said] == [
            ("ann", "one", "past"),
            ("ann", "two", "past"),
        ]
        assert [line["offset"] for line in said] == [1, 2]
        assert said[0]["epoch"] == said[1]["epoch"]

        bob = await sign_in(nursery, demo.ws_port, "bob", "past")
        recent = (await call(bob, "chat.older", 7))["data"]
        assert recent == {
            "room": "past",
            "epoch": said[0]["epoch"],
            "lines": [{"offset": n, "name": "ann", "text": t} for n, t in ((1, "one"), (2, "two"))],
            "more": False,
        }
        before = (await call(bob, "chat.older", 8, room="past", before=2))["data"]
        assert [line["text"] for line in before["lines"]] == ["one"]


def test_older_pages_through_more_than_twenty_lines() -> None:
    """``chat.older`` gives 20 lines at most, the latest before the offset, and ``more`` while
    older ones are indexed."""
    from strands_trio._demo_chat_models import Line, RoomIndex

    index = RoomIndex(size=30)
    for n in range(1, 46):
        index.add("r", "e1", Line(n, "ann", str(n)))
    last = index.older("r", None)
    assert [line.offset for line in last.lines] == list(range(26, 46))
    assert last.more
    rest = index.older("r", 26)
    assert ([line.offset for line in rest.lines], rest.more) == (list(range(16, 26)), False)
    index.add("r", "e2", Line(1, "bob", "new epoch"))
    assert index.older("r", None).lines == [Line(1, "bob", "new epoch")]
    assert index.older("nowhere", 3).lines == []


async def test_second_room_join_say_leave(demo: BrokerAddress, nursery: trio.Nursery) -> None:
    """``chat.join`` puts the caller in a second room (answered with its members), whose lines
    then reach it once; a bad room name or one not joined is a ``bad_room`` error for the
    call; ``chat.leave`` stops the room's lines; the connect-time room cannot be left."""
    with trio.fail_after(10):
        ann = await sign_in(nursery, demo.ws_port, "ann", "lobby")
        bob = await sign_in(nursery, demo.ws_port, "bob", "side")
        bad = await call(ann, "chat.join", 1, room="no spaces!")
        assert (bad["type"], bad["code"]) == ("error", "bad_room")
        assert "bad room name" in bad["reason"]
        refused = await call(bob, "chat.say", 2, room="lobby", text="not in it")
        assert (refused["code"], refused["reason"]) == (
            "bad_room",
            "you are not in room 'lobby': join it first",
        )

        joined = await call(ann, "chat.join", 3, room="side")
        assert joined["data"] == {"room": "side", "names": ["bob", "ann"]}
        while (joined_bob := await next_of(bob, "joined"))["name"] != "ann":
            pass  # bob's own, first
        assert joined_bob == {"type": "joined", "name": "ann", "room": "side"}
        await ann.send_message(json.dumps({"type": "chat.say", "room": "side", "text": "hi side"}))
        for ws in (ann, bob):
            said = await next_of(ws, "said")
            assert (said["room"], said["text"], said["offset"]) == ("side", "hi side", 1)
        await bob.send_message(json.dumps({"type": "chat.say", "text": "from bob"}))
        assert (await next_of(ann, "said"))["text"] == "from bob"

        # (Five messages each at most: the rate limit's burst.)
        assert (await call(bob, "chat.leave", 5, room="side"))["code"] == "bad_room"
        assert (await call(ann, "chat.leave", 6, room="side"))["data"] is None
        assert (await next_of(bob, "left")) == {"type": "left", "name": "ann", "room": "side"}
        await bob.send_message(json.dumps({"type": "chat.say", "text": "after"}))
        assert (await next_of(bob, "said"))["text"] == "after"
        await ann.send_message(json.dumps({"type": "chat.say", "text": "mine"}))
        # Ann's next line is her own, in the lobby: bob's "after" never reached her.
        said = await next_of(ann, "said")
        assert (said["room"], said["text"]) == ("lobby", "mine")


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
