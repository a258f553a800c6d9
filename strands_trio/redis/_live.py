"""Connections that come back: :class:`LiveRedis` and :class:`LivePubSub`, kept up by a task.

Theory of operation. A :class:`~strands_trio.redis.Redis` or
:class:`~strands_trio.redis.PubSub` is dead once its connection is lost, by design: what to
redo on a new connection depends on the caller. The broker cluster, the shared rate limit and
presence all want the same thing, so it is here, once:

- :func:`serve_live_redis` runs until cancelled, in the caller's nursery. It connects, and
  when the connection is lost (or cannot be made) it waits the next :class:`Backoff` delay
  and connects again, forever. It hands over a :class:`LiveRedis` at once, connected or not:
  a process must start, and keep serving, while Redis is down. While there is no connection,
  calls fail *at once* with :class:`RedisUnavailable`, so that each caller applies its own
  policy (a local fallback, a refusal, a count of what was lost) instead of waiting.
- :func:`serve_live_pubsub` does the same for a subscriber connection. It remembers the
  channels asked for, subscribes to all of them again on every new connection, then calls
  ``on_connect()`` (a gap in delivery has just ended: the owner counts it, or re-publishes
  state that a restarted Redis lost), and calls ``on_message(message)`` for each message, in
  order, in its own task. An exception from either callback is logged and counted, and
  delivery goes on.

An outage is logged once when it starts (WARNING) and once when it ends (INFO, with how long
it lasted and how many calls were refused), by an :class:`~strands_trio.redis.OutageLog`; the
attempts in between are logged at DEBUG.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from .._backoff import Backoff
from .._util import running
from ._client import Arg, Redis, open_redis, resolve
from ._config import RedisConfig
from ._errors import RedisConnectionError
from ._outage import OutageLog
from ._pubsub import Message, PubSub, open_pubsub

__all__ = [
    "Backoff",
    "LivePubSub",
    "LivePubSubStatistics",
    "LiveRedis",
    "LiveRedisStatistics",
    "RedisUnavailable",
    "open_live_pubsub",
    "open_live_redis",
    "serve_live_pubsub",
    "serve_live_redis",
]

logger = logging.getLogger("strands_trio.redis")


class RedisUnavailable(RedisConnectionError):
    """There is no connection to Redis at the moment; one is being made again.

    Raised at once by :class:`LiveRedis` calls while it is down, without waiting.
    """


#: The default delays between attempts to reach Redis again.
_BACKOFF = Backoff()


class _Kept:
    """What :class:`LiveRedis` and :class:`LivePubSub` share: whether their connection is up,
    the events to wait for either state, the counters, and an outage's two log lines."""

    def __init__(self, config: RedisConfig, what: str, counted: str | None) -> None:
        #: Where the connection goes (the password is not in its ``repr``).
        self.config = config
        self._what = what
        self._up = trio.Event()
        self._down = trio.Event()
        self._down.set()
        self._connects = 0
        self._connect_failures = 0
        self._losses = 0
        self._outage = OutageLog(
            logger, what, meanwhile="connecting again with backoff", counted=counted
        )

    def __repr__(self) -> str:
        state = "up" if self._up.is_set() else "down"
        return f"<{type(self).__name__} {self.config.where} {state}>"

    async def wait_available(self) -> None:
        """Return once a connection is up (at once if one is)."""
        await self._up.wait()

    async def wait_lost(self) -> None:
        """Return once the connection is lost (at once if none is up)."""
        await self._down.wait()

    def _connected(self) -> None:
        self._connects += 1
        self._down = trio.Event()
        self._up.set()
        self._outage.ended()

    def _disconnected(self) -> None:
        self._up = trio.Event()
        self._down.set()

    def _failed(self, exc: BaseException, *, lost: bool) -> None:
        """A connection was lost (*lost*) or could not be made: log it if an outage starts."""
        if lost:
            self._losses += 1
        else:
            self._connect_failures += 1
        self._outage.failed(exc)


