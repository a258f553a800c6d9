"""The Redis client (strands_trio.redis) against a real redis-server on loopback: round trips,
pipelining from many tasks, cancellation, error replies, scripts, pub/sub, TLS, and a server
killed and restarted under pending calls."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from strands_trio import StrandsError
from strands_trio.redis import (
    Message,
    Redis,
    RedisConfig,
    RedisConnectionError,
    RedisError,
    RedisReplyError,
    Script,
    open_pubsub,
    open_redis,
)
from strands_trio.redis._link import NOT_ENOUGH, Link, new_reader

if TYPE_CHECKING:
    from .._redis import RedisServer

#: Real redis-servers: redis_url (the session's, emptied), redis_session_server,
#: redis_server and redis_tls_server (a test's own).
pytest_plugins = ["tests._redis"]

DEADLINE = 10

# -- the URL ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost", RedisConfig(host="localhost")),
        ("redis://10.0.0.5:6380/2", RedisConfig(host="10.0.0.5", port=6380, db=2)),
        ("redis://:s3cret@h", RedisConfig(host="h", password="s3cret")),
        (
            "redis://alice:p%40ss%3A@h:1/0",
            RedisConfig(host="h", port=1, username="alice", password="p@ss:"),
        ),
        ("rediss://h:6390", RedisConfig(host="h", port=6390, tls=True)),
        ("redis://[::1]:7000", RedisConfig(host="::1", port=7000)),
    ],
)
def test_url_forms(url: str, expected: RedisConfig) -> None:
    """redis:// and rediss:// URLs give host, port, database, user and (percent-decoded)
    password."""
    assert RedisConfig.from_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "starts with redis:// or rediss://"),
        ("h:6379", "starts with redis:// or rediss://"),
        ("redis://h/db1", "database number"),
        ("redis://h:port", "port"),
        ("redis://h:70000", "port"),
        ("redis://h?db=1", "no query string"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    """A URL that is not a Redis URL is refused at once, with what to write instead."""
    with pytest.raises(ValueError, match=message):
        RedisConfig.from_url(url)


def test_password_is_not_shown() -> None:
    """A config's repr and its where string never show the password."""
    config = RedisConfig.from_url("redis://alice:hunter2@h")
    assert "hunter2" not in repr(config)
    assert "hunter2" not in config.where


def test_errors_are_strands_errors() -> None:
    """Every Redis error is a RedisError, itself a StrandsError; a reply error's code is its
    first word."""
    assert issubclass(RedisConnectionError, RedisError)
    assert issubclass(RedisReplyError, RedisError)
    assert issubclass(RedisError, StrandsError)
    assert RedisReplyError("NOSCRIPT No matching script.").code == "NOSCRIPT"


# -- commands -------------------------------------------------------------------------------


async def test_round_trips(redis_url: str) -> None:
    """Replies come back as hiredis parses them: status and bulk strings as bytes, integers,
    nil as None, arrays as lists; str, bytes and numbers go out as Redis expects."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            assert await redis.execute("PING") == b"PONG"
            assert await redis.execute("SET", "k", "vé") == b"OK"
            assert await redis.execute("GET", "k") == "vé".encode()
            assert await redis.execute("GET", b"missing") is None
            assert await redis.execute("INCRBY", "n", 41) == 41
            assert await redis.execute("INCRBYFLOAT", "n", 0.5) == b"41.5"
            assert await redis.execute("RPUSH", "l", b"\x00\xff", "b") == 2
            assert await redis.execute("LRANGE", "l", 0, -1) == [b"\x00\xff", b"b"]
            assert redis.connected
            stats = redis.statistics()
            assert (stats.calls, stats.errors, stats.pending) == (8, 0, 0)


async def test_error_replies_raise_and_keep_the_connection(redis_url: str) -> None:
    """An error reply raises RedisReplyError with Redis's message and code; the connection
    stays usable and the error is counted."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            with pytest.raises(RedisReplyError, match=r"^ERR unknown command 'NOPE'") as info:
                await redis.execute("NOPE", "x")
            assert info.value.code == "ERR"
            await redis.execute("SET", "s", "text")
            with pytest.raises(RedisReplyError) as info:
                await redis.execute("LPUSH", "s", "x")
            assert info.value.code == "WRONGTYPE"
            assert await redis.execute("GET", "s") == b"text"
            assert redis.statistics().errors == 2


