"""The rate-limit middleware: separate limits for connection requests and messages, per key.

Theory of operation. Each limit is a :class:`Rate` (burst, then a sustained rate) applied per
*key*: a function of the event's context that says whose bucket a hit goes in
(:func:`by_client`, :func:`by_remote_ip`, :func:`by_room`, :func:`by_metadata`,
:func:`by_identity`). Hits go to a :class:`RateLimitStore` (GCRA, one number per key): the
:class:`MemoryStore` by default, called without a coroutine on the hot path; a shared store
(Redis) makes a limit hold across backend replicas.

A connection request over its limit is rejected. A message over its limit is dropped and, by
default, its client gets a ``rate_limited`` error frame saying when to retry
(``on_message_limit="error"``), or it is dropped silently (``"drop"``). Every refusal is
counted; it is logged at DEBUG only, since a flood would otherwise flood the log too.

The broker sends a client's remote address only in its connection request, so
:func:`by_remote_ip` for messages reads the address this middleware stored in the connection's
metadata (``remote_ip``) when it saw the request.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable
from typing import Any, Literal

import attrs
import trio

from strands_trio import CallNext, EventType, ExecutionContext, MetadataKey

from ._auth import IDENTITY
from ._ratelimit_store import MemoryStore, MemoryStoreStatistics, Rate, RateLimitStore

__all__ = [
    "REMOTE_IP",
    "RateLimit",
    "RateLimitStatistics",
    "by_client",
    "by_identity",
    "by_metadata",
    "by_remote_ip",
    "by_room",
]

logger = logging.getLogger("strands_trio.middleware.ratelimit")

# An enum member is an attribute look-up on every access (slow on CPython 3.11): hot paths
# use these.
_CONNECTION_REQUEST = EventType.CONNECTION_REQUEST
_MESSAGE = EventType.MESSAGE

#: Whose bucket an event's hit goes in; ``None`` means the event is not limited.
KeyFunction = Callable[[ExecutionContext], str | None]

#: The client's IP, stored at the connection request for :func:`by_remote_ip`.
REMOTE_IP: MetadataKey[str] = MetadataKey("remote_ip", str)


def _ip(remote_addr: str) -> str:
    """The address without its port: ``1.2.3.4:5`` and ``[::1]:5`` become ``1.2.3.4`` and
    ``::1``; a bare address (IPv6 ones included) is returned as it is."""
    bare = remote_addr.removeprefix("[").removesuffix("]")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(bare))
    host, sep, port = remote_addr.rpartition(":")
    if not sep or not port.isdigit():
        return remote_addr
    return host.removeprefix("[").removesuffix("]")


def by_client(ctx: ExecutionContext) -> str | None:
    """The WebSocket client's id (for messages; a connection request has no id yet)."""
    return ctx.client_id


def by_remote_ip(ctx: ExecutionContext) -> str | None:
    """The client's IP address (the port dropped): read from the connection request, and from
    the metadata :class:`RateLimit` stored then for later events."""
    if ctx.get_type() is _CONNECTION_REQUEST:
        return _ip(ctx.switch_to_connection_request().get_request().remote_addr)
    value = ctx.context.metadata.get(REMOTE_IP.name)
    return value if type(value) is str else None


def by_room(ctx: ExecutionContext) -> str | None:
    """The client's room (for a connection request, the room it asks for)."""
    return ctx.context.room_id


def by_metadata(field: str) -> KeyFunction:
    """A metadata field of the connection, for example a user id set at the request; events
    whose connection lacks it are not limited by this key."""

    def key(ctx: ExecutionContext) -> str | None:
        value = ctx.context.metadata.get(field)
        return None if value is None else str(value)

    key.__qualname__ = f"by_metadata({field!r})"
    return key


def by_identity(ctx: ExecutionContext) -> str | None:
    """The subject of the identity the ``Auth`` middleware verified, so a user's limit holds
    across all their connections."""
    identity = ctx.context.metadata.get(IDENTITY.name)
    subject = identity.get("subject") if type(identity) is dict else None
    return subject if type(subject) is str else None


@attrs.frozen(kw_only=True)
class RateLimitStatistics:
    """What a :class:`RateLimit` has counted."""

    #: Events checked against a limit and let through, and events refused, by kind.
    allowed: int
    messages_limited: int
    connections_limited: int
    #: The memory store's own figures, when it is the store.
    store: MemoryStoreStatistics | None


