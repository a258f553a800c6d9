"""docs/migration.md's two backends behave the same: docs/examples/migrate_pystrands.py (the
asyncio pystrands client from PyPI, in a subprocess) and docs/examples/migrate_trio.py (run
with ``strands-trio run`` in a subprocess, and embedded in this process as its ``main()``
does), each against strands-trio's broker on loopback, driven by the same WebSocket clients."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from docs.examples import migrate_trio
from docs.examples.migrate_pystrands import name_of
from strands_trio.broker import BrokerAddress, BrokerConfig, serve_broker

from .._net import open_client, reap

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

#: How each backend is started as a process, from docs/examples, given the broker's TCP port.
COMMANDS = {
    "pystrands": [
        sys.executable,
        "-c",
        "import asyncio, sys; from migrate_pystrands import main; "
        "asyncio.run(main('127.0.0.1', int(sys.argv[1])))",
    ],
    "strands-trio run": [
        sys.executable,
        *("-m", "strands_trio", "run", "migrate_trio:Chat", "--host", "127.0.0.1"),
        *("--log-level", "WARNING", "--port"),
    ],
}
EMBEDDED = "strands-trio embedded"

#: What the scenario's clients see, in the order the scenario reads it.
EXPECTED = [
    ("eve", "refused 4403"),  # an unknown token in the header
    ("joe", "refused 4403"),  # no token at all
    ("max", "refused 4403"),  # an unknown token in the query string
    ("ann", "welcome to lobby, ann"),
    ("ann", "ann joined"),
    ("bob", "welcome to lobby, bob"),  # bob's token was in the query string
    ("bob", "bob joined"),
    ("ann", "bob joined"),
    ("cat", "welcome to garden, cat"),
    ("cat", "cat joined"),
    ("ann", "ann: hi"),
    ("bob", "ann: hi"),
    ("ann", "bob to all: dinner"),
    ("bob", "bob to all: dinner"),
    ("cat", "bob to all: dinner"),
    ("ann", "bob left"),
    ("cat", "cat: ping"),  # cat heard nothing of the lobby's chat
    ("ann", "ann: bye"),  # nor ann anything more
]


@pytest.fixture
async def broker(nursery: trio.Nursery) -> BrokerAddress:
    """A broker on free loopback ports that passes the query string on (for ``?token=``)."""
    config = BrokerConfig(
        ws_host="127.0.0.1",
        ws_port=0,
        tcp_port=0,
        heartbeat_interval=None,
        pass_query_string=True,
    )
    address: BrokerAddress = await nursery.start(serve_broker, config)
    return address


async def wait_for_backend(broker: BrokerAddress) -> None:
    """Return once the backend is up; it must have made one connection only (a throwaway
    probe connection would be picked for connection requests, and refuse them with 503)."""
    await broker.hub.wait_backends(1)
    assert broker.statistics().backends.connected == 1


def bearer(token: str) -> list[tuple[str, str]]:
    """The headers that carry *token*."""
    return [("Authorization", f"Bearer {token}")]


class Clients:
    """WebSocket clients of the broker, known by name, and a transcript of what they saw."""

    def __init__(self, nursery: trio.Nursery, port: int) -> None:
        self.nursery = nursery
        self.port = port
        self.sockets: dict[str, WebSocketConnection] = {}
        self.transcript: list[tuple[str, str]] = []

    async def join(self, name: str, target: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Connect *name* to *target*, or record its refusal."""
        try:
            ws = await open_client(self.nursery, self.port, target, headers)
        except ConnectionRejected as exc:
            self.transcript.append((name, f"refused {exc.status_code}"))
        else:
            self.sockets[name] = ws

    async def refused(
        self, name: str, target: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Connect *name* to *target*, which the backend refuses: the broker upgrades and closes
        at once; record the close code."""
        ws = await open_client(self.nursery, self.port, target, headers)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        self.transcript.append((name, f"refused {closed.value.reason.code}"))

    async def hear(self, name: str, count: int = 1) -> None:
        """Record the next *count* messages *name* receives."""
        for _ in range(count):
            self.transcript.append((name, str(await self.sockets[name].get_message())))

    async def say(self, name: str, text: str) -> None:
        """Send *text* as *name*."""
        await self.sockets[name].send_message(text)

    async def leave(self, name: str) -> None:
        """Close *name*'s socket."""
        await self.sockets.pop(name).aclose()


async def chat_scenario(clients: Clients) -> None:
    """Refusals, joins by header and by query string, two rooms, a broadcast and a leave.

    Each step waits for what the previous one caused, so the transcript's order is fixed.
    """
    await clients.refused("eve", "/ws/lobby", bearer("t-eve"))
    await clients.refused("joe", "/ws/lobby")
    await clients.refused("max", "/ws/lobby?token=t-max")
    await clients.join("ann", "/ws/lobby", bearer("t-ann"))
    await clients.hear("ann", 2)
    await clients.join("bob", "/ws/lobby?token=t-bob")
    await clients.hear("bob", 2)
    await clients.hear("ann")
    await clients.join("cat", "/ws/garden", bearer("t-cat"))
    await clients.hear("cat", 2)
    await clients.say("ann", "hi")
    await clients.hear("ann")
    await clients.hear("bob")
    await clients.say("bob", "/all dinner")
    for name in ("ann", "bob", "cat"):
        await clients.hear(name)
    await clients.leave("bob")
    await clients.hear("ann")
    # A client's messages arrive in order: its next one being the echo of its own message
    # shows that nothing else was sent to it.
    await clients.say("cat", "ping")
    await clients.hear("cat")
    await clients.say("ann", "bye")
    await clients.hear("ann")


@pytest.mark.parametrize("backend", [*COMMANDS, EMBEDDED])
async def test_both_backends_hold_the_same_chat(
    backend: str, broker: BrokerAddress, nursery: trio.Nursery
) -> None:
    """The pystrands backend and its strands-trio port, however run, refuse the same tokens
    and send the same messages to the same clients."""
    clients = Clients(nursery, broker.ws_port)
    with trio.fail_after(20):
        process = None
        if backend == EMBEDDED:
            nursery.start_soon(migrate_trio.main, "127.0.0.1", broker.tcp_port)
        else:
            command = [*COMMANDS[backend], str(broker.tcp_port)]
            process = await nursery.start(
                partial(trio.run_process, command, check=False, cwd=EXAMPLES)
            )
        try:
            await wait_for_backend(broker)
            await chat_scenario(clients)
        finally:
            if process is not None:
                await reap(process)
    assert clients.transcript == EXPECTED


async def test_with_middleware_refuses_and_rate_limits(
    broker: BrokerAddress, nursery: trio.Nursery
) -> None:
    """The port with Auth and RateLimit in front still refuses unknown tokens and greets known
    ones, and answers a client's messages past its burst of 5 with rate_limited errors."""
    clients = Clients(nursery, broker.ws_port)
    with trio.fail_after(10):
        await nursery.start(migrate_trio.with_middleware("127.0.0.1", broker.tcp_port).run)
        await clients.refused("eve", "/ws/lobby", bearer("t-eve"))
        await clients.join("ann", "/ws/lobby?token=t-ann")
        await clients.hear("ann", 2)
        for n in range(10):
            await clients.say("ann", f"m{n}")
        await clients.hear("ann", 10)
    assert clients.transcript[:3] == [
        ("eve", "refused 4401"),  # the Auth middleware: unauthenticated
        ("ann", "welcome to lobby, ann"),
        ("ann", "ann joined"),
    ]
    replies = [text for _, text in clients.transcript[3:]]
    assert replies[:5] == [f"ann: m{n}" for n in range(5)]  # the burst
    refused = [json.loads(text) for text in replies[5:] if text.startswith("{")]
    assert refused  # 10 messages in far less than 5 s: some are over the rate
    assert {error["code"] for error in refused} == {"rate_limited"}
    assert all(text.startswith(("ann: m", "{")) for text in replies[5:])


def test_pystrands_example_reads_both_shapes_of_metadata() -> None:
    """The pystrands example finds the name in the reference broker's nested metadata as in
    strands-trio's broker's flat one (the strands-trio port needs no such helper)."""
    from pystrands.context import Context

    flat = Context(client_id="c1", room_id="lobby", metadata={"name": "ann"})
    nested = Context(
        client_id="c1",
        room_id="lobby",
        metadata={
            "accepted": True,
            "client_id": "c1",
            "room_id": "lobby",
            "metadata": flat.metadata,
        },
    )
    assert name_of(flat) == name_of(nested) == "ann"