async def test_execute_many_runs_a_transaction(redis_url: str) -> None:
    """execute_many sends its commands together and returns every reply in order, error
    replies in place: inside EXEC's array, and for a command refused while queuing."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            await redis.execute("SET", "s", "text")
            replies = await redis.execute_many(
                [("MULTI",), ("INCR", "c"), ("LPUSH", "s", "x"), ("EXEC",)]
            )
            assert replies[:3] == [b"OK", b"QUEUED", b"QUEUED"]
            assert replies[3][0] == 1
            assert isinstance(replies[3][1], RedisReplyError)
            assert replies[3][1].code == "WRONGTYPE"
            aborted = await redis.execute_many([("MULTI",), ("NOPE",), ("EXEC",)])
            assert aborted[0] == b"OK"
            assert isinstance(aborted[1], RedisReplyError)
            assert isinstance(aborted[2], RedisReplyError)
            assert aborted[2].code == "EXECABORT"
            assert await redis.execute("GET", "c") == b"1"
            assert await redis.execute_many([("GET", "c")]) == [b"1"]  # a list, even of one
            [alone] = await redis.execute_many([("INCR", "s")])
            assert isinstance(alone, RedisReplyError)  # returned in place, not raised


async def test_pipelined_tasks_get_their_own_replies(redis_url: str) -> None:
    """Many tasks sharing one connection each get the replies to their own commands, and
    their commands go out in far fewer writes than calls."""
    tasks, rounds = 50, 40

    async def worker(n: int, redis: object) -> None:
        for i in range(rounds):
            key, value = f"k{n}", f"{n}:{i}"
            assert await redis.execute("SET", key, value) == b"OK"  # type: ignore[attr-defined]
            assert await redis.execute("GET", key) == value.encode()  # type: ignore[attr-defined]

    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            async with trio.open_nursery() as nursery:
                for n in range(tasks):
                    nursery.start_soon(worker, n, redis)
            stats = redis.statistics()
            assert stats.calls == tasks * rounds * 2
            assert stats.pending == 0
            assert stats.writes < stats.calls / 5


async def test_cancelled_after_write_reply_is_dropped(redis_url: str) -> None:
    """A caller cancelled after its command was written: the command runs, its reply is read
    and dropped, and the next call on the connection gets its own reply."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis, open_redis(redis_url) as other:
            await redis.execute("SET", "k", "mine")
            with trio.CancelScope() as scope:

                async def cancel_once_written() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    assert redis.statistics().pending == 1
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_once_written)
                    await redis.execute("BLPOP", "queue", 0)  # blocks until LPUSH
            assert scope.cancelled_caught
            assert await other.execute("LPUSH", "queue", "item") == 1
            assert await redis.execute("GET", "k") == b"mine"
            assert await other.execute("LLEN", "queue") == 0  # the BLPOP did run
            stats = redis.statistics()
            assert (stats.abandoned, stats.withdrawn, stats.pending) == (1, 0, 0)


