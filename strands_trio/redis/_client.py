"""``open_redis``: one Redis connection that any number of tasks share, pipelined.

Theory of operation. :func:`open_redis` connects (TCP, TLS for ``rediss://``), logs in with
``AUTH``/``SELECT``/``CLIENT SETNAME`` before anything else is sent, then runs the connection's
writer and reader tasks (``_link.py``) in a nursery that the ``async with`` block owns; they
end with the block. Errors reach the caller as themselves, not in an exception group: the two
tasks never raise for a broken connection (they record it and fail the calls waiting), and the
block's own exception is unwrapped from the nursery's group.

:meth:`Redis.execute` packs a command with ``hiredis.pack_command``, queues it and waits for
its reply, which it returns as hiredis parsed it (``bytes``, ``int``, ``list``, ``None``).
Many tasks calling at once share the connection: their commands go out in a few writes and
the replies are matched in order. That makes a shared connection the wrong place for
commands that change the connection's state for everyone (``SELECT``, ``MULTI`` ...
``EXEC`` sent as separate calls, which would interleave with other tasks' commands: use
:meth:`Redis.execute_many`, which queues its commands together) or that block it
(``BLPOP``, ``WAIT``, ``XREAD BLOCK``: open a connection of their own). Subscribing is refused:
pub/sub gets a connection of its own from ``open_pubsub``.

Connection loss fails every pending call with :class:`RedisConnectionError` and leaves the
:class:`Redis` unusable for good: a connection never comes back by itself (docs/redis.md
says why). Reconnecting, with a backoff, is a layer above (``_live.py``).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from functools import partial
from typing import Any, Final, TypeAlias

import attrs
import hiredis
import trio

from .._util import running
from ._config import RedisConfig
from ._errors import RedisConnectionError, RedisReplyError
from ._link import NOT_ENOUGH, Link, new_reader

__all__ = ["Arg", "Redis", "RedisStatistics", "open_redis"]

#: What a command's arguments may be: hiredis sends ``str`` as UTF-8 and numbers as text.
Arg: TypeAlias = str | bytes | memoryview | int | float

#: Commands that would change the protocol of a shared connection for everyone: turn it into a
#: subscriber or a monitor, switch it to RESP3, reset or close it. As str and as bytes.
_TAKEOVERS: Final = ("SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "RESET", "QUIT", "HELLO")
_REFUSED: Final[frozenset[str | bytes]] = frozenset(
    [*_TAKEOVERS, *(name.encode() for name in _TAKEOVERS)]
)


def _refuse_takeover(name: Arg | None) -> None:
    if isinstance(name, str | bytes) and name.upper() in _REFUSED:
        shown = name.upper() if isinstance(name, str) else name.upper().decode()
        raise ValueError(
            f"{shown} would take over a shared connection: use open_pubsub() to subscribe, "
            "and a connection of its own for anything else"
        )


def pack(args: Sequence[Arg]) -> bytes:
    """One command in RESP, by hiredis.

    Raises:
        TypeError: an argument is not ``str``, ``bytes``, ``memoryview``, ``int`` or ``float``,
            or there is none (Redis would skip an empty command without a reply, and every
            reply after it would go to the wrong caller).
    """
    if not args:
        raise TypeError("a command needs at least its name, e.g. ('PING',)")
    data: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]
    return data


@attrs.frozen(kw_only=True)
class RedisStatistics:
    """A snapshot of one connection, from :meth:`Redis.statistics`.

    Attributes:
        calls: Calls made (``execute_many`` counts once).
        errors: Error replies received (each raised as :class:`RedisReplyError`, or returned
            in place by ``execute_many``).
        pending: Calls queued or written and not answered yet.
        withdrawn: Calls cancelled before they were written: Redis never saw them.
        abandoned: Calls cancelled after they were written: they ran, their replies were
            read and dropped.
        writes: ``send_all`` calls made: fewer than ``calls`` when tasks pipeline.
        connected: Whether the connection is usable (not lost, not closed).
    """

    calls: int
    errors: int
    pending: int
    withdrawn: int
    abandoned: int
    writes: int
    connected: bool


class Redis:
    """One connection to Redis, shared by the tasks that use it: made by :func:`open_redis`."""

    __slots__ = ("_link", "config")

    def __init__(self, link: Link, config: RedisConfig) -> None:
        self._link = link
        #: Where this connection goes (the password is not in its ``repr``).
        self.config = config

    def __repr__(self) -> str:
        state = "connected" if self._link.connected else "ended"
        return f"<Redis {self.config.where} {state}>"

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply as hiredis parsed it: ``bytes`` for
        strings, ``int``, ``None`` for a nil, ``list`` for an array (an error inside an
        array, as in ``EXEC``'s reply, is a :class:`RedisReplyError` element, not raised).

        Cancellation: if the command has not been written yet, it never will be; if it has,
        it runs, and its reply is read and dropped. The connection stays usable either way.

        Raises:
            RedisReplyError: Redis answered with an error.
            RedisConnectionError: the connection is lost or closed (before or while waiting;
                the command may or may not have run).
            TypeError: an argument is not ``str``, ``bytes``, ``memoryview``, ``int`` or
                ``float``.
            ValueError: the command would take over the shared connection (``SUBSCRIBE``,
                ``MONITOR``, ...).
        """
        if not args:
            raise TypeError("execute() needs a command, e.g. execute('PING')")
        _refuse_takeover(args[0])
        link = self._link
        return await link.wait(link.submit(pack(args)))

    async def execute_many(self, commands: Iterable[Sequence[Arg]]) -> list[Any]:
        """Send several commands back to back, with nothing from other tasks in between,
        and return their replies in order. An error reply is *returned* in its place, as a
        :class:`RedisReplyError`, so that the other replies are not lost.

        The way to run a transaction on a shared connection:
        ``execute_many([("MULTI",), ("INCR", "k"), ("EXPIRE", "k", 60), ("EXEC",)])``.

        Cancellation: as for :meth:`execute`, for all the commands together.

        Raises:
            RedisConnectionError: the connection is lost or closed.
            TypeError: an argument is not of a type hiredis packs, or there are no commands.
            ValueError: a command would take over the shared connection.
        """
        packed = []
        for command in commands:
            _refuse_takeover(command[0] if command else None)
            packed.append(pack(command))
        if not packed:
            raise TypeError("execute_many() needs at least one command")
        link = self._link
        if len(packed) == 1:  # a one-reply call finishes with the bare reply: wrap it
            try:
                return [await link.wait(link.submit(packed[0]))]
            except RedisReplyError as exc:
                return [exc]
        replies: list[Any] = await link.wait(link.submit(b"".join(packed), len(packed)))
        return replies

    @property
    def connected(self) -> bool:
        """``False`` once the connection is lost or closed (for good), ``True`` before."""
        return self._link.connected

    async def wait_closed(self) -> None:
        """Return once the connection is lost or closed: for a task that reconnects."""
        await self._link.wait_ended()

    def statistics(self) -> RedisStatistics:
        """Counters and state of this connection (see :class:`RedisStatistics`)."""
        s = self._link.statistics()
        return RedisStatistics(
            calls=s.calls,
            errors=s.error_replies,
            pending=s.pending,
            withdrawn=s.withdrawn,
            abandoned=s.abandoned,
            writes=s.writes,
            connected=s.connected,
        )


