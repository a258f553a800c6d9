"""The backends the benchmarks measure, each run in its own process:
``python benchmarks/_backends.py KIND PORT [SLEEP [MAX_PENDING]]``.

Every backend answers each ``new_message`` with a ``message_to_connection`` back to its sender,
carrying the same message (the replay benchmark's handler).

- ``raw``: the ceiling: a blocking socket loop that reads, splits lines, decodes with orjson,
  encodes the reply and writes, with no framework at all;
- ``raw-broker``: the same loop for a real broker (``benchmarks/broker.py``): it also accepts
  every connection request (a fresh client id, the url as room) and ignores other events;
- ``strands``: strands-trio's ``StrandsClient``;
- ``pystrands``: the asyncio peer from PyPI (``AsyncPyStrandsClient``);
- ``flood``: strands-trio with a handler that sleeps SLEEP seconds before replying (memory);
- ``slow``: the same, but reconnecting (within a second) when the broker drops it, as a
  production backend would (``benchmarks/flood.py``: a broker that drops a slow backend
  then shows as lost messages, not as the end of the run); MAX_PENDING, if given, is its
  ``ClientConfig.max_pending_events``;
- ``pipeline``: ``StrandsClient`` with a pipeline but no middleware (an exception handler
  that never matches): the fixed cost of the pipeline;
- ``noop5``: ``StrandsClient`` with five middleware that only ``await call_next(ctx)``;
- ``stack``: ``StrandsClient`` with the real stack of :func:`real_stack`.
- ``replies``: a ``StrandsApp`` with two typed routes on one model (``benchmarks/replies.py``):
  ``ping`` sends a ``pong`` to its sender (``app.send_private_message``: plain typed ping-pong),
  ``echo`` returns the same ``Pong`` (a call with a ref: the app sends the ``reply``). It
  does not echo what it is sent: load it with ``_wsload.py pingpong --format typed`` or
  ``call``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
from typing import Any

import attrs
import orjson
import trio

from strands_trio import (
    BrokerConnectionError,
    CallNext,
    ClientConfig,
    Context,
    ExecutionContext,
    StrandsApp,
    StrandsClient,
    exception_handler,
)


def run_raw(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    partial = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        out = []
        for line in lines:
            frame = orjson.loads(line)
            params = frame["params"]
            out.append(
                orjson.dumps(
                    {
                        "request_id": frame["request_id"],
                        "action": "message_to_connection",
                        "params": {
                            "conn_id": params["context"]["client_id"],
                            "message": params["message"],
                        },
                    },
                    option=orjson.OPT_APPEND_NEWLINE,
                )
            )
        sock.sendall(b"".join(out))


def run_raw_broker(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    partial = b""
    ids = itertools.count()
    while True:
        data = sock.recv(65536)
        if not data:
            return
        lines = (partial + data).split(b"\n")
        partial = lines.pop()
        out = []
        for line in lines:
            if not line.strip():
                continue
            frame = orjson.loads(line)
            action, params = frame.get("action"), frame.get("params") or {}
            if action == "new_message":
                reply = {
                    "action": "message_to_connection",
                    "params": {
                        "conn_id": params["context"]["client_id"],
                        "message": params["message"],
                    },
                }
            elif action == "connection_request":
                reply = {
                    "action": "response",
                    "params": {
                        "accepted": True,
                        "client_id": f"raw-{next(ids)}",
                        "room_id": params.get("url") or "room",
                        "metadata": {},
                    },
                }
            else:  # new_connection, disconnected, heartbeat, error
                continue
            reply["request_id"] = frame["request_id"]
            out.append(orjson.dumps(reply, option=orjson.OPT_APPEND_NEWLINE))
        if out:
            sock.sendall(b"".join(out))


class _Echo(StrandsClient):
    async def on_message(self, message: str, context: Context) -> None:
        await self.send_private_message(context.client_id, message)


class _SleepyEcho(StrandsClient):
    sleep = 0.001

    async def on_message(self, message: str, context: Context) -> None:
        await trio.sleep(self.sleep)
        await self.send_private_message(context.client_id, message)


async def noop(ctx: ExecutionContext, call_next: CallNext) -> None:
    """A middleware that does nothing but call the next one."""
    await call_next(ctx)


def auth() -> Any:
    """JWT auth (at connection requests; on messages, the identity carried in metadata)."""
    from strands_trio.middleware import Auth, JWTVerifier

    return Auth(
        verifier=JWTVerifier(key="benchmark secret, 32 bytes or more", algorithms=("HS256",))
    )


def rate_limit() -> Any:
    """A rate limit per client id that lets the benchmarks' traffic through."""
    from strands_trio.middleware import Rate, RateLimit

    return RateLimit(messages=Rate(burst=10_000, per_second=100_000))


