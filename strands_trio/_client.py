"""``StrandsClient``: the subclassing facade over the connection engine.

A backend subclasses :class:`StrandsClient` and overrides its ``on_*`` handlers. The client
owns no connection logic: :meth:`StrandsClient.run` builds the jobs for its handlers (through
the middleware pipeline if it has one, else directly) and runs an
:class:`~strands_trio._engine.Engine`, which connects, reads, dispatches, answers and
reconnects. The send API is the engine's. Nothing overridable is called while the client is
constructed: the handlers are only looked at, to check their parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any, Self

import trio

from ._brokers import BrokerLink
from ._config import ClientConfig
from ._engine import Engine, StreamFactory
from ._handlers import HANDLER_NAMES, Jobs, default_handler, log_broker_error
from ._parts import (
    ExceptionHandler,
    ForbiddenHook,
    GuardLike,
    Middleware,
    validate_handlers,
    validate_pipeline,
)
from ._pipeline import make_jobs
from ._rooms import change_room
from ._statistics import ClientStatistics
from ._util import running
from .context import ConnectionRequestContext, Context
from .protocol import BrokerMember

__all__ = ["StrandsClient", "StreamFactory"]


class StrandsClient:
    """A backend for a PyStrands broker: subclass it and override the ``on_*`` handlers.

    The handlers and send methods have the names of the asyncio peer
    (``pystrands.AsyncPyStrandsClient``), so porting a backend means changing imports and
    running it with ``trio.run(client.run)``. Handlers may be ``async def`` (run on the event
    loop) or plain ``def`` (run in a worker thread).

    Args:
        host: The broker's backend host.
        port: The broker's backend port (8081 for the reference broker).
        config: Reconnection, concurrency, buffer and timeout settings.
        connect: How to open the byte stream to the broker, instead of TCP to
            ``host:port``: for TLS, a Unix socket, or :class:`strands_trio.testing.FakeBroker`.
        middleware: What every event passes through before its handler, outermost first:
            ``async def middleware(ctx, call_next)`` functions or objects with such an async
            ``__call__`` (see :mod:`strands_trio.middleware`).
        guards: Checked in order after the middleware: objects with ``can_activate(ctx)`` or
            functions ``(ctx) -> bool``, sync or async. A refused connection request is
            rejected; a refused message is dropped and passed to *on_forbidden*.
        exception_handlers: Tried in order for an exception from the pipeline: objects with
            ``exception_types`` and ``catch(ctx, exc)``, or :func:`exception_handler` functions.
        on_forbidden: ``(ctx, guard)``, called when a guard refuses a message; by default
            the refusal is logged and the client gets a ``forbidden`` error frame.

    Raises:
        TypeError: *config* is not a :class:`ClientConfig`; a handler cannot take the
            arguments it is called with; a middleware is not async, a guard has no
            ``can_activate``, or an exception handler no ``exception_types`` / ``catch``.

    Example::

        class Echo(StrandsClient):
            async def on_message(self, message, context):
                await self.send_room_message(context.room_id, message)

        trio.run(Echo("localhost", 8081).run)
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8081,
        *,
        config: ClientConfig | None = None,
        connect: StreamFactory | None = None,
        middleware: Sequence[Middleware] = (),
        guards: Sequence[GuardLike] = (),
        exception_handlers: Sequence[ExceptionHandler] = (),
        on_forbidden: ForbiddenHook | None = None,
    ) -> None:
        if config is not None and not isinstance(config, ClientConfig):
            raise TypeError(f"config must be a ClientConfig, got {type(config).__name__}")
        validate_pipeline(middleware, guards, exception_handlers)
        self.host = host
        self.port = port
        self.config = config or ClientConfig()
        self._middleware = tuple(middleware)
        self._guards = tuple(guards)
        self._exception_handlers = tuple(exception_handlers)
        self._on_forbidden = on_forbidden
        self._thread_limiter = trio.CapacityLimiter(self.config.max_threads)
        where = (
            f"{host}:{port}" if connect is None else getattr(connect, "__qualname__", repr(connect))
        )
        self._engine = Engine(
            self.config, connect or partial(trio.open_tcp_stream, host, port), where
        )
        validate_handlers(self._handlers(), type(self).__qualname__)

    # ------------------------------------------------------------------ handlers

    async def on_connection_request(self, request: ConnectionRequestContext) -> bool | None:
        """A WebSocket client asks to connect. Return ``True`` to accept, ``False`` to reject,
        or ``None`` to answer ``request.accepted``. Place the client by setting
        ``request.context.room_id`` / ``client_id`` / ``metadata``; they default to the
        request's ``url``, a fresh UUID4 and ``{}``. If this raises or takes longer than
        ``config.request_timeout``, the request is rejected.

        The default accepts everyone, like the asyncio peer's.
        """
        return True

    async def on_new_connection(self, context: Context) -> None:
        """An accepted client is connected. The default does nothing."""

    async def on_message(self, message: str, context: Context) -> None:
        """A client sent *message*. The default does nothing."""

    async def on_disconnect(self, context: Context) -> None:
        """A client left. The default does nothing."""

    @default_handler
    async def on_error(self, error: str, context: Context | ConnectionRequestContext) -> None:
        """The broker reported *error*. *context* is a :class:`ConnectionRequestContext` when
        it is about a request that came while no backend was connected. The default logs it
        (a WARNING; INFO for a client refused while no backend was connected).
        """
        log_broker_error(error, context)

    def _handlers(self) -> dict[str, Callable[..., Any]]:
        return {name: getattr(self, name) for name in HANDLER_NAMES}

    # ------------------------------------------------------------------ sending

    async def send_room_message(self, room_id: str, message: str, *, wait: bool = False) -> None:
        """Send *message* to every client in *room_id*.

        Returns once the frame is queued for writing; waits only when the outbox is full.

        Args:
            wait: While disconnected, wait for the next connection instead of raising.

        Raises:
            NotConnectedError: there is no connection to the broker (and ``wait`` is false).
            TypeError: *room_id* or *message* is not a string.
        """
        await self._engine.send_room_message(room_id, message, wait=wait)

    async def send_private_message(
        self, client_id: str, message: str, *, wait: bool = False
    ) -> None:
        """Send *message* to the client *client_id*. See :meth:`send_room_message`."""
        await self._engine.send_private_message(client_id, message, wait=wait)

    async def broadcast_message(self, message: str, *, wait: bool = False) -> None:
        """Send *message* to every client. See :meth:`send_room_message`."""
        await self._engine.broadcast_message(message, wait=wait)

    async def close_connection(
        self, client_id: str, code: int = 1000, reason: str = "", *, wait: bool = False
    ) -> None:
        """Ask the broker to close the socket of *client_id* with a WebSocket close *code*
        and *reason*; its ``disconnected`` event follows as usual.

        An extension of strands-trio's broker: **the reference broker ignores it** (it has
        no way to disconnect a client), so a backend that may run against it must not rely
        on it. See :meth:`send_room_message` for *wait* and when this returns.

        Raises:
            ValueError: *code* is not one an application may send (1000, or 3000 to 4999),
                or *reason* is longer than 123 bytes in UTF-8.
            NotConnectedError: as :meth:`send_room_message`.
        """
        await self._engine.close_connection(client_id, code, reason, wait=wait)

    async def join_room(self, client_id: str, room_id: str, *, wait: bool = False) -> None:
        """Put the client *client_id* in *room_id* too, besides the room it connected to:
        it gets the room's messages (``send_room_message``) until :meth:`leave_room` or its
        disconnection. Joining a room it is in does nothing. Middleware that implements
        :class:`~strands_trio.RoomListener` (the presence middleware) is told once the action
        is sent. See :meth:`send_room_message` for *wait*, and ``docs/rooms.md``.

        An extension of strands-trio's broker (a cluster reaches the client on whichever
        node it is).

        Raises:
            RoomsUnsupported: the broker is the reference one (it sent no ``hello``): its
                clients have one room each, fixed at connect.
            NotConnectedError: as :meth:`send_room_message`.
            TypeError: *client_id* or *room_id* is not a string.
        """
        await change_room(self._engine, self._middleware, client_id, room_id, join=True, wait=wait)

    async def leave_room(self, client_id: str, room_id: str, *, wait: bool = False) -> None:
        """Take the client *client_id* out of *room_id*, a room it joined with
        :meth:`join_room` (a client leaves its connect-time room only by disconnecting:
        leaving that one does nothing). As :meth:`join_room` otherwise.

        Raises:
            RoomsUnsupported: as :meth:`join_room`.
            NotConnectedError: as :meth:`send_room_message`.
            TypeError: *client_id* or *room_id* is not a string.
        """
        await change_room(self._engine, self._middleware, client_id, room_id, join=False, wait=wait)

    async def presence(self, room_id: str, *, wait: bool = False) -> list[BrokerMember]:
        """Ask the broker who is in *room_id*: each member's client id and the broker node
        its socket is on (every node of a broker cluster is asked).

        An extension of strands-trio's broker: **the reference broker never answers**, so
        this then waits until the caller's deadline (put it under ``trio.fail_after``); a
        backend that may run against the reference broker should track presence itself
        (the presence middleware does, from connection events). See
        :meth:`send_room_message` for *wait*.

        Raises:
            PresenceIncomplete: a broker node answered without the rest of its cluster
                (Redis unreachable); its own members are in the exception's ``members``.
            NotConnectedError: there is no connection, or it was lost before the reply
                came (with ``wait=True``, the question is asked again on the next
                connection instead).
            TypeError: *room_id* is not a string.
        """
        return await self._engine.presence(room_id, wait=wait)

    # ------------------------------------------------------------------ state

    @property
    def is_connected(self) -> bool:
        """Whether a connection to the broker is up now."""
        return self._engine.is_connected

    async def wait_connected(self) -> None:
        """Return once a connection to the broker is up (at once if it is)."""
        await self._engine.wait_connected()

    @property
    def broker_link(self) -> BrokerLink | None:
        """The link to the broker up now (:class:`~strands_trio.BrokerLink`: which broker,
        which instance of it), once its first frame said so; ``None`` when not connected."""
        return self._engine.link

    def statistics(self) -> ClientStatistics:
        """What this client has done so far: see :class:`ClientStatistics`."""
        return self._engine.statistics()

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect to the broker and handle its events until cancelled.

        With ``await nursery.start(client.run)``, returns once the first connection is up.
        Reconnects with backoff when the connection fails or is lost (see :class:`ClientConfig`).

        Cancellation: cancelling the enclosing scope is the way to stop. The client stops
        reading, lets queued and running handlers finish and the outbox flush for up to
        ``config.shutdown_timeout`` seconds, cancels what is left, closes the connection, and
        lets the ``Cancelled`` propagate.

        Raises:
            BrokerConnectionError: the connection could not be made or was lost and
                ``config.reconnect`` is false.
            RuntimeError: this client is already running.
        """
        if self._engine.running:
            raise RuntimeError("this StrandsClient is already running")
        await self._engine.run(self._jobs(), task_status=task_status)

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[Self]:
        """Run the client for the duration of an ``async with`` block, which starts once the
        first connection is up::

            async with MyBackend("localhost", 8081).connected() as client:
                await client.broadcast_message("backend up")

        Leaving the block stops the client as cancellation does (graceful, bounded by
        ``config.shutdown_timeout``). An exception from the block or from the client
        propagates as itself, not wrapped in an exception group.
        """
        async with running(self.run):
            yield self

    def _jobs(self) -> Jobs:
        """The jobs the engine runs for this client's handlers (built when it starts, so a
        handler replaced on the instance before then is the one called)."""
        return make_jobs(
            self._handlers(),
            app=self,
            client=self,
            middleware=self._middleware,
            guards=self._guards,
            exception_handlers=self._exception_handlers,
            on_forbidden=self._on_forbidden,
            router=None,
            message_fallback=True,
            counters=self._engine.counters,
            limiter=self._thread_limiter,
        )
