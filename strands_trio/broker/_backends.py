"""The backends' side of the broker: the TCP port, and one link per connected backend.

Theory of operation. Each backend connection gets a :class:`BackendLink`, served by
:func:`serve_backend` in the listener's handler nursery:

    serve_backend(stream)
    ├── writer        the link's Outbox, written in coalesced writes (the client's own outbox)
    ├── heartbeats    a heartbeat frame every ``heartbeat_interval``
    ├── watchdog      a backend no write reaches for ``backend_stall_timeout`` is dropped
    └── reader        lines decoded by the sans-IO codec (Role.BROKER) -> Hub.on_action

With ``backend_secret`` set, the first frame must be an ``authenticate`` frame carrying it
(compared in constant time) within ``handshake_timeout``; until then the link gets no events,
and a wrong or missing secret closes it. Events are sent with :meth:`BackendLink.send`, which
never blocks the hub: a backend that stops reading is detected by the watchdog, or at once
when its buffer passes twice ``max_backend_buffer``, and dropped; its clients move to another
backend. A malformed line is skipped, logged and counted; the link stays up.

Shutdown: :meth:`Hub.close_backends` stops each link's reader; the link then flushes what is
queued (the ``disconnected`` events of the clients the front just closed) and closes its
socket, within the deadline of the enclosing scope.
"""

from __future__ import annotations

import hmac
import itertools
import logging
from typing import NoReturn

import trio

from .._errors import NotConnectedError
from .._outbox import Outbox
from ..protocol import Authenticate, BadFrame, FrameDecoder, Heartbeat, Role, encode
from ._config import BrokerConfig
from ._hub import Hub
from ._keepalive import enable_keepalive

__all__ = ["BackendLink", "serve_backend", "serve_backends"]

logger = logging.getLogger("strands_trio.broker")

_RECEIVE_SIZE = 65536
_HEARTBEAT = encode(Heartbeat())
_numbers = itertools.count(1)


class BackendLink:
    """The broker's end of one backend connection."""

    def __init__(self, hub: Hub, name: str) -> None:
        config = hub.config
        self.hub = hub
        self.name = name
        self.outbox = Outbox(config.max_backend_buffer)
        #: Whether the link takes events (authenticated, not dropped, not closed).
        self.alive = False
        self._hard_limit = 2 * config.max_backend_buffer
        self._scope = trio.CancelScope()
        self.input_scope = trio.CancelScope()

    def send(self, data: bytes, *, check: bool = True) -> None:
        """Queue one encoded event for the backend, without blocking. With ``check=False``
        (the flush of the hub's queue to a new backend) the buffer may pass its hard limit:
        those events were waiting for this backend and must not make it look stalled."""
        outbox = self.outbox
        try:
            outbox.send_nowait(data)
        except NotConnectedError:
            return
        if check and outbox.pending_bytes > self._hard_limit:
            self.drop(f"its buffer passed {self._hard_limit} bytes")

    def drop(self, why: str) -> None:
        """Disconnect a backend that stopped reading; its clients go to another one."""
        if not self.alive:
            return
        logger.warning("backend %s stopped reading (%s): disconnecting it", self.name, why)
        self.hub.counters.backends_stalled += 1
        self.alive = False
        self.hub.remove_backend(self)
        self._scope.cancel()

    async def _watchdog(self) -> None:
        """Drop the backend when a write has made no progress for ``backend_stall_timeout``
        while there was something to write (checked four times per timeout)."""
        stall = self.hub.config.backend_stall_timeout
        outbox = self.outbox
        written, since = outbox.frames_written, trio.current_time()
        while True:
            await trio.sleep(stall / 4)
            now = trio.current_time()
            if outbox.idle or outbox.frames_written != written:
                written, since = outbox.frames_written, now
            elif now - since >= stall:
                self.drop(f"no write completed for {stall:g} s")

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            self.send(_HEARTBEAT)


