"""``open_pubsub``: a connection of its own that subscribes to channels and yields messages.

Theory of operation. A subscribed connection receives two kinds of things mixed in one
stream: replies to its own commands (confirmations of ``SUBSCRIBE``, errors) and messages
that arrive whenever someone publishes. The same writer and reader tasks as a ``Redis``
connection run it (``_link.py``), with a reply handler of its own:

- a message (``["message", channel, data]`` or ``["pmessage", pattern, channel, data]``)
  goes to a bounded buffer, which ``async for message in pubsub`` empties;
- a command's completion is marked by a ``PING`` sent right after it: Redis answers commands
  in order, so when the pong comes, every confirmation of the command before it has come too.
  No confirmation counting (``UNSUBSCRIBE`` with no channel answers once per channel held, or
  once if none); an error reply before the pong is the error of the oldest command waiting;
- confirmations only update :attr:`PubSubStatistics.server_subscriptions`.

Slow consumers. The reader never stops reading: if it did, the kernel's buffers would fill,
then Redis's output buffer for this client, until Redis disconnects the subscriber (its
``client-output-buffer-limit pubsub``, 32 MB at once or 8 MB for a minute by default), losing
everything buffered there, in a state where the command replies behind the messages (a
``subscribe()`` waiting for its pong) are stuck as well. Instead, when the buffer holds
``max_buffered`` messages or ``max_buffered_bytes`` bytes of message data, new messages are
*dropped* (the ones already buffered keep their order): each drop is counted
(:attr:`PubSubStatistics.dropped`), the first drop of an episode logs a warning, and when the
consumer has caught up to half the buffer a second warning says how many were dropped. Pub/sub
is at-most-once delivery anyway (nothing is kept for a subscriber that is disconnected), so
the consumer must already live with gaps: this makes them visible and keeps the rest of the
process, and the connection, going.

Connection loss: ``async for`` delivers what is buffered, then raises
:class:`RedisConnectionError`. Subscriptions die with the connection: the caller opens a new
one after a backoff delay and subscribes again (:attr:`PubSub.channels` and
:attr:`PubSub.patterns` say to what). Publishing goes through a ``Redis`` connection
(``PUBLISH channel data``), not this one.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, Final, Literal, Self

import attrs
import outcome
import trio

from .._util import running
from ._client import connect, pack, resolve
from ._config import RedisConfig
from ._errors import RedisConnectionError, RedisReplyError
from ._link import Link

__all__ = ["Message", "PubSub", "PubSubStatistics", "open_pubsub"]

logger = logging.getLogger("strands_trio.redis")

_PING: Final = pack(("PING",))
_CONFIRMATIONS: Final = frozenset({b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe"})


@attrs.frozen(kw_only=True)
class Message:
    """A message published on a channel this connection is subscribed to.

    Attributes:
        kind: ``"message"`` (subscribed by channel name) or ``"pmessage"`` (by pattern).
        channel: The channel it was published on.
        data: What was published.
        pattern: For ``"pmessage"``: the pattern that matched the channel.
    """

    kind: Literal["message", "pmessage"]
    channel: bytes
    data: bytes
    pattern: bytes | None = None


@attrs.frozen(kw_only=True)
class PubSubStatistics:
    """A snapshot of a :class:`PubSub`, from :meth:`PubSub.statistics`.

    Attributes:
        received: Messages received from Redis (delivered, buffered or dropped).
        dropped: Messages dropped because the buffer was full.
        buffered: Messages waiting for the consumer.
        buffered_bytes: Bytes of message data waiting.
        channels: Channels subscribed to (as asked; Redis confirms them shortly after).
        patterns: Patterns subscribed to.
        server_subscriptions: Channels and patterns held, as Redis last confirmed.
        connected: Whether the connection is usable (not lost, not closed).
    """

    received: int
    dropped: int
    buffered: int
    buffered_bytes: int
    channels: int
    patterns: int
    server_subscriptions: int
    connected: bool


def _name(value: str | bytes) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise TypeError(f"a channel or pattern is str or bytes, got {type(value).__name__}")


class PubSub:
    """A subscriber connection: made by :func:`open_pubsub`, iterated for messages."""

    def __init__(self, *, max_buffered: int, max_buffered_bytes: int) -> None:
        if max_buffered < 1 or max_buffered_bytes < 1:
            raise ValueError("max_buffered and max_buffered_bytes must be at least 1")
        self._max_buffered = max_buffered
        self._max_bytes = max_buffered_bytes
        self._link: Link | None = None
        self._buffer: deque[Message] = deque()
        self._bytes = 0
        self._consumers = trio.lowlevel.ParkingLot()
        self._channels: set[bytes] = set()
        self._patterns: set[bytes] = set()
        self._received = 0
        self._dropped = 0
        self._dropping = 0  # drops in the current episode (0: no episode)
        self._server_subscriptions = 0

    def _attach(self, link: Link) -> None:
        self._link = link

    @property
    def channels(self) -> frozenset[bytes]:
        """The channels subscribed to, which a new connection subscribes to again."""
        return frozenset(self._channels)

    @property
    def patterns(self) -> frozenset[bytes]:
        """The patterns subscribed to."""
        return frozenset(self._patterns)

    @property
    def connected(self) -> bool:
        """``False`` once the connection is lost or closed (for good), ``True`` before."""
        return self._connection.connected

    @property
    def _connection(self) -> Link:
        if self._link is None:
            raise RuntimeError("a PubSub is made by open_pubsub()")
        return self._link

    async def subscribe(self, *channels: str | bytes) -> None:
        """Subscribe to *channels*; return once Redis has confirmed.

        Raises:
            RedisConnectionError: the connection is lost or closed.
            ValueError: no channel given.
        """
        names = self._names("subscribe", channels)
        await self._command(("SUBSCRIBE", *names), self._channels, add=names)

    async def unsubscribe(self, *channels: str | bytes) -> None:
        """Unsubscribe from *channels*, or from every channel if none is given; return once
        Redis has confirmed. Messages already buffered are still delivered.

        Raises:
            RedisConnectionError: the connection is lost or closed.
        """
        names = [_name(channel) for channel in channels]
        await self._command(("UNSUBSCRIBE", *names), self._channels, remove=names or None)

    async def psubscribe(self, *patterns: str | bytes) -> None:
        """Subscribe to the channels matching glob-style *patterns* (``news.*``); messages
        come as ``"pmessage"`` with the pattern.

        Raises:
            RedisConnectionError: the connection is lost or closed.
            ValueError: no pattern given.
        """
        names = self._names("psubscribe", patterns)
        await self._command(("PSUBSCRIBE", *names), self._patterns, add=names)

    async def punsubscribe(self, *patterns: str | bytes) -> None:
        """Unsubscribe from *patterns*, or from every pattern if none is given.

        Raises:
            RedisConnectionError: the connection is lost or closed.
        """
        names = [_name(pattern) for pattern in patterns]
        await self._command(("PUNSUBSCRIBE", *names), self._patterns, remove=names or None)

    async def ping(self) -> None:
        """Wait for a round trip to Redis: a health check, under the caller's deadline.

        Raises:
            RedisConnectionError: the connection is lost or closed.
        """
        link = self._connection
        await link.wait(link.submit(_PING))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        """The next message, in the order Redis sent them.

        Raises:
            StopAsyncIteration: the connection was closed (the ``open_pubsub`` block ended)
                and every message buffered has been delivered.
            RedisConnectionError: the connection was lost and every message buffered has
                been delivered.
        """
        link = self._connection
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._buffer:
            if not link.connected:
                if link.lost:
                    raise link.ended_error()
                raise StopAsyncIteration
            await self._consumers.park()
        message = self._buffer.popleft()
        self._bytes -= len(message.data)
        if self._dropping and self._caught_up():
            logger.warning(
                "pub/sub consumer caught up: %d messages were dropped while it was behind",
                self._dropping,
            )
            self._dropping = 0
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message

    @property
    def buffered(self) -> int:
        """Messages received and not yet taken (``0``: the next one is yet to come)."""
        return len(self._buffer)

    def statistics(self) -> PubSubStatistics:
        """Counters and state (see :class:`PubSubStatistics`)."""
        return PubSubStatistics(
            received=self._received,
            dropped=self._dropped,
            buffered=len(self._buffer),
            buffered_bytes=self._bytes,
            channels=len(self._channels),
            patterns=len(self._patterns),
            server_subscriptions=self._server_subscriptions,
            connected=self._link is not None and self._link.connected,
        )

    # -- internals -------------------------------------------------------------------

    @staticmethod
    def _names(what: str, names: tuple[str | bytes, ...]) -> list[bytes]:
        if not names:
            raise ValueError(f"{what}() needs at least one name")
        return [_name(name) for name in names]

    async def _command(
        self,
        args: tuple[str | bytes, ...],
        names: set[bytes],
        *,
        add: list[bytes] | None = None,
        remove: list[bytes] | None = None,
    ) -> None:
        """Send a (un)subscription and its PING, and wait for the pong. *names* (our
        channels or patterns) changes at once, in the order commands are written, so it
        says what Redis will hold: *add* is added, *remove* removed (``None``: all). If the
        call is withdrawn (cancelled before it was written), the change is undone."""
        link = self._connection
        call = link.submit(pack(args) + _PING)
        if add is not None:
            added = [name for name in add if name not in names]
            names.update(added)
            call.on_withdrawn = partial(names.difference_update, added)
        else:
            removed = names.intersection(remove) if remove is not None else set(names)
            names.difference_update(removed)
            call.on_withdrawn = partial(names.update, removed)
        await link.wait(call)

    def _caught_up(self) -> bool:
        return len(self._buffer) <= self._max_buffered // 2 and self._bytes <= self._max_bytes // 2

    def _on_reply(self, reply: Any) -> None:
        """The link's reply handler: messages to the buffer, pongs complete commands."""
        if type(reply) is list and reply:
            kind = reply[0]
            if kind == b"message" and len(reply) == 3:
                self._push(Message(kind="message", channel=reply[1], data=reply[2]))
                return
            if kind == b"pmessage" and len(reply) == 4:
                message = Message(
                    kind="pmessage", pattern=reply[1], channel=reply[2], data=reply[3]
                )
                self._push(message)
                return
            if kind in _CONFIRMATIONS and len(reply) == 3:
                self._server_subscriptions = reply[2]
                return
            if kind == b"pong":
                self._pong()
                return
        elif reply == b"PONG":  # no subscription left: a plain reply
            self._pong()
            return
        elif isinstance(reply, RedisReplyError):
            link = self._connection
            call = link.head()
            call.error = call.error or reply
            link.count_error_reply()
            return
        raise RedisConnectionError(f"unexpected reply on a pub/sub connection: {reply!r:.100}")

    def _pong(self) -> None:
        link = self._connection
        error = link.head().error
        link.pop_head(outcome.Value(None) if error is None else outcome.Error(error))

    def _push(self, message: Message) -> None:
        self._received += 1
        size = len(message.data)
        if len(self._buffer) >= self._max_buffered or self._bytes + size > self._max_bytes:
            self._dropped += 1
            if not self._dropping:
                logger.warning(
                    "pub/sub consumer too slow: its buffer is full (%d messages, %d bytes); "
                    "dropping new messages until it catches up",
                    len(self._buffer),
                    self._bytes,
                )
            self._dropping += 1
            return
        self._buffer.append(message)
        self._bytes += size
        if self._consumers:
            self._consumers.unpark()

    def _on_end(self) -> None:
        """The link's end hook: wake the consumers, to deliver what is left and then end."""
        self._consumers.unpark_all()


