"""The backends' side of the broker: the TCP port, and one link per connected backend.

Theory of operation. :class:`BackendServer` listens and gives each backend connection a
:class:`BackendLink` (the hub's :class:`~._ports.BackendPort`), served by
:meth:`BackendServer.serve_link`:

    serve_link(stream)
    ├── writer        the link's buffer, written in coalesced writes of at most 256 KiB
    ├── heartbeats    a heartbeat frame every ``heartbeat_interval``
    ├── watchdog      a backend that takes no bytes for ``backend_stall_timeout`` is dropped
    └── reader        lines decoded by the sans-IO codec (Role.BROKER) -> Hub.on_actions

Events are queued with :meth:`BackendLink.send`, which never blocks and never drops. The
buffer is bounded by those who fill it: it is *full* at ``max_backend_buffer`` bytes, and the
hub then makes the clients that send to this backend wait (:meth:`BackendLink.wait_progress`)
until the writer makes room; each client's own bytes are counted too (its *owner*'s
``pending``), so that one flooding client waits long before the others. A backend that keeps
reading, however slowly, is never dropped; one that takes nothing at all while there is
something to write for ``backend_stall_timeout`` is, and its clients move to another backend.
Events still in its buffer then are lost, counted (``events_lost``) and logged.

Every link's first event is a ``hello`` (:class:`~strands_trio.protocol.Hello`, an extension):
the broker's stable name (``node_id`` if set, else ``backend_host:tcp_port``) and
:attr:`BackendServer.instance`, new at every start, so that a backend learns that the broker
restarted and that the clients it knew are gone.

With ``backend_secret`` set, the first frame must be an ``authenticate`` frame carrying it
(compared in constant time) within ``handshake_timeout``; until then the link gets no events,
and a wrong or missing secret closes it. A malformed line is skipped, logged and counted; the
link stays up.

Shutdown: :meth:`BackendServer.close` stops each link's reader; the link then writes what is
queued (the ``disconnected`` events of the clients the front just closed) and closes its
socket, within the deadline of the enclosing scope.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import secrets
from collections.abc import Callable
from typing import NoReturn, Protocol

import attrs
import trio

from .. import __version__ as VERSION
from ..protocol import Action, Authenticate, BadFrame, FrameDecoder, Heartbeat, Hello, Role, encode
from ._backend_link import BackendLink
from ._config import BrokerConfig
from ._keepalive import enable_keepalive
from ._ports import BackendPort
from ._prometheus import Metric, counter, gauge

__all__ = ["ActionSink", "BackendServer", "BackendStatistics"]

logger = logging.getLogger("strands_trio.broker")

_RECEIVE_SIZE = 65536
_HEARTBEAT = encode(Heartbeat())
_numbers = itertools.count(1)


class ActionSink(Protocol):
    """Where backends' actions go, and who is told of backends coming and going: the hub
    (``FakeBroker`` records actions on the way)."""

    def add_backend(self, backend: BackendPort) -> None:
        """A backend is ready for events."""
        ...

    def remove_backend(self, backend: BackendPort) -> None:
        """A backend left, or was dropped."""
        ...

    def on_actions(self, backend: BackendPort, actions: list[Action]) -> None:
        """A batch of actions from *backend*."""
        ...


@attrs.frozen(kw_only=True)
class BackendStatistics:
    """What the backends' port counts (``BrokerStatistics.backends``).

    Attributes:
        links: Backend connections open now (ready or still authenticating).
        buffered_bytes: Bytes waiting to be written to backends now.
        connected: Backend connections made ready since the start.
        refused: Backend connections refused (wrong or missing secret).
        stalled: Backends dropped for taking nothing for ``backend_stall_timeout``.
        bad_frames: Lines from backends that could not be decoded (skipped).
        events_lost: Events never written because their backend went away or stalled.
    """

    links: int
    buffered_bytes: int
    connected: int
    refused: int
    stalled: int
    bad_frames: int
    events_lost: int


class BackendServer:
    """The backends' port of a broker (see the module's theory of operation).

    Args:
        hub: Where actions go (the hub, or a recorder in front of it).
        config: The broker's settings.
        on_bad_frame: Also called with every line that could not be decoded.
        hello: Open each link with a ``hello`` frame (false only to act as the reference
            broker, which sends none).
    """

    def __init__(
        self,
        hub: ActionSink,
        config: BrokerConfig,
        *,
        on_bad_frame: Callable[[BadFrame], None] | None = None,
        hello: bool = True,
    ) -> None:
        self._hub = hub
        self._config = config
        self._on_bad_frame = on_bad_frame
        self._links: set[BackendLink] = set()
        self._changed = trio.Event()
        self._connected = self._refused = self._stalled = self._bad_frames = 0
        self._events_lost = 0
        self._stopping = False
        #: This broker's id for this start: the ``instance`` of the ``hello`` frame.
        self.instance = secrets.token_hex(8)
        self._send_hello = hello
        self._set_name(config.tcp_port)

    def new_instance(self) -> None:
        """Take a new instance id, as a restarted broker has (for tests)."""
        self.instance = secrets.token_hex(8)
        self._set_name(self._port)

    def _set_name(self, port: int) -> None:
        self._port = port
        name = self._config.node_id or f"{self._config.backend_host}:{port}"
        #: The broker's stable name, as the ``hello`` frame says it.
        self.name = name
        self._hello = encode(Hello(broker=name, instance=self.instance, version=VERSION))

    # ------------------------------------------------------------------ serving

    async def serve(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Listen on ``backend_host:tcp_port`` (TLS with ``backend_ssl_context``) until
        cancelled; ``task_status.started(port)``.

        Raises:
            OSError: the port cannot be bound.
        """
        config = self._config

        async def handle(stream: trio.abc.Stream) -> None:
            enable_keepalive(stream)
            await self.serve_link(stream, f"{_peer(stream)}#{next(_numbers)}")

        tcp = await trio.open_tcp_listeners(config.tcp_port, host=config.backend_host)
        port: int = tcp[0].socket.getsockname()[1]
        self._set_name(port)
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp)
        if config.backend_ssl_context is not None:
            listeners = [
                trio.SSLListener(listener, config.backend_ssl_context, https_compatible=False)
                for listener in tcp
            ]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handle, listeners)
            task_status.started(port)
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def serve_link(
        self,
        stream: trio.abc.Stream,
        name: str,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve one backend connection until it ends, it is dropped, or :meth:`close`;
        ``task_status.started()`` once it takes events (or was refused)."""
        config, hub = self._config, self._hub
        link = BackendLink(name, config.max_backend_buffer)
        decoder = FrameDecoder(Role.BROKER, max_line_length=config.max_line_length)
        stopping = ready = False
        self._links.add(link)
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, link, stream)
                    backlog: list[Action | BadFrame] = []
                    if config.backend_secret is not None:
                        frames = await self._authenticate(stream, decoder, config.backend_secret)
                        if frames is None:
                            self._refused += 1
                            logger.warning("backend %s refused: wrong or missing secret", name)
                            nursery.cancel_scope.cancel()  # the writer too: the socket closes
                            task_status.started()
                            return
                        backlog = frames
                    link.alive = ready = True
                    if self._send_hello:  # the first event, before the hub can send any
                        link.send(self._hello)
                    self._connected += 1
                    hub.add_backend(link)
                    logger.info("backend %s connected", name)
                    task_status.started()
                    if config.heartbeat_interval is not None:
                        nursery.start_soon(_heartbeats, link, config.heartbeat_interval)
                    nursery.start_soon(self._watchdog, link)
                    self._handle(link, backlog)
                    with link.input_scope:
                        await self._read(link, stream, decoder)
                    stopping = link.input_scope.cancelled_caught
                    if stopping:
                        await link.flush()
                    nursery.cancel_scope.cancel()
        finally:
            self._end(link)
            if ready:
                logger.info(
                    "backend %s disconnected%s", name, " (broker stopping)" if stopping else ""
                )
            await trio.aclose_forcefully(stream)
            self._links.discard(link)
            self._changed.set()
            self._changed = trio.Event()

    def _end(self, link: BackendLink) -> None:
        """The link takes no more events: the hub forgets it, its task is cancelled, what
        it had not written is counted lost."""
        self._hub.remove_backend(link)
        lost = link.close()
        link.scope.cancel()
        if lost:
            self._events_lost += lost
            if self._stopping:
                # Counted, but no loss to warn about: what a backend leaves unread while the
                # broker stops is the news of its own shutdown (clients closed with 1001), for
                # a backend that is going too (the demo stops both at once).
                logger.info(
                    "%d event(s) for backend %s were not delivered: it left while the broker "
                    "was stopping",
                    lost,
                    link.name,
                )
            else:
                logger.warning("%d event(s) for backend %s were lost with it", lost, link.name)

    def _drop(self, link: BackendLink, why: str) -> None:
        if not link.alive:
            return
        logger.warning("backend %s stopped reading (%s): disconnecting it", link.name, why)
        self._stalled += 1
        self._end(link)

    async def _watchdog(self, link: BackendLink) -> None:
        """Drop the backend when it has taken nothing for ``backend_stall_timeout`` while
        there was something to write (checked four times per timeout)."""
        stall = self._config.backend_stall_timeout
        written, since = link.written_bytes, trio.current_time()
        while True:
            await trio.sleep(stall / 4)
            now = trio.current_time()
            if link.idle or link.written_bytes != written:
                written, since = link.written_bytes, now
            elif now - since >= stall:
                self._drop(link, f"it took nothing for {stall:g} s")

    async def _write(self, link: BackendLink, stream: trio.abc.SendStream) -> None:
        """The link's writer. A backend gone while we write (reset, broken pipe) ends its
        link, like a backend gone while we read: never the broker."""
        try:
            await link.write_loop(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.info("writing to backend %s failed: %s", link.name, exc or type(exc).__name__)
            self._end(link)

    async def _authenticate(
        self, stream: trio.abc.ReceiveStream, decoder: FrameDecoder, secret: str
    ) -> list[Action | BadFrame] | None:
        """Read until the first frame; the frames after it if it is the right
        ``authenticate``, else ``None``."""
        with trio.move_on_after(self._config.handshake_timeout):
            while True:
                try:
                    data = await stream.receive_some(_RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None  # reset, or a failed TLS handshake
                if not data:
                    return None
                frames = decoder.feed(data)
                if frames:
                    first = frames[0]
                    if type(first) is Authenticate and hmac.compare_digest(
                        first.secret.encode(), secret.encode()
                    ):
                        return frames[1:]  # type: ignore[return-value]
                    return None
        return None

    async def _read(
        self, link: BackendLink, stream: trio.abc.ReceiveStream, decoder: FrameDecoder
    ) -> None:
        while True:
            try:
                data = await stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                self._handle(link, decoder.feed_eof())  # type: ignore[arg-type]
                return
            self._handle(link, decoder.feed(data))  # type: ignore[arg-type]

    def _handle(self, link: BackendLink, frames: list[Action | BadFrame]) -> None:
        actions: list[Action] = []
        for frame in frames:
            if type(frame) is BadFrame:
                self._bad_frames += 1
                logger.warning(
                    "skipped a bad line from backend %s: %s: %r",
                    link.name,
                    frame.reason,
                    frame.line,
                )
                if self._on_bad_frame is not None:
                    self._on_bad_frame(frame)
            else:
                actions.append(frame)  # type: ignore[arg-type]
        if actions:
            self._hub.on_actions(link, actions)

    # ------------------------------------------------------------------ all links

    def send_to_all(self, data: bytes) -> None:
        """Queue *data* (encoded lines, or anything) for every ready backend."""
        for link in self._links:
            link.send(data)

    async def flush(self) -> None:
        """Wait until every backend has been written what is queued for it."""
        for link in list(self._links):
            await link.flush()

    def disconnect_all(self) -> None:
        """Close every backend connection at once, as a broker that goes away does."""
        for link in list(self._links):
            self._end(link)

    def begin_stop(self) -> None:
        """The broker is stopping (called before its clients are closed): events a backend
        leaves unread from now on are logged at INFO, not warned about as a loss."""
        self._stopping = True

    def close(self) -> None:
        """Stop reading from every backend: each link writes what is queued, and closes."""
        for link in self._links:
            link.input_scope.cancel()

    async def wait_closed(self) -> None:
        """Return once every backend connection has ended."""
        while self._links:
            await self._changed.wait()

    # ------------------------------------------------------------------ figures

    def statistics(self) -> BackendStatistics:
        """What the backends' port counts."""
        return BackendStatistics(
            links=len(self._links),
            buffered_bytes=sum(link.buffered for link in self._links),
            connected=self._connected,
            refused=self._refused,
            stalled=self._stalled,
            bad_frames=self._bad_frames,
            events_lost=self._events_lost,
        )

    def metrics(self) -> list[Metric]:
        """The backends' part of ``GET /metrics``."""
        s = self.statistics()
        return [
            gauge("backend_buffered_bytes", "Bytes waiting to be written to backends",
                  s.buffered_bytes),
            counter("bad_frames", "Lines from backends that could not be decoded", s.bad_frames),
            counter("backends_refused", "Backends refused (wrong or missing secret)", s.refused),
            counter("backends_stalled", "Backends disconnected for taking nothing", s.stalled),
            ("events_lost_total", "counter", "Events for backends lost, by reason",
             [('{reason="backend_gone"}', s.events_lost)]),
        ]  # fmt: skip


async def _heartbeats(link: BackendLink, interval: float) -> None:
    while True:
        await trio.sleep(interval)
        link.send(_HEARTBEAT)


def _peer(stream: trio.abc.Stream) -> str:
    inner = getattr(stream, "transport_stream", stream)
    try:
        host, port = getattr(inner, "socket").getpeername()[:2]  # noqa: B009 - any stream
    except (AttributeError, OSError):
        return "backend"
    return f"{host}:{port}"