@attrs.frozen(kw_only=True)
class LiveRedisStatistics:
    """A snapshot of a :class:`LiveRedis`, from :meth:`LiveRedis.statistics`.

    Attributes:
        available: Whether a connection is up now.
        connects: Connections made (the first one and every reconnection).
        connect_failures: Attempts to connect that failed.
        losses: Connections that were up and were lost.
        refused: Calls refused with :class:`RedisUnavailable` because none was up.
    """

    available: bool
    connects: int
    connect_failures: int
    losses: int
    refused: int


class LiveRedis(_Kept):
    """A Redis connection that :func:`serve_live_redis` keeps up: the same calls as
    :class:`~strands_trio.redis.Redis`, refused at once while Redis is unreachable."""

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(config, f"Redis at {config.where}", "calls refused")
        self._redis: Redis | None = None
        self._refused = 0

    @property
    def available(self) -> bool:
        """Whether a connection is up now (a call may still fail if it is lost meanwhile)."""
        return self._redis is not None

    def _current(self) -> Redis:
        redis = self._redis
        if redis is None:
            self._refused += 1
            self._outage.count()
            raise RedisUnavailable(f"Redis at {self.config.where} is unavailable (reconnecting)")
        return redis

    async def execute(self, *args: Arg) -> Any:
        """As :meth:`Redis.execute <strands_trio.redis.Redis.execute>`.

        Raises:
            RedisUnavailable: there is no connection now (raised at once).
            RedisConnectionError: the connection was lost while waiting for the reply.
            RedisReplyError: Redis answered with an error.
        """
        return await self._current().execute(*args)

    async def execute_many(self, commands: Iterable[Sequence[Arg]]) -> list[Any]:
        """As :meth:`Redis.execute_many <strands_trio.redis.Redis.execute_many>`.

        Raises:
            RedisUnavailable: there is no connection now (raised at once).
            RedisConnectionError: the connection was lost while waiting for the replies.
        """
        return await self._current().execute_many(commands)

    def statistics(self) -> LiveRedisStatistics:
        """Counters and state (see :class:`LiveRedisStatistics`)."""
        return LiveRedisStatistics(
            available=self.available,
            connects=self._connects,
            connect_failures=self._connect_failures,
            losses=self._losses,
            refused=self._refused,
        )

    async def _serve(
        self, backoff: Backoff, connect: Callable[[], contextlib.AbstractAsyncContextManager[Redis]]
    ) -> None:
        delays = backoff.delays()
        while True:
            try:
                async with connect() as redis:
                    self._redis = redis
                    self._connected()
                    delays = backoff.delays()
                    try:
                        await redis.wait_closed()
                        # Before anything can call and be refused: the refusals count for
                        # this outage.
                        self._failed(RedisConnectionError("the connection was lost"), lost=True)
                    finally:
                        self._redis = None
                        self._disconnected()
            except RedisConnectionError as exc:
                self._failed(exc.__cause__ or exc, lost=False)
            await trio.sleep(next(delays))