async def _serve_pubsub(
    config: RedisConfig,
    ssl_context: ssl.SSLContext | None,
    pubsub: PubSub,
    *,
    task_status: trio.TaskStatus[PubSub] = trio.TASK_STATUS_IGNORED,
) -> None:
    stream, reader = await connect(config, ssl_context)
    link = Link(stream, reader, config.where, on_reply=pubsub._on_reply, on_end=pubsub._on_end)
    pubsub._attach(link)
    await link.serve(pubsub, task_status=task_status)


@contextlib.asynccontextmanager
async def open_pubsub(
    url: str | RedisConfig,
    *,
    max_buffered: int = 10_000,
    max_buffered_bytes: int = 16 * 1024 * 1024,
    ssl_context: ssl.SSLContext | None = None,
    client_name: str | None = None,
) -> AsyncIterator[PubSub]:
    """Connect to Redis for pub/sub, and yield a :class:`PubSub` to subscribe with and
    iterate (``async for message in pubsub``).

    Args:
        url: As for :func:`open_redis`.
        max_buffered: Messages held for a consumer that is behind; beyond that, new
            messages are dropped, counted and logged (see the module's docstring for why).
        max_buffered_bytes: The same bound on the bytes of their data.
        ssl_context: For ``rediss://``, as for :func:`open_redis`.
        client_name: Sent with ``CLIENT SETNAME``.

    Resource handling: as for :func:`open_redis`: two tasks in a nursery this context
    manager owns, the connection closed when the block ends.

    Raises:
        RedisConnectionError: connecting or logging in failed.
        ValueError: a bad URL or buffer bound.
    """
    config = resolve(url)
    if client_name is not None:
        config = attrs.evolve(config, client_name=client_name)
    pubsub = PubSub(max_buffered=max_buffered, max_buffered_bytes=max_buffered_bytes)
    async with running(partial(_serve_pubsub, config, ssl_context, pubsub)) as started:
        yield started
