"""``serve_broker``: the hub, the backends' port, the WebSocket port and, in a cluster, the
node, composed under one graceful shutdown.

Theory of operation::

    serve_broker()                       the caller's task
    ├── watcher                          sleeps; turns the caller's cancellation into a stop
    └── [shielded services scope]
        ├── cluster nursery              with redis_url only: ClusterNode.serve (cluster/)
        ├── backends nursery             BackendServer.serve: the TCP port, a task per backend
        └── front nursery                WebSocketFront.serve: the WebSocket/HTTP port, a task
                                         per connection

Each component keeps and reports its own figures; this module composes them into
``/healthz``, ``/metrics`` and :meth:`BrokerAddress.statistics`; it also serves the browser
client, ``/strands.js`` (``_static.py``).

Cancelling the caller's scope stops the broker gracefully, within ``shutdown_timeout``: the
front closes every WebSocket with 1001 ("going away"), which queues their ``disconnected``
events for the backends; then every backend link flushes and closes; then a cluster node
deletes its registrations from Redis; then the caller's ``Cancelled`` goes on. Whatever is
still running at the deadline is cancelled.

Without ``redis_url`` the Redis client is never imported.
"""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._backends import BackendServer, BackendStatistics
from ._config import BrokerConfig
from ._front import FrontStatistics, Route, WebSocketFront
from ._hub import Hub, HubStatistics
from ._ports import ClusterStatistics
from ._prometheus import render
from ._static import STRANDS_JS_PATH, strands_js_route

if TYPE_CHECKING:
    from .cluster import ClusterNode

__all__ = ["BrokerAddress", "BrokerStatistics", "ListenError", "serve_broker"]


class ListenError(OSError):
    """A broker's port cannot be bound: an :class:`OSError` (same ``errno``) that says which
    listener, on which address, and why, e.g. ``cannot listen for backends on
    127.0.0.1:8081: address already in use``.

    Attributes:
        listener: ``"WebSocket"`` or ``"backends"``.
        host: The interface it was to listen on.
        port: The port (``0``: a free one was asked for).
    """

    def __init__(self, listener: str, host: str, port: int, cause: OSError) -> None:
        why = "address already in use" if cause.errno == errno.EADDRINUSE else cause.strerror
        what = "WebSocket clients" if listener == "WebSocket" else listener
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(cause.errno, f"cannot listen for {what} on {address}: {why or cause}")
        self.listener, self.host, self.port = listener, host, port

    def __str__(self) -> str:
        return str(self.strerror)


@contextlib.contextmanager
def _naming(listener: str, host: str, port: int) -> Iterator[None]:
    """Turn an :class:`OSError` from binding *listener*'s port into a :class:`ListenError`."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, ListenError):
            raise
        raise ListenError(listener, host, port, exc) from exc


@attrs.frozen(kw_only=True)
class BrokerStatistics:
    """A broker's figures, each component's own (:meth:`BrokerAddress.statistics`).

    Attributes:
        hub: Clients, rooms, admissions and routing.
        front: The WebSocket port: slots, sessions, refusals, messages lost.
        backends: The backends' port: links, stalls, bad lines, events lost.
        cluster: In a cluster, this node's figures about it, else ``None``.
    """

    hub: HubStatistics
    front: FrontStatistics
    backends: BackendStatistics
    cluster: ClusterStatistics | None = None


@attrs.frozen
class BrokerAddress:
    """Where a started broker listens (what ``nursery.start(serve_broker, ...)`` returns).

    Attributes:
        ws_port: The WebSocket (and HTTP) port.
        tcp_port: The backends' port.
        hub: The broker's switchboard, for tests (``await hub.wait_backends()``).
    """

    ws_port: int
    tcp_port: int
    hub: Hub = attrs.field(repr=False)
    _parts: _Parts = attrs.field(repr=False, alias="parts")

    @property
    def cluster(self) -> ClusterNode | None:
        """The broker's cluster node (with ``redis_url``), for tests (``await
        address.cluster.settle()``); ``None`` for a single broker."""
        return self._parts.cluster

    def statistics(self) -> BrokerStatistics:
        """The broker's figures now."""
        return self._parts.statistics()