async def test_cancelled_before_write_is_withdrawn(redis_url: str) -> None:
    """A caller cancelled before the writer took its command: Redis never sees it."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            with trio.CancelScope() as scope:
                scope.cancel()
                await redis.execute("SET", "never", "1")
            assert await redis.execute("EXISTS", "never") == 0
            stats = redis.statistics()
            assert (stats.withdrawn, stats.abandoned, stats.calls) == (1, 0, 2)


async def test_refused_commands_and_arguments(redis_url: str) -> None:
    """Commands that would take over a shared connection, and arguments hiredis cannot
    send, are refused before anything is sent."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            with pytest.raises(ValueError, match="open_pubsub"):
                await redis.execute("subscribe", "ch")
            with pytest.raises(ValueError, match="MONITOR"):
                await redis.execute_many([("PING",), (b"monitor",)])
            with pytest.raises(TypeError):
                await redis.execute("SET", "k", None)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="needs a command"):
                await redis.execute()
            with pytest.raises(TypeError, match="at least one"):
                await redis.execute_many([])
            with pytest.raises(TypeError, match="at least its name"):
                await redis.execute_many([("PING",), ()])  # Redis would not answer it
            assert redis.statistics().calls == 0
            assert await redis.execute("PING") == b"PONG"


# -- the connection core on memory streams: a scripted server --------------------------------


@contextlib.asynccontextmanager
async def scripted(nursery: trio.Nursery) -> AsyncIterator[tuple[Redis, trio.abc.Stream]]:
    """A Redis on one end of an in-memory stream, and the other end to play the server."""
    client, server = trio.testing.memory_stream_pair()
    link = Link(client, new_reader(), "scripted")
    redis = await nursery.start(partial(link.serve, Redis(link, RedisConfig())))
    try:
        yield redis, server
    finally:
        nursery.cancel_scope.cancel()


async def read_commands(server: trio.abc.Stream, count: int) -> list[list[bytes]]:
    """The next *count* commands the client wrote, parsed (a RESP command is an array)."""
    reader, commands = new_reader(), []
    while len(commands) < count:
        reader.feed(await server.receive_some())
        while (command := reader.gets()) is not NOT_ENOUGH:
            commands.append(command)
    return commands


async def test_replies_split_byte_by_byte_are_matched(nursery: trio.Nursery) -> None:
    """Replies that arrive one byte at a time go to the callers that sent the commands, in
    order, an error reply raised in its own caller only."""
    results: dict[str, object] = {}

    async def call(name: str, redis: Redis) -> None:
        try:
            results[name] = await redis.execute("GET", name)
        except RedisReplyError as exc:
            results[name] = str(exc)

    with trio.fail_after(DEADLINE):
        async with scripted(nursery) as (redis, server), trio.open_nursery() as callers:
            for name in ("a", "b", "c"):
                callers.start_soon(call, name, redis)
                await trio.testing.wait_all_tasks_blocked()
            commands = await read_commands(server, 3)
            assert [command[1] for command in commands] == [b"a", b"b", b"c"]
            for byte in b"$1\r\n1\r\n*2\r\n:2\r\n$-1\r\n-ERR no\r\n":
                await server.send_all(bytes([byte]))
        assert results == {"a": b"1", "b": [2, None], "c": "ERR no"}


async def test_bytes_that_are_not_resp_fail_every_pending_call(nursery: trio.Nursery) -> None:
    """A server that sends something other than RESP breaks the connection: every call
    waiting fails with RedisConnectionError, and so does the next one."""
    failures: list[str] = []

    async def call(redis: Redis) -> None:
        with pytest.raises(RedisConnectionError) as info:
            await redis.execute("PING")
        failures.append(str(info.value))

    with trio.fail_after(DEADLINE):
        async with scripted(nursery) as (redis, server):
            async with trio.open_nursery() as callers:
                callers.start_soon(call, redis)
                callers.start_soon(call, redis)
                await read_commands(server, 2)
                await server.send_all(b"?what\r\n")
            assert len(failures) == 2
            assert all("Protocol error" in failure for failure in failures)
            with pytest.raises(RedisConnectionError, match="Protocol error"):
                await redis.execute("PING")


