"""The broker end to end on loopback: real WebSocket clients (trio-websocket), our client and
the asyncio pystrands client from PyPI as backends, the extension, HTTP, and shutdown."""

from __future__ import annotations

import json
import socket
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
)

from strands_trio import ConnectionRequestContext, Context, StrandsApp
from strands_trio.broker import BrokerAddress, BrokerConfig, serve_broker
from strands_trio.broker._keepalive import enable_keepalive

from .._net import http_get, open_client
from ..broker.test_websocket import tls_contexts

PYSTRANDS_BACKEND = Path(__file__).parent.parent / "data" / "pystrands_chat_backend.py"


@pytest.fixture
async def broker(nursery: trio.Nursery) -> BrokerAddress:
    """A broker on free loopback ports, without heartbeats."""
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None)
    address: BrokerAddress = await nursery.start(serve_broker, config)
    return address


def chat_app() -> StrandsApp:
    """Our own version of tests/data/pystrands_chat_backend.py."""
    app = StrandsApp()

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> bool:
        if request.headers.get("Authorization") != ["Bearer good"]:
            return False
        request.context.room_id = request.url.removeprefix("/ws/")
        request.context.metadata = {"name": request.header("x-name") or "?"}
        return True

    @app.on_new_connection
    async def joined(context: Context) -> None:
        await app.send_room_message(context.room_id, f"joined {context.metadata['name']}")

    @app.on_message
    async def said(message: str, context: Context) -> None:
        if message.startswith("private:"):
            _, client_id, text = message.split(":", 2)
            await app.send_private_message(client_id, text)
        elif message.startswith("all:"):
            await app.broadcast_message(message[4:])
        elif message.startswith("kick:"):
            await app.close_connection(message[5:], 4001, "kicked")
        else:
            await app.send_room_message(context.room_id, f"{context.metadata['name']}: {message}")

    @app.on_disconnect
    async def left(context: Context) -> None:
        await app.send_room_message(context.room_id, f"left {context.metadata['name']}")

    return app


async def connect(
    nursery: trio.Nursery, address: BrokerAddress, room: str, name: str, token: str = "good"
) -> WebSocketConnection:
    """A WebSocket client of the broker, closed when the test's nursery ends."""
    headers = [("Authorization", f"Bearer {token}"), ("X-Name", name)]
    return await open_client(nursery, address.ws_port, f"/ws/{room}", headers)


async def chat_scenario(address: BrokerAddress, nursery: trio.Nursery) -> None:
    """Accept and reject, room messages, private, broadcast and disconnect, as a chat does."""
    eve = await connect(nursery, address, "lobby", "eve", token="bad")
    with pytest.raises(ConnectionClosed) as refused:  # upgraded, then closed at once
        await eve.get_message()
    assert (refused.value.reason.code, refused.value.reason.reason) == (
        4403,
        "refused by the backend",
    )
    ann = await connect(nursery, address, "lobby", "ann")
    assert await ann.get_message() == "joined ann"
    bob = await connect(nursery, address, "lobby", "bob")
    assert await ann.get_message() == "joined bob"
    assert await bob.get_message() == "joined bob"
    other = await connect(nursery, address, "other", "cat")
    assert await other.get_message() == "joined cat"

    await ann.send_message("hello")
    assert await ann.get_message() == "ann: hello"
    assert await bob.get_message() == "ann: hello"

    await ann.send_message("all:everyone")
    for ws in (ann, bob, other):
        assert await ws.get_message() == "everyone"

    # Private: the id comes from the broker's metrics-free way: ask the hub.
    ids = {client.context.metadata["name"]: cid for cid, client in address.hub._clients.items()}
    await ann.send_message(f"private:{ids['cat']}:psst")
    assert await other.get_message() == "psst"

    await bob.aclose()
    assert await ann.get_message() == "left bob"


async def test_our_client_through_our_broker(broker: BrokerAddress, nursery: trio.Nursery) -> None:
    """A StrandsApp backend and trio-websocket clients hold a chat through the broker."""
    app = chat_app()
    await nursery.start(partial(app.serve, "127.0.0.1", broker.tcp_port))
    with trio.fail_after(10):
        await chat_scenario(broker, nursery)


async def test_pystrands_client_through_our_broker(
    broker: BrokerAddress, nursery: trio.Nursery
) -> None:
    """The asyncio pystrands client from PyPI, written for the reference broker, runs the
    same chat through ours (in a subprocess)."""
    command = [sys.executable, str(PYSTRANDS_BACKEND), str(broker.tcp_port)]
    process = await nursery.start(partial(trio.run_process, command, check=False))
    try:
        with trio.fail_after(20):
            await broker.hub.wait_backends(1)
            await chat_scenario(broker, nursery)
    finally:
        process.kill()


async def test_close_connection_extension(broker: BrokerAddress, nursery: trio.Nursery) -> None:
    """Our client's close_connection closes a client's socket with its code and reason."""
    app = chat_app()
    await nursery.start(partial(app.serve, "127.0.0.1", broker.tcp_port))
    with trio.fail_after(10):
        ann = await connect(nursery, broker, "lobby", "ann")
        bob = await connect(nursery, broker, "lobby", "bob")
        ids = {c.context.metadata["name"]: cid for cid, c in broker.hub._clients.items()}
        await ann.send_message(f"kick:{ids['bob']}")
        with pytest.raises(ConnectionClosed) as closed:
            await drain(bob)
        assert (closed.value.reason.code, closed.value.reason.reason) == (4001, "kicked")


