"""The browser path through the real broker with its defaults, on loopback: a token in the
query string or in a subprotocol reaches the Auth middleware, the default room is the path, and
a refusal is a close code and reason that a WebSocket client (as a browser) can read."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from strands_trio import Context, StrandsApp
from strands_trio.broker import BrokerAddress, BrokerConfig, serve_broker
from strands_trio.middleware import APIKeyVerifier, Auth, TokenSource, from_query, from_subprotocol

from .._net import open_client

DEADLINE = 10
JWT_LIKE = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJl-_"  # base64url and dots


@pytest.fixture
async def broker(nursery: trio.Nursery) -> BrokerAddress:
    """A broker with its defaults (no pass_query_string), on free loopback ports."""
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None)
    address: BrokerAddress = await nursery.start(serve_broker, config)
    return address


async def start_app(nursery: trio.Nursery, broker: BrokerAddress, source: TokenSource) -> None:
    """A backend with Auth reading tokens from *source*, which leaves the default room alone
    and greets each client with the room it landed in."""
    verifier = APIKeyVerifier(keys={"good": "ann", JWT_LIKE: "jay"})
    app = StrandsApp(middleware=[Auth(verifier=verifier, source=source)])

    @app.on_new_connection
    async def greet(context: Context) -> None:
        await app.send_private_message(context.client_id, f"room {context.room_id}")

    await nursery.start(partial(app.serve, "127.0.0.1", broker.tcp_port))
    await broker.hub.wait_backends(1)


async def refusal(
    nursery: trio.Nursery, port: int, target: str, subprotocols: Sequence[str] = ()
) -> tuple[int, str | None]:
    """The close code and reason a client refused after the upgrade sees."""
    ws = await _open(nursery, port, target, subprotocols)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    return closed.value.reason.code, closed.value.reason.reason


async def _open(
    nursery: trio.Nursery, port: int, target: str, subprotocols: Sequence[str]
) -> WebSocketConnection:
    return await open_client(nursery, port, target, subprotocols=subprotocols)


async def test_a_query_token_through_the_default_broker(
    broker: BrokerAddress, nursery: trio.Nursery
) -> None:
    """``from_query`` finds the token with the broker's defaults, the default room is the
    path (no token in it), and a missing or unknown token is closed with 4401 and why."""
    with trio.fail_after(DEADLINE):
        await start_app(nursery, broker, from_query("token"))
        ann = await open_client(nursery, broker.ws_port, "/ws/lobby?token=good")
        assert await ann.get_message() == "room /ws/lobby"
        port = broker.ws_port
        assert await refusal(nursery, port, "/ws/lobby?token=bad") == (4401, "unknown API key")
        assert await refusal(nursery, port, "/ws/lobby") == (4401, "no credentials")
    front = broker.statistics().front
    assert (front.accepted, front.refused["backend"]) == (1, 2)


async def test_a_subprotocol_token_through_the_default_broker(
    broker: BrokerAddress, nursery: trio.Nursery
) -> None:
    """A client offering ``["strands", "bearer.<jwt>"]``, as a browser must, gets "strands"
    back and its token reaches ``from_subprotocol``; a bad one is closed with 4401."""
    with trio.fail_after(DEADLINE):
        await start_app(nursery, broker, from_subprotocol())
        port = broker.ws_port
        jay = await _open(nursery, port, "/ws/lobby", ["strands", f"bearer.{JWT_LIKE}"])
        assert jay.subprotocol == "strands"
        assert await jay.get_message() == "room /ws/lobby"
        refused = await refusal(nursery, port, "/ws/x", ["strands", "bearer.nope"])
        assert refused == (4401, "unknown API key")
