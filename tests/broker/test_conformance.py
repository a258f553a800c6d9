"""One table of scenarios, run against both brokers a backend may meet in this project:
``FakeBroker`` (in memory, ``reference=False``) and the real broker (``serve_broker`` on
loopback with independent WebSocket clients). Each scenario is written once against a small
driver interface, and parametrized over the two, so a drift between them fails."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import attrs
import pytest
import trio
import trio.testing

from strands_trio import ClientConfig, ConnectionRequestContext, Context, StrandsClient
from strands_trio.broker import BrokerConfig, Hub, serve_broker
from strands_trio.protocol import NO_BACKEND
from strands_trio.testing import ConnectionRejected, FakeWebSocket, open_fake_broker

from .._wsclient import Closed, Refused, WSClient

#: A bound on every test; what each scenario waits for takes a fraction of it.
DEADLINE = 10
REMOTE_ADDR = re.compile(r"127\.0\.0\.1:\d+")


# ---------------------------------------------------------------------- the driver interface


@attrs.frozen
class Rejected:
    """How a handshake was refused: an HTTP ``status`` before the upgrade, or (``status`` is
    ``None``) upgraded and closed at once with close ``code`` and ``reason``."""

    status: int | None
    code: int | None = None
    reason: str | None = None


class Client(Protocol):
    """A WebSocket client of either broker."""

    async def send(self, text: str) -> None: ...

    async def receive(self) -> str:
        """The next message; raises :class:`Ended` once the broker closed it."""
        ...

    async def close(self) -> None:
        """Leave, as a client closing its WebSocket does."""
        ...


class Ended(Exception):
    """The broker closed a client with ``code`` and ``reason``."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


