"""The five callbacks a backend provides, gathered in one record, and how sync ones run."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .context import ConnectionRequestContext, Context

__all__ = ["Handlers", "as_async"]

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
