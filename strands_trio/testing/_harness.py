"""Testing one middleware (or guard) without a broker: wrap it around a recording handler.

:class:`MiddlewareHarness` builds the same pipeline a client builds, around inner handlers
that record what reached them, with a stand-in client that records what was sent. Each
method feeds one event and returns an :class:`Outcome`::

    harness = MiddlewareHarness([RateLimit(messages=Rate(burst=2, per_second=1))])
    for _ in range(3):
        outcome = await harness.message("hi", client_id="ann")
    assert not outcome.reached
    assert harness.sent[-1][0] == "ann"   # the error frame went to ann
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import attrs
import trio

from .._host import ExecutionContext
from .._parts import ForbiddenHook
from .._pipeline import Pipeline
from .._requests import request_context
from .._router import Router
from .._statistics import Counters
from ..context import ConnectionRequestContext, Context
from ..protocol import ConnectionRequest, Disconnected, ErrorEvent, NewConnection, NewMessage

__all__ = ["MiddlewareHarness", "Outcome"]


@attrs.frozen(kw_only=True)
class Outcome:
    """What became of one event fed to a :class:`MiddlewareHarness`.

    Attributes:
        reached: Whether the inner handler was called.
        args: The arguments the inner handler got, if it was called.
        accepted: For a connection request, the answer the client would send.
        request: For a connection request, the request (with the context it would get).
        ctx: The execution context the event ran with (for ``ctx.get_state(...)``).
    """

    reached: bool
    ctx: ExecutionContext
    args: tuple[Any, ...] | None = None
    accepted: bool | None = None
    request: ConnectionRequestContext | None = None


class _RecordingClient:
    """Stands in for a connected StrandsClient: records every send."""

    def __init__(self, sent: list[tuple[str, str]]) -> None:
        self._sent = sent

    async def send_private_message(self, client_id: str, message: str, **_: Any) -> None:
        self._sent.append((client_id, message))

    async def send_room_message(self, room_id: str, message: str, **_: Any) -> None:
        self._sent.append((f"room:{room_id}", message))

    async def broadcast_message(self, message: str, **_: Any) -> None:
        self._sent.append(("*", message))


class MiddlewareHarness:
    """The pipeline of an app with *middleware*, *guards* and *exception_handlers*, around
    inner handlers that record the events reaching them.

    Args:
        middleware: Outermost first, as in ``StrandsApp(middleware=...)``.
        guards: As in ``StrandsApp(guards=...)``.
        exception_handlers: As in ``StrandsApp(exception_handlers=...)``.
        on_forbidden: As in ``StrandsApp(on_forbidden=...)``.
        handlers: Inner handlers by callback name (``"on_message"`` ...), for tests that need
            per-handler metadata (``@roles``, ``@use_middleware``) or a handler that raises.
            They are still recorded. The others accept requests and do nothing.
        routes: Typed routes ``{type: (handler, model)}`` of a router on ``"type"``. As in
            an app, ``handlers["on_message"]`` is then the fallback for unrouted messages;
            without it they get an ``unknown_type`` error frame.

    Attributes:
        sent: ``(client_id, message)`` for each private message sent through the client
            (``("room:<id>", ...)`` and ``("*", ...)`` for room messages and broadcasts).
        counters: The pipeline's counters (``events_refused``, ``messages_invalid`` ...).
    """

    def __init__(
        self,
        middleware: Sequence[Any] = (),
        *,
        guards: Sequence[Any] = (),
        exception_handlers: Sequence[Any] = (),
        on_forbidden: ForbiddenHook | None = None,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
        routes: Mapping[str, tuple[Callable[..., Any], type | None]] | None = None,
    ) -> None:
        self.sent: list[tuple[str, str]] = []
        self._last: list[ExecutionContext] = []
        self.counters = Counters()
        self._reached: list[tuple[Any, ...]] = []
        router = None
        if routes:
            router = Router()
            for kind, (fn, model) in routes.items():
                router.add(kind, self._recorded(fn), model)
        callbacks = {name: self._recorded(_default(name)) for name in _CALLBACKS}
        for name, fn in (handlers or {}).items():
            if name not in _CALLBACKS:
                raise ValueError(f"unknown callback {name!r}; expected one of {_CALLBACKS}")
            callbacks[name] = self._recorded(fn)
        self._pipeline = Pipeline(
            app=self,
            client=cast(Any, _RecordingClient(self.sent)),
            callbacks=callbacks,
            middleware=(self._remember, *middleware),
            guards=guards,
            exception_handlers=exception_handlers,
            on_forbidden=on_forbidden,
            router=router,
            message_fallback="on_message" in (handlers or {}),
            counters=self.counters,
            limiter=trio.CapacityLimiter(4),
        )
        self._jobs = self._pipeline.jobs()

    async def _remember(self, ctx: ExecutionContext, call_next: Any) -> None:
        self._last.append(ctx)
        await call_next(ctx)

    def _recorded(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        # functools.wraps shares fn.__dict__, so metadata set on fn stays visible.
        @functools.wraps(fn)
        async def recorded(*args: Any) -> Any:
            self._reached.append(args)
            result = fn(*args)
            if hasattr(result, "__await__"):
                result = await result
            return result

        return recorded

    async def _feed(self, job: Callable[..., Any], *args: Any) -> Outcome:
        before = len(self._reached)
        await job(*args)
        reached = len(self._reached) > before
        # Its own context: events may be fed concurrently (a disconnect during a slow call).
        ctx = next(c for c in reversed(self._last) if c.get_args()[0] is args[0])
        self._last.remove(ctx)
        return Outcome(reached=reached, args=self._reached[-1] if reached else None, ctx=ctx)

    # ------------------------------------------------------------------ events

    async def connection_request(
        self,
        url: str = "/ws/",
        *,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        remote_addr: str = "127.0.0.1:40000",
    ) -> Outcome:
        """Feed a ``connection_request``; the outcome says whether it would be accepted.

        A query string in *url* (``/ws/lobby?token=x``) is sent as strands-trio's broker sends
        it: the path as ``url``, the rest as ``query``.
        """
        wire = {k: [v] if isinstance(v, str) else list(v) for k, v in (headers or {}).items()}
        path, _, query = url.partition("?")
        event = ConnectionRequest(
            request_id=str(uuid.uuid4()),
            headers=wire,
            url=path,
            remote_addr=remote_addr,
            query=query,
        )
        request = request_context(event)
        self._last.clear()
        before = len(self._reached)
        accepted = await self._jobs.request(event, request)
        reached = len(self._reached) > before
        return Outcome(
            reached=reached,
            args=self._reached[-1] if reached else None,
            accepted=bool(accepted) if accepted is not None else request.accepted,
            request=request,
            ctx=self._last.pop(),
        )

    async def new_connection(
        self,
        client_id: str = "c1",
        *,
        room_id: str = "room",
        metadata: dict[str, Any] | None = None,
    ) -> Outcome:
        """Feed a ``new_connection`` for a client with this context."""
        context = Context(client_id=client_id, room_id=room_id, metadata=metadata or {})
        return await self._feed(
            self._jobs.new_connection, NewConnection(request_id="r", context=context)
        )

    async def message(
        self,
        message: str,
        *,
        client_id: str = "c1",
        room_id: str = "room",
        metadata: dict[str, Any] | None = None,
    ) -> Outcome:
        """Feed a ``new_message`` from a client with this context."""
        context = Context(client_id=client_id, room_id=room_id, metadata=metadata or {})
        return await self._feed(
            self._jobs.message, NewMessage(request_id="r", context=context, message=message)
        )

    async def disconnect(
        self,
        client_id: str = "c1",
        *,
        room_id: str = "room",
        metadata: dict[str, Any] | None = None,
        rooms: Sequence[str] | None = None,
    ) -> Outcome:
        """Feed a ``disconnected`` for a client with this context (and *rooms*, every room
        the client was in, as strands-trio's broker lists them; ``None``: not listed, as
        the reference broker sends it), told at once to the pipeline's calls in flight, as
        the client's engine does on its arrival."""
        context = Context(client_id=client_id, room_id=room_id, metadata=metadata or {})
        listed = None if rooms is None else tuple(rooms)
        if self._jobs.left is not None:
            self._jobs.left(client_id)
        return await self._feed(
            self._jobs.disconnect, Disconnected(request_id="r", context=context, rooms=listed)
        )

    async def error(self, error: str, *, client_id: str = "c1", room_id: str = "room") -> Outcome:
        """Feed a broker ``error`` about a client."""
        context = Context(client_id=client_id, room_id=room_id)
        return await self._feed(
            self._jobs.error, ErrorEvent(request_id="r", error=error, context=context)
        )


_CALLBACKS = (
    "on_connection_request",
    "on_new_connection",
    "on_message",
    "on_disconnect",
    "on_error",
)


def _default(name: str) -> Callable[..., Any]:
    async def accept(*args: Any) -> bool | None:
        return True if name == "on_connection_request" else None

    accept.__qualname__ = accept.__name__ = f"default_{name}"
    return accept
