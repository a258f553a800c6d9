"""The five callbacks a backend provides, how sync ones run, and the jobs that call them."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .context import ConnectionRequestContext, Context
from .protocol import ConnectionRequest, Disconnected, ErrorEvent, NewConnection, NewMessage

__all__ = ["EventJobs", "Handlers", "as_async", "direct_jobs", "is_async_callable"]

RequestHandler = Callable[[ConnectionRequestContext], Awaitable[bool | None]]
ContextHandler = Callable[[Context], Awaitable[None]]
MessageHandler = Callable[[str, Context], Awaitable[None]]
ErrorHandler = Callable[[str, Context | ConnectionRequestContext], Awaitable[None]]


@attrs.frozen(kw_only=True)
class Handlers:
    """The callbacks a client calls, all async (sync ones already wrapped by :func:`as_async`)."""

    on_connection_request: RequestHandler
    on_new_connection: ContextHandler
    on_message: MessageHandler
    on_disconnect: ContextHandler
    on_error: ErrorHandler


def is_async_callable(fn: object) -> bool:
    """Whether calling *fn* returns an awaitable: an ``async def`` function or method, a
    ``functools.partial`` of one, or an object whose ``__call__`` is ``async def``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - looking for an async __call__
    )


def as_async(
    fn: Callable[..., Any], limiter: trio.CapacityLimiter
) -> Callable[..., Awaitable[Any]]:
    """Return *fn* itself if it is async; otherwise an async function that runs it in a worker
    thread (``trio.to_thread.run_sync``), at most ``limiter.total_tokens`` at a time, so that a
    blocking handler cannot stall the event loop.

    Cancellation: when cancelled (a shutdown past its deadline), the thread is abandoned: it
    runs to its end in the background and its result is discarded.
    """
    if is_async_callable(fn):
        return fn

    @functools.wraps(fn)
    async def in_thread(*args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter, abandon_on_cancel=True)

    return in_thread


@attrs.frozen(kw_only=True)
class EventJobs:
    """What the client runs for each kind of event: the decoded frame in, the handler called.

    ``request`` gets the frame and the :class:`ConnectionRequestContext` made for it and
    returns the handler's answer (``True``/``False``, or ``None`` for ``request.accepted``).
    """

    request: Callable[[ConnectionRequest, ConnectionRequestContext], Awaitable[bool | None]]
    new_connection: Callable[[NewConnection], Awaitable[None]]
    message: Callable[[NewMessage], Awaitable[None]]
    disconnect: Callable[[Disconnected], Awaitable[None]]
    error: Callable[[ErrorEvent], Awaitable[None]]


def direct_jobs(handlers: Handlers) -> EventJobs:
    """Jobs that call the handlers directly: the path of a client without a pipeline."""
    on_message, on_new_connection = handlers.on_message, handlers.on_new_connection
    on_disconnect, on_error = handlers.on_disconnect, handlers.on_error
    on_connection_request = handlers.on_connection_request

    async def request(event: ConnectionRequest, request: ConnectionRequestContext) -> bool | None:
        return await on_connection_request(request)

    async def message(event: NewMessage) -> None:
        await on_message(event.message, event.context)

    async def new_connection(event: NewConnection) -> None:
        await on_new_connection(event.context)

    async def disconnect(event: Disconnected) -> None:
        await on_disconnect(event.context)

    async def error(event: ErrorEvent) -> None:
        await on_error(event.error, event.context)

    return EventJobs(
        request=request,
        new_connection=new_connection,
        message=message,
        disconnect=disconnect,
        error=error,
    )
