"""A backend's five handlers, how sync ones run, and the jobs the engine runs for each event.

Words, used the same way everywhere: the *handlers* are what a backend provides, by name
(``on_connection_request``, ``on_new_connection``, ``on_message``, ``on_disconnect``,
``on_error``: a :class:`~strands_trio.StrandsClient`'s methods or a
:class:`~strands_trio.StrandsApp`'s decorated functions); the *jobs* (:class:`Jobs`) are what
the connection engine runs for each decoded event: the handler itself, called with the event's
fields (:func:`direct_jobs`), or the handler behind the middleware pipeline
(``_pipeline.py``).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs
import trio

from ._brokers import LinkHook
from .context import ConnectionRequestContext, Context
from .protocol import (
    NO_BACKEND,
    ConnectionRequest,
    Disconnected,
    ErrorEvent,
    NewConnection,
    NewMessage,
)

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "ARITY",
    "DEFAULT_HANDLERS",
    "HANDLER_NAMES",
    "Jobs",
    "as_async",
    "check_arity",
    "direct_jobs",
    "is_async_callable",
]

#: The handlers' names, and how many arguments each is called with.
ARITY: Mapping[str, int] = {
    "on_connection_request": 1,  # (request)
    "on_new_connection": 1,  # (context)
    "on_message": 2,  # (message, context); a typed route's (payload, context)
    "on_disconnect": 1,  # (context)
    "on_error": 2,  # (error, context)
}
HANDLER_NAMES = tuple(ARITY)

logger = logging.getLogger("strands_trio.client")


async def _accept(request: ConnectionRequestContext) -> bool:
    return True


async def _ignore(context: Context) -> None:
    pass


async def _ignore_message(message: str, context: Context) -> None:
    pass


def default_handler(fn: F) -> F:
    """Mark *fn* as a handler the library provides when the app gives none (see
    :func:`is_default_handler`)."""
    fn.__strands_default__ = True  # type: ignore[attr-defined]
    return fn


def is_default_handler(fn: Callable[..., Any]) -> bool:
    """Whether *fn* (a function or a bound method) is one the library provides by default:
    the client's invalid-message report skips the default ``on_error``, whose words are about
    the broker's errors."""
    return getattr(fn, "__strands_default__", False) is True


def log_broker_error(error: str, context: Context | ConnectionRequestContext) -> None:
    """What the default ``on_error`` does: log *error* as a WARNING, except the broker's
    report of a client refused while no backend was connected, an INFO line: it is about the
    past (the client was already told), nothing a backend can act on, and a broker restart
    brings one per page that retried meanwhile."""
    if error == NO_BACKEND and isinstance(context, ConnectionRequestContext):
        logger.info(
            "the broker refused a WebSocket client (%s, %s) while no backend was connected",
            context.remote_addr or "address unknown",
            context.path or "no path",
        )
    else:
        logger.warning("broker reported an error: %s", error)


@default_handler
async def _log_error(error: str, context: Context | ConnectionRequestContext) -> None:
    log_broker_error(error, context)


#: What a backend does for a handler it does not provide, as the asyncio peer: accept every
#: connection request, log the broker's errors, ignore the rest.
DEFAULT_HANDLERS: Mapping[str, Callable[..., Awaitable[Any]]] = {
    "on_connection_request": _accept,
    "on_new_connection": _ignore,
    "on_message": _ignore_message,
    "on_disconnect": _ignore,
    "on_error": _log_error,
}


@attrs.frozen(kw_only=True)
class Jobs:
    """What the engine runs for each kind of event: the decoded frame in, the handler called.

    ``request`` gets the frame and the :class:`ConnectionRequestContext` made for it and
    returns the handler's answer (``True``/``False``, or ``None`` for ``request.accepted``).
    """

    request: Callable[[ConnectionRequest, ConnectionRequestContext], Awaitable[bool | None]]
    new_connection: Callable[[NewConnection], Awaitable[None]]
    message: Callable[[NewMessage], Awaitable[None]]
    disconnect: Callable[[Disconnected], Awaitable[None]]
    error: Callable[[ErrorEvent], Awaitable[None]]
    #: Told when a link to the broker comes up or goes down (middleware's
    #: ``on_broker_link``, see ``_brokers.py``); ``None`` when nobody listens.
    broker_link: LinkHook | None = None
    #: Told a client's id the moment its ``disconnected`` arrives, before the client's earlier
    #: events have finished (they run in order): replies to its calls in flight are dropped
    #: (``_calls.py``). ``None`` when nobody listens.
    left: Callable[[str], None] | None = None


def is_async_callable(fn: object) -> bool:
    """Whether calling *fn* returns an awaitable: an ``async def`` function or method, a
    ``functools.partial`` of one, or an object whose ``__call__`` is ``async def``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - looking for an async __call__
    )


def check_arity(what: str, fn: Callable[..., Any], count: int) -> None:
    """Refuse now a handler that cannot be called with *count* positional arguments, rather
    than with a ``TypeError`` logged at the first event.

    Raises:
        TypeError: *fn* cannot take *count* positional arguments; the message names it.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    try:
        signature.bind(*range(count))
    except TypeError:
        name = getattr(fn, "__qualname__", repr(fn))
        raise TypeError(
            f"{what} is called with {count} argument(s), but {name}{signature} cannot take them"
        ) from None


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


def direct_jobs(handlers: Mapping[str, Callable[..., Any]], limiter: trio.CapacityLimiter) -> Jobs:
    """Jobs that call the handlers directly: the path of a backend without a pipeline."""
    on_connection_request = as_async(handlers["on_connection_request"], limiter)
    on_new_connection = as_async(handlers["on_new_connection"], limiter)
    on_message = as_async(handlers["on_message"], limiter)
    on_disconnect = as_async(handlers["on_disconnect"], limiter)
    on_error = as_async(handlers["on_error"], limiter)

    async def request(event: ConnectionRequest, request: ConnectionRequestContext) -> bool | None:
        return await on_connection_request(request)  # type: ignore[no-any-return]

    async def message(event: NewMessage) -> None:
        await on_message(event.message, event.context)

    async def new_connection(event: NewConnection) -> None:
        await on_new_connection(event.context)

    async def disconnect(event: Disconnected) -> None:
        await on_disconnect(event.context)

    async def error(event: ErrorEvent) -> None:
        await on_error(event.error, event.context)

    return Jobs(
        request=request,
        new_connection=new_connection,
        message=message,
        disconnect=disconnect,
        error=error,
    )