class Driver(Protocol):
    """A broker under test: its hub, how a backend reaches it, how a client connects."""

    name: str
    hub: Hub

    def backend_arguments(self) -> dict[str, Any]:
        """What a StrandsClient needs to reach this broker (host/port or connect=)."""
        ...

    async def connect(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> Client:
        """A client of *path* with extra handshake *headers*, accepted."""
        ...

    async def refusal(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> Rejected:
        """How a client of *path* with extra handshake *headers* is refused (it must be)."""
        ...


class FakeClient:
    def __init__(self, ws: FakeWebSocket) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def receive(self) -> str:
        try:
            return await self.ws.receive()
        except trio.EndOfChannel:
            raise Ended(self.ws.close_code, self.ws.close_reason) from None

    async def close(self) -> None:
        await self.ws.close()


class FakeDriver:
    """FakeBroker in strands-trio mode (reference=False)."""

    name = "fake"

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.hub: Hub = broker.hub

    def backend_arguments(self) -> dict[str, Any]:
        return {"connect": self.broker.open_backend_stream}

    async def connect(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> Client:
        given: dict[str, list[str]] = {}
        for name, value in headers:
            given.setdefault(name, []).append(value)
        return FakeClient(await self.broker.connect(path, headers=given))

    async def refusal(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> Rejected:
        with pytest.raises(ConnectionRejected) as refused:
            await self.connect(path, headers)
        exc = refused.value
        return Rejected(exc.status, exc.close_code, None if exc.status else str(exc))


class RealClient:
    def __init__(self, ws: WSClient) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def receive(self) -> str:
        try:
            return await self.ws.receive()
        except Closed as closed:
            ended = closed
        assert ended.framed, "closed without a close frame (1006)"
        raise Ended(ended.code, ended.reason)

    async def close(self) -> None:
        await self.ws.close()


class RealDriver:
    """serve_broker on loopback, with websockets' sans-IO client over Trio streams."""

    name = "real"

    def __init__(self, address: Any, clients: list[WSClient]) -> None:
        self.address = address
        self.hub: Hub = address.hub
        self._clients = clients

    def backend_arguments(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.address.tcp_port}

    async def connect(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> Client:
        ws = await WSClient.connect(self.address.ws_port, path, headers)
        self._clients.append(ws)
        return RealClient(ws)

    async def refusal(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> Rejected:
        try:
            ws = await WSClient.connect(self.address.ws_port, path, headers)
        except Refused as exc:
            return Rejected(exc.status)
        async with ws.stream:
            closed, discarded = await ws.wait_closed()
        assert closed.framed
        assert discarded == 0
        return Rejected(None, closed.code, closed.reason)


@pytest.fixture(params=["fake", "real"])
async def broker(request: pytest.FixtureRequest, nursery: trio.Nursery) -> AsyncIterator[Driver]:
    """Each scenario runs against FakeBroker and against the real broker."""
    if request.param == "fake":
        async with open_fake_broker(reference=False, heartbeat_interval=None) as fake:
            yield FakeDriver(fake)
        return
    config = BrokerConfig(
        ws_host="127.0.0.1", ws_port=0, tcp_port=0, heartbeat_interval=None, shutdown_timeout=2.0
    )
    address = await nursery.start(serve_broker, config)
    clients: list[WSClient] = []
    yield RealDriver(address, clients)
    for ws in clients:  # sockets the scenario left open
        await ws.aclose()


# ---------------------------------------------------------------------- the backend


class Backend(StrandsClient):
    """Records every callback. Admits a client only with an ``X-User`` header (its id), in the
    room of ``X-Room`` if given (else the default, the url), with metadata ``{"user": id}``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(config=ClientConfig(heartbeat_interval=None, reconnect_jitter=0), **kwargs)
        self.calls: list[tuple[Any, ...]] = []
        self.requests: list[ConnectionRequestContext] = []
        self._changed = trio.Event()

    def record(self, *call: Any) -> None:
        self.calls.append(call)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once *predicate* holds (checked after every callback)."""
        while not predicate():
            await self._changed.wait()

    def of_kind(self, kind: str) -> list[tuple[Any, ...]]:
        return [call[1:] for call in self.calls if call[0] == kind]

    async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
        self.requests.append(request)
        self.record("request", request.url)
        user = request.header("x-user")
        if user is None:
            return False
        request.context.client_id = user
        request.context.room_id = request.header("x-room") or request.context.room_id
        request.context.metadata = {"user": user}
        return True

    async def on_new_connection(self, context: Context) -> None:
        self.record("connected", context.client_id, context.room_id, context.metadata)

    async def on_message(self, message: str, context: Context) -> None:
        self.record("message", context.client_id, message, context.metadata)

    async def on_disconnect(self, context: Context) -> None:
        self.record("disconnected", context.client_id, context.room_id, context.metadata)

    async def on_error(self, error: str, context: Context | ConnectionRequestContext) -> None:
        self.record("error", error, context)


async def start_backend(
    nursery: trio.Nursery, broker: Driver, cls: type[Backend] = Backend
) -> tuple[Backend, trio.CancelScope]:
    """A *cls* connected to *broker* and ready at its hub; cancel the scope to stop it."""
    backend = cls(**broker.backend_arguments())
    scope = trio.CancelScope()

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await backend.run(task_status=task_status)

    ready = broker.hub.backend_count + 1
    await nursery.start(run)
    await broker.hub.wait_backends(ready)
    return backend, scope


async def stop_backend(broker: Driver, scope: trio.CancelScope) -> None:
    """Stop a backend and wait until the broker has seen it go."""
    scope.cancel()
    await broker.hub.wait_backends(0)


async def join(
    broker: Driver, user: str, room: str | None = None, path: str = "/ws/chat"
) -> Client:
    headers = [("X-User", user)] + ([("X-Room", room)] if room else [])
    return await broker.connect(path, headers)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait for a condition on the broker's figures, which announce no change: let every task
    run until all are blocked, check, and again while bytes are still on their way (the
    caller's deadline bounds it)."""
    while not predicate():
        await trio.testing.wait_all_tasks_blocked(0.005)


# ---------------------------------------------------------------------- the scenarios


async def test_accept_and_reject(broker: Driver, nursery: trio.Nursery) -> None:
    """A client the backend rejects is upgraded and closed with 4403 and the default reason,
    and never connected; one it accepts is connected and announced to it."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        refused = await broker.refusal("/ws/chat", [("X-Other", "x")])
        assert refused == Rejected(None, 4403, "refused by the backend")
        await join(broker, "ann")
        await backend.wait_for(lambda: bool(backend.of_kind("connected")))
    assert backend.of_kind("request") == [("/ws/chat",), ("/ws/chat",)]
    assert backend.of_kind("connected") == [("ann", "/ws/chat", {"user": "ann"})]
    assert broker.hub.statistics().connections == 1
    assert broker.hub.statistics().rejected == 1


async def test_no_backend_refuses_503_and_queues_a_request_shaped_error(
    broker: Driver, nursery: trio.Nursery
) -> None:
    """With no backend, a handshake is refused with 503 before the upgrade, and the next
    backend to connect gets an error event whose context is the request (headers, url, query, remote
    address)."""
    with trio.fail_after(DEADLINE):
        refused = await broker.refusal("/ws/lobby?x=1", [("X-User", "ann")])
        assert refused == Rejected(503)  # transient: before the upgrade, so a client retries
        assert broker.hub.statistics().queued == 1
        backend, _ = await start_backend(nursery, broker)
        await backend.wait_for(lambda: bool(backend.of_kind("error")))
    ((error, context),) = backend.of_kind("error")
    assert error == NO_BACKEND
    assert isinstance(context, ConnectionRequestContext)
    assert (context.url, context.query) == ("/ws/lobby", "x=1")
    assert context.headers["X-User"] == ["ann"]
    assert REMOTE_ADDR.fullmatch(context.remote_addr)
    assert context.accepted is False
    assert context.context.client_id == ""
    assert backend.of_kind("request") == []


async def test_default_room_and_metadata_reach_every_handler(
    broker: Driver, nursery: trio.Nursery
) -> None:
    """A client placed without a room is in the room of its url, and every later event
    carries the metadata the backend set (not a nested copy)."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        ann = await join(broker, "ann", path="/ws/general")
        await ann.send("hello")
        await backend.wait_for(lambda: bool(backend.of_kind("message")))
        await ann.close()
        await backend.wait_for(lambda: bool(backend.of_kind("disconnected")))
    meta = {"user": "ann"}
    assert backend.of_kind("connected") == [("ann", "/ws/general", meta)]
    assert backend.of_kind("message") == [("ann", "hello", meta)]
    assert backend.of_kind("disconnected") == [("ann", "/ws/general", meta)]


async def test_private_message_reaches_only_its_client(
    broker: Driver, nursery: trio.Nursery
) -> None:
    """message_to_connection reaches the named client and no other."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        ann = await join(broker, "ann", "r")
        bob = await join(broker, "bob", "r")
        await backend.send_private_message("bob", "psst")
        await backend.send_private_message("ann", "sync")
        assert await bob.receive() == "psst"
        assert await ann.receive() == "sync"  # not "psst" first


async def test_room_message_reaches_only_that_room(broker: Driver, nursery: trio.Nursery) -> None:
    """message_to_room reaches every client of the room and nobody outside it."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        ann = await join(broker, "ann", "a")
        bob = await join(broker, "bob", "a")
        cat = await join(broker, "cat", "b")
        await backend.send_room_message("a", "hi a")
        await backend.send_private_message("cat", "sync")
        assert await ann.receive() == "hi a"
        assert await bob.receive() == "hi a"
        assert await cat.receive() == "sync"  # not "hi a" first


async def test_broadcast_reaches_everyone(broker: Driver, nursery: trio.Nursery) -> None:
    """broadcast reaches every client, whatever its room."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        clients = [await join(broker, name, room) for name, room in [("a", "x"), ("b", "y")]]
        await backend.broadcast_message("all of you")
        for ws in clients:
            assert await ws.receive() == "all of you"


async def test_close_connection_closes_with_its_code(broker: Driver, nursery: trio.Nursery) -> None:
    """close_connection closes the client with the backend's code and reason, after the
    messages sent before it, and the backend gets disconnected."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        ann = await join(broker, "ann", "r")
        await backend.send_private_message("ann", "bye")
        await backend.close_connection("ann", 4001, "kicked")
        assert await ann.receive() == "bye"
        with pytest.raises(Ended) as ended:
            await ann.receive()
        assert (ended.value.code, ended.value.reason) == (4001, "kicked")
        await backend.wait_for(lambda: bool(backend.of_kind("disconnected")))
    assert backend.of_kind("disconnected") == [("ann", "r", {"user": "ann"})]
    assert broker.hub.statistics().connections == 0


async def test_query_string_is_stripped_from_url(broker: Driver, nursery: trio.Nursery) -> None:
    """A request's url is its path, percent-decoded, without the query string, which comes
    raw in ``query``; the default room is the path, never the query (a token there)."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        await broker.connect("/ws/ro%20om?token=s3cr%2Bt&x=1&x=2", [("X-User", "ann")])
        await backend.wait_for(lambda: bool(backend.of_kind("connected")))
    (request,) = backend.requests
    assert (request.url, request.path, request.query) == (
        "/ws/ro om",
        "/ws/ro om",
        "token=s3cr%2Bt&x=1&x=2",
    )
    assert request.param("token") == "s3cr+t"
    assert request.query_params == {"token": ["s3cr+t"], "x": ["1", "2"]}
    assert backend.of_kind("request") == [("/ws/ro om",)]
    assert backend.of_kind("connected") == [("ann", "/ws/ro om", {"user": "ann"})]


class Refuser(Backend):
    """Refuses everyone, with code 409 and a reason (a long one if the query has ``long``)."""

    async def on_connection_request(self, request: ConnectionRequestContext) -> bool:
        if request.param("long") is not None:
            return request.refuse("é" * 100, code=409)
        return request.refuse("name taken", code=409)


async def test_a_backend_refusal_says_why(broker: Driver, nursery: trio.Nursery) -> None:
    """A backend's ``request.refuse(reason, code=...)`` reaches the client as close code
    4000 + code and the reason (cut to the 123 bytes a close frame holds, whole characters);
    nothing is connected."""
    await start_backend(nursery, broker, Refuser)
    with trio.fail_after(DEADLINE):
        assert await broker.refusal("/ws/chat") == Rejected(None, 4409, "name taken")
        assert await broker.refusal("/ws/chat?long") == Rejected(None, 4409, "é" * 61)
    assert broker.hub.statistics().rejected == 2
    assert broker.hub.statistics().connections == 0


async def test_headers_are_shaped_as_the_reference_shapes_them(
    broker: Driver, nursery: trio.Nursery
) -> None:
    """A backend sees header names in Go's canonical form, repeated headers as lists in
    order, no Host, and the client's address as ip:port."""
    backend, _ = await start_backend(nursery, broker)
    headers = [("x-user", "ann"), ("x-custom-HEADER", "v"), ("X-Multi", "1"), ("X-Multi", "2")]
    with trio.fail_after(DEADLINE):
        await broker.connect("/ws/chat", headers)
    (request,) = backend.requests
    shaped = dict(request.headers)
    key = shaped.pop("Sec-Websocket-Key")
    assert len(key) == 1
    assert len(key[0]) == 24  # base64 of 16 bytes
    assert shaped == {
        "Upgrade": ["websocket"],
        "Connection": ["Upgrade"],
        "Sec-Websocket-Version": ["13"],
        "X-User": ["ann"],
        "X-Custom-Header": ["v"],
        "X-Multi": ["1", "2"],
    }
    assert REMOTE_ADDR.fullmatch(request.remote_addr)


async def test_disconnected_on_client_close(broker: Driver, nursery: trio.Nursery) -> None:
    """A client that closes its WebSocket is forgotten, and the backend gets disconnected
    with its context."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        ann = await join(broker, "ann", "r")
        bob = await join(broker, "bob", "r")
        await ann.close()
        await backend.wait_for(lambda: bool(backend.of_kind("disconnected")))
        await backend.send_room_message("r", "who is left")
        assert await bob.receive() == "who is left"
    assert backend.of_kind("disconnected") == [("ann", "r", {"user": "ann"})]
    assert broker.hub.statistics().connections == 1


async def test_a_joined_room_delivers_once_and_leaving_stops_it(
    broker: Driver, nursery: trio.Nursery
) -> None:
    """join_room puts a client in a second room: its messages reach it once, whichever
    rooms it is in; leave_room stops them; its connect-time room stays."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        ann = await join(broker, "ann", "home")
        bob = await join(broker, "bob", "games")
        await backend.join_room("ann", "games")
        await backend.join_room("ann", "games")
        await backend.send_room_message("games", "to games")
        await backend.send_room_message("home", "to home")
        assert await ann.receive() == "to games"
        assert await ann.receive() == "to home"  # "to games" came once
        assert await bob.receive() == "to games"
        await backend.leave_room("ann", "games")
        await backend.leave_room("ann", "home")  # its connect-time room: ignored
        await backend.send_room_message("games", "games again")
        await backend.send_room_message("home", "home again")
        assert await bob.receive() == "games again"
        assert await ann.receive() == "home again"
    stats = broker.hub.statistics()
    assert (stats.memberships, stats.room_joins, stats.room_leaves, stats.room_noops) == (
        2, 1, 1, 2,
    )  # fmt: skip


async def test_disconnect_leaves_every_room_even_racing_a_join(
    broker: Driver, nursery: trio.Nursery
) -> None:
    """A client that leaves is taken out of every room it joined; a join sent while it
    leaves leaves no ghost membership behind, whichever arrives first."""
    backend, _ = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        ann = await join(broker, "ann", "home")
        bob = await join(broker, "bob", "b")
        await backend.join_room("ann", "x")
        await backend.join_room("ann", "b")
        await wait_until(lambda: broker.hub.statistics().memberships == 4)
        await ann.close()
        await backend.join_room("ann", "y")  # races the disconnection
        await backend.wait_for(lambda: bool(backend.of_kind("disconnected")))
        await backend.join_room("ann", "z")  # after it: an unknown client
        await backend.send_room_message("b", "sync")
        assert await bob.receive() == "sync"
        await wait_until(lambda: broker.hub.statistics().unknown_targets >= 1)
    stats = broker.hub.statistics()
    assert (stats.memberships, stats.rooms, stats.connections) == (1, 1, 1)


async def test_events_wait_for_a_backend_and_arrive_in_order(
    broker: Driver, nursery: trio.Nursery
) -> None:
    """Events of a connected client while no backend is connected are queued, then flushed
    in order to the next backend that connects."""
    first, scope = await start_backend(nursery, broker)
    with trio.fail_after(DEADLINE):
        ann = await join(broker, "ann", "r")
        await first.wait_for(lambda: bool(first.of_kind("connected")))
        await stop_backend(broker, scope)
        for text in ("one", "two", "three"):
            await ann.send(text)
        await ann.close()
        await wait_until(lambda: broker.hub.statistics().queued == 4)
        second, _ = await start_backend(nursery, broker)
        await second.wait_for(lambda: bool(second.of_kind("disconnected")))
    meta = {"user": "ann"}
    assert second.calls == [
        ("message", "ann", "one", meta),
        ("message", "ann", "two", meta),
        ("message", "ann", "three", meta),
        ("disconnected", "ann", "r", meta),
    ]
    assert broker.hub.statistics().queued == 0
