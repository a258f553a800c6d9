"""The rate-limit middleware: separate limits for connection requests and messages, per key.

Theory of operation. Each limit is a :class:`Rate` (burst, then a sustained rate) applied per
*key*: a function of the event's context that says whose bucket a hit goes in
(:func:`by_client`, :func:`by_remote_ip`, :func:`by_room`, :func:`by_metadata`,
:func:`by_identity`). Hits go to a :class:`RateLimitStore` (GCRA, one number per key): a
:class:`MemoryStore` of the middleware's own by default; a shared store (Redis) makes a limit
hold across backend replicas. A store that can decide without I/O says so with a synchronous
``delay_nowait`` (the memory store does), which the middleware calls instead of awaiting
``hit()``: no coroutine per message on the hot path.

What it is told and what it counts are apart: the arguments are a frozen, validated
:class:`RateLimitConfig` (``limit.config``), the counters live in the middleware, and
:meth:`RateLimit.from_config` makes another middleware from a config (``attrs.evolve`` one to
change a field) with counters of its own.

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
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Literal

import attrs
import trio
from attrs.validators import in_, instance_of, is_callable, optional

from strands_trio import CallNext, EventType, ExecutionContext, MetadataKey

from ._auth import IDENTITY
from ._ratelimit_store import MemoryStore, Rate, RateLimitStore

__all__ = [
    "REMOTE_IP",
    "RateLimit",
    "RateLimitConfig",
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
    #: The store's own ``statistics()``: a :class:`MemoryStoreStatistics` for the memory
    #: store, a :class:`RedisStoreStatistics` for Redis.
    store: object


@attrs.frozen(kw_only=True)
class RateLimitConfig:
    """What a :class:`RateLimit` limits, and where its buckets live; validated when made.

    The arguments of :class:`RateLimit`, as a record: ``attrs.evolve(limit.config, ...)``
    makes another, and :meth:`RateLimit.from_config` a middleware with counters of its own.

    Attributes:
        messages: The limit on ``new_message`` events, or ``None`` for no limit.
        connections: The limit on ``connection_request`` events, or ``None``.
        message_key: Whose bucket a message goes in.
        connection_key: Whose bucket a connection request goes in.
        on_message_limit: ``"error"`` or ``"drop"``.
        store: Where the buckets live; ``None`` for a :class:`MemoryStore` of each
            middleware's own.

    Raises:
        ValueError: neither limit is set, or *on_message_limit* is not one of the two.
        TypeError: a rate, key function or store has the wrong type.
    """

    messages: Rate | None = attrs.field(default=None, validator=optional(instance_of(Rate)))
    connections: Rate | None = attrs.field(default=None, validator=optional(instance_of(Rate)))
    message_key: KeyFunction = attrs.field(default=by_client, validator=is_callable())
    connection_key: KeyFunction = attrs.field(default=by_remote_ip, validator=is_callable())
    on_message_limit: Literal["error", "drop"] = attrs.field(
        default="error", validator=in_(("error", "drop"))
    )
    store: RateLimitStore | None = attrs.field(
        # A runtime-checkable Protocol: isinstance() checks that its members are there.
        default=None,
        validator=optional(instance_of(RateLimitStore)),  # type: ignore[type-abstract]
    )

    def __attrs_post_init__(self) -> None:
        if self.messages is None and self.connections is None:
            raise ValueError("RateLimit needs messages=Rate(...), connections=Rate(...) or both")


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
        store: Where the buckets live: a fresh :class:`MemoryStore` by default, or any
            :class:`RateLimitStore`. A store with a synchronous
            :attr:`~RateLimitStore.delay_nowait` is called without a coroutine per message.

    Attributes:
        config: The arguments, frozen and validated (:class:`RateLimitConfig`); what the
            middleware counted is in :meth:`statistics`.

    Raises:
        ValueError: neither limit is set, or *on_message_limit* is not one of the two.
        TypeError: a rate, key function or store has the wrong type.
    """

    __slots__ = (
        "_allowed",
        "_connection_key",
        "_connections",
        "_connections_limited",
        "_delay_nowait",
        "_error_frame",
        "_message_key",
        "_messages",
        "_messages_limited",
        "_store",
        "_store_ip",
        "config",
    )

    def __init__(
        self,
        *,
        messages: Rate | None = None,
        connections: Rate | None = None,
        message_key: KeyFunction = by_client,
        connection_key: KeyFunction = by_remote_ip,
        on_message_limit: Literal["error", "drop"] = "error",
        store: RateLimitStore | None = None,
    ) -> None:
        self._start(
            RateLimitConfig(
                messages=messages,
                connections=connections,
                message_key=message_key,
                connection_key=connection_key,
                on_message_limit=on_message_limit,
                store=store,
            )
        )

    @classmethod
    def from_config(cls, config: RateLimitConfig) -> RateLimit:
        """A middleware configured by *config*, with counters (and, if *config* names no
        store, a memory store) of its own.

        Raises:
            TypeError: *config* is not a :class:`RateLimitConfig`.
        """
        if not isinstance(config, RateLimitConfig):
            raise TypeError(f"config must be a RateLimitConfig, got {config!r}")
        limit = cls.__new__(cls)
        limit._start(config)
        return limit

    def _start(self, config: RateLimitConfig) -> None:
        self.config = config
        # Copied into slots: the hot path reads them once per event.
        self._messages = config.messages
        self._connections = config.connections
        self._message_key = config.message_key
        self._connection_key = config.connection_key
        self._error_frame = config.on_message_limit == "error"
        self._store: RateLimitStore = MemoryStore() if config.store is None else config.store
        # A store that decides without I/O saves a coroutine and an object per message.
        self._delay_nowait = self._store.delay_nowait
        self._store_ip = config.messages is not None and config.message_key is by_remote_ip
        self._allowed = self._messages_limited = self._connections_limited = 0

    def __repr__(self) -> str:
        return f"<RateLimit {self.config!r}>"

    @property
    def messages(self) -> Rate | None:
        """The limit on messages (from :attr:`config`)."""
        return self._messages

    @property
    def connections(self) -> Rate | None:
        """The limit on connection requests (from :attr:`config`)."""
        return self._connections

    @property
    def message_key(self) -> KeyFunction:
        """Whose bucket a message goes in (from :attr:`config`)."""
        return self._message_key

    @property
    def connection_key(self) -> KeyFunction:
        """Whose bucket a connection request goes in (from :attr:`config`)."""
        return self._connection_key

    @property
    def on_message_limit(self) -> Literal["error", "drop"]:
        """What a message over its limit gets (from :attr:`config`)."""
        return self.config.on_message_limit

    @property
    def store(self) -> RateLimitStore:
        """The store the buckets live in, the configured one or this middleware's own
        :class:`MemoryStore`."""
        return self._store

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        kind = ctx.get_type()
        if kind is _MESSAGE:
            rate = self._messages
            if rate is not None:
                key = self._message_key(ctx)
                if key is not None:
                    delay_nowait = self._delay_nowait  # inlined: no coroutine per event
                    if delay_nowait is not None:
                        delay = delay_nowait("m:" + key, rate, trio.current_time())
                        allowed = not delay
                    else:
                        decision = await self._store.hit("m:" + key, rate)
                        allowed, delay = decision.allowed, decision.retry_after
                    if not allowed:
                        await self._limit_message(ctx, delay)
                        return
                    self._allowed += 1
        elif kind is _CONNECTION_REQUEST:
            if self._store_ip:
                request = ctx.switch_to_connection_request().get_request()
                ctx.set_state(REMOTE_IP, _ip(request.remote_addr))
            rate = self._connections
            if rate is not None:
                key = self._connection_key(ctx)
                if key is not None:
                    if not (await self._store.hit("c:" + key, rate)).allowed:
                        self._connections_limited += 1
                        ctx.outcome = "rate_limited"
                        logger.debug("rejected a connection request over the limit of %s", key)
                        ctx.switch_to_connection_request().reject()
                        return
                    self._allowed += 1
        await call_next(ctx)

    def wrap_next(self, call_next: CallNext, kind: EventType) -> CallNext:
        """This layer's step in a pipeline (see :class:`~strands_trio.FastMiddleware`): for a
        message under its rate, counted by a store with a synchronous fast path, the rest of
        the chain itself; for events the limits do not concern, no step at all."""
        rate, delay_nowait = self._messages, self._delay_nowait
        if kind is _CONNECTION_REQUEST:
            return partial(self.__call__, call_next=call_next)
        if kind is not _MESSAGE or rate is None:
            return call_next
        if delay_nowait is None:  # a store that needs I/O: the full middleware
            return partial(self.__call__, call_next=call_next)
        message_key, limit = self._message_key, self._limit_message
        try:  # the run's clock, looked up once: trio.current_time() finds it on every call
            now = trio.lowlevel.current_clock().current_time
        except RuntimeError:  # built outside trio.run: look it up per event
            now = trio.current_time

        def step(ctx: ExecutionContext) -> Awaitable[None]:
            key = message_key(ctx)
            if key is None:
                return call_next(ctx)
            delay = delay_nowait("m:" + key, rate, now())
            if delay:
                return limit(ctx, delay)
            self._allowed += 1
            return call_next(ctx)

        return step

    async def _limit_message(self, ctx: ExecutionContext, retry_after: float) -> None:
        self._messages_limited += 1
        ctx.outcome = "rate_limited"
        logger.debug("dropped a message from client %s: over its limit", ctx.client_id)
        if self._error_frame:
            reason = f"too many messages: retry in {retry_after:.3g} s"
            await ctx.send_error("rate_limited", reason)

    def statistics(self) -> RateLimitStatistics:
        """What this middleware has counted so far, with its store's own figures."""
        return RateLimitStatistics(
            allowed=self._allowed,
            messages_limited=self._messages_limited,
            connections_limited=self._connections_limited,
            store=self._store.statistics(),
        )