async def serve_live_redis(
    url: str | RedisConfig,
    *,
    backoff: Backoff = _BACKOFF,
    client_name: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[LiveRedis] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep a connection to Redis up until cancelled; with ``await nursery.start(...)``,
    returns a :class:`LiveRedis` at once, whether Redis is reachable yet or not.

    Args:
        url: ``redis://...`` or ``rediss://...``, or a :class:`RedisConfig`.
        backoff: The delays between attempts to connect.
        client_name: Sent with ``CLIENT SETNAME``.
        ssl_context: For ``rediss://``, as for :func:`open_redis`.

    Raises:
        ValueError: the URL is not a Redis URL (at once; unreachable Redis never raises).
    """
    config = resolve(url)
    if client_name is not None:
        config = attrs.evolve(config, client_name=client_name)
    live = LiveRedis(config)
    task_status.started(live)
    await live._serve(backoff, partial(open_redis, config, ssl_context=ssl_context))


@contextlib.asynccontextmanager
async def open_live_redis(
    url: str | RedisConfig,
    *,
    backoff: Backoff = _BACKOFF,
    client_name: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[LiveRedis]:
    """:func:`serve_live_redis` for the length of an ``async with`` block."""
    start = partial(
        serve_live_redis, url, backoff=backoff, client_name=client_name, ssl_context=ssl_context
    )
    async with running(start) as live:
        yield live


@attrs.frozen(kw_only=True)
class LivePubSubStatistics:
    """A snapshot of a :class:`LivePubSub`, from :meth:`LivePubSub.statistics`.

    Attributes:
        available: Whether a subscribed connection is up now.
        channels: Channels asked for (subscribed now, or on the next connection).
        connects: Connections made and subscribed.
        connect_failures: Attempts to connect (and subscribe) that failed.
        losses: Connections that were up and were lost.
        received: Messages handed to ``on_message``.
        dropped: Messages dropped because ``on_message`` fell behind (see
            :class:`~strands_trio.redis.PubSub`).
        callback_errors: Exceptions raised by ``on_message`` or ``on_connect`` (logged).
    """

    available: bool
    channels: int
    connects: int
    connect_failures: int
    losses: int
    received: int
    dropped: int
    callback_errors: int


class LivePubSub(_Kept):
    """A subscriber that :func:`serve_live_pubsub` keeps connected and subscribed."""

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(config, f"Redis pub/sub at {config.where}", None)
        self._pubsub: PubSub | None = None
        self._wanted: set[bytes] = set()
        self._received = 0
        self._dropped_before = 0
        self._callback_errors = 0

    @property
    def available(self) -> bool:
        """Whether a subscribed connection is up now."""
        return self._pubsub is not None

    @property
    def channels(self) -> frozenset[bytes]:
        """Channels asked for, subscribed now or as soon as a connection is up."""
        return frozenset(self._wanted)

    async def subscribe(self, *channels: str | bytes) -> None:
        """Ask for *channels*: subscribed now if a connection is up (returns once Redis has
        confirmed), and again on every new connection. Never raises for a lost connection."""
        names = [_name(channel) for channel in channels]
        self._wanted.update(names)
        await self._send("subscribe", names)

    async def unsubscribe(self, *channels: str | bytes) -> None:
        """Stop asking for *channels* (now, if a connection is up, and on later ones)."""
        names = [_name(channel) for channel in channels]
        self._wanted.difference_update(names)
        await self._send("unsubscribe", names)

    async def _send(self, command: str, names: list[bytes]) -> None:
        pubsub = self._pubsub
        if pubsub is None or not names:
            return
        with contextlib.suppress(RedisConnectionError):  # the next connection does it
            await getattr(pubsub, command)(*names)

    def statistics(self) -> LivePubSubStatistics:
        """Counters and state (see :class:`LivePubSubStatistics`)."""
        pubsub = self._pubsub
        dropped = self._dropped_before + (pubsub.statistics().dropped if pubsub else 0)
        return LivePubSubStatistics(
            available=self.available,
            channels=len(self._wanted),
            connects=self._connects,
            connect_failures=self._connect_failures,
            losses=self._losses,
            received=self._received,
            dropped=dropped,
            callback_errors=self._callback_errors,
        )

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            self._callback_errors += 1
            logger.exception("%s: %s raised", self._what, getattr(callback, "__name__", callback))

    async def _serve(
        self,
        backoff: Backoff,
        connect: Callable[[], contextlib.AbstractAsyncContextManager[PubSub]],
        on_message: Callable[[Message], None],
        on_connect: Callable[[], None] | None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        delays = backoff.delays()
        while True:
            up = False
            try:
                async with connect() as pubsub:
                    try:
                        # Until it is published as self._pubsub, subscribe() and
                        # unsubscribe() only change _wanted: catch up with what changed
                        # while we awaited Redis.
                        done: set[bytes] = set()
                        while (add := self._wanted - done) or (drop := done - self._wanted):
                            if add:
                                await pubsub.subscribe(*add)
                                done |= add
                            else:
                                await pubsub.unsubscribe(*drop)
                                done -= drop
                        self._pubsub = pubsub
                        self._connected()
                        up = True
                        delays = backoff.delays()
                        if on_connect is not None:
                            self._call(on_connect)
                        async for message in pubsub:
                            self._received += 1
                            self._call(on_message, message)
                            if on_idle is not None and not pubsub.buffered:
                                self._call(on_idle)
                        raise RedisConnectionError("the subscriber connection ended")
                    finally:
                        if self._pubsub is not None:
                            self._pubsub = None
                            self._disconnected()
                        self._dropped_before += pubsub.statistics().dropped
            except RedisConnectionError as exc:
                self._failed(exc.__cause__ or exc, lost=up)
            await trio.sleep(next(delays))


def _name(channel: str | bytes) -> bytes:
    if isinstance(channel, str):
        return channel.encode()
    if isinstance(channel, bytes):
        return channel
    raise TypeError(f"a channel is str or bytes, got {type(channel).__name__}")


async def serve_live_pubsub(
    url: str | RedisConfig,
    on_message: Callable[[Message], None],
    *,
    on_connect: Callable[[], None] | None = None,
    on_idle: Callable[[], None] | None = None,
    backoff: Backoff = _BACKOFF,
    max_buffered: int = 10_000,
    max_buffered_bytes: int = 16 * 1024 * 1024,
    client_name: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[LivePubSub] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep a subscriber connection up and subscribed until cancelled, calling
    ``on_message(message)`` for each message; with ``await nursery.start(...)``, returns a
    :class:`LivePubSub` at once, whether Redis is reachable yet or not.

    Args:
        url: As for :func:`serve_live_redis`.
        on_message: Called for each message, in order, in this task: keep it quick (it holds
            up the messages behind it; past the buffer, they are dropped and counted).
        on_connect: Called after each connection is made and subscribed: messages published
            before it, while no connection was up, are lost (pub/sub keeps nothing).
        on_idle: Called after a message when no other is waiting: the end of a burst, for a
            consumer that batches what its messages cause (a broker node writes to its
            clients once per burst).
        backoff: The delays between attempts to connect.
        max_buffered: As for :func:`open_pubsub`.
        max_buffered_bytes: As for :func:`open_pubsub`.
        client_name: Sent with ``CLIENT SETNAME``.
        ssl_context: For ``rediss://``.

    Raises:
        ValueError: the URL is not a Redis URL, or a bound is below 1.
    """
    config = resolve(url)
    if client_name is not None:
        config = attrs.evolve(config, client_name=client_name)
    if max_buffered < 1 or max_buffered_bytes < 1:
        raise ValueError("max_buffered and max_buffered_bytes must be at least 1")
    live = LivePubSub(config)
    task_status.started(live)
    connect = partial(
        open_pubsub,
        config,
        max_buffered=max_buffered,
        max_buffered_bytes=max_buffered_bytes,
        ssl_context=ssl_context,
    )
    await live._serve(backoff, connect, on_message, on_connect, on_idle)


@contextlib.asynccontextmanager
async def open_live_pubsub(
    url: str | RedisConfig,
    on_message: Callable[[Message], None],
    *,
    on_connect: Callable[[], None] | None = None,
    on_idle: Callable[[], None] | None = None,
    backoff: Backoff = _BACKOFF,
    max_buffered: int = 10_000,
    max_buffered_bytes: int = 16 * 1024 * 1024,
    client_name: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[LivePubSub]:
    """:func:`serve_live_pubsub` for the length of an ``async with`` block."""
    start = partial(
        serve_live_pubsub,
        url,
        on_message,
        on_connect=on_connect,
        on_idle=on_idle,
        backoff=backoff,
        max_buffered=max_buffered,
        max_buffered_bytes=max_buffered_bytes,
        client_name=client_name,
        ssl_context=ssl_context,
    )
    async with running(start) as live:
        yield live
