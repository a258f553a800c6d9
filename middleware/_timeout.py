"""The timeout middleware: a deadline on the rest of the chain, as a Trio cancel scope.

Theory of operation. :class:`Timeout` runs ``call_next`` inside a :func:`trio.move_on_after`
scope. If the deadline passes first, Trio cancels whatever the handler is awaiting; the scope
catches the cancellation, and the middleware counts it, logs a warning (event type, client,
seconds: never the message) and raises :class:`HandlerTimeout`. From there it is an ordinary
handler error: an exception handler for it (or for :class:`~strands_trio.StrandsError`) may
catch it; otherwise the client logs and counts it as a handler error and goes on, and a
connection request is rejected.

Where the deadline applies depends on where the middleware is::

    StrandsApp(middleware=[Logging(), Timeout(5)])     every handler, 5 s each

    @app.on_message
    @use_middleware(Timeout(0.5))                      this handler only
    async def on_message(message, context): ...

    event ─▶ Logging ─▶ Timeout(5) ─▶ Timeout(0.5) ─▶ guards ─▶ handler
                        └─ 5 s ────────────────────────────────────────┘
                                      └─ 0.5 s ────────────────────────┘

List it after :class:`Logging` and :class:`Metrics`, so that they see the
:class:`HandlerTimeout` as an ``"error"`` outcome: listed before them, they would only see the
cancellation pass through. A handler that catches :class:`trio.Cancelled` (it must not) or
shields itself runs past its deadline. A synchronous handler (run in a worker thread) is
abandoned at the deadline, not stopped: the event is over, but its thread runs on until the
function returns, holding one of ``ClientConfig.max_threads``.

A connection request also has the client's own deadline, ``ClientConfig.request_timeout``; the
shorter of the two decides.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import attrs
import trio
from attrs.validators import gt, instance_of, lt

from strands_trio import CallNext, EventType, ExecutionContext, StrandsError

from ._validators import not_bool

__all__ = ["HandlerTimeout", "Timeout", "TimeoutConfig", "TimeoutStatistics"]

logger = logging.getLogger("strands_trio.middleware.timeout")


class HandlerTimeout(StrandsError):
    """The rest of the chain did not finish within a :class:`Timeout`'s deadline and was
    cancelled.

    A call (a message with a ref) that times out gets a ``timeout`` error frame with its ref
    (its ``error_code`` and ``client_reason``).

    Attributes:
        seconds: The deadline that passed.
        event_type: The kind of event being handled.
        client_id: The WebSocket client it came from (for a connection request, the id it
            would have got).
    """

    def __init__(self, seconds: float, event_type: EventType, client_id: str) -> None:
        super().__init__(
            f"the {event_type.value} handler for client {client_id!r} did not finish "
            f"within {seconds:g} s and was cancelled"
        )
        self.seconds = seconds
        self.event_type = event_type
        self.client_id = client_id

    #: The code of the error frame a call that timed out gets.
    error_code: ClassVar[str] = "timeout"

    @property
    def client_reason(self) -> str:
        """What a caller is told: the deadline, never the handler's name."""
        return f"no answer within {self.seconds:g} s"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.seconds, self.event_type, self.client_id))


@attrs.frozen(kw_only=True)
class TimeoutConfig:
    """The deadline of a :class:`Timeout`; validated when made.

    The argument of :class:`Timeout`, as a record: ``attrs.evolve(timeout.config, ...)``
    makes another, and :meth:`Timeout.from_config` a middleware with counters of its own.

    Attributes:
        seconds: How long the rest of the chain may take, in seconds: a number > 0, finite.

    Raises:
        TypeError: *seconds* is not a number.
        ValueError: *seconds* is a bool, not > 0, or not finite.
    """

    # NaN fails gt(0.0).
    seconds: float = attrs.field(
        validator=[instance_of((int, float)), not_bool("seconds"), gt(0.0), lt(math.inf)]
    )


@attrs.frozen(kw_only=True)
class TimeoutStatistics:
    """What a :class:`Timeout` has counted (:meth:`Timeout.statistics`).

    Attributes:
        timeouts: Events whose deadline passed (each raised :class:`HandlerTimeout`).
    """

    timeouts: int


class Timeout:
    """Cancels the rest of the chain after *seconds* and raises :class:`HandlerTimeout`.

    Args:
        seconds: The deadline, counted from when the event reaches this middleware.

    Attributes:
        config: The argument, frozen and validated (:class:`TimeoutConfig`).

    Raises:
        TypeError: *seconds* is not a number.
        ValueError: *seconds* is a bool, not > 0, or not finite.
    """

    __slots__ = ("_seconds", "_timeouts", "config")

    def __init__(self, seconds: float) -> None:
        self._start(TimeoutConfig(seconds=seconds))

    @classmethod
    def from_config(cls, config: TimeoutConfig) -> Timeout:
        """A middleware configured by *config*, with counters of its own.

        Raises:
            TypeError: *config* is not a :class:`TimeoutConfig`.
        """
        if not isinstance(config, TimeoutConfig):
            raise TypeError(f"config must be a TimeoutConfig, got {config!r}")
        timeout = cls.__new__(cls)
        timeout._start(config)
        return timeout

    def _start(self, config: TimeoutConfig) -> None:
        self.config = config
        self._seconds = float(config.seconds)  # read once per event
        self._timeouts = 0

    def __repr__(self) -> str:
        return f"<Timeout {self.config!r}>"

    def statistics(self) -> TimeoutStatistics:
        """What this middleware has counted so far."""
        return TimeoutStatistics(timeouts=self._timeouts)

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        with trio.move_on_after(self._seconds) as scope:
            await call_next(ctx)
        if scope.cancelled_caught:
            self._timed_out(ctx)

    def _timed_out(self, ctx: ExecutionContext) -> None:
        self._timeouts += 1
        kind = ctx.get_type()
        client_id = ctx.client_id
        logger.warning(
            "%s handler for client %s timed out after %g s", kind.value, client_id, self._seconds
        )
        raise HandlerTimeout(self._seconds, kind, client_id)
