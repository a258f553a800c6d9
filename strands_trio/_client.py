"""The Trio backend client: connects to a broker and turns its events into handler calls.

Theory of operation. ``run()`` owns every task the client starts; none outlives it:

    run()                                  the caller's task
    ├── watcher                            sleeps; turns the caller's cancellation into a drain
    └── [shielded services scope]
        ├── dispatcher workers             run handlers (KeyedDispatcher)
        └── connection loop                connect, read, reconnect with backoff (run's task)
            └── writer                     one per connection (Outbox.write_loop)

Events are read by the connection loop, decoded by the sans-IO codec and submitted to the
dispatcher keyed by WebSocket client id, so one client's events run in order and different
clients' events run concurrently (up to ``max_concurrency``). When ``max_pending_events`` are
waiting, the loop stops reading until the backlog halves: the kernel's buffers fill and TCP
pushes back on the broker. Handlers' sends are encoded and queued on the connection's outbox,
which one writer task flushes in coalesced writes.

Cancellation: the services live in a shielded cancel scope, so the caller's cancellation does
not hit handlers mid-way. The watcher task, outside the shield, sees it and starts a graceful
shutdown: stop connecting and reading, let queued and running handlers finish and the outbox
flush, close the connection. The services scope gets a deadline of ``shutdown_timeout`` at that
moment; whatever is still running then is cancelled. Then the caller's ``Cancelled`` goes on.

Reconnection: a connection ends on EOF, a broken socket, a failed write, or silence (nothing,
not even a heartbeat, for ``heartbeat_interval * dead_after_heartbeats``). The loop then waits
the next backoff delay and connects again; the delays start over after each successful
connection. Handlers keep running across reconnections; their sends fail with
:class:`NotConnectedError` while there is no connection (or wait for one, with ``wait=True``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NoReturn, Self

import trio

from ._config import ClientConfig
from ._dispatch import KeyedDispatcher
from ._errors import BrokerConnectionError, NotConnectedError, PresenceIncomplete
from ._handlers import EventJobs, Handlers, as_async, direct_jobs
from ._outbox import Outbox
from ._pipeline import ForbiddenHook, Pipeline
from ._reflect import EXCEPTION_HANDLERS_KEY, GUARDS_KEY, MIDDLEWARE_KEY, reflector
from ._requests import ask, encode_answer, new_request
from ._router import Router
from ._statistics import ClientStatistics, Counters
from ._util import running
from .context import ConnectionRequestContext, Context
from .protocol import (
    Authenticate,
    BadFrame,
    BrokerMember,
    CloseConnection,
    ConnectionRequest,
    Disconnected,
    ErrorEvent,
    FrameDecoder,
    Heartbeat,
    NewConnection,
    NewMessage,
    PresenceReply,
    PresenceRequest,
    Role,
    encode,
    encode_broadcast,
    encode_message_to_connection,
    encode_message_to_room,
)

__all__ = ["StrandsClient"]

logger = logging.getLogger("strands_trio.client")

StreamFactory = Callable[[], Awaitable[trio.abc.Stream]]

_RECEIVE_SIZE = 65536


class StrandsClient:
    """A backend for a PyStrands broker: subclass it and override the ``on_*`` callbacks.

    The callbacks and send methods have the names of the asyncio peer
    (``pystrands.AsyncPyStrandsClient``), so porting a backend means changing imports and
    running it with ``trio.run(client.run)``. Callbacks may be ``async def`` (run on the event
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
        middleware: Sequence[Any] = (),
        guards: Sequence[Any] = (),
        exception_handlers: Sequence[Any] = (),
        on_forbidden: ForbiddenHook | None = None,
    ) -> None:
        if config is not None and not isinstance(config, ClientConfig):
            raise TypeError(f"config must be a ClientConfig, got {type(config).__name__}")
        self.host = host
        self.port = port
        self.config = config or ClientConfig()
        self._connect: StreamFactory = connect or partial(trio.open_tcp_stream, host, port)
        self._where = (
            f"{host}:{port}" if connect is None else getattr(connect, "__qualname__", repr(connect))
        )
        self._ids = itertools.count()
        self._id_prefix = secrets.token_hex(4) + "-"
        self._counters = Counters()
        self._thread_limiter = trio.CapacityLimiter(self.config.max_threads)
        self._running = False
        self._stopping = False
        self._outbox: Outbox | None = None
        self._connected = trio.Event()
        self._input_scope: trio.CancelScope | None = None
        self._services: trio.CancelScope | None = None
        self._dispatcher: KeyedDispatcher | None = None
        self._jobs: EventJobs | None = None
        self._middleware = tuple(middleware)
        self._guards = tuple(guards)
        self._exception_handlers = tuple(exception_handlers)
        self._on_forbidden = on_forbidden
        #: Presence queries waiting for their reply: request id -> [done, reply or error].
        self._replies: dict[str, list[Any]] = {}
        self._pipeline()  # check the middleware, guards and handlers now, not at run()

    # ------------------------------------------------------------------ callbacks

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

    async def on_error(self, error: str, context: Context | ConnectionRequestContext) -> None:
        """The broker reported *error*. *context* is a :class:`ConnectionRequestContext` when
        it is about a request that came while no backend was connected. The default logs it.
        """
        logger.warning("broker reported an error: %s", error)

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
        if type(room_id) is not str or type(message) is not str:
            _raise_type_error(room_id=room_id, message=message)
        await self._send(encode_message_to_room(self._next_id(), room_id, message), wait)

    async def send_private_message(
        self, client_id: str, message: str, *, wait: bool = False
    ) -> None:
        """Send *message* to the client *client_id*. See :meth:`send_room_message`."""
        if type(client_id) is not str or type(message) is not str:
            _raise_type_error(client_id=client_id, message=message)
        await self._send(encode_message_to_connection(self._next_id(), client_id, message), wait)

    async def broadcast_message(self, message: str, *, wait: bool = False) -> None:
        """Send *message* to every client. See :meth:`send_room_message`."""
        if type(message) is not str:
            _raise_type_error(message=message)
        await self._send(encode_broadcast(self._next_id(), message), wait)

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
        if type(client_id) is not str or type(reason) is not str:
            _raise_type_error(client_id=client_id, reason=reason)
        if type(code) is not int or not (code == 1000 or 3000 <= code <= 4999):
            raise ValueError(f"close code must be 1000 or in 3000..4999, got {code!r}")
        if len(reason.encode()) > 123:
            raise ValueError("a close reason is at most 123 bytes in UTF-8")
        frame = CloseConnection(
            request_id=self._next_id(), conn_id=client_id, code=code, reason=reason
        )
        await self._send(encode(frame), wait)

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
        if type(room_id) is not str:
            _raise_type_error(room_id=room_id)
        request_id = self._next_id()
        frame = encode(PresenceRequest(request_id=request_id, room_id=room_id))
        slot: list[Any] = [trio.Event(), None]
        self._replies[request_id] = slot
        try:
            while True:
                await self._send(frame, wait)
                await slot[0].wait()
                if not (wait and isinstance(slot[1], NotConnectedError)):
                    break
                # With wait=True, a connection lost before the reply (or while the question
                # waited for one) is no answer: ask again on the next connection.
                slot[:] = [trio.Event(), None]
        finally:
            del self._replies[request_id]
        reply = slot[1]
        if isinstance(reply, NotConnectedError):
            raise reply
        members = list(reply.members)
        if not reply.complete:
            raise PresenceIncomplete(
                f"the broker could not ask its whole cluster who is in {room_id!r} "
                "(Redis unreachable): only its own members are known",
                members,
            )
        return members

    def _on_reply(self, reply: PresenceReply) -> None:
        slot = self._replies.get(reply.request_id)
        if slot is None:  # the caller gave up, or not ours
            return
        slot[1] = reply
        slot[0].set()

    def _fail_replies(self) -> None:
        """The connection ended: replies to what was sent on it will never come."""
        for slot in self._replies.values():
            if not slot[0].is_set():
                slot[1] = NotConnectedError(
                    f"the connection to the broker at {self._where} was lost before it replied"
                )
                slot[0].set()

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    async def _send(self, data: bytes, wait: bool) -> None:
        # A cancellation point, but not a schedule point unless the outbox is full: a handler's
        # replies cost microseconds.
        await trio.lowlevel.checkpoint_if_cancelled()
        outbox = self._outbox
        while outbox is None:
            if not wait:
                self._counters.sends_refused += 1
                raise NotConnectedError(
                    f"not connected to the broker at {self._where} "
                    "(pass wait=True to wait for the connection)"
                )
            await self.wait_connected()
            outbox = self._outbox
        outbox.send_nowait(data)
        if outbox.full:
            await outbox.wait_for_space()

    # ------------------------------------------------------------------ state

    @property
    def is_connected(self) -> bool:
        """Whether a connection to the broker is up now."""
        return self._outbox is not None

    async def wait_connected(self) -> None:
        """Return once a connection to the broker is up (at once if it is)."""
        while self._outbox is None:
            await self._connected.wait()

    def statistics(self) -> ClientStatistics:
        """What this client has done so far: see :class:`ClientStatistics`."""
        c = self._counters
        outbox, dispatcher = self._outbox, self._dispatcher
        return ClientStatistics(
            connected=outbox is not None,
            connections=c.connections,
            connect_failures=c.connect_failures,
            events_received=c.events_received,
            heartbeats=c.heartbeats,
            protocol_errors=c.protocol_errors,
            handler_errors=c.handler_errors,
            events_pending=dispatcher.pending if dispatcher else 0,
            handlers_running=dispatcher.running if dispatcher else 0,
            requests_accepted=c.requests_accepted,
            requests_rejected=c.requests_rejected,
            requests_timed_out=c.requests_timed_out,
            frames_sent=c.frames_sent + (outbox.frames_written if outbox else 0),
            writes=c.writes + (outbox.writes if outbox else 0),
            frames_dropped=c.frames_dropped,
            sends_refused=c.sends_refused,
            events_dropped=c.events_dropped,
            events_refused=c.events_refused,
            messages_invalid=c.messages_invalid,
            messages_unrouted=c.messages_unrouted,
        )

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
        if self._running:
            raise RuntimeError("this StrandsClient is already running")
        self._running = True
        self._stopping = False
        self._jobs = self._event_jobs()
        self._dispatcher = dispatcher = KeyedDispatcher(
            max_concurrency=self.config.max_concurrency,
            max_pending=self.config.max_pending_events,
            on_error=self._on_handler_error,
        )
        failure: BrokerConnectionError | None = None
        try:
            async with trio.open_nursery() as guard:
                guard.start_soon(self._watch_for_cancellation)
                with trio.CancelScope(shield=True) as self._services:
                    async with trio.open_nursery() as services:
                        await services.start(dispatcher.run)
                        try:
                            await self._connection_loop(task_status)
                        except BrokerConnectionError as exc:
                            failure = exc
                            self._begin_shutdown()
                        finally:
                            dispatcher.close()
                guard.cancel_scope.cancel()
        finally:
            self._running = False
            self._services = self._input_scope = None
            lost = dispatcher.dropped()
            if lost:
                self._counters.events_dropped += lost
                logger.warning(
                    "shutdown deadline passed: %d received events were not handled", lost
                )
        if failure is not None:
            raise failure

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

    def _callbacks(self) -> dict[str, Callable[..., Any]]:
        """The five callbacks as written; subclasses that take them from elsewhere override
        this."""
        return {
            "on_connection_request": self.on_connection_request,
            "on_new_connection": self.on_new_connection,
            "on_message": self.on_message,
            "on_disconnect": self.on_disconnect,
            "on_error": self.on_error,
        }

    def _router(self) -> Router | None:
        return None

    def _pipeline(self) -> Pipeline | None:
        """The pipeline of middleware, guards and routes, or ``None`` when there is nothing
        between events and handlers."""
        router = self._router()
        if not (
            self._middleware
            or self._guards
            or self._exception_handlers
            or (router is not None and router.routes)
            or _has_per_handler_metadata(self._callbacks().values())
        ):
            return None
        return Pipeline(
            app=getattr(self, "_app", self),
            client=self,
            callbacks=self._callbacks(),
            middleware=self._middleware,
            guards=self._guards,
            exception_handlers=self._exception_handlers,
            on_forbidden=self._on_forbidden,
            router=router,
            message_fallback=self._has_message_fallback(),
            counters=self._counters,
            limiter=self._thread_limiter,
        )

    def _has_message_fallback(self) -> bool:
        return True

    def _event_jobs(self) -> EventJobs:
        pipeline = self._pipeline()
        if pipeline is not None:
            return pipeline.jobs()
        limiter = self._thread_limiter
        callbacks = self._callbacks()
        return direct_jobs(
            Handlers(**{name: as_async(fn, limiter) for name, fn in callbacks.items()})
        )

    async def _watch_for_cancellation(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            self._begin_shutdown()

    def _begin_shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._input_scope is not None:
            self._input_scope.cancel()
        if self._services is not None:
            self._services.deadline = trio.current_time() + self.config.shutdown_timeout

    def _stop_requested(self) -> bool:
        # A method, not the attribute: mypy would keep it narrowed to False across awaits.
        return self._stopping

    def _input(self) -> trio.CancelScope:
        """A cancel scope for waiting on the outside world, cancelled by shutdown."""
        scope = trio.CancelScope()
        if self._stopping:
            scope.cancel()
        self._input_scope = scope
        return scope

    async def _connection_loop(self, task_status: trio.TaskStatus[None]) -> None:
        config = self.config
        delays = config.reconnect_delays()
        first_attempt = True
        connected_once = False
        while not self._stopping:
            if not first_attempt:
                delay = next(delays)
                logger.info("reconnecting to the broker at %s in %.2f s", self._where, delay)
                with self._input():
                    await trio.sleep(delay)
                if self._stop_requested():
                    return
            first_attempt = False
            stream = None
            with self._input():
                try:
                    stream = await self._connect()
                except OSError as exc:
                    self._counters.connect_failures += 1
                    logger.warning("cannot connect to the broker at %s: %s", self._where, exc)
                    if not config.reconnect or not (connected_once or config.wait_for_broker):
                        raise BrokerConnectionError(
                            f"cannot connect to the broker at {self._where}: {exc}"
                        ) from exc
            if stream is None:
                continue
            connected_once = True
            delays = config.reconnect_delays()
            reason = await self._run_connection(stream, task_status)
            task_status = trio.TASK_STATUS_IGNORED
            if self._stop_requested():
                return
            logger.warning("connection to the broker at %s lost: %s", self._where, reason)
            if not config.reconnect:
                raise BrokerConnectionError(
                    f"connection to the broker at {self._where} lost: {reason}"
                )

    async def _run_connection(
        self, stream: trio.abc.Stream, task_status: trio.TaskStatus[None]
    ) -> str:
        """Serve one connection until it ends; return why it ended."""
        outbox = Outbox(self.config.max_outgoing_bytes)
        input_scope = self._input()
        write_failure: list[str] = []

        async def write() -> None:
            try:
                await outbox.write_loop(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                write_failure.append(f"write failed: {exc or type(exc).__name__}")
                input_scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                if self.config.broker_secret is not None:  # before anything else
                    outbox.send_nowait(
                        encode(Authenticate(request_id="auth", secret=self.config.broker_secret))
                    )
                self._outbox = outbox
                self._counters.connections += 1
                self._connected.set()
                logger.info("connected to the broker at %s", self._where)
                task_status.started()
                reason = await self._read_loop(stream, outbox, input_scope)
                if self._stopping and not write_failure:
                    assert self._dispatcher is not None
                    await self._dispatcher.wait_drained()
                    await outbox.flush()
                nursery.cancel_scope.cancel()
        finally:
            self._outbox = None
            self._connected = trio.Event()
            if self._replies:
                self._fail_replies()
            self._counters.frames_sent += outbox.frames_written
            self._counters.writes += outbox.writes
            lost = outbox.close()
            if lost:
                self._counters.frames_dropped += lost
                logger.warning("%d frame(s) to the broker were not written: connection ended", lost)
            await trio.aclose_forcefully(stream)
        return write_failure[0] if write_failure else reason

    async def _read_loop(
        self, stream: trio.abc.ReceiveStream, outbox: Outbox, scope: trio.CancelScope
    ) -> str:
        """Read, decode and dispatch events until the connection ends; return why it ended."""
        assert self._dispatcher is not None
        dispatcher = self._dispatcher
        submit = dispatcher.submit
        counters = self._counters
        decoder = FrameDecoder(Role.BACKEND, max_line_length=self.config.max_line_length)
        silence = self.config.silence_timeout
        assert self._jobs is not None
        jobs = self._jobs
        handle_message, handle_new_connection = jobs.message, jobs.new_connection
        handle_disconnect, handle_error = jobs.disconnect, jobs.error

        with scope:
            while True:
                scope.deadline = trio.current_time() + silence
                try:
                    data = await stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    return f"read failed: {exc or type(exc).__name__}"
                if not data:
                    for bad in decoder.feed_eof():
                        self._on_bad_frame(bad)
                    return "the broker closed the connection"
                frames = decoder.feed(data)
                counters.events_received += len(frames)
                for frame in frames:
                    kind = type(frame)
                    if kind is NewMessage:
                        submit(frame.context.client_id, handle_message, frame)  # type: ignore[union-attr]
                    elif kind is Heartbeat:
                        counters.heartbeats += 1
                    elif kind is NewConnection:
                        submit(frame.context.client_id, handle_new_connection, frame)  # type: ignore[union-attr]
                    elif kind is Disconnected:
                        submit(frame.context.client_id, handle_disconnect, frame)  # type: ignore[union-attr]
                    elif kind is ConnectionRequest:
                        submit(None, self._handle_request, (outbox, frame))
                    elif kind is ErrorEvent:
                        context = frame.context  # type: ignore[union-attr]
                        key = context.client_id if type(context) is Context else None
                        submit(key or None, handle_error, frame)
                    elif kind is PresenceReply:
                        self._on_reply(frame)  # type: ignore[arg-type]
                    else:  # a BadFrame: a backend's decoder yields nothing else
                        self._on_bad_frame(frame)  # type: ignore[arg-type]
                if dispatcher.full:
                    scope.deadline = math.inf  # our silence, not the broker's
                    await dispatcher.wait_for_space()
        if self._stopping:
            return "the client is stopping"
        return f"the broker sent nothing for {silence:g} s"

    def _on_bad_frame(self, bad: BadFrame) -> None:
        self._counters.protocol_errors += 1
        logger.warning("skipped a bad frame from the broker: %s: %r", bad.reason, bad.line)

    # ------------------------------------------------------------------ handling events

    async def _handle_request(self, job: tuple[Outbox, ConnectionRequest]) -> None:
        """Ask ``on_connection_request`` and answer on the connection the request came on."""
        assert self._jobs is not None
        outbox, event = job
        request = new_request(event)
        accepted = False
        timeout = self.config.request_timeout
        with trio.move_on_after(math.inf if timeout is None else timeout) as timer:
            accepted = await ask(partial(self._jobs.request, event), request, self._counters)
        if timer.cancelled_caught:
            self._counters.requests_timed_out += 1
            logger.warning(
                "on_connection_request took over %g s: rejecting %s", timeout, event.remote_addr
            )
        data = encode_answer(event, request, accepted, self._counters)
        if outbox.closed:
            self._counters.frames_dropped += 1
            logger.warning(
                "cannot answer the connection request from %s: its connection is closed",
                event.remote_addr,
            )
            return
        outbox.send_nowait(data)
        if outbox.full:
            await outbox.wait_for_space()

    def _on_handler_error(self, fn: Any, arg: Any, exc: Exception) -> None:
        self._counters.handler_errors += 1
        event = arg[1] if isinstance(arg, tuple) else arg
        context = getattr(event, "context", None)
        logger.error(
            "handler for %s raised (client %s)",
            getattr(type(event), "ACTION", type(event).__name__),
            getattr(context, "client_id", "?"),
            exc_info=exc,
        )


def _has_per_handler_metadata(callbacks: Any) -> bool:
    return any(
        reflector.get(key, fn)
        for fn in callbacks
        for key in (MIDDLEWARE_KEY, GUARDS_KEY, EXCEPTION_HANDLERS_KEY)
    )


def _raise_type_error(**arguments: object) -> NoReturn:
    for name, value in arguments.items():
        if type(value) is not str:
            hint = "; encode objects first, e.g. json.dumps(obj)" if name == "message" else ""
            raise TypeError(f"{name} must be a str, got {type(value).__name__}{hint}")
    raise AssertionError("no argument had the wrong type")  # pragma: no cover