async def test_a_reply_nobody_asked_for_ends_the_connection(nursery: trio.Nursery) -> None:
    """A reply with no command waiting means the stream cannot be trusted: the connection
    ends."""
    with trio.fail_after(DEADLINE):
        async with scripted(nursery) as (redis, server):
            await server.send_all(b"+OK\r\n")
            await redis.wait_closed()
            with pytest.raises(RedisConnectionError, match="a reply to no command"):
                await redis.execute("PING")


async def test_cancelled_callers_replies_are_dropped_in_order(nursery: trio.Nursery) -> None:
    """Of three calls written, the middle one's caller is cancelled: its reply is read and
    dropped, and the other two get theirs."""
    results: dict[str, object] = {}

    async def call(key: str, redis: Redis) -> None:
        results[key] = await redis.execute("GET", key)

    with trio.fail_after(DEADLINE):
        async with scripted(nursery) as (redis, server), trio.open_nursery() as callers:
            callers.start_soon(call, "first", redis)
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as cancellable:
                cancellable.start_soon(call, "middle", redis)
                await trio.testing.wait_all_tasks_blocked()
                cancellable.cancel_scope.cancel()
            callers.start_soon(call, "last", redis)
            await trio.testing.wait_all_tasks_blocked()
            commands = await read_commands(server, 3)
            assert [command[1] for command in commands] == [b"first", b"middle", b"last"]
            await server.send_all(b"".join(b"+" + command[1] + b"\r\n" for command in commands))
        assert results == {"first": b"first", "last": b"last"}
        stats = redis.statistics()
        assert (stats.abandoned, stats.pending) == (1, 0)


# -- connecting and closing -----------------------------------------------------------------


async def test_select_and_client_name(redis_url: str, redis_session_server: RedisServer) -> None:
    """The URL's database is SELECTed and the client name set before any command."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url + "/3", client_name="strands-test") as redis:
            assert await redis.execute("CLIENT", "GETNAME") == b"strands-test"
            await redis.execute("SET", "in3", "yes")
    assert redis_session_server.command("EXISTS", "in3") == 0
    assert redis_session_server.command("SELECT", "3") == b"OK"


async def test_auth_with_user_and_refusals(
    redis_url: str,
    redis_session_server: RedisServer,
) -> None:
    """AUTH with an ACL user logs in; a wrong password or a database out of range fails the
    connection with RedisConnectionError, the reply error as its cause."""
    server = redis_session_server
    server.command("ACL", "SETUSER", "alice", "on", ">s3cret", "~*", "&*", "+@all")
    try:
        with trio.fail_after(DEADLINE):
            url = redis_url.replace("redis://", "redis://alice:s3cret@")
            async with open_redis(url) as redis:
                assert await redis.execute("ACL", "WHOAMI") == b"alice"
            with pytest.raises(RedisConnectionError, match="refused AUTH: WRONGPASS") as info:
                async with open_redis(url.replace("s3cret", "wrong")):
                    pass
            assert isinstance(info.value.__cause__, RedisReplyError)
            assert "wrong" not in str(info.value)
            with pytest.raises(RedisConnectionError, match="refused SELECT"):
                async with open_redis(redis_url + "/999"):
                    pass
    finally:
        server.command("ACL", "DELUSER", "alice")


async def test_connection_refused() -> None:
    """Nothing listening: RedisConnectionError, the OSError as its cause."""
    from .._redis import free_port  # after pytest_plugins has loaded it

    with trio.fail_after(DEADLINE):
        with pytest.raises(RedisConnectionError, match="cannot connect") as info:
            async with open_redis(f"redis://127.0.0.1:{free_port()}"):
                pass
        assert isinstance(info.value.__cause__, OSError)


async def test_block_errors_come_out_as_themselves(redis_url: str) -> None:
    """An exception raised in the open_redis block reaches the caller as itself, not in an
    exception group."""
    with trio.fail_after(DEADLINE):
        with pytest.raises(KeyError):
            async with open_redis(redis_url):
                raise KeyError("mine")


async def test_leaving_the_block_fails_pending_calls(redis_url: str) -> None:
    """Leaving the block closes the connection: a call still waiting (in a task outside the
    block) fails with RedisConnectionError, and so does any later call."""
    failures: list[RedisConnectionError] = []

    async def blocked(redis: object) -> None:
        with pytest.raises(RedisConnectionError) as info:
            await redis.execute("BLPOP", "nothing", 0)  # type: ignore[attr-defined]
        failures.append(info.value)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery, open_redis(redis_url) as redis:
            nursery.start_soon(blocked, redis)
            await trio.testing.wait_all_tasks_blocked()
            assert redis.statistics().pending == 1
        assert "is closed" in str(failures[0])
        assert not redis.connected
        with pytest.raises(RedisConnectionError, match="is closed"):
            await redis.execute("PING")
        await redis.wait_closed()


# -- scripts --------------------------------------------------------------------------------

COUNT = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


async def test_script_runs_by_sha_and_survives_a_flush(redis_url: str) -> None:
    """A script runs with EVALSHA; after SCRIPT FLUSH (as after a restart) the NOSCRIPT
    reply is answered with EVAL, which caches it again."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            assert await redis.execute("SCRIPT", "EXISTS", COUNT.sha1) == [0]
            assert await COUNT(redis, keys=["n"], args=[2]) == 2  # NOSCRIPT, then EVAL
            assert await redis.execute("SCRIPT", "EXISTS", COUNT.sha1) == [1]
            assert await COUNT(redis, keys=["n"], args=[3]) == 5  # EVALSHA alone
            assert redis.statistics().errors == 1
            await redis.execute("SCRIPT", "FLUSH")
            assert await COUNT(redis, keys=["n"], args=[1]) == 6
            assert redis.statistics().errors == 2


