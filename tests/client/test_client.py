"""StrandsClient against the in-memory fake broker: events reach handlers as the reference
broker's docs promise, and the client survives handlers, brokers and shutdowns that go wrong."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import uuid
from collections import defaultdict

import attrs
import pytest
import trio
import trio.testing

from strands_trio import (
    BrokerConnectionError,
    ClientConfig,
    ConnectionRequestContext,
    Context,
    NotConnectedError,
    StrandsApp,
    StrandsClient,
)
from strands_trio.protocol import Authenticate, Broadcast, CloseConnection
from strands_trio.testing import ConnectionRejected, FakeBroker, open_fake_broker

from ..conftest import EXACT, Recording


async def test_start_returns_once_connected(broker: FakeBroker, nursery: trio.Nursery) -> None:
    """nursery.start(client.run) returns when the connection is up, not before."""
    client = Recording(broker)
    assert not client.is_connected
    await nursery.start(client.run)
    assert client.is_connected
    assert broker.backend_count == 1
    await client.wait_connected()  # returns at once when connected


async def test_a_whole_conversation(broker: FakeBroker) -> None:
    """Request, connection, message, reply to the room and disconnection reach the handlers,
    with the metadata the backend set (the broker nests it, WIRE.md quirk 1) and the url as
    the default room (quirk 7)."""
    async with Recording(broker).connected() as client:
        alice = await broker.connect(
            "/ws/chat", headers={"X-User": "alice"}, remote_addr="10.0.0.1:4000"
        )
        assert (alice.client_id, alice.room_id, alice.metadata) == (
            "alice",
            "/ws/chat",
            {"user": "alice"},
        )
        await alice.send("hello")
        assert await alice.receive() == "alice: hello"
        await alice.close()
        await trio.testing.wait_all_tasks_blocked()
        assert client.calls == [
            ("request", "/ws/chat", "10.0.0.1:4000"),
            ("connected", "alice", {"user": "alice"}),
            ("message", "alice", "hello", {"user": "alice"}),
            ("disconnected", "alice"),
        ]
        assert broker.room_messages("/ws/chat") == ["alice: hello"]
        stats = client.statistics()
        assert (stats.connected, stats.connections, stats.requests_accepted) == (True, 1, 1)
        assert (stats.events_received, stats.frames_sent, stats.handler_errors) == (4, 2, 0)


async def test_metadata_from_a_broker_that_does_not_nest() -> None:
    """Against a broker that sends the backend's own metadata, handlers see the same."""
    async with (
        open_fake_broker(reference=False, heartbeat_interval=None) as broker,
        Recording(broker).connected() as client,
    ):
        alice = await broker.connect(headers={"X-User": "alice"})
        await alice.send("hi")
        await alice.receive()
        assert client.calls[-1] == ("message", "alice", "hi", {"user": "alice"})


async def test_default_room_and_client_id(broker: FakeBroker) -> None:
    """A handler that only returns True gets a fresh UUID4 client id and the url as room."""

    class AcceptAll(StrandsClient):
        pass

    async with AcceptAll(connect=broker.open_backend_stream).connected():
        ws = await broker.connect("/ws/lobby")
        assert ws.room_id == "/ws/lobby"
        assert uuid.UUID(ws.client_id).version == 4


class Gatekeeper(StrandsClient):
    """Answers connection requests in the way the header X-Mode says."""

    async def on_connection_request(self, request: ConnectionRequestContext) -> bool | None:
        mode = request.header("x-mode")
        if mode == "false":
            return False
        if mode == "flag":
            request.accepted = False
            return None
        if mode == "raise":
            raise RuntimeError("database down")
        if mode == "slow":
            await trio.sleep(3600)
        if mode == "bad-metadata":
            request.context.metadata = ["not", "a", "dict"]  # type: ignore[assignment]
        if mode == "no-room":
            request.context.room_id = ""
        if mode == "not-a-context":
            request.context = {"room_id": "r"}  # type: ignore[assignment]
        return True


