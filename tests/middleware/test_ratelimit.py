"""The RateLimit middleware: exact burst and refill on trio's virtual clock, separate limits
for connections and messages, the keys, the actions, and a store that is not in memory."""

from __future__ import annotations

import json

import attrs
import pytest
import trio

from strands_trio.middleware import (
    REMOTE_IP,
    Decision,
    Identity,
    MemoryStore,
    MemoryStoreStatistics,
    Rate,
    RateLimit,
    by_identity,
    by_metadata,
    by_remote_ip,
    by_room,
)
from strands_trio.testing import MiddlewareHarness


async def test_message_burst_then_refill(autojump_clock: trio.abc.Clock) -> None:
    """Burst messages pass at once, the next is refused with a rate_limited frame saying when
    to retry, and one more passes exactly one interval later."""
    limit = RateLimit(messages=Rate(burst=3, per_second=2))
    harness = MiddlewareHarness([limit])
    for _ in range(3):
        assert (await harness.message("x", client_id="ann")).reached
    assert not (await harness.message("x", client_id="ann")).reached
    ((to, text),) = harness.sent
    assert to == "ann"
    assert json.loads(text) == {
        "type": "error",
        "code": "rate_limited",
        "reason": "too many messages: retry in 0.5 s",
    }
    assert (await harness.message("x", client_id="bob")).reached  # another client's bucket
    await trio.sleep(0.5)
    assert (await harness.message("x", client_id="ann")).reached
    assert not (await harness.message("x", client_id="ann")).reached
    stats = limit.statistics()
    assert (stats.allowed, stats.messages_limited) == (5, 2)
    assert isinstance(stats.store, MemoryStoreStatistics)  # the middleware's own store
    assert stats.store.keys == 2


async def test_drop_sends_nothing(autojump_clock: trio.abc.Clock) -> None:
    """on_message_limit='drop' refuses silently."""
    harness = MiddlewareHarness(
        [RateLimit(messages=Rate(burst=1, per_second=1), on_message_limit="drop")]
    )
    assert (await harness.message("x")).reached
    assert not (await harness.message("x")).reached
    assert harness.sent == []


async def test_connections_limited_per_ip(autojump_clock: trio.abc.Clock) -> None:
    """Connection requests have their own limit, per remote IP whatever the port; one over it
    is rejected, and messages are not limited by it."""
    limit = RateLimit(connections=Rate(burst=2, per_second=0.5))
    harness = MiddlewareHarness([limit])
    for port in (1, 2):
        assert (await harness.connection_request(remote_addr=f"10.0.0.1:{port}")).accepted
    outcome = await harness.connection_request(remote_addr="10.0.0.1:3")
    assert (outcome.accepted, outcome.reached) == (False, False)
    assert (await harness.connection_request(remote_addr="[::1]:4")).accepted
    assert (await harness.message("x")).reached
    await trio.sleep(2)
    assert (await harness.connection_request(remote_addr="10.0.0.1:5")).accepted
    assert limit.statistics().connections_limited == 1


async def test_remote_ip_follows_the_connection(autojump_clock: trio.abc.Clock) -> None:
    """With messages keyed by remote IP, the IP seen at the request rides in metadata, so all
    connections from one address share a bucket."""
    harness = MiddlewareHarness(
        [RateLimit(messages=Rate(burst=1, per_second=1), message_key=by_remote_ip)]
    )
    outcome = await harness.connection_request(remote_addr="192.0.2.7:999")
    assert outcome.request is not None
    metadata = outcome.request.context.metadata
    assert metadata[REMOTE_IP.name] == "192.0.2.7"
    assert (await harness.message("x", client_id="a", metadata=metadata)).reached
    assert not (await harness.message("x", client_id="b", metadata=metadata)).reached
    assert (await harness.message("x", client_id="c")).reached  # no IP known: not limited


async def test_remote_ip_is_stored_only_when_messages_need_it() -> None:
    """Limits that do not key messages by IP leave the connection's metadata alone."""
    harness = MiddlewareHarness(
        [RateLimit(messages=Rate(burst=1, per_second=1), connections=Rate(burst=1, per_second=1))]
    )
    outcome = await harness.connection_request(remote_addr="192.0.2.7:999")
    assert outcome.request is not None
    assert outcome.request.context.metadata == {}


@pytest.mark.parametrize(
    ("key", "same", "other"),
    [
        (by_room, {"room_id": "r1"}, {"room_id": "r2"}),
        (by_metadata("user"), {"metadata": {"user": 7}}, {"metadata": {"user": 8}}),
        (
            by_identity,
            {"metadata": {"identity": Identity(subject="ann").to_json()}},
            {"metadata": {"identity": Identity(subject="bob").to_json()}},
        ),
    ],
)
async def test_keys(
    key: object, same: dict[str, object], other: dict[str, object], autojump_clock: trio.abc.Clock
) -> None:
    """Room, metadata field and identity keys put different clients in one bucket when they
    share the value, and in different ones otherwise."""
    harness = MiddlewareHarness(
        [RateLimit(messages=Rate(burst=1, per_second=1), message_key=key)]  # type: ignore[arg-type]
    )
    assert (await harness.message("x", client_id="a", **same)).reached  # type: ignore[arg-type]
    assert not (await harness.message("x", client_id="b", **same)).reached  # type: ignore[arg-type]
    assert (await harness.message("x", client_id="c", **other)).reached  # type: ignore[arg-type]


@attrs.frozen
class CountingStoreStatistics:
    hits: int


