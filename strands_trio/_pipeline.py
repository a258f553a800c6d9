"""The pipeline every broker event passes through: middleware, guards, then the handler.

Theory of operation. The engine turns each decoded event into a *job* (:class:`Jobs`).
Without middleware, guards, exception handlers or routes, a job calls the handler directly
(:func:`direct_jobs`). Otherwise :class:`Pipeline` builds, once, one chain per handler
(:func:`make_jobs` chooses)::

    event ─▶ resolve handler ─▶ ExecutionContext
             (route by type)      │
                                  ▼
    ┌─ exception handlers (per handler, then global) ─────────────────────────────┐
    │  ┌─ app middleware[0] ─────────────────────────────────────────────────┐    │
    │  │  ┌─ app middleware[1] … then @use_middleware on the handler ─────┐  │    │
    │  │  │  ┌─ guards (app's, then the handler's) ───────────────────┐   │  │    │
    │  │  │  │  payload validation (typed routes) ─▶ handler           │   │  │    │
    │  │  │  └─────────────────────────────────────────────────────────┘   │  │    │
    │  │  └────────────────────────────────────────────────────────────────┘  │    │
    │  └──────────────────────────────────────────────────────────────────────┘    │
    └─────────────────────────────────────────────────────────────────────────────┘

A middleware is ``async def middleware(ctx, call_next)``: code before ``await call_next(ctx)``
runs on the way in, code after it on the way out, and not calling it stops the event there.
The first middleware listed is the outermost. The chain is a nest of small closures made when
the client starts, so an event costs one context object plus one call per layer.

Connection requests are answered from ``request.accepted`` once the chain returns, but only if
someone answered: the handler (its return value), a guard (refused), or a middleware through
``ctx.switch_to_connection_request().accept()`` / ``.reject()``. A middleware that stops the
chain without answering rejects the request: stopping must never let a client in.

An exception from the chain goes to the first exception handler whose types match (the
handler's own, then the app's); if none matches it propagates to the client, which logs and
counts it as a handler error (and rejects a connection request).
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import attrs
import trio

from ._brokers import link_listeners
from ._calls import REF_TYPES, Calls
from ._handlers import Jobs, as_async, direct_jobs, is_default_handler
from ._host import EventType, ExecutionContext, Target
from ._parts import (
    CallNext,
    Catcher,
    Check,
    ForbiddenHook,
    Middleware,
    as_catcher,
    as_check,
    check_middleware,
)
from ._reflect import EXCEPTION_HANDLERS_KEY, GUARDS_KEY, MIDDLEWARE_KEY, reflector
from ._router import MessageRoute, Router
from ._sender import Sender
from ._statistics import Counters
from .context import ConnectionRequestContext, Context
from .protocol import ConnectionRequest, ErrorEvent, NewMessage

__all__ = ["Chain", "Pipeline", "default_on_forbidden", "make_jobs"]

logger = logging.getLogger("strands_trio.pipeline")

# An enum member is an attribute look-up on every access (slow on CPython 3.11): hot paths
# use these.
_CONNECTION_REQUEST = EventType.CONNECTION_REQUEST
_MESSAGE = EventType.MESSAGE
_ERROR = EventType.ERROR


async def default_on_forbidden(ctx: ExecutionContext, guard: Any) -> None:
    """What happens to a message a guard refused, unless the app says otherwise: it is
    logged, and its client gets a ``forbidden`` error frame."""
    logger.info(
        "%s refused a message from client %s to %s",
        _name(guard),
        ctx.client_id,
        _name(ctx.get_handler()),
    )
    await ctx.send_error("forbidden", "you are not allowed to do that")


def _name(obj: Any) -> str:
    """A function's or an object's name as its author wrote it: ``__qualname__`` without the
    ``Outer.__init__.<locals>.`` of a function defined inside another, so a handler made in a
    constructor is ``announce``, a method ``Chat.on_message``, a partial its function's."""
    obj = getattr(obj, "func", obj)  # functools.partial
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return str(name).rpartition("<locals>.")[2]


# ---------------------------------------------------------------------- the pipeline


@attrs.frozen(kw_only=True)
class Chain(Target):
    """One handler's chain, built once: what runs for an event that resolved to it."""

    run: CallNext
    catchers: tuple[Catcher, ...]


