"""``serve_broker``: the WebSocket front and the backend port, under one graceful shutdown.

Theory of operation::

    serve_broker()                       the caller's task
    ├── watcher                          sleeps; turns the caller's cancellation into a stop
    └── [shielded services scope]
        ├── cluster nursery              with redis_url only: ClusterHub.serve (_cluster.py)
        ├── backends nursery             serve_backends: the TCP port and one task per backend
        └── front nursery                serve_websockets: the WebSocket/HTTP port, one task
                                         per client

Cancelling the caller's scope stops the broker gracefully, within ``shutdown_timeout``: the
front closes every WebSocket with 1001 ("going away"), which queues their ``disconnected``
events for the backends; then every backend link flushes and closes; then a cluster node
deletes its registrations from Redis; then the caller's ``Cancelled`` goes on. Whatever is
still running at the deadline is cancelled.

Without ``redis_url`` the hub is a plain :class:`Hub` and the Redis client is never imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from ._backends import serve_backends
from ._config import BrokerConfig
from ._hub import Hub
from ._websocket import serve_websockets

if TYPE_CHECKING:
    from ._cluster import ClusterHub

__all__ = ["BrokerAddress", "serve_broker"]


@attrs.frozen
class BrokerAddress:
    """Where a started broker listens (what ``nursery.start(serve_broker, ...)`` returns).

    Attributes:
        ws_port: The WebSocket (and HTTP) port.
        tcp_port: The backends' port.
        hub: The broker's state, for statistics and tests.
    """

    ws_port: int
    tcp_port: int
    hub: Hub = attrs.field(repr=False)


async def serve_broker(
    config: BrokerConfig | None = None,
    *,
    extra_routes: Mapping[str, Callable[[str], tuple[int, str, bytes]]] | None = None,
    task_status: trio.TaskStatus[BrokerAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a broker until cancelled; with ``await nursery.start(serve_broker, config)``,
    returns once both ports listen, with a :class:`BrokerAddress` (ports ``0`` in *config*
    pick free ones).

    Args:
        config: Ports and behaviour; ``BrokerConfig()`` (the reference's ports) by default.
        extra_routes: Plain HTTP ``GET`` paths served on the WebSocket port, each a function
            returning ``(status, content_type, body)``.

    Cancellation: cancelling the enclosing scope is the way to stop; the shutdown is graceful
    and bounded (see the module's theory of operation), then ``Cancelled`` propagates.

    Raises:
        OSError: a port cannot be bound (in use, or not allowed).
    """
    config = config or BrokerConfig()
    cluster: ClusterHub | None = None
    hub: Hub
    if config.redis_url is not None:
        from ._cluster import ClusterHub  # imports the Redis client (hiredis)

        hub = cluster = ClusterHub(config)
    else:
        hub = Hub(config)
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
                async with trio.open_nursery() as backends:
                    tcp_port = await backends.start(serve_backends, hub, config)
                    async with trio.open_nursery() as front:
                        ws_port = await front.start(
                            lambda task_status: serve_websockets(
                                hub, config, extra_routes=extra_routes, task_status=task_status
                            )
                        )
                        task_status.started(BrokerAddress(ws_port, tcp_port, hub))
                        await stop.wait()
                        services.deadline = trio.current_time() + config.shutdown_timeout
                        front.cancel_scope.cancel()  # closes every client with 1001
                    hub.close_backends()  # each link flushes its disconnected events, closes
                    await hub.wait_backends_closed()
                    backends.cancel_scope.cancel()
                if cluster is not None:
                    await cluster.leave()
                cluster_nursery.cancel_scope.cancel()
        guard.cancel_scope.cancel()