class CountingStore:
    """A store without the synchronous fast path: the middleware must await its hit()."""

    delay_nowait = None

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.keys: list[str] = []

    async def hit(self, key: str, rate: Rate) -> Decision:
        await trio.lowlevel.checkpoint()
        self.keys.append(key)
        return self.inner.hit_nowait(key, rate, trio.current_time())

    def statistics(self) -> CountingStoreStatistics:
        return CountingStoreStatistics(hits=len(self.keys))


async def test_any_store(autojump_clock: trio.abc.Clock) -> None:
    """Another RateLimitStore is awaited, with keys prefixed by the kind of limit, and its
    statistics() are the middleware's statistics().store."""
    store = CountingStore()
    limit = RateLimit(
        messages=Rate(burst=1, per_second=1), connections=Rate(burst=1, per_second=1), store=store
    )
    harness = MiddlewareHarness([limit])
    await harness.connection_request(remote_addr="10.0.0.9:1")
    await harness.message("x", client_id="ann")
    assert not (await harness.message("x", client_id="ann")).reached
    assert store.keys == ["c:10.0.0.9", "m:ann", "m:ann"]
    stats = limit.statistics()
    assert (stats.allowed, stats.messages_limited) == (2, 1)
    assert stats.store == CountingStoreStatistics(hits=3)


class FastStore:
    """A store (not a MemoryStore) with the synchronous fast path."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.nowait: list[tuple[str, float]] = []
        self.awaited: list[str] = []

    def delay_nowait(self, key: str, rate: Rate, now: float) -> float:
        self.nowait.append((key, now))
        return self.inner.delay_nowait(key, rate, now)

    async def hit(self, key: str, rate: Rate) -> Decision:
        await trio.lowlevel.checkpoint()
        self.awaited.append(key)
        return self.inner.hit_nowait(key, rate, trio.current_time())

    def statistics(self) -> MemoryStoreStatistics:
        return self.inner.statistics()


async def test_a_store_with_a_fast_path_is_called_synchronously(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Any store whose delay_nowait is a function, not only a MemoryStore, has it called for
    messages at trio's current time instead of an awaited hit(); connection requests still
    await hit()."""
    store = FastStore()
    limit = RateLimit(
        messages=Rate(burst=1, per_second=1), connections=Rate(burst=1, per_second=1), store=store
    )
    harness = MiddlewareHarness([limit])
    await harness.connection_request(remote_addr="10.0.0.9:1")
    await trio.sleep(5)
    assert (await harness.message("x", client_id="ann")).reached
    assert not (await harness.message("x", client_id="ann")).reached
    assert store.awaited == ["c:10.0.0.9"]
    assert store.nowait == [("m:ann", 5.0), ("m:ann", 5.0)]
    ((_, text),) = harness.sent
    assert json.loads(text)["reason"] == "too many messages: retry in 1 s"
    stats = limit.statistics()
    assert (stats.allowed, stats.messages_limited) == (2, 1)
    assert stats.store == store.inner.statistics()


class RefusingStore:
    """Refuses every hit, with no time to wait: a refusal all the same."""

    delay_nowait = None

    async def hit(self, key: str, rate: Rate) -> Decision:
        await trio.lowlevel.checkpoint()
        return Decision(allowed=False, retry_after=0.0, remaining=0)

    def statistics(self) -> None:
        return None


async def test_a_refusal_without_retry_after_is_a_refusal() -> None:
    """A store's decision counts, not its retry_after: allowed=False refuses the message."""
    harness = MiddlewareHarness(
        [RateLimit(messages=Rate(burst=1, per_second=1), store=RefusingStore())]
    )
    assert not (await harness.message("x")).reached


async def test_only_limited_events_are_counted(autojump_clock: trio.abc.Clock) -> None:
    """Events of a kind without a limit pass without being counted as allowed."""
    limit = RateLimit(connections=Rate(burst=1, per_second=1))
    harness = MiddlewareHarness([limit])
    assert (await harness.message("x")).reached
    assert limit.statistics().allowed == 0


@pytest.mark.parametrize(
    ("remote_addr", "ip"),
    [
        ("10.0.0.1:5", "10.0.0.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:db8::2", "2001:db8::2"),
        ("::1", "::1"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
async def test_remote_ip_parsing(remote_addr: str, ip: str) -> None:
    """The port is dropped from IPv4 and bracketed IPv6 addresses; bare addresses, IPv6 ones
    included, are kept whole."""
    harness = MiddlewareHarness(
        [RateLimit(messages=Rate(burst=1, per_second=1), message_key=by_remote_ip)]
    )
    outcome = await harness.connection_request(remote_addr=remote_addr)
    assert outcome.request is not None
    assert outcome.request.context.metadata[REMOTE_IP.name] == ip


class HitOnlyStore:
    """A store from before the protocol had statistics() and delay_nowait."""

    async def hit(self, key: str, rate: Rate) -> Decision:
        raise AssertionError("never called")


def test_configuration_is_checked() -> None:
    """No limit at all, a wrong action, a rate of the wrong type, a key that is not a
    function and a store that lacks a member of RateLimitStore are refused when the
    middleware is made, with a message that names the argument."""
    rate = Rate(burst=1, per_second=1)
    with pytest.raises(ValueError, match="needs messages=Rate"):
        RateLimit()
    with pytest.raises(ValueError, match="'on_message_limit' must be in"):
        RateLimit(messages=rate, on_message_limit="kick")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"'messages' must be <class '.*Rate'> \(got 5"):
        RateLimit(messages=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"'connections' must be <class '.*Rate'>"):
        RateLimit(connections=(1, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'message_key' must be callable"):
        RateLimit(messages=rate, message_key="client_id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"'store' must be <class '.*RateLimitStore'>"):
        RateLimit(messages=rate, store=HitOnlyStore())  # type: ignore[arg-type]
