"""The parts of a pipeline, as users write them and as the pipeline runs them: middleware,
guards and exception handlers, each checked where it is written (a ``TypeError`` at
construction, not a logged error at the first event) and normalized once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from ._handlers import ARITY, check_arity, is_async_callable
from ._host import EventType, ExecutionContext
from ._reflect import EXCEPTION_HANDLERS_KEY, GUARDS_KEY, MIDDLEWARE_KEY, reflector

__all__ = [
    "CallNext",
    "Catcher",
    "Check",
    "ExceptionHandler",
    "FastMiddleware",
    "ForbiddenHook",
    "Guard",
    "GuardLike",
    "Middleware",
    "as_catcher",
    "as_check",
    "check_middleware",
    "exception_handler",
    "validate_handlers",
    "validate_pipeline",
]

#: What a middleware awaits to run the rest of the chain: ``await call_next(ctx)``.
CallNext = Callable[[ExecutionContext], Awaitable[None]]
#: A middleware: ``async def middleware(ctx, call_next)``, or an object with such an async
#: ``__call__``.
Middleware = Callable[[ExecutionContext, CallNext], Awaitable[None]]
#: What is called with ``(ctx, guard)`` when a guard refuses a message.
ForbiddenHook = Callable[[ExecutionContext, Any], Awaitable[None]]


class FastMiddleware(Protocol):
    """A middleware that also builds its own step of the chain, for speed.

    The pipeline builds one chain per handler, each for one kind of event, when the client
    starts. For each chain it calls ``wrap_next(call_next, kind)`` once and then calls what
    that returns for every event instead of ``middleware(ctx, call_next)``. The step must do
    exactly what ``await middleware(ctx, call_next)`` does for events of *kind*; what it gains
    is that, on its common path, it can return ``call_next(ctx)`` itself (the rest of the
    chain's awaitable), so the layer costs a function call instead of a coroutine; and where
    it has nothing to do for *kind* at all, ``wrap_next`` can return ``call_next`` and the
    layer costs nothing::

        def wrap_next(self, call_next, kind):
            if kind is not EventType.MESSAGE:
                return call_next  # this layer does nothing for other events
            def step(ctx):
                if self.allowed(ctx):
                    return call_next(ctx)  # no coroutine of ours
                return self(ctx, call_next)  # the full middleware
            return step
    """

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None: ...

    def wrap_next(self, call_next: CallNext, kind: EventType) -> CallNext: ...


class Guard(Protocol):
    """Decides whether an event may reach its handler. ``can_activate`` may be sync or async;
    a plain function ``(ctx) -> bool`` works as a guard too."""

    def can_activate(self, ctx: ExecutionContext) -> bool | Awaitable[bool]: ...


#: A guard as users may give one: a :class:`Guard`, or a function ``(ctx) -> bool`` (sync or
#: async).
GuardLike = Guard | Callable[[ExecutionContext], bool | Awaitable[bool]]


class ExceptionHandler(Protocol):
    """Handles the exceptions of :attr:`exception_types` raised in the pipeline.
    ``catch`` may be sync or async, and may raise to pass the exception on."""

    @property
    def exception_types(self) -> tuple[type[BaseException], ...]: ...

    def catch(self, ctx: ExecutionContext, exc: BaseException) -> Awaitable[None] | None: ...


@attrs.frozen
class _FunctionExceptionHandler:
    exception_types: tuple[type[BaseException], ...]
    function: Callable[[ExecutionContext, BaseException], Any]

    def catch(self, ctx: ExecutionContext, exc: BaseException) -> Any:
        return self.function(ctx, exc)


def exception_handler(
    *exception_types: type[BaseException],
) -> Callable[[Callable[[ExecutionContext, Any], Any]], ExceptionHandler]:
    """Make an exception handler of a function ``(ctx, exc)``.

    For example::

        @exception_handler(PermissionError)
        async def denied(ctx, exc):
            await ctx.send_error("forbidden", str(exc))

        app = StrandsApp(exception_handlers=[denied])
    """
    _check_exception_types(exception_types)

    def decorate(fn: Callable[[ExecutionContext, Any], Any]) -> ExceptionHandler:
        if not callable(fn):
            raise TypeError(f"exception_handler needs a function, got {fn!r}")
        return _FunctionExceptionHandler(exception_types, fn)

    return decorate


def _check_exception_types(types: tuple[Any, ...]) -> None:
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise TypeError(f"exception types must be exception classes, got {types!r}")


# ---------------------------------------------------------------------- building blocks


@attrs.frozen
class Check:
    """A guard, normalized: ``check(ctx)`` returns a bool or an awaitable of one."""

    guard: Any
    check: Callable[[ExecutionContext], Any]


@attrs.frozen
class Catcher:
    types: tuple[type[BaseException], ...]
    handler: Any
    catch: Callable[[ExecutionContext, BaseException], Any]


def as_check(guard: Any) -> Check:
    check = getattr(guard, "can_activate", None)
    if check is None:
        if not callable(guard):
            raise TypeError(f"a guard needs a can_activate(ctx) method, got {guard!r}")
        check = guard
    return Check(guard, check)


def as_catcher(handler: Any) -> Catcher:
    types = getattr(handler, "exception_types", None)
    catch = getattr(handler, "catch", None)
    if types is None or catch is None:
        raise TypeError(
            f"an exception handler needs exception_types and catch(ctx, exc), got {handler!r}; "
            "for a function, use @exception_handler(SomeError)"
        )
    types = tuple(types) if isinstance(types, list | tuple) else (types,)
    _check_exception_types(types)
    return Catcher(types, handler, catch)


def check_middleware(middleware: Any) -> Any:
    if not is_async_callable(middleware):
        raise TypeError(
            f"middleware must be async: async def middleware(ctx, call_next) or an object "
            f"with an async __call__(ctx, call_next); got {middleware!r}"
        )
    return middleware


def validate_pipeline(
    middleware: Sequence[Any], guards: Sequence[Any], exception_handlers: Sequence[Any]
) -> None:
    """Check each part now, so that a mistake is a ``TypeError`` where it is written.

    Raises:
        TypeError: a middleware is not async, a guard has no ``can_activate``, or an
            exception handler has no ``exception_types`` / ``catch``.
    """
    for m in middleware:
        check_middleware(m)
    for g in guards:
        as_check(g)
    for h in exception_handlers:
        as_catcher(h)


def validate_handlers(handlers: Mapping[str, Callable[..., Any]], owner: str) -> None:
    """Check the handlers now: each can take the arguments it will be called with, and the
    middleware, guards and exception handlers attached to it are well formed.

    Raises:
        TypeError: a handler has the wrong number of parameters, or a part attached to it
            (``@use_middleware`` ...) is not one.
    """
    for name, fn in handlers.items():
        check_arity(f"{owner}.{name}", fn, ARITY[name])
        validate_pipeline(
            reflector.get(MIDDLEWARE_KEY, fn, ()),
            reflector.get(GUARDS_KEY, fn, ()),
            reflector.get(EXCEPTION_HANDLERS_KEY, fn, ()),
        )