async def drain(ws: WebSocketConnection) -> None:
    """Read messages until the connection closes (ConnectionClosed)."""
    while True:
        await ws.get_message()


async def test_health_and_metrics(broker: BrokerAddress, nursery: trio.Nursery) -> None:
    """GET /healthz and GET /metrics answer on the WebSocket port; /metrics has every
    component's figures, lost events and messages by reason among them, each name once."""
    app = chat_app()
    await nursery.start(partial(app.serve, "127.0.0.1", broker.tcp_port))
    with trio.fail_after(10):
        await connect(nursery, broker, "lobby", "ann")
        status, body = await http_get(broker.ws_port, "/healthz")
        health = json.loads(body)
        assert (status, health["status"], health["backends"], health["connections"]) == (
            200,
            "ok",
            1,
            1,
        )
        status, body = await http_get(broker.ws_port, "/metrics")
        assert status == 200
        metrics = body.decode()
        assert "strands_broker_connections 1" in metrics
        assert "strands_broker_connections_accepted_total 1" in metrics
        for line in (
            'strands_broker_events_lost_total{reason="queue_full"} 0',
            'strands_broker_events_lost_total{reason="backend_gone"} 0',
            'strands_broker_messages_lost_total{reason="too_slow"} 0',
            'strands_broker_messages_lost_total{reason="connection_lost"} 0',
            'strands_broker_ws_handshakes_refused_total{reason="per_ip"} 0',
            "strands_broker_ws_open 1",
            "strands_broker_backends_stalled_total 0",
        ):
            assert f"\n{line}\n" in metrics
        types = [line for line in metrics.splitlines() if line.startswith("# TYPE")]
        assert len(types) == len(set(types))


async def test_graceful_shutdown(nursery: trio.Nursery) -> None:
    """Cancelling the broker closes WebSocket clients with 1001 and tells the backend they
    left before its link closes."""
    config = BrokerConfig(ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None)
    left: list[str] = []
    app = StrandsApp()

    @app.on_disconnect
    async def gone(context: Context) -> None:
        left.append(context.client_id)

    with trio.fail_after(10):
        async with trio.open_nursery() as broker_nursery:
            address = await broker_nursery.start(serve_broker, config)
            await nursery.start(partial(app.serve, "127.0.0.1", address.tcp_port))
            ws = await connect(nursery, address, "lobby", "ann")
            broker_nursery.cancel_scope.cancel()
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 1001
        await trio.testing.wait_all_tasks_blocked()
        assert len(left) == 1


async def test_backend_link_over_tls(nursery: trio.Nursery, tmp_path: Path) -> None:
    """With backend_ssl_context, backends connect over TLS (our client through connect=)."""
    server_context, client_context = tls_contexts(tmp_path)
    config = BrokerConfig(
        ws_host="127.0.0.1",
        ws_port=0,
        tcp_port=0,
        heartbeat_interval=None,
        backend_ssl_context=server_context,
    )
    address: BrokerAddress = await nursery.start(serve_broker, config)
    app = chat_app()
    connect_tls = partial(
        trio.open_ssl_over_tcp_stream, "127.0.0.1", address.tcp_port, ssl_context=client_context
    )
    await nursery.start(partial(app.serve, connect=connect_tls))
    with trio.fail_after(10):
        ann = await connect(nursery, address, "lobby", "ann")
        assert await ann.get_message() == "joined ann"


def named_backend(name: str) -> StrandsApp:
    """A backend that accepts everyone and answers each message with its own name."""
    app = StrandsApp()

    @app.on_message
    async def answer(message: str, context: Context) -> None:
        await app.send_private_message(context.client_id, name)

    return app


async def test_several_backends_and_stickiness(
    broker: BrokerAddress, nursery: trio.Nursery
) -> None:
    """Over real sockets: clients are spread over two backends, each client's messages always
    reach the backend that accepted it, and when that backend goes its clients move to the
    other one."""
    scopes = {}
    for name in ("one", "two"):
        scope = trio.CancelScope()
        scopes[name] = scope

        async def serve(
            name: str = name, scope: trio.CancelScope = scope, *, task_status: Any
        ) -> None:
            with scope:
                await named_backend(name).serve(
                    "127.0.0.1", broker.tcp_port, task_status=task_status
                )

        await nursery.start(serve)
    with trio.fail_after(10):
        await broker.hub.wait_backends(2)
        clients = [await connect(nursery, broker, "lobby", f"c{n}") for n in range(4)]
        owners = []
        for ws in clients:
            await ws.send_message("who?")
            owners.append(await ws.get_message())
        assert sorted(set(owners)) == ["one", "two"]
        for ws, owner in zip(clients, owners, strict=True):
            for _ in range(3):
                await ws.send_message("again?")
                assert await ws.get_message() == owner
        scopes["one"].cancel()
        while broker.hub.health()["backends"] != 1:
            await broker.hub.wait_changed()
        for ws in clients:
            await ws.send_message("now?")
            assert await ws.get_message() == "two"


async def test_keepalive_is_turned_on() -> None:
    """enable_keepalive (used on every socket the broker accepts) turns TCP keepalive on, so a
    peer gone without closing is noticed by the kernel."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        async with await trio.open_tcp_stream("127.0.0.1", port):
            accepted = await listener.accept()
            async with accepted:
                enable_keepalive(accepted)
                assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                if hasattr(socket, "TCP_KEEPIDLE"):
                    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
