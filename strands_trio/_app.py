"""``StrandsApp``: a backend assembled from decorated functions.

The app is the decorator facade over the same connection engine as
:class:`~strands_trio.StrandsClient`: it keeps the handlers, typed routes and pipeline parts it
is given, and :meth:`StrandsApp.serve` builds the jobs for them and runs an
:class:`~strands_trio._engine.Engine`. Handlers are checked when they are registered (the
number of parameters) and typed for the user's type checker: a typed route's handler must take
the route's model.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Self, TypeVar, overload

import attrs
import cattrs
import trio

from ._brokers import BrokerLink
from ._config import ClientConfig
from ._engine import Engine, StreamFactory
from ._errors import NotConnectedError
from ._handlers import ARITY, DEFAULT_HANDLERS, check_arity
from ._parts import (
    ExceptionHandler,
    ForbiddenHook,
    GuardLike,
    Middleware,
    exception_handler,
    validate_pipeline,
)
from ._pipeline import make_jobs
from ._rooms import change_room
from ._router import Router
from ._statistics import ClientStatistics
from ._util import running, serve_until_signal
from .context import ConnectionRequestContext, Context
from .protocol import BrokerMember

__all__ = ["StrandsApp"]

logger = logging.getLogger("strands_trio.app")

M = TypeVar("M")
#: What a typed route's handler returns: ``None``, or the reply to a call (a model instance or
#: JSON-able data), maybe awaitable.
R = TypeVar("R")
#: What a message may be: text, or an instance of a routed (or outgoing) model.
Outgoing = str | attrs.AttrsInstance
RequestHandler = TypeVar(
    "RequestHandler",
    bound=Callable[[ConnectionRequestContext], "Awaitable[bool | None] | bool | None"],
)
ContextHandler = TypeVar("ContextHandler", bound=Callable[[Context], "Awaitable[None] | None"])
MessageHandler = TypeVar("MessageHandler", bound=Callable[[str, Context], "Awaitable[None] | None"])
ErrorHandler = TypeVar(
    "ErrorHandler",
    bound=Callable[[str, "Context | ConnectionRequestContext"], "Awaitable[None] | None"],
)
C = TypeVar("C", bound=type)
H = TypeVar("H", bound=Callable[..., Any])


class StrandsApp:
    """A backend assembled from decorated functions instead of a subclass::

        app = StrandsApp()

        @app.on_connection_request
        async def admit(request):
            request.context.room_id = request.url.removeprefix("/ws/")
            return request.header("Authorization") == "Bearer letmein"

        @app.on_message("chat.say", model=Say)
        async def say(payload: Say, context: Context) -> None:
            await app.send_room_message(context.room_id, Said(text=payload.text))

        app.run("localhost", 8081)

    Each handler has the signature of the :class:`StrandsClient` method of the same name;
    one function per handler. Functions may be ``async def`` (run on the event loop) or
    plain ``def`` (run in a worker thread, at most ``config.max_threads`` at once, so a
    blocking call cannot stall the loop; to send from one, use
    ``trio.from_thread.run(app.send_room_message, room_id, message)``). A handler that is not
    registered behaves as the :class:`StrandsClient` default (accept every connection
    request, log broker errors, ignore the rest).

    Every event passes through *middleware*, then *guards*, before its handler (see
    :class:`StrandsClient` for each argument, and the middleware guide in the docs).

    Args:
        config: Settings for the connection :meth:`serve` makes.
        middleware: Outermost first: ``async def middleware(ctx, call_next)``.
        guards: Checked before every handler: ``can_activate(ctx) -> bool``.
        exception_handlers: Tried in order for an exception from the pipeline.
        on_forbidden: ``(ctx, guard)``, called when a guard refuses a message.
        message_type_field: The field of a JSON message that :meth:`on_message` routes on.
        converter: The cattrs converter that structures routed payloads (strict, unknown
            keys refused, by default) and unstructures the models the app sends.
        reply_field: The field of a message that carries a call's correlation id: a typed
            route's handler then answers the caller alone with what it returns (see the
            replies guide in the docs). ``None``: no replies. No routed model may have a
            field of that name.

    Raises:
        TypeError: a middleware is not async, a guard has no ``can_activate``, or an
            exception handler has no ``exception_types`` / ``catch``.
        ValueError: *reply_field* is empty or the same as *message_type_field*.
    """

    def __init__(
        self,
        *,
        config: ClientConfig | None = None,
        middleware: Sequence[Middleware] = (),
        guards: Sequence[GuardLike] = (),
        exception_handlers: Sequence[ExceptionHandler] = (),
        on_forbidden: ForbiddenHook | None = None,
        message_type_field: str = "type",
        converter: cattrs.Converter | None = None,
        reply_field: str | None = "ref",
    ) -> None:
        if config is not None and not isinstance(config, ClientConfig):
            raise TypeError(f"config must be a ClientConfig, got {type(config).__name__}")
        validate_pipeline(middleware, guards, exception_handlers)
        self.config = config or ClientConfig()
        self.middleware = list(middleware)
        self.guards = list(guards)
        self.exception_handlers = list(exception_handlers)
        self.on_forbidden = on_forbidden
        self.router = Router(
            type_field=message_type_field, converter=converter, reply_field=reply_field
        )
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._limiter = trio.CapacityLimiter(self.config.max_threads)
        self._engine: Engine | None = None

    @property
    def message_type_field(self) -> str:
        """The field of a JSON message that names its type (``"type"`` by default)."""
        return self.router.type_field

    @property
    def reply_field(self) -> str | None:
        """The field of a message that carries a call's ref (``"ref"`` by default)."""
        return self.router.reply_field

    # ------------------------------------------------------------------ registration

    def on_connection_request(self, fn: RequestHandler) -> RequestHandler:
        """Register the connection request handler: ``(request) -> bool | None``."""
        return self._register("on_connection_request", fn)

    def on_new_connection(self, fn: ContextHandler) -> ContextHandler:
        """Register the new connection handler: ``(context) -> None``."""
        return self._register("on_new_connection", fn)

    @overload
    def on_message(self, fn: MessageHandler, /) -> MessageHandler: ...

    @overload
    def on_message(
        self, type: str, /, *, model: type[M]
    ) -> Callable[[Callable[[M, Context], R]], Callable[[M, Context], R]]: ...

    @overload
    def on_message(
        self, type: str, /
    ) -> Callable[
        [Callable[[dict[str, Any], Context], R]], Callable[[dict[str, Any], Context], R]
    ]: ...

    def on_message(self, fn_or_type: Any, /, *, model: type | None = None) -> Any:
        """Register a message handler, raw or typed.

        ``@app.on_message`` registers the raw handler ``(message: str, context)``: it gets
        every message, or, once typed routes exist, every message no route matches.

        ``@app.on_message("chat.send", model=ChatSend)`` routes JSON messages whose type field
        is ``"chat.send"`` to ``(payload: ChatSend, context)``; the payload is structured by
        the app's converter after the guards passed. One that does not fit never reaches the
        handler: the client gets an ``invalid_message`` error frame with the reason, and
        ``on_error`` is called with it. Without *model*, the payload is the decoded dict.
        Instances of *model* can then be sent as messages of that type.

        A message carrying the app's reply field (``"ref"``) is a call: what the handler
        returns (a model instance, JSON-able data, or ``None``) is sent to the caller alone as
        ``{"type": "reply", "ref": ..., "data": ...}``, and every failure as an error frame with
        the ref. A message without a ref gets no reply.

        Raises:
            ValueError: the type (or the raw handler) already has a handler, or *model* has
                a field named as the reply field.
            TypeError: the handler cannot take two arguments.
        """
        if isinstance(fn_or_type, str):
            kind = fn_or_type

            def register(fn: Callable[..., Any]) -> Callable[..., Any]:
                what = f"@app.on_message({kind!r})"
                if not callable(fn):
                    raise TypeError(f"{what} needs a function, got {fn!r}")
                check_arity(what, fn, 2)
                self.router.add(kind, fn, model)
                return fn

            return register
        if model is not None:
            raise TypeError("model= needs a message type: @app.on_message('type', model=...)")
        return self._register("on_message", fn_or_type)

    def on_disconnect(self, fn: ContextHandler) -> ContextHandler:
        """Register the disconnect handler: ``(context) -> None``."""
        return self._register("on_disconnect", fn)

    def on_error(self, fn: ErrorHandler) -> ErrorHandler:
        """Register the broker error handler: ``(error, context) -> None``."""
        return self._register("on_error", fn)

    def outgoing(self, type: str) -> Callable[[C], C]:
        """Class decorator: instances of the class can be sent as messages of *type*, for
        messages only the backend sends (a routed model needs no decorator)::

            @app.outgoing("chat.said")
            @attrs.frozen
            class Said:
                text: str

            await app.send_room_message(room_id, Said(text="hi"))  # {"type": "chat.said", ...}
        """

        def register(cls: C) -> C:
            self.router.add_outgoing(type, cls)
            return cls

        return register

    def exception_handler(
        self, *exception_types: type[BaseException]
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a function ``(ctx, exc)`` for exceptions of *exception_types* raised by any
        middleware, guard or handler (after any handler-specific ones)."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.exception_handlers.append(exception_handler(*exception_types)(fn))
            return fn

        return register

    def _register(self, name: str, fn: H) -> H:
        if not callable(fn):
            raise TypeError(f"@app.{name} needs a function, got {fn!r}")
        if name in self._handlers:
            raise ValueError(f"{name} already has a handler: {self._handlers[name]!r}")
        check_arity(f"@app.{name}", fn, ARITY[name])
        self._handlers[name] = fn
        return fn

    # ------------------------------------------------------------------ sending

    def _running_engine(self) -> Engine:
        if self._engine is None:
            raise NotConnectedError(
                "the app is not serving: start it with app.serve() or app.run()"
            )
        return self._engine

    def _text(self, message: Outgoing) -> str:
        return message if type(message) is str else self.router.encode(message)

    async def send_room_message(
        self, room_id: str, message: Outgoing, *, wait: bool = False
    ) -> None:
        """Send *message* to every client in *room_id*: see
        :meth:`StrandsClient.send_room_message`. *message* is text, or an instance of a
        routed (or :meth:`outgoing`) model, sent as JSON with its type field.

        Raises:
            TypeError: *message* is an object whose class is the model of no message type.
        """
        await self._running_engine().send_room_message(room_id, self._text(message), wait=wait)

    async def send_private_message(
        self, client_id: str, message: Outgoing, *, wait: bool = False
    ) -> None:
        """Send *message* to the client *client_id*: see :meth:`send_room_message`."""
        engine = self._running_engine()
        await engine.send_private_message(client_id, self._text(message), wait=wait)

    async def broadcast_message(self, message: Outgoing, *, wait: bool = False) -> None:
        """Send *message* to every client: see :meth:`send_room_message`."""
        await self._running_engine().broadcast_message(self._text(message), wait=wait)

    async def close_connection(
        self, client_id: str, code: int = 1000, reason: str = "", *, wait: bool = False
    ) -> None:
        """Ask the broker to close *client_id*'s socket: see
        :meth:`StrandsClient.close_connection` (an extension the reference broker ignores)."""
        await self._running_engine().close_connection(client_id, code, reason, wait=wait)

    async def join_room(self, client_id: str, room_id: str, *, wait: bool = False) -> None:
        """Put *client_id* in *room_id* too: see :meth:`StrandsClient.join_room` (an
        extension of strands-trio's broker; :class:`~strands_trio.RoomsUnsupported` on the
        reference broker)."""
        engine = self._running_engine()
        await change_room(engine, self.middleware, client_id, room_id, join=True, wait=wait)

    async def leave_room(self, client_id: str, room_id: str, *, wait: bool = False) -> None:
        """Take *client_id* out of a room it joined: see :meth:`StrandsClient.leave_room`."""
        engine = self._running_engine()
        await change_room(engine, self.middleware, client_id, room_id, join=False, wait=wait)

    async def presence(self, room_id: str, *, wait: bool = False) -> list[BrokerMember]:
        """Ask the broker who is in *room_id*: see :meth:`StrandsClient.presence` (an
        extension the reference broker never answers)."""
        return await self._running_engine().presence(room_id, wait=wait)

    @property
    def is_connected(self) -> bool:
        """Whether the app is serving and connected to its broker now."""
        return self._engine is not None and self._engine.is_connected

    @property
    def broker_link(self) -> BrokerLink | None:
        """The link to the broker up now, as :attr:`StrandsClient.broker_link` says."""
        return None if self._engine is None else self._engine.link

    def statistics(self) -> ClientStatistics:
        """The statistics of the connection being served (see :class:`ClientStatistics`).

        Raises:
            NotConnectedError: the app is not serving.
        """
        return self._running_engine().statistics()

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
        :meth:`StrandsClient.run`, which this behaves as.

        Raises:
            BrokerConnectionError: as :meth:`StrandsClient.run`.
            RuntimeError: the app is already serving.
        """
        if self._engine is not None:
            raise RuntimeError("this StrandsApp is already serving")
        where = (
            f"{host}:{port}" if connect is None else getattr(connect, "__qualname__", repr(connect))
        )
        engine = Engine(self.config, connect or partial(trio.open_tcp_stream, host, port), where)
        jobs = make_jobs(
            {**DEFAULT_HANDLERS, **self._handlers},
            app=self,
            client=self,
            middleware=self.middleware,
            guards=self.guards,
            exception_handlers=self.exception_handlers,
            on_forbidden=self.on_forbidden,
            router=self.router,
            message_fallback="on_message" in self._handlers,
            counters=engine.counters,
            limiter=self._limiter,
        )
        self._engine = engine
        try:
            await engine.run(jobs, task_status=task_status)
        finally:
            self._engine = None

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