@attrs.define
class _Parts:
    """The components of one broker, and what is composed of their figures."""

    hub: Hub
    backends: BackendServer
    cluster: ClusterNode | None
    front: WebSocketFront | None = None

    def statistics(self) -> BrokerStatistics:
        assert self.front is not None
        return BrokerStatistics(
            hub=self.hub.statistics(),
            front=self.front.statistics(),
            backends=self.backends.statistics(),
            cluster=self.cluster.statistics() if self.cluster is not None else None,
        )

    def healthz(self, query: str) -> tuple[int, str, bytes]:
        health: dict[str, Any] = {"status": "ok", **self.hub.health()}
        if self.cluster is not None:
            health.update(self.cluster.health())
        return 200, "application/json", json.dumps(health).encode()

    def metrics(self, query: str) -> tuple[int, str, bytes]:
        assert self.front is not None
        metrics = [*self.hub.metrics(), *self.backends.metrics(), *self.front.metrics()]
        if self.cluster is not None:
            metrics += self.cluster.metrics()
        return 200, "text/plain; version=0.0.4; charset=utf-8", render(metrics).encode()


async def serve_broker(
    config: BrokerConfig | None = None,
    *,
    extra_routes: Mapping[str, Route] | None = None,
    task_status: trio.TaskStatus[BrokerAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a broker until cancelled; with ``await nursery.start(serve_broker, config)``,
    returns once both ports listen, with a :class:`BrokerAddress` (ports ``0`` in *config*
    pick free ones).

    Args:
        config: Ports and behaviour; ``BrokerConfig()`` (the reference's ports) by default.
        extra_routes: Plain HTTP ``GET`` paths served on the WebSocket port, each a function
            of the raw query string returning ``(status, content_type, body)`` (and
            optionally extra headers); they override the built-in ``/healthz``,
            ``/metrics`` and ``/strands.js``.

    Cancellation: cancelling the enclosing scope is the way to stop; the shutdown is graceful
    and bounded (see the module's theory of operation), then ``Cancelled`` propagates.

    Raises:
        ListenError: a port cannot be bound (an :class:`OSError` naming the listener).
    """
    config = config or BrokerConfig()
    hub = Hub(config)
    cluster: ClusterNode | None = None
    if config.redis_url is not None:
        from .cluster import ClusterNode  # imports the Redis client (hiredis)

        cluster = ClusterNode(hub, config)
        hub.join_cluster(cluster)
    backends = BackendServer(hub, config)
    parts = _Parts(hub, backends, cluster)
    routes: dict[str, Route] = {"/healthz": parts.healthz, "/metrics": parts.metrics}
    if config.serve_strands_js:
        routes[STRANDS_JS_PATH] = strands_js_route()
    routes.update(extra_routes or {})
    front = parts.front = WebSocketFront(hub, config, routes=routes)
    stop = trio.Event()

    async def watch() -> None:
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    async with trio.open_nursery() as guard:
        guard.start_soon(watch)
        with trio.CancelScope(shield=True) as services:
            async with trio.open_nursery() as cluster_nursery:
                if cluster is not None:
                    await cluster_nursery.start(cluster.serve)
                async with trio.open_nursery() as backend_nursery:
                    with _naming("backends", config.backend_host, config.tcp_port):
                        tcp_port = await backend_nursery.start(backends.serve)
                    async with trio.open_nursery() as front_nursery:
                        with _naming("WebSocket", config.ws_host, config.ws_port):
                            ws_port = await front_nursery.start(front.serve)
                        task_status.started(BrokerAddress(ws_port, tcp_port, hub, parts=parts))
                        await stop.wait()
                        services.deadline = trio.current_time() + config.shutdown_timeout
                        backends.begin_stop()
                        front_nursery.cancel_scope.cancel()  # closes every client with 1001
                    backends.close()  # each link flushes its disconnected events, closes
                    await backends.wait_closed()
                    backend_nursery.cancel_scope.cancel()
                if cluster is not None:
                    await cluster.leave()
                cluster_nursery.cancel_scope.cancel()
        guard.cancel_scope.cancel()
