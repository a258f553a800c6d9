"""The FakeBroker behaves like the reference broker on the wire, quirks included, so a backend
tested against it meets what it meets in production."""

from __future__ import annotations

import pytest
import trio

from strands_trio.protocol import (
    ConnectionRequest,
    ErrorEvent,
    Frame,
    FrameDecoder,
    MessageToConnection,
    NewConnection,
    NewMessage,
    Response,
    encode,
)
from strands_trio.testing import ConnectionRejected, FakeBroker, canonical_header, open_fake_broker


class RawBackend:
    """A backend driven by hand, to see exactly what the broker sends."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.frames: list[Frame] = []

    async def next_frame(self) -> Frame:
        while not self.frames:
            for frame in self.decoder.feed(await self.stream.receive_some()):
                self.frames.append(frame)  # type: ignore[arg-type]
        return self.frames.pop(0)

    async def send(self, frame: Frame) -> None:
        await self.stream.send_all(encode(frame))


async def accept_one(
    broker: FakeBroker, backend: RawBackend, nursery: trio.Nursery, **metadata: object
) -> None:
    async def answer() -> None:
        request = await backend.next_frame()
        assert isinstance(request, ConnectionRequest)
        await backend.send(
            Response(
                request_id=request.request_id,
                accepted=True,
                client_id="c1",
                room_id="r",
                metadata=metadata,
            )
        )

    nursery.start_soon(answer)


async def test_wire_metadata_is_nested_like_the_reference(
    broker: FakeBroker, nursery: trio.Nursery
) -> None:
    """Contexts on the wire carry the whole response params as metadata (WIRE.md quirk 1);
    the decoder unwraps them; the fake WebSocket knows the backend's own metadata."""
    backend = RawBackend(await broker.open_backend_stream())
    await accept_one(broker, backend, nursery, role="admin")
    ws = await broker.connect("/ws/x", headers={"sec-websocket-protocol": "chat"})
    assert ws.metadata == {"role": "admin"}
    assert ws.headers["Sec-Websocket-Protocol"] == ["chat"]
    assert {"Connection", "Upgrade", "Sec-Websocket-Key", "Sec-Websocket-Version"} <= set(
        ws.headers
    )
    raw = b""
    while raw.count(b"\n") < 1:
        raw += await backend.stream.receive_some()
    # As in reference-broker-transcript.txt: Go writes the map's keys sorted.
    assert (
        b'"metadata":{"accepted":true,"client_id":"c1","metadata":{"role":"admin"},"room_id":"r"}'
        in raw
    )
    [event] = FrameDecoder().feed(raw)
    assert isinstance(event, NewConnection)
    assert event.context.metadata == {"role": "admin"}


async def test_no_backend_refuses_and_queues_an_error(broker: FakeBroker) -> None:
    """A connection with no backend is refused, and an error carrying the request is queued
    for the next backend (WIRE.md quirk 2)."""
    with pytest.raises(ConnectionRejected, match="no backend"):
        await broker.connect(
            "/ws/q", headers={"Authorization": "Bearer t"}, remote_addr="1.2.3.4:5"
        )
    backend = RawBackend(await broker.open_backend_stream())
    error = await backend.next_frame()
    assert isinstance(error, ErrorEvent)
    assert error.context.remote_addr == "1.2.3.4:5"  # type: ignore[union-attr]
    assert error.context.headers["Authorization"] == ["Bearer t"]  # type: ignore[union-attr]


async def test_queue_is_bounded_and_flushed_in_order(nursery: trio.Nursery) -> None:
    """Events while no backend is connected are queued up to queue_size, the oldest dropped
    first and counted, and flushed in order to the next backend (WIRE.md quirk 3)."""
    async with open_fake_broker(queue_size=2, heartbeat_interval=None) as broker:
        first = RawBackend(await broker.open_backend_stream())
        await accept_one(broker, first, nursery)
        ws = await broker.connect()
        await first.next_frame()  # new_connection
        await broker.drop_backends()
        for text in ("one", "two", "three"):
            await ws.send(text)
        assert broker.dropped_events == 1
        second = RawBackend(await broker.open_backend_stream())
        messages = [await second.next_frame() for _ in range(2)]
        assert [m.message for m in messages if isinstance(m, NewMessage)] == ["two", "three"]


