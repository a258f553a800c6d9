"""``StrandsApp``: the decorator form of :class:`StrandsClient`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any, Self, TypeVar, overload

import cattrs
import trio

from ._client import StrandsClient, StreamFactory
from ._config import ClientConfig
from ._errors import NotConnectedError
from ._pipeline import ForbiddenHook, exception_handler, validate_pipeline
from ._router import Router
from ._statistics import ClientStatistics
from ._util import running, serve_until_signal
from .protocol import BrokerMember

__all__ = ["StrandsApp"]

logger = logging.getLogger("strands_trio.app")

F = TypeVar("F", bound=Callable[..., Any])


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

    Every event passes through *middleware*, then *guards*, before its handler (see
    :class:`StrandsClient` for each argument, and the middleware guide in the docs).

    Args:
        config: Settings for the client that :meth:`serve` runs.
        middleware: Outermost first: ``async def middleware(ctx, call_next)``.
        guards: Checked before every handler: ``can_activate(ctx) -> bool``.
        exception_handlers: Tried in order for an exception from the pipeline.
        on_forbidden: ``(ctx, guard)``, called when a guard refuses a message.
        message_type_field: The field of a JSON message that :meth:`on_message` routes on.
        converter: The cattrs converter that structures routed payloads (strict, unknown
            keys refused, by default).

    Raises:
        TypeError: a middleware is not async, a guard has no ``can_activate``, or an
            exception handler has no ``exception_types`` / ``catch``.
    """

    def __init__(
        self,
        *,
        config: ClientConfig | None = None,
        middleware: Sequence[Any] = (),
        guards: Sequence[Any] = (),
        exception_handlers: Sequence[Any] = (),
        on_forbidden: ForbiddenHook | None = None,
        message_type_field: str = "type",
        converter: cattrs.Converter | None = None,
    ) -> None:
        self.config = config or ClientConfig()
        validate_pipeline(middleware, guards, exception_handlers)
        self.middleware = list(middleware)
        self.guards = list(guards)
        self.exception_handlers = list(exception_handlers)
        self.on_forbidden = on_forbidden
        self.router = Router(type_field=message_type_field, converter=converter)
        self._callbacks: dict[str, Callable[..., Any]] = {}
        self._client: StrandsClient | None = None

    @property
    def message_type_field(self) -> str:
        """The field of a JSON message that names its type (``"type"`` by default)."""
        return self.router.type_field

    # ------------------------------------------------------------------ registration

    def on_connection_request(self, fn: F) -> F:
        """Register the connection request handler: ``(request) -> bool | None``."""
        return self._register("on_connection_request", fn)

    def on_new_connection(self, fn: F) -> F:
        """Register the new connection handler: ``(context) -> None``."""
        return self._register("on_new_connection", fn)

    @overload
    def on_message(self, fn: F, /) -> F: ...

    @overload
    def on_message(self, type: str, /, *, model: type | None = None) -> Callable[[F], F]: ...

    def on_message(self, fn_or_type: Any, /, *, model: type | None = None) -> Any:
        """Register a message handler, raw or typed.

        ``@app.on_message`` registers the raw handler ``(message: str, context)``: it gets
        every message, or, once typed routes exist, every message no route matches.

        ``@app.on_message("chat.send", model=ChatSend)`` routes JSON messages whose type field
        is ``"chat.send"`` to ``(payload: ChatSend, context)``; the payload is structured by
        the app's converter after the guards passed. One that does not fit never reaches the
        handler: the client gets an ``invalid_message`` error frame with the reason, and
        ``on_error`` is called with it. Without *model*, the payload is the decoded dict.

        Raises:
            ValueError: the type (or the raw handler) already has a handler.
        """
        if isinstance(fn_or_type, str):
            kind = fn_or_type

            def register(fn: F) -> F:
                if not callable(fn):
                    raise TypeError(f"@app.on_message({kind!r}) needs a function, got {fn!r}")
                self.router.add(kind, fn, model)
                return fn

            return register
        if model is not None:
            raise TypeError("model= needs a message type: @app.on_message('type', model=...)")
        return self._register("on_message", fn_or_type)

    def on_disconnect(self, fn: F) -> F:
        """Register the disconnect handler: ``(context) -> None``."""
        return self._register("on_disconnect", fn)

    def on_error(self, fn: F) -> F:
        """Register the broker error handler: ``(error, context) -> None``."""
        return self._register("on_error", fn)

    def exception_handler(
        self, *exception_types: type[BaseException]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function ``(ctx, exc)`` for exceptions of *exception_types* raised by any
        middleware, guard or handler (after any handler-specific ones)."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.exception_handlers.append(exception_handler(*exception_types)(fn))
            return fn

        return register

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

    async def close_connection(
        self, client_id: str, code: int = 1000, reason: str = "", *, wait: bool = False
    ) -> None:
        """Ask the broker to close *client_id*'s socket: see
        :meth:`StrandsClient.close_connection` (an extension the reference broker ignores)."""
        await self.client.close_connection(client_id, code, reason, wait=wait)

    async def presence(self, room_id: str, *, wait: bool = False) -> list[BrokerMember]:
        """Ask the broker who is in *room_id*: see :meth:`StrandsClient.presence` (an
        extension the reference broker never answers)."""
        return await self.client.presence(room_id, wait=wait)

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
        self._client = _AppClient(
            self,
            host,
            port,
            config=self.config,
            connect=connect,
            middleware=self.middleware,
            guards=self.guards,
            exception_handlers=self.exception_handlers,
            on_forbidden=self.on_forbidden,
        )
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
        await serve_until_signal(partial(self.serve, host, port, connect=connect), logger)


class _AppClient(StrandsClient):
    """The client behind a :class:`StrandsApp`: its callbacks are the app's functions."""

    def __init__(self, app: StrandsApp, *args: Any, **kwargs: Any) -> None:
        self._app = app
        super().__init__(*args, **kwargs)

    def _callbacks(self) -> dict[str, Callable[..., Any]]:
        return {**super()._callbacks(), **self._app._callbacks}

    def _router(self) -> Router | None:
        return self._app.router

    def _has_message_fallback(self) -> bool:
        return "on_message" in self._app._callbacks