def make_jobs(
    handlers: Mapping[str, Callable[..., Any]],
    *,
    app: Any,
    client: Sender,
    middleware: Sequence[Any],
    guards: Sequence[Any],
    exception_handlers: Sequence[Any],
    on_forbidden: ForbiddenHook | None,
    router: Router | None,
    message_fallback: bool,
    counters: Counters,
    limiter: trio.CapacityLimiter,
) -> Jobs:
    """The jobs the engine runs for a backend: through the pipeline when there is anything
    between events and handlers, else the handlers called directly (the fast path)."""
    if not (
        middleware
        or guards
        or exception_handlers
        or (router is not None and router.routes)
        or any(
            reflector.get(key, fn)
            for fn in handlers.values()
            for key in (MIDDLEWARE_KEY, GUARDS_KEY, EXCEPTION_HANDLERS_KEY)
        )
    ):
        return direct_jobs(handlers, limiter)
    pipeline = Pipeline(
        app=app,
        client=client,
        callbacks=handlers,
        middleware=middleware,
        guards=guards,
        exception_handlers=exception_handlers,
        on_forbidden=on_forbidden,
        router=router,
        message_fallback=message_fallback,
        counters=counters,
        limiter=limiter,
    )
    return attrs.evolve(pipeline.jobs(), broker_link=link_listeners(middleware))


def _bind(middleware: Middleware, call_next: CallNext, kind: EventType) -> CallNext:
    wrap_next = getattr(middleware, "wrap_next", None)
    if wrap_next is not None:  # the middleware makes its own step (see FastMiddleware)
        step: CallNext = wrap_next(call_next, kind)
        return step
    # An object's bound __call__ is taken once: calling the object itself would look it up on
    # every event (~0.1 µs a layer).
    call = middleware
    if not isinstance(middleware, types.FunctionType | types.MethodType | partial):
        call = middleware.__call__  # type: ignore[operator]

    # A plain function returning the middleware's coroutine: no extra coroutine per layer.
    def call_step(ctx: ExecutionContext) -> Awaitable[None]:
        return call(ctx, call_next)

    return call_step


def _owning_class(handler: Any) -> type | None:
    handler = inspect.unwrap(handler)  # through functools.wraps decorators
    owner = getattr(handler, "__self__", None)
    return type(owner) if inspect.ismethod(handler) and owner is not None else None


# ---------------------------------------------------------------------- the pipeline