async def test_actions_are_routed_and_recorded(broker: FakeBroker, nursery: trio.Nursery) -> None:
    """Private messages reach their client only; ones to unknown clients are counted and
    ignored, as the reference broker does; bad lines are recorded and skipped."""
    backend = RawBackend(await broker.open_backend_stream())
    await accept_one(broker, backend, nursery)
    ws = await broker.connect()
    await backend.send(MessageToConnection(request_id="1", conn_id="ghost", message="lost"))
    await backend.stream.send_all(b"not json\n")
    await backend.send(MessageToConnection(request_id="2", conn_id="c1", message="found"))
    assert await ws.receive() == "found"
    assert broker.unknown_targets == 1
    assert broker.private_messages("ghost") == ["lost"]
    assert [bad.line for bad in broker.bad_frames] == [b"not json"]
    with pytest.raises(trio.WouldBlock):
        ws.receive_nowait()


async def test_not_running_says_how_to_start() -> None:
    """Connecting a backend to a broker that is not running explains what to do."""
    with pytest.raises(RuntimeError, match="open_fake_broker"):
        await FakeBroker().open_backend_stream()


async def test_refused_backends_are_recorded(broker: FakeBroker) -> None:
    """refuse_backends makes backend connections fail like a closed port; attempts count."""
    broker.refuse_backends = True
    with pytest.raises(ConnectionRefusedError):
        await broker.open_backend_stream()
    assert broker.connection_attempts == [pytest.approx(trio.current_time())]
    assert broker.backend_count == 0


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("authorization", "Authorization"),
        ("SEC-WEBSOCKET-KEY", "Sec-Websocket-Key"),
        ("x-a-b", "X-A-B"),
    ],
)
def test_canonical_header(name: str, canonical: str) -> None:
    """Header names are sent as Go canonicalises them."""
    assert canonical_header(name) == canonical


@pytest.mark.parametrize(
    ("reference", "query", "refusal"),
    [
        (True, None, (None, 1006)),  # the reference: no query, upgraded then closed, no code
        (False, "token=t&x=1", (None, 4401)),  # ours: the query field, a readable close code
    ],
)
async def test_query_and_refusals_as_each_broker(
    nursery: trio.Nursery,
    reference: bool,
    query: str | None,
    refusal: tuple[int | None, int],
) -> None:
    """In reference mode a connection request carries no query and a refusal is the
    reference's (upgraded, closed without a code: 1006); otherwise the query string comes in
    ``query`` beside the path and the backend's reason and code reach the client."""
    async with open_fake_broker(reference=reference, heartbeat_interval=None) as broker:
        backend = RawBackend(await broker.open_backend_stream())
        await broker.wait_backends(1)

        async def refuse() -> None:
            request = await backend.next_frame()
            while not isinstance(request, ConnectionRequest):  # our broker says hello first
                request = await backend.next_frame()
            assert (request.url, request.query) == ("/ws/x", query)
            await backend.send(
                Response(request_id=request.request_id, accepted=False, reason="bad", code=401)
            )

        nursery.start_soon(refuse)
        with pytest.raises(ConnectionRejected) as refused:
            await broker.connect("/ws/x?token=t&x=1")
    assert (refused.value.status, refused.value.close_code) == refusal


async def test_a_fake_websocket_knows_its_query_and_subprotocol(
    broker: FakeBroker, nursery: trio.Nursery
) -> None:
    """The broker selects the first offered subprotocol it allows ("strands"), never the
    token-bearing one."""
    backend = RawBackend(await broker.open_backend_stream())
    await accept_one(broker, backend, nursery)
    ws = await broker.connect("/ws/x?a=1", headers={"Sec-WebSocket-Protocol": "bearer.t, strands"})
    assert (ws.url, ws.query, ws.subprotocol) == ("/ws/x", "a=1", "strands")