async def test_scripts_from_many_tasks_after_a_flush(redis_url: str) -> None:
    """Tasks calling a script that Redis forgot all get their results."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(lambda: COUNT(redis, keys=["n"], args=[1]))
            assert await redis.execute("GET", "n") == b"20"


async def test_script_errors(redis_url: str) -> None:
    """A failing script raises RedisReplyError; so does loading one that does not compile."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis:
            with pytest.raises(RedisReplyError, match="custom failure"):
                await Script("return redis.error_reply('custom failure')")(redis)
            with pytest.raises(RedisReplyError, match="Error compiling script"):
                await Script("return (").load(redis)
            await COUNT.load(redis)
            assert await redis.execute("SCRIPT", "EXISTS", COUNT.sha1) == [1]


# -- pub/sub --------------------------------------------------------------------------------


async def test_pubsub_subscribe_receive_unsubscribe(redis_url: str) -> None:
    """Subscribed channels' messages arrive in order, as Message records; after
    unsubscribing, nothing is delivered and Redis counts no receiver."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis, open_pubsub(redis_url) as pubsub:
            await pubsub.subscribe("a", b"b")
            assert pubsub.channels == {b"a", b"b"}
            assert await redis.execute("PUBLISH", "a", "one") == 1
            assert await redis.execute("PUBLISH", "b", b"\x00two") == 1
            assert await redis.execute("PUBLISH", "c", "not subscribed") == 0
            messages = aiter(pubsub)
            assert await anext(messages) == Message(kind="message", channel=b"a", data=b"one")
            assert await anext(messages) == Message(kind="message", channel=b"b", data=b"\x00two")
            await pubsub.unsubscribe("a")
            assert await redis.execute("PUBLISH", "a", "gone") == 0
            await pubsub.unsubscribe()
            assert pubsub.channels == frozenset()
            await pubsub.ping()
            stats = pubsub.statistics()
            assert (stats.received, stats.buffered, stats.server_subscriptions) == (2, 0, 0)


async def test_pubsub_cancelled_before_write_changes_nothing(redis_url: str) -> None:
    """A subscribe() or unsubscribe() cancelled before it was written is undone: channels
    says what Redis holds."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis, open_pubsub(redis_url) as pubsub:
            await pubsub.subscribe("kept")
            with trio.CancelScope() as scope:
                scope.cancel()
                await pubsub.subscribe("never")
            with trio.CancelScope() as scope:
                scope.cancel()
                await pubsub.unsubscribe()
            await pubsub.ping()
            assert pubsub.channels == {b"kept"}
            assert await redis.execute("PUBLISH", "never", "x") == 0
            assert await redis.execute("PUBLISH", "kept", "x") == 1
            assert pubsub.statistics().server_subscriptions == 1