async def _authenticate(
    link: BackendLink, stream: trio.abc.ReceiveStream, decoder: FrameDecoder, secret: str
) -> list[object] | None:
    """Read until the first frame; return the frames after it if it is the right
    ``authenticate``, else ``None``."""
    with trio.move_on_after(link.hub.config.handshake_timeout):
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
                    return list(frames[1:])
                return None
    return None


async def serve_backend(hub: Hub, stream: trio.abc.Stream, name: str) -> None:
    """Serve one backend connection until it ends, it is dropped, or the broker stops."""
    config = hub.config
    link = BackendLink(hub, name)
    decoder = FrameDecoder(Role.BROKER, max_line_length=config.max_line_length)
    backlog: list[object] = []
    stopping = False
    hub.link_opened(link)
    try:
        with link._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write, link, stream)
                if config.backend_secret is not None:
                    frames = await _authenticate(link, stream, decoder, config.backend_secret)
                    if frames is None:
                        hub.counters.backends_refused += 1
                        logger.warning("backend %s refused: wrong or missing secret", name)
                        nursery.cancel_scope.cancel()  # the writer too: the socket closes
                        return
                    backlog = frames
                link.alive = True
                hub.add_backend(link)
                logger.info("backend %s connected", name)
                if config.heartbeat_interval is not None:
                    nursery.start_soon(link._heartbeats, config.heartbeat_interval)
                nursery.start_soon(link._watchdog)
                for frame in backlog:
                    _handle(hub, link, frame)
                with link.input_scope:
                    await _read(hub, link, stream, decoder)
                stopping = link.input_scope.cancelled_caught
                if stopping:
                    await link.outbox.flush()
                nursery.cancel_scope.cancel()
    finally:
        was_alive, link.alive = link.alive, False
        hub.remove_backend(link)
        lost = link.outbox.close()
        if was_alive:
            logger.info("backend %s disconnected%s", name, " (broker stopping)" if stopping else "")
        if lost:
            logger.warning("%d event(s) to backend %s were not written", lost, name)
        await trio.aclose_forcefully(stream)
        hub.link_closed(link)


async def _write(link: BackendLink, stream: trio.abc.SendStream) -> None:
    """The link's writer. A backend gone while we write (reset, broken pipe) ends its link,
    like a backend gone while we read: never the broker."""
    try:
        await link.outbox.write_loop(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        logger.info("writing to backend %s failed: %s", link.name, exc or type(exc).__name__)
        link.alive = False
        link.hub.remove_backend(link)
        link._scope.cancel()


async def _read(
    hub: Hub, link: BackendLink, stream: trio.abc.ReceiveStream, decoder: FrameDecoder
) -> None:
    while True:
        try:
            data = await stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            for bad in decoder.feed_eof():
                _handle(hub, link, bad)
            return
        for frame in decoder.feed(data):
            _handle(hub, link, frame)


def _handle(hub: Hub, link: BackendLink, frame: object) -> None:
    if type(frame) is BadFrame:
        hub.counters.bad_frames += 1
        logger.warning(
            "skipped a bad line from backend %s: %s: %r", link.name, frame.reason, frame.line
        )
    else:
        hub.on_action(link, frame)  # type: ignore[arg-type]


async def serve_backends(
    hub: Hub, config: BrokerConfig, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    """Listen for backends on ``config.backend_host:config.tcp_port`` (TLS with
    ``config.backend_ssl_context``) until cancelled; ``task_status.started(port)``."""

    async def handle(stream: trio.abc.Stream) -> None:
        enable_keepalive(stream)
        peer = _peer(stream)
        await serve_backend(hub, stream, f"{peer}#{next(_numbers)}")

    tcp = await trio.open_tcp_listeners(config.tcp_port, host=config.backend_host)
    port: int = tcp[0].socket.getsockname()[1]
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


def _peer(stream: trio.abc.Stream) -> str:
    inner = getattr(stream, "transport_stream", stream)
    try:
        host, port = getattr(inner, "socket").getpeername()[:2]  # noqa: B009 - any stream
    except (AttributeError, OSError):
        return "backend"
    return f"{host}:{port}"