def real_stack() -> list[object]:
    """:func:`auth`, :func:`rate_limit`, and logging at a level that is disabled."""
    from strands_trio.middleware import Logging

    logging.getLogger("strands_trio.events").setLevel(logging.WARNING)
    return [Logging(level=logging.INFO), auth(), rate_limit()]


class _NeverRaised(Exception):
    pass


@exception_handler(_NeverRaised)
def never(ctx: ExecutionContext, exc: BaseException) -> None:
    """An exception handler that never matches: it turns a client's pipeline on."""


def run_strands(
    port: int,
    cls: type[StrandsClient] = _Echo,
    config: ClientConfig | None = None,
    **pipeline: Any,
) -> None:
    config = config or ClientConfig(reconnect=False)
    client = cls("127.0.0.1", port, config=config, **pipeline)
    with contextlib.suppress(BrokerConnectionError):  # the driver closed the connection
        trio.run(client.run)


def run_pystrands(port: int) -> None:
    from pystrands import AsyncPyStrandsClient

    class Echo(AsyncPyStrandsClient):  # type: ignore[misc]
        async def on_message(self, message: str, context: object) -> None:
            await self.send_private_message(context.client_id, message)  # type: ignore[attr-defined]

    async def main() -> None:
        client = Echo(host="127.0.0.1", port=port, auto_reconnect=False)
        await client.connect()
        await client.run_forever()

    asyncio.run(main())


@attrs.frozen
class Text:
    """The payload of both routes of :func:`run_replies`."""

    text: str


@attrs.frozen
class Pong:
    """What both routes answer: sent as ``{"type": "pong", ...}``, or a reply's data."""

    text: str


def run_replies(port: int) -> None:
    app = StrandsApp(config=ClientConfig(reconnect=False))
    app.outgoing("pong")(Pong)

    @app.on_message("ping", model=Text)
    async def ping(payload: Text, context: Context) -> None:
        await app.send_private_message(context.client_id, Pong(text=payload.text))

    @app.on_message("echo", model=Text)
    async def echo(payload: Text, context: Context) -> Pong:
        return Pong(text=payload.text)

    with contextlib.suppress(BrokerConnectionError):  # the driver closed the connection
        trio.run(app.serve, "127.0.0.1", port)


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "raw":
        run_raw(port)
    elif kind == "raw-broker":
        run_raw_broker(port)
    elif kind == "strands":
        run_strands(port)
    elif kind == "pystrands":
        run_pystrands(port)
    elif kind == "pipeline":
        run_strands(port, exception_handlers=[never])
    elif kind == "noop5":
        run_strands(port, middleware=[noop] * 5)
    elif kind == "stack":
        run_strands(port, middleware=real_stack())
    elif kind == "replies":
        run_replies(port)
    elif kind == "flood":
        _SleepyEcho.sleep = float(sys.argv[3])
        run_strands(port, _SleepyEcho)
    elif kind == "slow":
        _SleepyEcho.sleep = float(sys.argv[3])
        pending = {"max_pending_events": int(sys.argv[4])} if len(sys.argv) > 4 else {}
        config = ClientConfig(reconnect_delay=0.2, max_reconnect_delay=1.0, **pending)
        run_strands(port, _SleepyEcho, config)
    else:
        raise SystemExit(f"unknown backend kind {kind!r}")


if __name__ == "__main__":
    main()