async def test_pubsub_patterns(redis_url: str) -> None:
    """Pattern subscriptions deliver pmessage records with the pattern and the channel."""
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis, open_pubsub(redis_url) as pubsub:
            await pubsub.psubscribe("node.*")
            await redis.execute("PUBLISH", "node.7", "hi")
            message = await anext(aiter(pubsub))
            assert message == Message(
                kind="pmessage", pattern=b"node.*", channel=b"node.7", data=b"hi"
            )
            await pubsub.punsubscribe()
            assert await redis.execute("PUBLISH", "node.7", "gone") == 0


async def test_pubsub_command_error_is_raised(
    redis_url: str,
    redis_session_server: RedisServer,
) -> None:
    """A subscription Redis refuses (an ACL without that channel) raises RedisReplyError
    from subscribe(), and the connection goes on."""
    server = redis_session_server
    server.command("ACL", "SETUSER", "bob", "on", ">pw", "~*", "resetchannels", "&ok", "+@all")
    try:
        with trio.fail_after(DEADLINE):
            url = redis_url.replace("redis://", "redis://bob:pw@")
            async with open_redis(redis_url) as redis, open_pubsub(url) as pubsub:
                with pytest.raises(RedisReplyError, match="NOPERM"):
                    await pubsub.subscribe("secret")
                await pubsub.subscribe("ok")
                await redis.execute("PUBLISH", "ok", "fine")
                assert (await anext(aiter(pubsub))).data == b"fine"
    finally:
        server.command("ACL", "DELUSER", "bob")