class Pipeline:
    """Builds the chains of a client's handlers and the jobs that run events through them.

    Args:
        app: What ``ctx.get_app()`` returns.
        client: The client whose handlers these are.
        callbacks: The user's five callbacks by name (``on_message`` ...), as written.
        middleware: The app's middleware, outermost first.
        guards: The app's guards, checked in order.
        exception_handlers: The app's exception handlers, tried in order.
        on_forbidden: Called with ``(ctx, guard)`` when a guard refuses a message.
        router: Typed message routes, or ``None``.
        message_fallback: Whether ``callbacks["on_message"]`` is the user's own handler, the
            fallback for messages no route matches; if not, those get an error frame.
        counters: Where refused and invalid events are counted.
        limiter: The thread limiter for sync handlers.
    """

    def __init__(
        self,
        *,
        app: Any,
        client: Sender,
        callbacks: Mapping[str, Callable[..., Any]],
        middleware: Sequence[Any],
        guards: Sequence[Any],
        exception_handlers: Sequence[Any],
        on_forbidden: ForbiddenHook | None,
        router: Router | None,
        message_fallback: bool = True,
        counters: Counters,
        limiter: trio.CapacityLimiter,
    ) -> None:
        self._app = app
        self._client = client
        self._counters = counters
        self._limiter = limiter
        self._middleware = tuple(check_middleware(m) for m in middleware)
        self._guards = tuple(as_check(g) for g in guards)
        self._catchers = tuple(as_catcher(h) for h in exception_handlers)
        self._on_forbidden = as_async(on_forbidden or default_on_forbidden, limiter)
        self._on_error = as_async(callbacks["on_error"], limiter)
        self._report_invalid = not is_default_handler(callbacks["on_error"])
        self._router = router if router is not None and router.routes else None
        self._reply_field = None if self._router is None else self._router.reply_field
        #: Answers to calls (messages with a ref), when there are typed routes.
        self.calls = None if self._router is None else Calls(self._router, counters)

        # One chain per handler, each for one kind of event.
        self.request = self._build(
            callbacks["on_connection_request"], self._call_request, _CONNECTION_REQUEST
        )
        self.new_connection = self._build(
            callbacks["on_new_connection"], self._call_context, EventType.NEW_CONNECTION
        )
        self.disconnect = self._build(
            callbacks["on_disconnect"], self._call_context, EventType.DISCONNECT
        )
        self.error = self._build(callbacks["on_error"], self._call_error, _ERROR)
        self.message = self._build(callbacks["on_message"], self._call_message, _MESSAGE)
        self.routes: dict[str, Chain] = {}
        if self._router is not None:
            if message_fallback:  # the raw handler answers calls too (data: its return value)
                self.message = self._build(callbacks["on_message"], self._call_fallback, _MESSAGE)
            else:
                self.message = self._build(_unrouted_message, self._call_unrouted, _MESSAGE)
            for kind, route in self._router.routes.items():
                typed = partial(self._call_typed, route)
                self.routes[kind] = self._build(route.handler, typed, _MESSAGE)

    def _build(
        self,
        handler: Callable[..., Any],
        call: Callable[[Callable[..., Awaitable[Any]], ExecutionContext], Awaitable[None]],
        kind: EventType,
    ) -> Chain:
        """One handler's chain, for events of *kind*: the app's middleware, the handler's, the
        guards, the call."""
        fn = as_async(handler, self._limiter)
        guards = self._guards + tuple(as_check(g) for g in reflector.get(GUARDS_KEY, handler, ()))
        middleware = self._middleware + tuple(
            check_middleware(m) for m in reflector.get(MIDDLEWARE_KEY, handler, ())
        )
        catchers = (
            tuple(as_catcher(h) for h in reflector.get(EXCEPTION_HANDLERS_KEY, handler, ()))
            + self._catchers
        )

        endpoint: CallNext = partial(call, fn)
        run = endpoint
        if guards:
            run = partial(self._guarded, guards, endpoint)
        for layer in reversed(middleware):
            run = _bind(layer, run, kind)
        return Chain(
            app=self._app,
            client=self._client,
            handler=handler,
            cls=_owning_class(handler),
            run=run,
            catchers=catchers,
        )

    def jobs(self) -> Jobs:
        """The client's jobs, one per event kind, running events through the chains."""
        return Jobs(
            request=self._request_job,
            new_connection=partial(
                self._context_job, EventType.NEW_CONNECTION, self.new_connection
            ),
            message=self._message_job,
            disconnect=partial(self._context_job, EventType.DISCONNECT, self.disconnect),
            error=self._error_job,
            left=None if self.calls is None else self.calls.left,
        )

    # ------------------------------------------------------------------ running a chain

    # Each job awaits chain.run(ctx) itself inside a try (free in CPython 3.11 when nothing
    # is raised) rather than through a helper coroutine: one frame less per event.

    @staticmethod
    async def _catch(chain: Chain, ctx: ExecutionContext, exc: Exception) -> None:
        """Hand *exc* to the first matching exception handler, or raise it again."""
        for catcher in chain.catchers:
            if isinstance(exc, catcher.types):
                result = catcher.catch(ctx, exc)
                if inspect.isawaitable(result):
                    await result
                return
        raise exc

    async def _guarded(
        self, guards: tuple[Check, ...], endpoint: CallNext, ctx: ExecutionContext
    ) -> None:
        for guard in guards:
            allowed = guard.check(ctx)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                await self._refused(ctx, guard.guard)
                return
        await endpoint(ctx)

    async def _refused(self, ctx: ExecutionContext, guard: Any) -> None:
        self._counters.events_refused += 1
        kind = ctx.get_type()
        if kind is _CONNECTION_REQUEST:
            ctx.switch_to_connection_request().reject()
            logger.info("%s rejected the connection request from %s", _name(guard), _remote(ctx))
        elif kind is _MESSAGE:
            ctx.outcome = "forbidden"
            await self._on_forbidden(ctx, guard)
        else:
            logger.debug(
                "%s skipped the %s handler for client %s", _name(guard), kind, ctx.client_id
            )

    # ------------------------------------------------------------------ jobs

    async def _request_job(
        self, event: ConnectionRequest, request: ConnectionRequestContext
    ) -> bool:
        chain = self.request
        ctx = ExecutionContext(_CONNECTION_REQUEST, (event, request), chain)
        try:
            await chain.run(ctx)
        except Exception as exc:
            await self._catch(chain, ctx, exc)
        ctx.store_state()
        return request.accepted if ctx.answered else False

    async def _context_job(self, kind: EventType, chain: Chain, event: Any) -> None:
        ctx = ExecutionContext(kind, (event, event.context), chain)
        try:
            await chain.run(ctx)
        except Exception as exc:
            await self._catch(chain, ctx, exc)

    async def _message_job(self, event: NewMessage) -> None:
        chain = self.message
        payload = None
        if self._router is not None:
            kind, payload = self._router.decode(event.message)
            chain = self.routes.get(kind, chain) if kind is not None else chain
        ctx = ExecutionContext(_MESSAGE, (event, event.message, event.context), chain)
        if payload is not None:
            ctx.payload = payload
            field = self._reply_field
            if field is not None and type(payload) is dict and field in payload:
                ref = payload[field]
                if type(ref) in REF_TYPES:  # else the typed call refuses the message
                    await self._call_job(chain, ctx, ref, field)
                    return
        try:
            await chain.run(ctx)
        except Exception as exc:
            await self._catch(chain, ctx, exc)

    async def _call_job(
        self, chain: Chain, ctx: ExecutionContext, ref: str | float, field: str
    ) -> None:
        """A message with a ref: as any message, but whatever happens the caller is told."""
        calls = self.calls
        assert calls is not None
        ctx.set_ref(ref, field)
        client_id = ctx.client_id
        calls.begin(client_id)
        try:
            try:
                await chain.run(ctx)
            except Exception as exc:
                try:
                    await self._catch(chain, ctx, exc)
                except Exception as uncaught:
                    await calls.failed(ctx, uncaught)
                    raise
        finally:
            calls.end(client_id)

    async def _error_job(self, event: ErrorEvent) -> None:
        chain = self.error
        ctx = ExecutionContext(_ERROR, (event, event.error, event.context), chain)
        try:
            await chain.run(ctx)
        except Exception as exc:
            await self._catch(chain, ctx, exc)

    # ------------------------------------------------------------------ handler calls

    @staticmethod
    async def _call_request(fn: Callable[..., Awaitable[Any]], ctx: ExecutionContext) -> None:
        request = ctx.get_args()[1]
        result = await fn(request)
        if isinstance(result, bool):
            request.accepted = result
        ctx.answered = True

    # Plain functions returning the handler's own coroutine: no extra frame per event.

    @staticmethod
    def _call_context(fn: Callable[..., Awaitable[Any]], ctx: ExecutionContext) -> Awaitable[None]:
        return fn(ctx._args[1])

    @staticmethod
    def _call_error(fn: Callable[..., Awaitable[Any]], ctx: ExecutionContext) -> Awaitable[None]:
        args = ctx._args
        return fn(args[1], args[2])

    @staticmethod
    def _call_message(fn: Callable[..., Awaitable[Any]], ctx: ExecutionContext) -> Awaitable[None]:
        args = ctx._args
        return fn(args[1], args[2])

    async def _call_typed(
        self, route: MessageRoute, fn: Callable[..., Awaitable[Any]], ctx: ExecutionContext
    ) -> None:
        assert self._router is not None
        context: Context = ctx.get_args()[2]
        data = ctx.payload
        reply_field = self._reply_field
        ref = None
        try:
            if reply_field is not None and reply_field in data:
                ref = ctx.ref
                if ref is None:
                    raise ValueError(f"{reply_field!r} must be a string or a number")
            payload = self._router.structure(route, data)
        except ValueError as exc:
            self._counters.messages_invalid += 1
            reason = f"invalid {route.type!r} message: {exc}"
            ctx.outcome = "invalid"
            logger.info("client %s sent an %s", context.client_id, reason)
            await ctx.send_error("invalid_message", reason)
            if self._report_invalid:  # the default on_error would call it the broker's
                await self._on_error(reason, context)
            return
        result = await fn(payload, context)
        if ref is not None:
            assert self.calls is not None
            await self.calls.reply(ctx, result)

    async def _call_fallback(
        self, fn: Callable[..., Awaitable[Any]], ctx: ExecutionContext
    ) -> None:
        args = ctx._args
        result = await fn(args[1], args[2])
        if ctx.ref is not None:
            assert self.calls is not None
            await self.calls.reply(ctx, result)

    async def _call_unrouted(
        self, fn: Callable[..., Awaitable[Any]], ctx: ExecutionContext
    ) -> None:
        assert self._router is not None
        _, message, context = ctx.get_args()
        self._counters.messages_unrouted += 1
        reason = self._router.why_unrouted(message)
        ctx.outcome = "invalid"
        logger.info("client %s sent a message no route matches: %s", context.client_id, reason)
        await ctx.send_error("unknown_type", reason)
        del fn


async def _unrouted_message(message: str, context: Context) -> None:
    """The fallback for messages no route matches when the app has no raw ``on_message``."""


def _remote(ctx: ExecutionContext) -> str:
    request = ctx.get_args()[1]
    return getattr(request, "remote_addr", "?")