class _Counters:
    def __init__(self) -> None:
        self.allowed = self.messages_limited = self.connections_limited = 0


def _optional_rate(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, Rate):
        raise TypeError(f"{attribute.name} must be a Rate or None, got {value!r}")


def _key_function(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(value):
        raise TypeError(f"{attribute.name} must be a function (ctx) -> str | None, got {value!r}")


@attrs.frozen(kw_only=True)
class RateLimit:
    """Limit how fast clients connect and send::

        RateLimit(
            messages=Rate(burst=10, per_second=2),        # per client id
            connections=Rate(burst=5, per_second=0.5),    # per remote IP
        )

    Args:
        messages: The limit on ``new_message`` events, or ``None`` for no limit.
        connections: The limit on ``connection_request`` events, or ``None``.
        message_key: Whose bucket a message goes in: :func:`by_client` by default.
        connection_key: Whose bucket a connection request goes in: :func:`by_remote_ip`.
        on_message_limit: ``"error"`` (the client gets a ``rate_limited`` error frame) or
            ``"drop"`` (silently). A connection request over its limit is always rejected.
        store: Where the buckets live: a fresh :class:`MemoryStore` by default.

    Raises:
        ValueError: neither limit is set, or *on_message_limit* is not one of the two.
        TypeError: a rate or key function has the wrong type.
    """

    messages: Rate | None = attrs.field(default=None, validator=_optional_rate)
    connections: Rate | None = attrs.field(default=None, validator=_optional_rate)
    message_key: KeyFunction = attrs.field(default=by_client, validator=_key_function)
    connection_key: KeyFunction = attrs.field(default=by_remote_ip, validator=_key_function)
    on_message_limit: Literal["error", "drop"] = attrs.field(
        default="error", validator=attrs.validators.in_(("error", "drop"))
    )
    store: RateLimitStore = attrs.field(factory=MemoryStore)
    _counters: _Counters = attrs.field(factory=_Counters, init=False, eq=False, repr=False)
    _delay_nowait: Callable[[str, Rate, float], float] | None = attrs.field(
        init=False, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.messages is None and self.connections is None:
            raise ValueError("RateLimit needs messages=Rate(...), connections=Rate(...) or both")
        # The memory store's synchronous hit saves a coroutine and an object per event.
        delay = self.store.delay_nowait if isinstance(self.store, MemoryStore) else None
        object.__setattr__(self, "_delay_nowait", delay)

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        kind = ctx.get_type()
        if kind is _MESSAGE:
            rate = self.messages
            if rate is not None:
                key = self.message_key(ctx)
                if key is not None:
                    delay_nowait = self._delay_nowait  # inlined: no coroutine per event
                    if delay_nowait is not None:
                        delay = delay_nowait("m:" + key, rate, trio.current_time())
                        allowed = not delay
                    else:
                        decision = await self.store.hit("m:" + key, rate)
                        allowed, delay = decision.allowed, decision.retry_after
                    if not allowed:
                        await self._limit_message(ctx, delay)
                        return
                    self._counters.allowed += 1
        elif kind is _CONNECTION_REQUEST:
            if self.messages is not None and self.message_key is by_remote_ip:
                request = ctx.switch_to_connection_request().get_request()
                ctx.set_state(REMOTE_IP, _ip(request.remote_addr))
            rate = self.connections
            if rate is not None:
                key = self.connection_key(ctx)
                if key is not None:
                    if not (await self.store.hit("c:" + key, rate)).allowed:
                        self._counters.connections_limited += 1
                        logger.debug("rejected a connection request over the limit of %s", key)
                        ctx.switch_to_connection_request().reject()
                        return
                    self._counters.allowed += 1
        await call_next(ctx)

    async def _limit_message(self, ctx: ExecutionContext, retry_after: float) -> None:
        self._counters.messages_limited += 1
        logger.debug("dropped a message from client %s: over its limit", ctx.client_id)
        if self.on_message_limit == "error":
            reason = f"too many messages: retry in {retry_after:.3g} s"
            await ctx.send_error("rate_limited", reason)

    def statistics(self) -> RateLimitStatistics:
        """What this middleware has counted so far."""
        c = self._counters
        store = self.store.statistics() if isinstance(self.store, MemoryStore) else None
        return RateLimitStatistics(
            allowed=c.allowed,
            messages_limited=c.messages_limited,
            connections_limited=c.connections_limited,
            store=store,
        )
