"""The connection engine: one object that owns a backend's link to its broker.

Theory of operation. :meth:`Engine.run` owns every task the engine starts; none outlives it:

    run(jobs)                              the caller's task
    ├── watcher                            sleeps; turns the caller's cancellation into a drain
    └── [shielded services scope]
        ├── dispatcher workers             run the jobs (KeyedDispatcher)
        └── connection loop                connect, read, reconnect with backoff (run's task)
            └── writer                     one per connection (Outbox.write_loop)

Events are read by the connection loop, decoded by the sans-IO codec and submitted to the
dispatcher keyed by WebSocket client id, so one client's events run in order and different
clients' events run concurrently (up to ``max_concurrency``). When ``max_pending_events``
events, or ``max_pending_bytes`` of their messages, are waiting, the loop stops reading until
the backlog halves: the kernel's buffers fill and TCP pushes back on the broker, so slow
handlers cannot grow memory whatever the size of the events. Sends are encoded and queued on
the connection's outbox, which one writer task flushes in coalesced writes.

A connection request is one job (``_requests.py``), answered on the connection it came on;
presence answers are matched to the waiting call by ``request_id`` (``_replies.py``).

Cancellation: the services live in a shielded cancel scope, so the caller's cancellation does
not hit handlers mid-way. The watcher task, outside the shield, sees it and starts a graceful
shutdown: stop connecting and reading, let queued and running handlers finish and the outbox
flush, close the connection. The services scope gets a deadline of ``shutdown_timeout`` at that
moment; whatever is still running then is cancelled. Then the caller's ``Cancelled`` goes on.

Links: each connection's first frame says which broker it is to (a ``hello``, or none from
the reference broker); a :class:`~strands_trio._brokers.LinkWatch` records it and tells the
middleware that listen, before the first event is dispatched and when the connection ends.

Reconnection: a connection ends on EOF, a broken socket, a failed write, or silence; the loop
connects again after a backoff. Handlers keep running; their sends fail with
:class:`NotConnectedError` meanwhile (or wait for a connection, with ``wait=True``).
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from ._brokers import BrokerLink, LinkWatch
from ._config import ClientConfig
from ._dispatch import KeyedDispatcher
from ._errors import BrokerConnectionError, NotConnectedError, raise_type_error
from ._handlers import Jobs
from ._outbox import Outbox
from ._replies import Replies, ask_presence
from ._requests import PendingRequest, answer_request
from ._statistics import ClientStatistics, Counters
from ._util import collapse_single_exception
from .context import Context
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
    Hello,
    NewConnection,
    NewMessage,
    PresenceReply,
    Role,
    encode,
    encode_broadcast,
    encode_message_to_connection,
    encode_message_to_room,
)

__all__ = ["Engine", "StreamFactory"]

logger = logging.getLogger("strands_trio.client")

#: How to open the byte stream to a broker.
StreamFactory = Callable[[], Awaitable[trio.abc.Stream]]

_RECEIVE_SIZE = 65536
#: What an event holds besides its message text, as counted against ``max_pending_bytes``.
_EVENT_OVERHEAD = 256


class Engine:
    """Owns one backend's link to its broker, and sends on it: the facades
    (:class:`~strands_trio.StrandsClient`, :class:`~strands_trio.StrandsApp`) run it.

    Args:
        config: Reconnection, concurrency, buffer and timeout settings.
        connect: Opens the byte stream to the broker.
        where: The broker, as log lines and errors name it (``host:port``).
    """

    def __init__(self, config: ClientConfig, connect: StreamFactory, where: str) -> None:
        self.config = config
        self.counters = Counters()
        self._connect = connect
        self._where = where
        self._ids = itertools.count()
        self._id_prefix = secrets.token_hex(4) + "-"
        self._running = False
        self._stopping = False
        self._outbox: Outbox | None = None
        self._connected = trio.Event()
        self._input_scope: trio.CancelScope | None = None
        self._services: trio.CancelScope | None = None
        self._dispatcher: KeyedDispatcher | None = None
        self._jobs: Jobs | None = None
        self._replies = Replies()
        self.links = LinkWatch(where, None)

    # ------------------------------------------------------------------ sending

    def next_id(self) -> str:
        """A fresh ``request_id`` for an action."""
        return f"{self._id_prefix}{next(self._ids)}"

    async def send(self, data: bytes, wait: bool) -> None:
        """Queue one encoded action; wait only when the outbox is full, or (with *wait*) for
        a connection.

        Raises:
            NotConnectedError: there is no connection and *wait* is false.
        """
        # A cancellation point, but not a schedule point unless the outbox is full: a handler's
        # replies cost microseconds.
        await trio.lowlevel.checkpoint_if_cancelled()
        outbox = self._outbox
        while outbox is None:
            if not wait:
                self.counters.sends_refused += 1
                raise NotConnectedError(
                    f"not connected to the broker at {self._where} "
                    "(pass wait=True to wait for the connection)"
                )
            await self.wait_connected()
            outbox = self._outbox
        try:
            outbox.send_nowait(data)
        except trio.ClosedResourceError:  # the connection ended since we looked
            self.counters.sends_refused += 1
            raise NotConnectedError(
                f"the connection to the broker at {self._where} ended"
            ) from None
        if outbox.full:
            await outbox.wait_for_space()

    async def send_room_message(self, room_id: str, message: str, *, wait: bool = False) -> None:
        """Send *message* to every client in *room_id* (see
        :meth:`StrandsClient.send_room_message <strands_trio.StrandsClient.send_room_message>`)."""
        if type(room_id) is not str or type(message) is not str:
            raise_type_error(room_id=room_id, message=message)
        await self.send(encode_message_to_room(self.next_id(), room_id, message), wait)

    async def send_private_message(
        self, client_id: str, message: str, *, wait: bool = False
    ) -> None:
        """Send *message* to the client *client_id*."""
        if type(client_id) is not str or type(message) is not str:
            raise_type_error(client_id=client_id, message=message)
        await self.send(encode_message_to_connection(self.next_id(), client_id, message), wait)

    async def broadcast_message(self, message: str, *, wait: bool = False) -> None:
        """Send *message* to every client."""
        if type(message) is not str:
            raise_type_error(message=message)
        await self.send(encode_broadcast(self.next_id(), message), wait)

    async def close_connection(
        self, client_id: str, code: int = 1000, reason: str = "", *, wait: bool = False
    ) -> None:
        """Ask the broker to close *client_id*'s socket (code 1000 or 3000..4999)."""
        if type(client_id) is not str or type(reason) is not str:
            raise_type_error(client_id=client_id, reason=reason)
        if type(code) is not int or not (code == 1000 or 3000 <= code <= 4999):
            raise ValueError(f"close code must be 1000 or in 3000..4999, got {code!r}")
        if len(reason.encode()) > 123:
            raise ValueError("a close reason is at most 123 bytes in UTF-8")
        frame = CloseConnection(
            request_id=self.next_id(), conn_id=client_id, code=code, reason=reason
        )
        await self.send(encode(frame), wait)

    async def presence(self, room_id: str, *, wait: bool = False) -> list[BrokerMember]:
        """Ask the broker who is in *room_id*, and wait for the answer (with *wait*, ask
        again on the next connection if this one is lost first)."""
        if type(room_id) is not str:
            raise_type_error(room_id=room_id)
        return await ask_presence(self._replies, self.send, self.next_id(), room_id, wait)

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is running."""
        return self._running

    @property
    def link(self) -> BrokerLink | None:
        """The link up now, once its first frame said which broker it is to."""
        return self.links.current

    @property
    def is_connected(self) -> bool:
        """Whether a connection to the broker is up now."""
        return self._outbox is not None

    async def wait_connected(self) -> None:
        """Return once a connection to the broker is up (at once if it is)."""
        while self._outbox is None:
            await self._connected.wait()

    def statistics(self) -> ClientStatistics:
        """What this engine has done so far."""
        outbox, dispatcher = self._outbox, self._dispatcher
        return self.counters.snapshot(
            connected=outbox is not None,
            events_pending=dispatcher.pending if dispatcher else 0,
            bytes_pending=dispatcher.pending_bytes if dispatcher else 0,
            handlers_running=dispatcher.running if dispatcher else 0,
            unflushed_frames=outbox.frames_written if outbox else 0,
            unflushed_writes=outbox.writes if outbox else 0,
        )

    # ------------------------------------------------------------------ running

    async def run(
        self, jobs: Jobs, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, run *jobs* for the broker's events and reconnect, until cancelled; with
        ``nursery.start``, return once the first connection is up.

        Raises:
            BrokerConnectionError: the connection could not be made or was lost and
                ``config.reconnect`` is false.
            RuntimeError: the engine is already running.
        """
        if self._running:
            raise RuntimeError("this client is already running")
        self._running = True
        self._stopping = False
        self._jobs = jobs
        self.links.hook = jobs.broker_link
        config = self.config
        self._dispatcher = dispatcher = KeyedDispatcher(
            max_concurrency=config.max_concurrency,
            max_pending=config.max_pending_events,
            max_pending_bytes=config.max_pending_bytes,
            on_error=self._on_job_error,
        )
        failure: BrokerConnectionError | None = None
        try:
            # Our nurseries: what comes out of them alone (a KeyboardInterrupt, an error) reaches
            # the caller as itself, not wrapped in one exception group per nursery.
            with collapse_single_exception():
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
                self.counters.events_dropped += lost
                logger.warning(
                    "shutdown deadline passed: %d received events were not handled", lost
                )
        if failure is not None:
            raise failure

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
        failures = 0  # of this outage: the first is a warning, the rest are DEBUG
        while not self._stopping:
            if not first_attempt:
                delay = next(delays)
                level = logging.DEBUG if failures > 1 else logging.INFO  # once per outage
                logger.log(level, "reconnecting to the broker at %s in %.2f s", self._where, delay)
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
                    self.counters.connect_failures += 1
                    if not config.reconnect or not (connected_once or config.wait_for_broker):
                        raise BrokerConnectionError(
                            f"cannot connect to the broker at {self._where}: {exc}"
                        ) from exc
                    failures += 1
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    logger.log(level, "cannot connect to the broker at %s: %s", self._where, exc)
            if stream is None:
                continue
            failures = 0  # the connection's INFO line says it is back
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

        counters = self.counters
        try:
            with collapse_single_exception():  # a lone KeyboardInterrupt as itself
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write)
                    if (secret := self.config.broker_secret) is not None:  # before anything else
                        outbox.send_nowait(encode(Authenticate(request_id="auth", secret=secret)))
                    self._outbox = outbox
                    self.links.opened()
                    counters.connections += 1
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
            self.links.closed()
            self._connected = trio.Event()
            self._replies.fail_all(
                NotConnectedError(
                    f"the connection to the broker at {self._where} was lost before it replied"
                )
            )
            counters.frames_sent += outbox.frames_written
            counters.writes += outbox.writes
            lost = outbox.close()
            if lost:
                counters.frames_dropped += lost
                logger.warning("%d frame(s) to the broker were not written: connection ended", lost)
            await trio.aclose_forcefully(stream)
        return write_failure[0] if write_failure else reason

    async def _read_loop(
        self, stream: trio.abc.ReceiveStream, outbox: Outbox, scope: trio.CancelScope
    ) -> str:
        """Read, decode and dispatch events until the connection ends; return why it ended."""
        assert self._dispatcher is not None
        assert self._jobs is not None
        dispatcher, jobs, counters = self._dispatcher, self._jobs, self.counters
        submit = dispatcher.submit
        decoder = FrameDecoder(Role.BACKEND, max_line_length=self.config.max_line_length)
        silence = self.config.silence_timeout
        message_job, new_connection_job = jobs.message, jobs.new_connection
        disconnect_job, error_job, left = jobs.disconnect, jobs.error, jobs.left
        answer = partial(
            answer_request,
            decide=jobs.request,
            time_limit=self.config.request_timeout,
            counters=counters,
        )
        resolve_reply = self._replies.resolve
        links = self.links

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
                if links.pending and frames:  # the first: which broker, before any event
                    frames = links.first(frames)
                for frame in frames:
                    kind = type(frame)
                    if kind is NewMessage:
                        submit(
                            frame.context.client_id,  # type: ignore[union-attr]
                            message_job,
                            frame,
                            len(frame.message) + _EVENT_OVERHEAD,  # type: ignore[union-attr]
                        )
                    elif kind is Heartbeat:
                        counters.heartbeats += 1
                    elif kind is NewConnection:
                        submit(frame.context.client_id, new_connection_job, frame, _EVENT_OVERHEAD)  # type: ignore[union-attr]
                    elif kind is Disconnected:
                        if left is not None:  # at once, not in turn (see Jobs.left)
                            left(frame.context.client_id)  # type: ignore[union-attr]
                        submit(frame.context.client_id, disconnect_job, frame, _EVENT_OVERHEAD)  # type: ignore[union-attr]
                    elif kind is ConnectionRequest:
                        pending = PendingRequest(frame, outbox)  # type: ignore[arg-type]
                        submit(None, answer, pending, _EVENT_OVERHEAD)
                    elif kind is ErrorEvent:
                        context = frame.context  # type: ignore[union-attr]
                        key = context.client_id if type(context) is Context else None
                        submit(key or None, error_job, frame, _EVENT_OVERHEAD)
                    elif kind is PresenceReply:
                        resolve_reply(frame)  # type: ignore[arg-type]
                    elif kind is Hello:
                        pass  # only the first frame of a connection says who the broker is
                    else:  # a BadFrame: a backend's decoder yields nothing else
                        self._on_bad_frame(frame)  # type: ignore[arg-type]
                if dispatcher.full:
                    scope.deadline = math.inf  # our silence, not the broker's
                    await dispatcher.wait_for_space()
        if self._stopping:
            return "the client is stopping"
        return f"the broker sent nothing for {silence:g} s"

    def _on_bad_frame(self, bad: BadFrame) -> None:
        self.counters.protocol_errors += 1
        logger.warning("skipped a bad frame from the broker: %s: %r", bad.reason, bad.line)

    def _on_job_error(self, job: Any, arg: Any, exc: Exception) -> None:
        self.counters.handler_errors += 1
        event = arg.event if type(arg) is PendingRequest else arg
        context = getattr(event, "context", None)
        logger.error(
            "handler for %s raised (client %s)",
            getattr(type(event), "ACTION", type(event).__name__),
            getattr(context, "client_id", "?"),
            exc_info=exc,
        )