async def test_pubsub_slow_consumer_drops_are_counted_and_logged(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When the buffer is full, new messages are dropped, counted and logged; the buffered
    ones keep their order; once the consumer catches up, the count of the episode is
    logged."""
    caplog.set_level(logging.WARNING, logger="strands_trio.redis")
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_url) as redis, open_pubsub(redis_url, max_buffered=4) as pubsub:
            await pubsub.subscribe("ch")
            for n in range(10):
                await redis.execute("PUBLISH", "ch", str(n))
            await pubsub.ping()  # its pong comes after the messages published before it
            stats = pubsub.statistics()
            assert (stats.received, stats.buffered, stats.dropped) == (10, 4, 6)
            assert [r.getMessage() for r in caplog.records] == [
                "pub/sub consumer too slow: its buffer is full (4 messages, 4 bytes); "
                "dropping new messages until it catches up"
            ]
            messages = aiter(pubsub)
            assert [(await anext(messages)).data for _ in range(2)] == [b"0", b"1"]
            assert caplog.records[-1].getMessage() == (
                "pub/sub consumer caught up: 6 messages were dropped while it was behind"
            )
            await redis.execute("PUBLISH", "ch", "after")
            assert [(await anext(messages)).data for _ in range(3)] == [b"2", b"3", b"after"]


async def test_pubsub_byte_bound(redis_url: str) -> None:
    """The buffer is bounded in bytes of data too."""
    with trio.fail_after(DEADLINE):
        async with (
            open_redis(redis_url) as redis,
            open_pubsub(redis_url, max_buffered_bytes=10) as pubsub,
        ):
            await pubsub.subscribe("ch")
            for data in ["12345", "67890", "x"]:
                await redis.execute("PUBLISH", "ch", data)
            await pubsub.ping()
            stats = pubsub.statistics()
            assert (stats.buffered, stats.buffered_bytes, stats.dropped) == (2, 10, 1)


async def test_pubsub_iteration_ends_with_the_block(redis_url: str) -> None:
    """A consumer iterating when the block ends gets the buffered messages, then its loop
    ends (StopAsyncIteration)."""
    received: list[bytes] = []

    async def consume(pubsub: object) -> None:
        async for message in pubsub:  # type: ignore[attr-defined]
            received.append(message.data)

    with trio.fail_after(DEADLINE):
        async with (
            open_redis(redis_url) as redis,
            trio.open_nursery() as nursery,
            open_pubsub(redis_url) as pubsub,
        ):
            await pubsub.subscribe("ch")
            await redis.execute("PUBLISH", "ch", "last")
            await pubsub.ping()
            nursery.start_soon(consume, pubsub)
            await trio.testing.wait_all_tasks_blocked()
        assert received == [b"last"]


# -- a server that goes away ----------------------------------------------------------------


async def test_server_killed_and_restarted(redis_server: RedisServer) -> None:
    """Killing Redis fails every pending call with RedisConnectionError, and the
    subscriber's iteration once it has delivered what it had buffered, and leaves the
    connections unusable; once Redis is back on the same port, new connections work (a
    restarted Redis has forgotten its scripts)."""
    server = redis_server
    failures: list[str] = []

    async def pending(redis: object, *command: str) -> None:
        with pytest.raises(RedisConnectionError) as info:
            await redis.execute(*command)  # type: ignore[attr-defined]
        failures.append(str(info.value))

    with trio.fail_after(DEADLINE):
        async with open_redis(server.url) as redis, open_pubsub(server.url) as pubsub:
            await COUNT(redis, keys=["n"], args=[1])
            await pubsub.subscribe("ch")
            await redis.execute("PUBLISH", "ch", "before")
            await pubsub.ping()  # the message is buffered
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending, redis, "BLPOP", "nothing", "0")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(pending, redis, "GET", "n")  # Redis runs it after the BLPOP
                await trio.testing.wait_all_tasks_blocked()
                assert redis.statistics().pending == 2
                await trio.to_thread.run_sync(server.kill)
            assert len(failures) == 2
            assert all("was lost" in failure for failure in failures)
            await redis.wait_closed()
            assert not redis.connected
            with pytest.raises(RedisConnectionError, match="was lost"):
                await redis.execute("PING")
            messages = aiter(pubsub)
            assert (await anext(messages)).data == b"before"
            with pytest.raises(RedisConnectionError, match="was lost"):
                await anext(messages)
            assert not pubsub.statistics().connected

        await trio.to_thread.run_sync(server.start)
        async with open_redis(server.url) as redis, open_pubsub(server.url) as pubsub:
            await pubsub.subscribe("ch")
            assert await COUNT(redis, keys=["n"], args=[1]) == 1  # NOSCRIPT, then EVAL
            assert await redis.execute("PUBLISH", "ch", "back") == 1
            assert (await anext(aiter(pubsub))).data == b"back"


# -- TLS ------------------------------------------------------------------------------------


async def test_tls(redis_tls_server: RedisServer) -> None:
    """rediss:// connects with TLS, verified against the context given; a server the
    context does not trust is refused with RedisConnectionError."""
    assert redis_tls_server.tls is not None
    trusting = ssl.create_default_context(cafile=redis_tls_server.tls[0])
    with trio.fail_after(DEADLINE):
        async with open_redis(redis_tls_server.url, ssl_context=trusting) as redis:
            assert await redis.execute("PING") == b"PONG"
        async with open_pubsub(redis_tls_server.url, ssl_context=trusting) as pubsub:
            await pubsub.subscribe("ch")
        with pytest.raises(RedisConnectionError, match="cannot connect") as info:
            async with open_redis(redis_tls_server.url):  # the system's CAs: not ours
                pass
        assert isinstance(info.value.__cause__, trio.BrokenResourceError)
