"""The broker's hub and backend links, without WebSockets: admission, routing and stickiness,
the queue, actions, bad lines, the backend secret, stalled backends, and shutdown order."""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from strands_trio import ClientConfig, StrandsClient
from strands_trio.broker import Admission, BrokerConfig, Delivery, Handshake, Hub
from strands_trio.broker._backends import BackendServer
from strands_trio.broker._limits import (
    RESERVED_FILES,
    raise_open_file_limit,
    usable_connections,
)
from strands_trio.protocol import NO_BACKEND

HEADERS = {"Sec-Websocket-Key": ["x"], "Authorization": ["Bearer a", "Bearer b"]}


def handshake(url: str = "/ws/chat") -> Handshake:
    return Handshake(headers=HEADERS, url=url, remote_addr="10.0.0.1:5")


class Link:
    """A stand-in for a WebSocket client's link: records deliveries, flushes and closes."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.deliveries: list[Delivery] = []
        self.flushes = 0
        self.closed: tuple[int, str] | None = None

    def deliver(self, message: Delivery) -> bool:
        self.deliveries.append(message)
        self.received.append(message.text)
        return True

    def flush(self) -> None:
        self.flushes += 1

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class RawBackend:
    """A backend speaking raw lines over a memory stream, to see the exact frames."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self.skipped: list[dict[str, Any]] = []
        self.hello: dict[str, Any] | None = None

    async def frame(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            assert data, "the broker closed the link"
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        frame: dict[str, Any] = json.loads(line)
        if frame["action"] == "hello":  # the broker's identity, first on every link
            self.hello = frame
            return await self.frame()
        return frame

    async def next(self, action: str) -> dict[str, Any]:
        """The next frame of this action; the ones before it are kept in skipped."""
        while True:
            frame = await self.frame()
            if frame["action"] == action:
                return frame
            self.skipped.append(frame)

    async def send(self, action: str, request_id: str = "r", **params: Any) -> None:
        line = json.dumps({"request_id": request_id, "action": action, "params": params})
        await self.stream.send_all(line.encode() + b"\n")


def config(**changes: Any) -> BrokerConfig:
    return BrokerConfig(ws_port=0, tcp_port=0, heartbeat_interval=None, **changes)


#: The backends' port of each hub made by make(), for attach().
SERVERS: dict[Hub, BackendServer] = {}


def make(**changes: Any) -> Hub:
    """A hub and its backends' port (as serve_broker composes them)."""
    hub = Hub(config(**changes))
    SERVERS[hub] = BackendServer(hub, hub.config)
    return hub


@pytest.fixture
def hub() -> Hub:
    return make()


def server_of(hub: Hub) -> BackendServer:
    return SERVERS[hub]


async def attach(
    hub: Hub, nursery: trio.Nursery, name: str = "b1", *, lockstep: bool = False
) -> tuple[RawBackend, trio.abc.Stream]:
    """Connect a raw backend to the hub; return it once the hub sends it events."""
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    broker_end, backend_end = pair()
    await nursery.start(server_of(hub).serve_link, broker_end, name)
    return RawBackend(backend_end), broker_end


async def admit_via(
    hub: Hub, backend: RawBackend, answer: Callable[[dict[str, Any]], dict[str, Any]]
) -> Admission:
    """Run one admission, the raw backend answering with answer(request)."""
    result: list[Admission] = []

    async def ask() -> None:
        result.append(await hub.admit(handshake()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        request = await backend.next("connection_request")
        await backend.send("response", request["request_id"], **answer(request))
    return result[0]


def accept(client_id: str, room: str = "lobby", **metadata: Any) -> Any:
    return lambda request: {
        "accepted": True,
        "client_id": client_id,
        "room_id": room,
        "metadata": metadata,
    }


async def test_admission_round_trip(hub: Hub, nursery: trio.Nursery) -> None:
    """A handshake becomes a connection_request with the headers (multi-valued), path and
    address; the answer's ids and metadata come back; later events carry exactly the
    metadata the backend set, not the reference's nested copy."""
    backend, _ = await attach(hub, nursery)
    admission = await admit_via(hub, backend, accept("ann", "lobby", role="admin"))
    assert admission == Admission(
        accepted=True,
        client_id="ann",
        room_id="lobby",
        metadata={"role": "admin"},
        backend=admission.backend,
    )
    assert admission.backend is not None
    client = hub.connect(admission, Link())
    hub.message(client, "hi")
    joined, said = await backend.frame(), await backend.frame()
    assert joined["action"] == "new_connection"
    assert said == {
        "request_id": said["request_id"],
        "action": "new_message",
        "params": {
            "context": {"client_id": "ann", "room_id": "lobby", "metadata": {"role": "admin"}},
            "message": "hi",
        },
    }


async def test_rejection_and_bad_answers(hub: Hub, nursery: trio.Nursery) -> None:
    """A rejection is 403; an acceptance without ids is refused (403) and counted."""
    backend, _ = await attach(hub, nursery)
    refused = await admit_via(hub, backend, lambda r: {"accepted": False})
    assert (refused.accepted, refused.status) == (False, 403)
    no_ids = await admit_via(hub, backend, lambda r: {"accepted": True})
    assert (no_ids.accepted, no_ids.status) == (False, 403)
    assert hub.statistics().bad_responses == 1


async def test_no_backend_refuses_and_queues_the_error(hub: Hub, nursery: trio.Nursery) -> None:
    """With no backend the handshake is refused with 503 at once, and an error event carrying
    the request goes to the next backend, as the reference does."""
    admission = await hub.admit(handshake())
    assert (admission.accepted, admission.status) == (False, 503)
    backend, _ = await attach(hub, nursery)
    error = await backend.frame()
    assert error["action"] == "error"
    assert error["params"]["error"] == NO_BACKEND
    assert error["params"]["context"]["headers"] == HEADERS


async def test_request_timeout(
    hub: Hub, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """A backend that does not answer gets the request_timeout, then the handshake is 503."""
    await attach(hub, nursery)
    start = trio.current_time()
    admission = await hub.admit(handshake("/ws/"))
    assert (admission.status, trio.current_time() - start) == (503, hub.config.request_timeout)
    assert hub.statistics().timed_out == 1


async def test_backend_leaving_before_answering(hub: Hub, nursery: trio.Nursery) -> None:
    """A backend that disconnects with a request pending refuses it with 503 at once."""
    backend, _ = await attach(hub, nursery)
    result: list[Admission] = []

    async def ask() -> None:
        result.append(await hub.admit(handshake("/ws/")))

    async with trio.open_nursery() as inner:
        inner.start_soon(ask)
        await backend.frame()
        await backend.stream.aclose()
    assert result[0].status == 503


async def test_events_stick_to_the_accepting_backend(hub: Hub, nursery: trio.Nursery) -> None:
    """Requests go round robin; each client's events go to the backend that accepted it;
    when that backend leaves, they go to another one."""
    first, _ = await attach(hub, nursery, "first")
    second, _ = await attach(hub, nursery, "second")
    owners = [second, first, second, first]  # round robin, starting after the first
    clients = []
    for name, owner in zip("abcd", owners, strict=True):
        clients.append((hub.connect(await admit_via(hub, owner, accept(name)), Link()), owner))
    for client, owner in clients:
        hub.message(client, "hi")
        said = await owner.next("new_message")
        assert said["params"]["context"]["client_id"] == client.client_id
    await first.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    for client, _ in clients:
        hub.message(client, "again")
        moved = await second.next("new_message")
        assert moved["params"]["context"]["client_id"] == client.client_id
        assert moved["params"]["message"] == "again"


async def test_queue_is_bounded_and_flushed_in_order(nursery: trio.Nursery) -> None:
    """Events while no backend is connected wait in a queue of queue_size, oldest dropped
    first and counted, and go in order to the next backend."""
    hub = make(queue_size=3)
    backend, _ = await attach(hub, nursery)
    client = hub.connect(await admit_via(hub, backend, accept("ann")), Link())
    await backend.frame()  # new_connection
    await backend.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    for n in range(5):
        hub.message(client, f"m{n}")
    assert hub.statistics().queue_dropped == 2
    late, _ = await attach(hub, nursery, "late")
    assert [(await late.frame())["params"]["message"] for _ in range(3)] == ["m2", "m3", "m4"]


async def test_queue_is_bounded_in_bytes_too(nursery: trio.Nursery) -> None:
    """Past queue_bytes the oldest queued events are dropped too, whatever their number."""
    hub = make(queue_bytes=2000)
    backend, _ = await attach(hub, nursery)
    client = hub.connect(await admit_via(hub, backend, accept("ann")), Link())
    await trio.aclose_forcefully(backend.stream)
    await hub.wait_backends(0)
    for n in range(10):
        hub.message(client, f"{n}" + "x" * 400)
    assert hub.health()["queued"] < 10
    dropped = hub.statistics().queue_dropped
    late, _ = await attach(hub, nursery, "late")
    got = [(await late.next("new_message"))["params"]["message"][0] for _ in range(10 - dropped)]
    assert got == [str(n) for n in range(dropped, 10)]


async def test_actions_reach_clients(hub: Hub, nursery: trio.Nursery) -> None:
    """Room, private, broadcast and close actions reach the right links; actions for unknown
    clients or rooms are counted; a bad line is skipped and the link stays up."""
    backend, _ = await attach(hub, nursery)
    ann, bob = Link(), Link()
    hub.connect(await admit_via(hub, backend, accept("ann", "r1")), ann)
    hub.connect(await admit_via(hub, backend, accept("bob", "r2")), bob)
    await backend.send("message_to_room", room_id="r1", message="to r1")
    await backend.send("message_to_connection", conn_id="bob", message="to bob")
    await backend.send("broadcast", message="to all")
    await backend.stream.send_all(b"this is not json\n")
    await backend.send("message_to_room", room_id="nowhere", message="x")
    await backend.send("message_to_connection", conn_id="nobody", message="x")
    await backend.send("close_connection", conn_id="ann", code=4001, reason="bye")
    await trio.testing.wait_all_tasks_blocked()
    assert ann.received == ["to r1", "to all"]
    assert bob.received == ["to bob", "to all"]
    assert ann.closed == (4001, "bye")
    stats = hub.statistics()
    assert (stats.unknown_targets, server_of(hub).statistics().bad_frames, stats.backends) == (
        2,
        1,
        1,
    )
    assert (stats.connections, stats.rooms, stats.messages_out) == (2, 2, 4)
    assert ann.flushes >= 1  # deliveries are flushed once per batch of actions


async def test_same_client_id_replaces_the_older_socket(hub: Hub, nursery: trio.Nursery) -> None:
    """A second client under an id already connected closes the first with 1008."""
    backend, _ = await attach(hub, nursery)
    old, new = Link(), Link()
    hub.connect(await admit_via(hub, backend, accept("ann")), old)
    hub.connect(await admit_via(hub, backend, accept("ann")), new)
    assert old.closed is not None
    assert old.closed[0] == 1008
    await backend.send("message_to_connection", conn_id="ann", message="x")
    await trio.testing.wait_all_tasks_blocked()
    assert (old.received, new.received) == ([], ["x"])


@pytest.mark.parametrize("secret", [None, "wrong secret, 16 chars+"])
async def test_backend_secret(nursery: trio.Nursery, secret: str | None) -> None:
    """With a secret configured, a backend without it or with a wrong one is refused; our
    client with the right one is accepted."""
    right = "the right secret, 16+ chars"
    hub = make(backend_secret=right, handshake_timeout=1)
    broker_end, backend_end = trio.testing.memory_stream_pair()
    nursery.start_soon(server_of(hub).serve_link, broker_end, "raw")
    raw = RawBackend(backend_end)
    if secret is not None:
        await raw.send("authenticate", secret=secret)
    else:
        await raw.send("broadcast", message="sneaky")
    await trio.testing.wait_all_tasks_blocked()
    assert (server_of(hub).statistics().refused, hub.health()["backends"]) == (1, 0)
    assert await backend_end.receive_some() == b""  # the refused link is closed

    pair = trio.testing.memory_stream_pair()
    nursery.start_soon(server_of(hub).serve_link, pair[0], "ours")

    async def connect() -> trio.abc.Stream:
        return pair[1]

    client = StrandsClient(
        config=ClientConfig(broker_secret=right, reconnect=False), connect=connect
    )
    async with client.connected():
        await trio.testing.wait_all_tasks_blocked()
        assert hub.health()["backends"] == 1


async def test_stalled_backend_is_dropped(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """A backend that takes nothing is disconnected once no write has made progress for
    backend_stall_timeout (the watchdog looks four times per timeout); meanwhile its full
    buffer makes its client wait, and after the drop the client's events go to the queue."""
    hub = make(max_backend_buffer=1000, backend_stall_timeout=4)
    stuck, _ = await attach(hub, nursery, "stuck", lockstep=True)
    client = hub.connect(await admit_via(hub, stuck, accept("ann")), Link())
    start = trio.current_time()
    pauses = [hub.message(client, "x" * 20) for _ in range(12)]
    assert pauses[-1] is True  # about 1,500 bytes: full, the client should wait
    assert server_of(hub).statistics().stalled == 0
    await hub.wait_backends(0)
    assert 4 <= trio.current_time() - start <= 5
    stats = server_of(hub).statistics()
    assert stats.stalled == 1
    assert stats.events_lost >= 11
    hub.message(client, "to the queue now")
    assert hub.health()["queued"] == 1


async def test_a_slow_backend_that_reads_is_never_dropped(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """A backend that reads one line every 3 s, slower than its clients send, is not dropped
    with a 4 s stall timeout: its client waits instead (flow control), and nothing is lost."""
    hub = make(max_backend_buffer=200, client_share=100, backend_stall_timeout=4)
    slow, _ = await attach(hub, nursery, "slow", lockstep=True)
    client = hub.connect(await admit_via(hub, slow, accept("ann")), Link())
    await slow.next("new_connection")

    async def send_all() -> None:
        for n in range(5):
            if hub.message(client, f"m{n}" + "x" * 150):
                await hub.wait_ready(client)

    async with trio.open_nursery() as senders:
        senders.start_soon(send_all)
        got = []
        for _ in range(5):
            await trio.sleep(3)
            got.append((await slow.next("new_message"))["params"]["message"][:2])
    assert got == ["m0", "m1", "m2", "m3", "m4"]
    assert server_of(hub).statistics().stalled == 0
    assert hub.statistics().flow_pauses >= 1


async def test_backend_gone_while_writing_does_not_stop_the_broker(
    hub: Hub, nursery: trio.Nursery
) -> None:
    """A backend that resets while events are being written to it ends its own link only
    (the events in flight to it are lost, logged); the broker goes on with the next one."""
    backend, _ = await attach(hub, nursery)
    client = hub.connect(await admit_via(hub, backend, accept("ann")), Link())
    await trio.aclose_forcefully(backend.stream)
    for n in range(100):  # written to a socket whose peer is gone: BrokenResourceError
        hub.message(client, f"lost {n}")
    await hub.wait_backends(0)
    survivor, _ = await attach(hub, nursery, "survivor")
    hub.message(client, "after")
    # Whatever reached the queue before the broker saw the reset comes first, in order.
    received = [(await survivor.next("new_message"))["params"]["message"]]
    while received[-1] != "after":
        received.append((await survivor.next("new_message"))["params"]["message"])
    assert received[:-1] == [f"lost {n}" for n in range(100 - len(received) + 1, 100)]


async def test_a_big_queue_is_flushed_without_dropping_the_backend(
    nursery: trio.Nursery,
) -> None:
    """Flushing a queue larger than the backend's buffer limit to a new backend does not make
    it look stalled: every queued event arrives."""
    hub = make(max_backend_buffer=1000)
    backend, _ = await attach(hub, nursery)
    client = hub.connect(await admit_via(hub, backend, accept("ann")), Link())
    await trio.aclose_forcefully(backend.stream)
    await hub.wait_backends(0)
    for n in range(30):
        hub.message(client, f"{n:02d}" + "x" * 500)
    late, _ = await attach(hub, nursery, "late")
    got = [(await late.next("new_message"))["params"]["message"][:2] for _ in range(30)]
    assert got == [f"{n:02d}" for n in range(30)]
    assert server_of(hub).statistics().stalled == 0


async def test_queued_clients_stay_with_the_backend_that_got_their_events(
    nursery: trio.Nursery,
) -> None:
    """A client whose events were queued is pinned to the backend the queue went to, so its
    later events follow them there, even when another backend is up."""
    hub = make()
    backend, _ = await attach(hub, nursery)
    client = hub.connect(await admit_via(hub, backend, accept("ann")), Link())
    await trio.aclose_forcefully(backend.stream)
    await hub.wait_backends(0)
    hub.message(client, "queued")
    first, _ = await attach(hub, nursery, "first")
    await attach(hub, nursery, "second")
    assert (await first.next("new_message"))["params"]["message"] == "queued"
    for n in range(3):
        hub.message(client, f"after {n}")
        assert (await first.next("new_message"))["params"]["message"] == f"after {n}"


async def test_shutdown_flushes_backends(nursery: trio.Nursery) -> None:
    """Closing the backends' port makes each link write what is queued, then close."""
    hub = make()
    backend, _ = await attach(hub, nursery)
    client = hub.connect(await admit_via(hub, backend, accept("ann")), Link())
    await backend.frame()
    hub.disconnect(client)
    server_of(hub).close()
    with trio.fail_after(5):
        await server_of(hub).wait_closed()
    assert (await backend.frame())["action"] == "disconnected"
    assert await backend.stream.receive_some() == b""


def test_config_from_env() -> None:
    """The reference's environment variables set the ports and the queue; bad values are
    clear errors."""
    env = {"PYSTRAND_WS_PORT": "9000", "PYSTRAND_TCP_PORT": "9001", "PYSTRAND_QUEUE_SIZE": "5"}
    got = BrokerConfig.from_env(env)
    assert (got.ws_port, got.tcp_port, got.queue_size) == (9000, 9001, 5)
    assert BrokerConfig.from_env(env, ws_port=1).ws_port == 1
    with pytest.raises(ValueError, match="PYSTRAND_WS_PORT must be an integer"):
        BrokerConfig.from_env({"PYSTRAND_WS_PORT": "eighty"})
    with pytest.raises(ValueError, match="at least 16"):
        BrokerConfig(backend_secret="short")
    with pytest.raises(ValueError, match="trusted_proxies"):
        BrokerConfig(trusted_proxies=("not an ip",))
    assert BrokerConfig(trusted_proxies=("10.0.0.0/8",)).trusts("10.1.2.3")
    assert "backend_secret" not in repr(BrokerConfig(backend_secret="x" * 16))


def test_open_file_limit_is_raised_to_the_hard_limit() -> None:
    """At start the broker raises its soft open-file limit to the hard one, and lowers
    max_connections (saying so) only when even that cannot hold them with their headroom."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and soft > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
        raised = raise_open_file_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        assert hard == resource.RLIM_INFINITY or raised == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert usable_connections(10_000, 32, 1 << 20) == 10_000
    assert usable_connections(10_000, 32, 1024) == 1024 - 32 - RESERVED_FILES
