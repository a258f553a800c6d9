"""``StrandsApp``: the decorator form of :class:`StrandsClient`."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, Self, TypeVar

import trio

from ._client import StrandsClient, StreamFactory
from ._config import ClientConfig
from ._errors import NotConnectedError
from ._handlers import Handlers, as_async
from ._statistics import ClientStatistics
from ._util import collapse_single_exception, running

__all__ = ["StrandsApp"]

logger = logging.getLogger("strands_trio.app")

F = TypeVar("F", bound=Callable[..., Any])

_CALLBACKS = (
    "on_connection_request",
    "on_new_connection",
    "on_message",
    "on_disconnect",
    "on_error",
)


class StrandsApp:
    """A backend assembled from decorated functions instead of a subclass::

        app = StrandsApp()

        @app.on_connection_request
        async def admit(request):
            request.context.room_id = request.url.removeprefix("/ws/")
            return request.header("Authorization") == "Bearer letmein"

        @app.on_message
        async def echo(message, context):
            await app.send_room_message(context.room_id, message)

        app.run("localhost", 8081)

    Each callback has the signature of the :class:`StrandsClient` method of the same name;
    one function per callback. Functions may be ``async def`` (run on the event loop) or
    plain ``def`` (run in a worker thread, at most ``config.max_threads`` at once, so a
    blocking call cannot stall the loop; to send from one, use
    ``trio.from_thread.run(app.send_room_message, room_id, message)``). A callback that is not
    registered behaves as the :class:`StrandsClient` default (accept every connection
    request, log broker errors, ignore the rest).

    Args:
        config: Settings for the client that :meth:`serve` runs.
    """

    def __init__(self, *, config: ClientConfig | None = None) -> None:
        self.config = config or ClientConfig()
        self._callbacks: dict[str, Callable[..., Any]] = {}
        self._client: StrandsClient | None = None

    # ------------------------------------------------------------------ registration

    def on_connection_request(self, fn: F) -> F:
        """Register the connection request handler: ``(request) -> bool | None``."""
        return self._register("on_connection_request", fn)

    def on_new_connection(self, fn: F) -> F:
        """Register the new connection handler: ``(context) -> None``."""
        return self._register("on_new_connection", fn)

    def on_message(self, fn: F) -> F:
        """Register the message handler: ``(message, context) -> None``."""
        return self._register("on_message", fn)

    def on_disconnect(self, fn: F) -> F:
        """Register the disconnect handler: ``(context) -> None``."""
        return self._register("on_disconnect", fn)

    def on_error(self, fn: F) -> F:
        """Register the broker error handler: ``(error, context) -> None``."""
        return self._register("on_error", fn)

    def _register(self, name: str, fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@app.{name} needs a function, got {fn!r}")
        if name in self._callbacks:
            raise ValueError(f"{name} already has a handler: {self._callbacks[name]!r}")
        self._callbacks[name] = fn
        return fn

    # ------------------------------------------------------------------ sending

    @property
    def client(self) -> StrandsClient:
        """The client :meth:`serve` is running.

        Raises:
            NotConnectedError: the app is not serving.
        """
        if self._client is None:
            raise NotConnectedError(
                "the app is not serving: start it with app.serve() or app.run()"
            )
        return self._client

    async def send_room_message(self, room_id: str, message: str, *, wait: bool = False) -> None:
        """Send *message* to every client in *room_id*: see
        :meth:`StrandsClient.send_room_message`."""
        await self.client.send_room_message(room_id, message, wait=wait)

    async def send_private_message(
        self, client_id: str, message: str, *, wait: bool = False
    ) -> None:
        """Send *message* to the client *client_id*: see
        :meth:`StrandsClient.send_private_message`."""
        await self.client.send_private_message(client_id, message, wait=wait)

    async def broadcast_message(self, message: str, *, wait: bool = False) -> None:
        """Send *message* to every client: see :meth:`StrandsClient.broadcast_message`."""
        await self.client.broadcast_message(message, wait=wait)

    def statistics(self) -> ClientStatistics:
        """The running client's statistics (see :class:`ClientStatistics`).

        Raises:
            NotConnectedError: the app is not serving.
        """
        return self.client.statistics()

    # ------------------------------------------------------------------ running

    async def serve(
        self,
        host: str = "localhost",
        port: int = 8081,
        *,
        connect: StreamFactory | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Connect to the broker at *host*:*port* and serve until cancelled: see
        :meth:`StrandsClient.run`, which this runs.

        Raises:
            BrokerConnectionError: as :meth:`StrandsClient.run`.
            RuntimeError: the app is already serving.
        """
        if self._client is not None:
            raise RuntimeError("this StrandsApp is already serving")
        self._client = _AppClient(self, host, port, config=self.config, connect=connect)
        try:
            await self._client.run(task_status=task_status)
        finally:
            self._client = None

    @contextlib.asynccontextmanager
    async def connected(
        self, host: str = "localhost", port: int = 8081, *, connect: StreamFactory | None = None
    ) -> AsyncIterator[Self]:
        """Serve for the duration of an ``async with`` block, entered once connected: see
        :meth:`StrandsClient.connected`."""
        async with running(partial(self.serve, host, port, connect=connect)):
            yield self

    def run(
        self, host: str = "localhost", port: int = 8081, *, connect: StreamFactory | None = None
    ) -> None:
        """Serve until SIGINT (Ctrl-C) or SIGTERM, then shut down gracefully: the blocking
        ``trio.run`` wrapper around :meth:`serve`. A second signal during the shutdown stops
        at once (``KeyboardInterrupt``).

        Raises:
            BrokerConnectionError: as :meth:`StrandsClient.run`.
        """
        trio.run(partial(self._serve_until_signal, host, port, connect=connect))

    async def _serve_until_signal(
        self, host: str, port: int, *, connect: StreamFactory | None
    ) -> None:
        with collapse_single_exception():
            async with trio.open_nursery() as nursery:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    nursery.start_soon(partial(self.serve, host, port, connect=connect))
                    async for signum in signals:
                        logger.info("%s received: shutting down", signal.Signals(signum).name)
                        break
                # The receiver is closed: a second Ctrl-C now interrupts the shutdown.
                nursery.cancel_scope.cancel()


class _AppClient(StrandsClient):
    """The client behind a :class:`StrandsApp`: its callbacks are the app's functions."""

    def __init__(self, app: StrandsApp, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app = app

    def _handler_table(self) -> Handlers:
        defaults = super()._handler_table()
        limiter = self._thread_limiter
        chosen = {
            name: as_async(self._app._callbacks[name], limiter)
            for name in _CALLBACKS
            if name in self._app._callbacks
        }
        return Handlers(**{name: chosen.get(name, getattr(defaults, name)) for name in _CALLBACKS})
