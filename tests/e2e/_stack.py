"""A broker and a small StrandsApp backend in a Trio thread, for the browser tests of
``strands.js`` (whose Playwright calls are synchronous): started and stopped from the test's
thread, restartable on the same ports (a broker restart, as the browser sees it)."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

import attrs
import trio

from strands_trio import (
    ConnectionRequestContext,
    Context,
    ExecutionContext,
    StrandsApp,
    use_guards,
    use_middleware,
)
from strands_trio.broker import BrokerAddress, BrokerConfig, serve_broker
from strands_trio.middleware import History, Rate, RateLimit, Timeout

#: The test page: it imports the module from the broker, as an application's page would,
#: and records events in ``window.events`` through ``track(client, names)``.
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>strands.js test</title></head><body>
<script type="module">
import * as strands from "/strands.js";
window.events = [];
window.track = (client, names) => {
  for (const name of names) {
    client.on(name, (...args) => window.events.push([name, ...args.map((a) => a ?? null)]));
  }
};
window.strands = strands;
</script></body></html>
"""

#: How long (s) a stack may take to start or stop.
START_SECONDS = 15


@attrs.frozen
class Echo:
    """``{"type": "echo", "text": "..."}``: answered with ``echoed`` (or, for a text that
    starts with ``raw:``, with the rest of the text as a raw string)."""

    text: str


@attrs.frozen
class Say:
    """``{"type": "chat.say", "text": "..."}``, for invalid typed messages."""

    text: str = attrs.field(validator=attrs.validators.max_len(10))


@attrs.frozen
class Add:
    """A call: ``{"type": "calc.add", "ref": 1, "a": 1, "b": 2}``, answered with a :class:`Sum`."""

    a: int
    b: int


@attrs.frozen
class Sum:
    """The data of the reply to :class:`Add`."""

    total: int


@attrs.frozen
class Nap:
    """``{"type": "calc.slow", "seconds": 0.1}``: the handler sleeps that long (its route's
    deadline is 0.5 s) and answers ``"awake"``."""

    seconds: float


async def never(ctx: ExecutionContext) -> bool:
    """A guard that refuses everything."""
    return False


class Backend:
    """What the tests' backends saw, across restarts: the token of every connection request
    (from its query string) and the text of every ``echo``, in order.

    A connection with the token ``bad`` is refused; messages are limited to a burst of
    ``burst`` per client (then ``rate_limited`` error frames).
    """

    def __init__(self, burst: int = 20, history: History | None = None) -> None:
        self.burst = burst
        #: Kept across restarts: ``post`` messages go to the room through it.
        self.history = history
        self.tokens: list[str | None] = []
        self.echoes: list[str] = []
        #: The totals of the ``calc.add`` calls handled, in order.
        self.calls: list[int] = []

    def make_app(self) -> StrandsApp:
        """A fresh app (an app serves once) that records into this object."""
        limit = RateLimit(messages=Rate(burst=self.burst, per_second=1))
        history = self.history
        app = StrandsApp(middleware=[limit] if history is None else [history, limit])

        @app.on_connection_request
        async def admit(request: ConnectionRequestContext) -> bool:
            token = request.param("token")
            self.tokens.append(token)
            request.context.room_id = request.path.removeprefix("/ws/")
            return token != "bad"

        @app.on_message("echo", model=Echo)
        async def echo(payload: Echo, context: Context) -> None:
            self.echoes.append(payload.text)
            if payload.text.startswith("raw:"):
                reply = payload.text.removeprefix("raw:")
            else:
                reply = json.dumps({"type": "echoed", "text": payload.text})
            await app.send_private_message(context.client_id, reply)

        if history is not None:

            @app.on_message("post", model=Echo)
            async def post(payload: Echo, context: Context) -> None:
                said = {"type": "said", "text": payload.text}
                await history.send_room_message(app, context.room_id, said)

        @app.on_message("chat.say", model=Say)
        async def say(payload: Say, context: Context) -> None:
            pass

        @app.on_message("calc.add", model=Add)
        async def add(payload: Add, context: Context) -> Sum:
            self.calls.append(payload.a + payload.b)
            return Sum(total=payload.a + payload.b)

        @app.on_message("calc.none")
        async def none(payload: dict[str, Any], context: Context) -> None:
            pass

        @app.on_message("calc.secret")
        @use_guards(never)
        async def secret(payload: dict[str, Any], context: Context) -> str:
            return "never"

        @app.on_message("calc.fail")
        async def fail(payload: dict[str, Any], context: Context) -> None:
            raise RuntimeError("a secret stack detail")

        @app.on_message("calc.hang")
        async def hang(payload: dict[str, Any], context: Context) -> str:
            await trio.sleep(3)  # past a stack's stop: the broker goes first
            return "too late"

        @app.on_message("calc.slow", model=Nap)
        @use_middleware(Timeout(0.5))
        async def slow(payload: Nap, context: Context) -> str:
            await trio.sleep(payload.seconds)
            return "awake"

        return app


@contextlib.contextmanager
def running_stack(backend: Backend, ws_port: int = 0, tcp_port: int = 0) -> Iterator[BrokerAddress]:
    """Our broker (serving the test page at ``/``) and *backend* in a Trio thread, until the
    block ends; the backend is connected when this yields."""
    config = BrokerConfig(
        ws_host="127.0.0.1", ws_port=ws_port, tcp_port=tcp_port, shutdown_timeout=2,
    )  # fmt: skip
    started: queue.Queue[Any] = queue.Queue()
    failure: list[BaseException] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            address: BrokerAddress = await nursery.start(
                lambda task_status: serve_broker(
                    config, extra_routes={"/": lambda q: (200, "text/html", PAGE)},
                    task_status=task_status,
                )
            )  # fmt: skip
            await nursery.start(backend.make_app().serve, "127.0.0.1", address.tcp_port)
            started.put((address, trio.lowlevel.current_trio_token(), nursery.cancel_scope))

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the test's thread
            failure.append(exc)
            started.put(None)

    thread = threading.Thread(target=run, name="strands-js-stack", daemon=True)
    thread.start()
    ready = started.get(timeout=START_SECONDS)
    if ready is None:
        raise RuntimeError("the broker or the backend failed to start") from failure[0]
    address, token, scope = ready
    try:
        yield address
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(START_SECONDS)
        assert not thread.is_alive(), "the stack did not stop"
        if failure:
            raise RuntimeError("the broker or the backend failed") from failure[0]