def resolve(url: str | RedisConfig) -> RedisConfig:
    if isinstance(url, RedisConfig):
        return url
    if isinstance(url, str):
        return RedisConfig.from_url(url)
    raise TypeError(f"expected a redis:// URL or a RedisConfig, got {type(url).__name__}")


async def connect(
    config: RedisConfig, ssl_context: ssl.SSLContext | None
) -> tuple[trio.abc.Stream, hiredis.Reader]:
    """Open a stream to Redis and log in; return it with the parser that has read the
    handshake's replies.

    Raises:
        RedisConnectionError: connecting, TLS or a handshake command failed.
    """
    where = config.where
    try:
        tcp = await trio.open_tcp_stream(config.host, config.port)
    except OSError as exc:
        raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
    stream: trio.abc.Stream = tcp
    reader = new_reader()
    commands = config.handshake()
    try:
        try:
            if config.tls:
                stream = trio.SSLStream(
                    tcp, ssl_context or ssl.create_default_context(), server_hostname=config.host
                )
                await stream.do_handshake()
            if commands:
                await stream.send_all(b"".join(pack(command) for command in commands))
                for command in commands:
                    reply = await _read_reply(stream, reader)
                    if isinstance(reply, RedisReplyError):
                        name = " ".join(command[:2]) if command[0] == "CLIENT" else command[0]
                        raise RedisConnectionError(
                            f"Redis at {where} refused {name}: {reply}"
                        ) from (reply)
        except trio.BrokenResourceError as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {where}: {exc}") from exc
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream, reader


async def _read_reply(stream: trio.abc.Stream, reader: hiredis.Reader) -> Any:
    while (reply := reader.gets()) is NOT_ENOUGH:
        data = await stream.receive_some()
        if not data:
            raise trio.BrokenResourceError("Redis closed the connection")
        reader.feed(data)  # type: ignore[arg-type]  # hiredis takes any buffer
    return reply


async def _serve_redis(
    config: RedisConfig,
    ssl_context: ssl.SSLContext | None,
    *,
    task_status: trio.TaskStatus[Redis] = trio.TASK_STATUS_IGNORED,
) -> None:
    stream, reader = await connect(config, ssl_context)
    link = Link(stream, reader, config.where)
    await link.serve(Redis(link, config), task_status=task_status)


@contextlib.asynccontextmanager
async def open_redis(
    url: str | RedisConfig,
    *,
    ssl_context: ssl.SSLContext | None = None,
    client_name: str | None = None,
) -> AsyncIterator[Redis]:
    """Connect to Redis, log in, and yield a :class:`Redis` that tasks can share.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, or a
            :class:`RedisConfig`.
        ssl_context: For ``rediss://``: the context to verify the server with (the system's
            default context if ``None``).
        client_name: Sent with ``CLIENT SETNAME`` (it overrides the config's).

    Resource handling: the connection's two tasks run in a nursery that this context manager
    owns; leaving the block closes the connection (calls still pending fail with
    :class:`RedisConnectionError`). Connecting has no timeout of its own: put the block, or
    just its entry, under the caller's ``trio.fail_after``.

    Raises:
        RedisConnectionError: connecting or logging in failed (``AUTH`` refused, ``SELECT``
            out of range, ...); the cause is attached.
        ValueError: the URL is not a Redis URL.
    """
    config = resolve(url)
    if client_name is not None:
        config = attrs.evolve(config, client_name=client_name)
    async with running(partial(_serve_redis, config, ssl_context)) as redis:
        yield redis
