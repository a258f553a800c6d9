"""The real thing: our broker in a process of its own, a backend with Presence (in memory, or
in a real Redis), two WebSocket clients; the broker is killed with SIGKILL and started again on
the same ports; the backend reconnects, learns the new instance from its hello, and lists no
one until a client comes back."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import trio

from strands_trio import BrokerLink, ClientConfig, ConnectionRequestContext, Context, StrandsApp
from strands_trio.middleware import Presence, PresenceStore, RedisPresence
from strands_trio.redis import serve_live_redis

from .._net import Changes, open_client, reap

pytest_plugins = ["tests._redis"]

DEADLINE = 20


async def start_broker(ws_port: int = 0, tcp_port: int = 0) -> tuple[trio.Process, int, int]:
    """Our broker as ``python -m strands_trio broker``; its ports, from its banner."""
    command = [sys.executable, "-m", "strands_trio", "broker", "--ws-host", "127.0.0.1"]
    command += ["--ws-port", str(ws_port), "--tcp-port", str(tcp_port), "--log-level", "WARNING"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    banner = b""
    while not banner.endswith(b"\n"):
        chunk = await process.stdout.receive_some()
        assert chunk, f"the broker exited before listening: {banner!r}"
        banner += chunk
    ports = re.search(rb"127\.0\.0\.1:(\d+)/ws/\.\.\., backends on \S+:(\d+)", banner)
    assert ports, banner
    return process, int(ports[1]), int(ports[2])


class Watch:
    """Last in the app's middleware: records link changes and pulses on every event."""

    def __init__(self) -> None:
        self.changes = Changes()
        self.links: list[BrokerLink] = []

    def on_broker_link(self, link: BrokerLink) -> None:
        self.links.append(link)
        self.changes.pulse()

    async def __call__(self, ctx: Any, call_next: Any) -> None:
        await call_next(ctx)
        self.changes.pulse()


def make_app(presence: Presence, watch: Watch) -> StrandsApp:
    config = ClientConfig(reconnect_delay=0.02, max_reconnect_delay=0.1)
    app = StrandsApp(middleware=[presence, watch], config=config)

    @app.on_connection_request
    async def admit(request: ConnectionRequestContext) -> bool:
        request.context.client_id = request.header("x-id") or request.context.client_id
        request.context.room_id = "lobby"
        return True

    @app.on_new_connection
    async def joined(context: Context) -> None:
        pass

    return app


async def members(presence: Presence) -> list[str]:
    return [m.client_id for m in await presence.members("lobby")]


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def scenario(nursery: trio.Nursery, store: PresenceStore) -> Presence:
    presence, watch = Presence(store=store), Watch()
    app = make_app(presence, watch)
    process, ws_port, tcp_port = await start_broker()
    try:
        await nursery.start(partial(app.serve, "127.0.0.1", tcp_port))
        await open_client(nursery, ws_port, "/ws/", [("X-Id", "ann")])
        await open_client(nursery, ws_port, "/ws/", [("X-Id", "bob")])
        await watch.changes.wait_for(lambda: presence.statistics().joined == 2)
        assert sorted(await members(presence)) == ["ann", "bob"]
        first = app.broker_link
        assert first is not None
        assert first.identity is not None
        assert first.identity.name == f"127.0.0.1:{tcp_port}"

        if isinstance(store, RedisPresence):
            await store.wait_synced()  # ann and bob are in Redis
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await reap(process)
        process, *_ = await start_broker(ws_port, tcp_port)
        await watch.changes.wait_for(lambda: len(watch.links) == 3)  # up, down, up
        second = watch.links[2]
        assert second.up
        assert second.identity is not None
        assert second.identity.name == first.identity.name
        assert second.identity.instance != first.identity.instance
        assert await members(presence) == []  # ann and bob are gone with the old broker

        await open_client(nursery, ws_port, "/ws/", [("X-Id", "ann")])
        await watch.changes.wait_for(lambda: presence.statistics().joined == 3)
        assert await members(presence) == ["ann"]
        assert presence.statistics().dropped == 2
        return presence
    finally:
        await reap(process)


async def test_a_killed_broker_takes_its_clients_out_of_presence(nursery: trio.Nursery) -> None:
    """With the memory store: after the broker's SIGKILL and restart, the list is empty,
    then holds only the client that came back."""
    with trio.fail_after(DEADLINE):
        await scenario(nursery, Presence().store)


async def test_a_killed_broker_takes_its_clients_out_of_redis_presence(
    redis_url: str, nursery: trio.Nursery
) -> None:
    """With RedisPresence in a real redis-server: the same, and Redis holds only the
    client that came back once the store has written."""
    with trio.fail_after(DEADLINE):
        live = await nursery.start(serve_live_redis, redis_url)
        store = RedisPresence(live, ttl=5.0, prefix="e2e:restart:")
        await nursery.start(store.serve)
        await scenario(nursery, store)
        await store.wait_synced()
        assert [m.client_id for m in await store.members("lobby")] == ["ann"]
        assert store.statistics().drop_removed == 2