@pytest.mark.parametrize(
    "mode", ["false", "flag", "raise", "slow", "bad-metadata", "no-room", "not-a-context"]
)
async def test_every_way_to_reject(
    broker: FakeBroker,
    autojump_clock: trio.testing.MockClock,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """False, accepted=False, an exception, a timeout and a context the broker could not use
    all answer accepted:false; the client keeps serving the next request."""
    config = ClientConfig(request_timeout=10)
    async with Gatekeeper(connect=broker.open_backend_stream, config=config).connected() as client:
        start = trio.current_time()
        with pytest.raises(ConnectionRejected, match="refused by the backend"):
            await broker.connect(headers={"X-Mode": mode})
        assert trio.current_time() - start == (10 if mode == "slow" else 0)
        await broker.connect(headers={"X-Mode": "ok"})  # still serving
        stats = client.statistics()
        assert (stats.requests_rejected, stats.requests_accepted) == (1, 1)
        assert stats.requests_timed_out == (mode == "slow")
        assert stats.handler_errors == (
            mode in ("raise", "bad-metadata", "no-room", "not-a-context")
        )
    if mode == "raise":
        assert "on_connection_request raised" in caplog.text
        assert "database down" in caplog.text


async def test_quirk_2_error_for_a_request_that_found_no_backend(broker: FakeBroker) -> None:
    """A client arriving while no backend is connected is refused; the backend that connects
    next gets on_error with that request as a ConnectionRequestContext."""
    with pytest.raises(ConnectionRejected, match="no backend"):
        await broker.connect("/ws/chat", headers={"Authorization": "Bearer early"})
    async with Recording(broker).connected() as client:
        await trio.testing.wait_all_tasks_blocked()
        [(kind, error, context)] = client.calls
        assert (kind, error) == ("error", "no backend available to handle connection request")
        assert isinstance(context, ConnectionRequestContext)
        assert context.header("authorization") == "Bearer early"
        assert context.url == "/ws/chat"
        assert context.accepted is False


@pytest.mark.parametrize("kind", ["client", "app"])
async def test_default_on_error_logs_a_refusal_without_backend_as_info(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """The default on_error logs the no-backend report (one per page that retried during
    an outage) at INFO, with the client's path; other errors stay warnings."""
    caplog.set_level(logging.INFO, logger="strands_trio")
    with pytest.raises(ConnectionRejected, match="no backend"):
        await broker.connect("/ws/chat")
    backend = StrandsClient(connect=broker.open_backend_stream) if kind == "client" else None
    async with (
        backend.connected()
        if backend
        else StrandsApp().connected(connect=broker.open_backend_stream)
    ):
        await trio.testing.wait_all_tasks_blocked()
    backend_records = [r for r in caplog.records if not r.name.startswith("strands_trio.broker")]
    [refused] = [r for r in backend_records if "no backend was connected" in r.getMessage()]
    assert refused.levelno == logging.INFO
    assert "/ws/chat" in refused.getMessage()
    assert not [r for r in backend_records if r.levelno >= logging.WARNING]
    await StrandsClient().on_error("disk on fire", Context(client_id="c", room_id="r"))
    [other] = [r for r in caplog.records if "disk on fire" in r.getMessage()]
    assert other.levelno == logging.WARNING


async def test_quirk_3_queued_events_of_clients_never_seen(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Events queued while no backend was connected are delivered, in order, to the backend
    that connects next, even for clients it never accepted."""
    async with Recording(broker).connected() as first:
        alice = await broker.connect(headers={"X-User": "alice"})
    assert first.calls[-1][0] == "connected"
    await alice.send("sent while no backend")
    await alice.close()
    async with Recording(broker).connected() as second:
        await trio.testing.wait_all_tasks_blocked()
        assert second.calls == [
            ("message", "alice", "sent while no backend", {"user": "alice"}),
            ("disconnected", "alice"),
        ]


class Faulty(StrandsClient):
    """Every callback raises once, then records."""

    def __init__(self, broker: FakeBroker) -> None:
        super().__init__(connect=broker.open_backend_stream)
        self.failed: set[str] = set()
        self.calls: list[str] = []

    def fail_once(self, name: str) -> None:
        if name not in self.failed:
            self.failed.add(name)
            raise RuntimeError(f"{name} failed")
        self.calls.append(name)

    async def on_new_connection(self, context: Context) -> None:
        self.fail_once("on_new_connection")

    async def on_message(self, message: str, context: Context) -> None:
        self.fail_once("on_message")

    async def on_disconnect(self, context: Context) -> None:
        self.fail_once("on_disconnect")

    async def on_error(self, error: str, context: Context | ConnectionRequestContext) -> None:
        self.fail_once("on_error")


async def test_handler_exception_in_each_callback(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback that raises is logged with its event and client and counted; the client
    goes on handling the next events, including the same callback's."""
    for _ in range(2):
        with pytest.raises(ConnectionRejected):
            await broker.connect()  # no backend yet: two queued errors
    client = Faulty(broker)
    async with client.connected():
        for _ in range(2):
            ws = await broker.connect()
            await ws.send("m1")
            await ws.send("m2")
            await ws.close()
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(client.calls) == sorted(
        ["on_error", "on_new_connection", "on_message", "on_message", "on_message", "on_disconnect"]
    )
    assert client.statistics().handler_errors == 4
    for event in ("new_connection", "new_message", "disconnected", "error"):
        assert f"handler for {event} raised" in caplog.text


async def test_slow_handler_does_not_block_other_clients(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """While alice's message handler sleeps for an hour, bob's is handled at once."""

    class Sleepy(Recording):
        async def on_message(self, message: str, context: Context) -> None:
            if context.client_id == "alice":
                await trio.sleep(3600)
            await super().on_message(message, context)

    async with Sleepy(broker).connected() as client:
        alice = await broker.connect(headers={"X-User": "alice"})
        bob = await broker.connect(headers={"X-User": "bob"})
        await alice.send("slow")
        await bob.send("fast")
        assert await bob.receive() == "bob: fast"
        assert trio.current_time() == 0
        assert await alice.receive() == "bob: fast"  # same room
        assert await alice.receive() == "alice: slow"
        assert trio.current_time() == 3600
        assert client.statistics().handlers_running == 0


async def test_per_client_order_under_concurrency(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Messages of each client are handled one at a time and in order, while handlers of
    different clients with random durations interleave."""
    rng = random.Random(5)
    handled: defaultdict[str, list[int]] = defaultdict(list)
    busy: set[str] = set()
    all_handled = trio.Event()

    class Jittery(Recording):
        async def on_message(self, message: str, context: Context) -> None:
            assert context.client_id not in busy
            busy.add(context.client_id)
            await trio.sleep(rng.random())
            handled[context.client_id].append(int(message))
            busy.discard(context.client_id)
            if sum(map(len, handled.values())) == 150:
                all_handled.set()

    async with Jittery(broker).connected() as client:
        sockets = [await broker.connect(headers={"X-User": f"user{n}"}) for n in range(5)]
        for number in range(30):
            for ws in sockets:
                await ws.send(str(number))
        await all_handled.wait()
        assert client.statistics().events_pending == 0
    assert dict(handled) == {f"user{n}": list(range(30)) for n in range(5)}


async def test_send_while_disconnected(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Without a connection, sends raise NotConnectedError (counted); with wait=True they
    wait for the reconnection and then go out."""
    async with Recording(broker).connected() as client:
        broker.refuse_backends = True
        await broker.drop_backends()
        await trio.testing.wait_all_tasks_blocked()
        assert not client.is_connected
        with pytest.raises(NotConnectedError, match="wait=True"):
            await client.broadcast_message("lost")
        assert client.statistics().sends_refused == 1
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: client.send_room_message("lobby", "kept", wait=True))
            await trio.sleep(5)
            assert broker.room_messages("lobby") == []
            broker.refuse_backends = False
        await trio.testing.wait_all_tasks_blocked()
        assert broker.room_messages("lobby") == ["kept"]


async def test_broker_closes_the_socket(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """When the broker closes the connection, the client connects again after the first
    backoff delay and serves as before."""
    async with Recording(broker).connected() as client:
        await trio.sleep(10)
        await broker.drop_backends()
        await broker.wait_backends(1)
        assert broker.connection_attempts == [0, 11]
        ws = await broker.connect(headers={"X-User": "carol"})
        await ws.send("back")
        assert await ws.receive() == "carol: back"
        assert client.statistics().connections == 2


async def test_broker_down_then_back_with_backoff(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """While the broker refuses connections, attempts are spaced 1, 2, 4, 8, 16, 30, 30 s
    apart (capped); the first one after it comes back succeeds, and the delays start over."""
    async with Recording(broker).connected() as client:
        broker.refuse_backends = True
        await broker.drop_backends()
        await trio.sleep(100)
        broker.refuse_backends = False
        await broker.wait_backends(1)
        attempts = broker.connection_attempts
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps == [1, 2, 4, 8, 16, 30, 30, 30]
        assert client.statistics().connect_failures == 7
        await broker.drop_backends()
        await broker.wait_backends(1)
        assert broker.connection_attempts[-1] - broker.connection_attempts[-2] == 1


async def test_dead_broker_is_detected(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """A broker that sends nothing, not even heartbeats, for 3 heartbeat intervals (45 s) is
    dropped and the connection made again."""
    async with Recording(broker).connected():
        await broker.wait_backends(1)
        await trio.sleep(100)
        assert broker.connection_attempts == [0, 46, 92]


async def test_heartbeats_keep_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    """A broker sending its heartbeat every 15 s is never taken for dead; heartbeats are
    counted and reach no handler."""
    async with (
        open_fake_broker(heartbeat_interval=15) as broker,
        Recording(broker).connected() as client,
    ):
        await trio.sleep(310)
        assert broker.connection_attempts == [0]
        assert client.statistics().heartbeats == 20
        assert client.calls == []


async def test_graceful_shutdown_lets_handlers_finish(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Cancelling the client lets a running handler finish (up to shutdown_timeout) and its
    reply reach the broker before the connection closes."""

    class Slow(Recording):
        async def on_message(self, message: str, context: Context) -> None:
            self.message_arrived.set()
            await trio.sleep(2)
            await self.send_room_message("done", message)

    client = Slow(broker)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        ws = await broker.connect(headers={"X-User": "dave"})
        await ws.send("in flight")
        await client.message_arrived.wait()
        nursery.cancel_scope.cancel()
    assert trio.current_time() == 2
    assert broker.room_messages("done") == ["in flight"]
    assert not client.is_connected
    await broker.wait_backends(0)


async def test_shutdown_without_handlers_is_immediate(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """With nothing in flight, cancellation stops the client at once."""
    with trio.CancelScope() as scope:
        async with Recording(broker).connected():
            scope.cancel()
            await trio.sleep(1)
    assert trio.current_time() == 0
    await broker.wait_backends(0)


async def test_shutdown_deadline_cancels_stuck_handlers(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Handlers still running at shutdown_timeout are cancelled; queued events that never
    ran are counted and logged."""
    cancelled = []

    class Stuck(Recording):
        async def on_message(self, message: str, context: Context) -> None:
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                cancelled.append(message)
                raise

    client = Stuck(broker, config=ClientConfig(shutdown_timeout=3))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        ws = await broker.connect(headers={"X-User": "erin"})
        for message in ("one", "two", "three"):
            await ws.send(message)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert trio.current_time() == 3
    assert cancelled == ["one"]
    assert client.statistics().events_dropped == 2
    assert "2 received events were not handled" in caplog.text


async def test_many_concurrent_connection_requests(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Fifty simultaneous requests, answered in a random order, each get the answer meant for
    them: responses carry the right request_id."""
    rng = random.Random(3)

    class Shuffled(Recording):
        async def on_connection_request(self, request: ConnectionRequestContext) -> bool | None:
            await trio.sleep(rng.random())
            return await super().on_connection_request(request)

    results: dict[str, str] = {}

    async def connect(user: str) -> None:
        results[user] = (await broker.connect(headers={"X-User": user})).client_id

    async with Shuffled(broker).connected(), trio.open_nursery() as nursery:
        for number in range(50):
            nursery.start_soon(connect, f"user{number}")
    assert results == {f"user{n}": f"user{n}" for n in range(50)}


async def test_garbage_and_over_long_lines_are_skipped(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad lines from the broker are logged and counted; the connection stays up and the next
    good frame is handled."""
    heartbeat = b'{"request_id":"heartbeat","action":"heartbeat","params":{}}\n'
    config = ClientConfig(max_line_length=1000)
    async with Recording(broker, config=config).connected() as client:
        await broker.send_raw(b"garbage\n" + b"{" * 5000 + b"\n" + heartbeat + b'{"action": 1}\n')
        ws = await broker.connect(headers={"X-User": "frank"})
        await ws.send("still here")
        assert await ws.receive() == "frank: still here"
        stats = client.statistics()
        assert (stats.protocol_errors, stats.heartbeats, stats.connections) == (3, 1, 1)
    assert "line longer than 1000 bytes" in caplog.text
    assert "not JSON" in caplog.text


async def test_reader_stops_when_handlers_fall_behind(broker: FakeBroker) -> None:
    """With max_pending_events reached, the client stops reading: what the broker sends next
    waits in the stream, not in the client's memory. It catches up when handlers do."""
    gate = trio.Event()
    handled = []

    class Blocked(Recording):
        async def on_message(self, message: str, context: Context) -> None:
            await gate.wait()
            handled.append(message)

    config = ClientConfig(max_pending_events=8, max_concurrency=2)
    async with Blocked(broker, config=config).connected() as client:
        sockets = [await broker.connect(headers={"X-User": f"u{n}"}) for n in range(4)]
        for number in range(100):
            await sockets[number % 4].send(str(number))
        await trio.testing.wait_all_tasks_blocked()
        assert 8 <= client.statistics().events_pending < 12
        gate.set()
        while len(handled) < 100:
            await trio.testing.wait_all_tasks_blocked()
        assert sorted(handled, key=int) == [str(n) for n in range(100)]


async def test_large_events_at_a_slow_handler_stay_under_the_byte_bound(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """Pending events are bounded in bytes, not only in count: a flood of 256 KiB messages
    (100 of them, 25 MiB) at a handler taking 10 ms each never has more than
    max_pending_bytes waiting in the client, plus what one read can decode; the rest waits
    on the broker's side (TCP pushback), and nothing is lost."""
    size, count = 256 << 10, 100
    config = ClientConfig(max_pending_bytes=2 << 20, max_concurrency=4)
    bound = config.max_pending_bytes + config.max_line_length + (64 << 10)
    peak = 0
    handled = 0

    class Slow(Recording):
        async def on_message(self, message: str, context: Context) -> None:
            nonlocal peak, handled
            peak = max(peak, self.statistics().bytes_pending)
            await trio.sleep(0.01)
            assert len(message) == size
            handled += 1

    async with Slow(broker, config=config).connected() as client:
        sockets = [await broker.connect(headers={"X-User": f"u{n}"}) for n in range(8)]
        async with trio.open_nursery() as nursery:

            async def flood(ws: object, first: int) -> None:
                for number in range(first, count, len(sockets)):
                    await ws.send(str(number % 10) * size)  # type: ignore[attr-defined]

            for first, ws in enumerate(sockets):
                nursery.start_soon(flood, ws, first)
        while handled < count:
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.01)
        stats = client.statistics()
    assert handled == count
    assert 0 < peak <= bound, f"{peak} bytes pending, over the bound of {bound}"
    assert stats.events_pending == 0
    assert stats.bytes_pending == 0
    assert stats.events_pending < config.max_pending_events  # the count bound never bit


async def test_writes_are_coalesced(broker: FakeBroker) -> None:
    """Replies sent in a burst go out in a few writes, not one per frame."""

    class Chatty(Recording):
        async def on_message(self, message: str, context: Context) -> None:
            for number in range(10):
                await self.send_private_message(context.client_id, f"{message}.{number}")

    async with Chatty(broker).connected() as client:
        ws = await broker.connect(headers={"X-User": "gina"})
        for number in range(20):
            await ws.send(str(number))
        for _ in range(200):
            await ws.receive()
        stats = client.statistics()
        assert stats.frames_sent == 201
        assert stats.writes <= 25


@pytest.mark.parametrize("failure", ["refused", "lost"])
async def test_without_reconnect_run_raises(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, failure: str
) -> None:
    """With reconnect=False, a refused or lost connection ends run() with
    BrokerConnectionError, unwrapped, instead of retrying."""
    client = Recording(broker, config=ClientConfig(reconnect=False))
    if failure == "refused":
        broker.refuse_backends = True
        with pytest.raises(BrokerConnectionError, match="cannot connect"):
            async with client.connected():
                pass  # pragma: no cover
    else:

        async def lose_the_connection() -> None:
            async with client.connected():
                await broker.drop_backends()
                await trio.sleep_forever()

        with pytest.raises(BrokerConnectionError, match="the broker closed the connection"):
            await lose_the_connection()


async def test_fail_fast_at_start_then_reconnect(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock
) -> None:
    """With wait_for_broker=False, a first refused connection raises at once; once a
    connection was made, a lost one is made again with the usual backoff."""
    config = attrs.evolve(EXACT, wait_for_broker=False)
    broker.refuse_backends = True
    with trio.fail_after(10), pytest.raises(BrokerConnectionError, match="cannot connect"):
        async with Recording(broker, config=config).connected():
            pass  # pragma: no cover
    assert trio.current_time() == 0
    broker.refuse_backends = False
    client = Recording(broker, config=config)
    async with client.connected():
        await broker.drop_backends()
        broker.refuse_backends = True  # the first attempt again fails: retried this time
        with trio.fail_after(10):
            await trio.sleep(1.5)
            broker.refuse_backends = False
            await broker.wait_backends(1)
            await trio.testing.wait_all_tasks_blocked()  # the client's side of it too
        assert client.statistics().connections == 2
        assert client.statistics().connect_failures == 1


async def test_run_twice_at_once_is_refused(broker: FakeBroker) -> None:
    """A client runs once at a time; after it stops it can run again."""
    client = Recording(broker)
    async with client.connected():
        with pytest.raises(RuntimeError, match="already running"):
            await client.run()
    async with client.connected():
        assert client.statistics().connections == 2


async def test_body_exception_propagates_unwrapped(broker: FakeBroker) -> None:
    """An exception from an ``async with client.connected()`` block is raised as itself."""
    client = Recording(broker)
    with pytest.raises(KeyError, match="from the body"):
        async with client.connected():
            raise KeyError("from the body")
    assert not client.is_connected


async def test_response_for_a_closed_connection_is_dropped_and_counted(
    broker: FakeBroker, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A request answered after its connection closed cannot be answered on the next one:
    the answer is dropped, logged and counted."""

    class Late(Recording):
        async def on_connection_request(self, request: ConnectionRequestContext) -> bool | None:
            await trio.sleep(5)
            return True

    async with Late(broker).connected() as client:
        async with trio.open_nursery() as nursery:

            async def connect() -> None:
                with pytest.raises(ConnectionRejected, match="went away"):
                    await broker.connect()

            nursery.start_soon(connect)
            await trio.sleep(1)
            await broker.drop_backends()
        await trio.sleep(10)
        assert client.statistics().frames_dropped == 1
    assert "cannot answer the connection request" in caplog.text


async def test_sync_callbacks_of_a_subclass_run_in_threads(broker: FakeBroker) -> None:
    """A plain def callback runs in a worker thread, so it may block without stalling trio."""
    threads = []
    done = trio.Event()

    class Blocking(StrandsClient):
        def on_message(self, message: str, context: Context) -> None:  # type: ignore[override]
            threads.append(threading.get_ident())
            trio.from_thread.run_sync(done.set)

    async with Blocking(connect=broker.open_backend_stream).connected():
        ws = await broker.connect()
        await ws.send("x")
        with trio.fail_after(5):
            await done.wait()
    assert threads[0] != threading.get_ident()


async def test_send_refuses_non_strings(broker: FakeBroker) -> None:
    """Sending a dict is a TypeError that says to encode it first."""
    async with Recording(broker).connected() as client:
        with pytest.raises(TypeError, match=r"json\.dumps"):
            await client.send_room_message("room", {"text": "hi"})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="client_id must be a str"):
            await client.send_private_message(42, "hi")  # type: ignore[arg-type]


async def test_close_connection_extension(broker: FakeBroker) -> None:
    """close_connection sends the extension frame (the fake broker, like the reference,
    ignores it) and refuses codes and reasons a WebSocket close cannot carry."""
    async with Recording(broker).connected() as client:
        await client.close_connection("ann", 4001, "kicked")
        with pytest.raises(ValueError, match="close code"):
            await client.close_connection("ann", 1006)
        with pytest.raises(ValueError, match="123 bytes"):
            await client.close_connection("ann", 1000, "x" * 124)
        await trio.testing.wait_all_tasks_blocked()
    assert (
        CloseConnection(
            request_id=broker.actions[-1].request_id, conn_id="ann", code=4001, reason="kicked"
        )
        == broker.actions[-1]
    )


async def test_broker_secret_is_sent_first(broker: FakeBroker) -> None:
    """With broker_secret set, every connection starts with an authenticate frame, and the
    secret never shows in the config's repr."""
    config = ClientConfig(broker_secret="a shared secret, 16+")
    assert "shared secret" not in repr(config)
    async with Recording(broker, config=config).connected() as client:
        await client.broadcast_message("hello")
        await trio.testing.wait_all_tasks_blocked()
    assert broker.actions[0] == Authenticate(request_id="auth", secret="a shared secret, 16+")
    assert type(broker.actions[1]) is Broadcast


async def test_connection_log(broker: FakeBroker, caplog: pytest.LogCaptureFixture) -> None:
    """Connecting is logged at INFO with where the broker is."""
    caplog.set_level(logging.INFO, logger="strands_trio")
    async with Recording(broker, config=EXACT).connected():
        pass
    assert "connected to the broker at FakeBroker.open_backend_stream" in caplog.text
