"""The logging middleware: one structured log record per event, with no secret in it.

Theory of operation. :class:`Logging` lets the event go through the rest of the chain, then
emits one record at the configured level, with the event's facts as attributes of the record
(``extra=``), so that a JSON formatter or a log shipper gets them as fields:

==================  ==========================================================================
``event_type``      the :class:`~strands_trio.EventType` value (``"new_message"`` ...)
``client_id``       the WebSocket client's id (for a request, the one it will get)
``room_id``         its room, with any query string replaced by ``?[redacted]``
``remote_addr``     the client's ``"ip:port"`` for a connection request, else ``None``
``outcome``         ``"ok"`` (it reached its handler); ``"accepted"`` / ``"refused"`` for a
                    request; ``"forbidden"``, ``"rate_limited"``, ``"invalid"`` for an event
                    a layer stopped; ``"error"`` (see ``_outcome.py``)
``duration_ms``     time spent in the rest of the chain, from :func:`trio.current_time`
``headers``         a request's headers, name to value (several joined by ``", "``), the
                    values of the configured names replaced by ``"[redacted]"``; else ``None``
``message_length``  the length of a message's text, else ``None``
``error``           the class name of the exception that passed through, else ``None``
==================  ==========================================================================

and a short message for people, with lazy ``%``-style arguments::

    new_message client=ann room=lobby ok 0.12 ms (42 chars)
    connection_request client=ann room=/ws/lobby from=10.0.0.7:5123 refused 0.31 ms

Secrets. Header values under a redacted name, the text of a message (it may carry a token),
the broker's error text and an exception's message (it may quote its input) never reach a
record; a room id's query string is dropped too, since a room defaults to the request's url,
which may carry a ``?token=``. The exception itself is re-raised unchanged, so the client
still logs it with its traceback as a handler error.

Cost. Whether the logger is enabled for the level is asked on every event (its level may be
changed at run time, and the logging module caches the answer); when it is not, the event
costs one call to :meth:`logging.Logger.isEnabledFor` and nothing is read, timed or
formatted. Cancellation (a :class:`trio.Cancelled` passing through) is not logged: nothing
about the event is known yet, and whatever cancelled it logs its own reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Collection, Mapping, Sequence
from typing import Any, Final

import attrs
import trio
from attrs.validators import gt, instance_of

from strands_trio import CallNext, EventType, ExecutionContext

from ._outcome import outcome_of
from ._validators import not_bool

__all__ = ["DEFAULT_REDACTED_HEADERS", "REDACTED", "Logging", "LoggingConfig", "LoggingStatistics"]

#: The header names whose values :class:`Logging` always replaces by ``"[redacted]"``.
#: ``Sec-WebSocket-Protocol`` is the one header a browser's WebSocket API lets a page set, so
#: it is where browser clients put tokens.
DEFAULT_REDACTED_HEADERS: Final = (
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
    "set-cookie",
    "sec-websocket-protocol",
)

REDACTED: Final = "[redacted]"

_now = trio.current_time

# An enum member is an attribute look-up on every access (slow on CPython 3.11).
_MESSAGE = EventType.MESSAGE
_CONNECTION_REQUEST = EventType.CONNECTION_REQUEST

_FORMAT: Final = "%s client=%s room=%s %s %.2f ms"
_MESSAGE_FORMAT: Final = "%s client=%s room=%s %s %.2f ms (%d chars)"
_REQUEST_FORMAT: Final = "%s client=%s room=%s from=%s %s %.2f ms"
_ERROR_SUFFIX: Final = " (%s)"


def _to_logger(value: logging.Logger | str) -> logging.Logger:
    if isinstance(value, logging.Logger):
        return value
    if isinstance(value, str):
        if not value:
            raise ValueError(
                "logger name must not be empty; pass logging.getLogger() for the root logger"
            )
        return logging.getLogger(value)
    raise TypeError(f"logger must be a logging.Logger or a logger name, got {value!r}")


def _to_names(value: Collection[str]) -> frozenset[str]:
    if isinstance(value, str):
        raise TypeError(f"redact must be a collection of header names, not the string {value!r}")
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(f"redact must be a collection of header names, got {value!r}") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"redact must hold non-empty header names, got {name!r}")
    # Added to the defaults, never instead of them: naming one more header must not
    # unredact Authorization.
    return frozenset(name.casefold() for name in (*DEFAULT_REDACTED_HEADERS, *names))


@attrs.frozen(kw_only=True)
class LoggingConfig:
    """What :class:`Logging` logs, and where; validated when made.

    The arguments of :class:`Logging`, as a record: ``attrs.evolve(logging_mw.config, ...)``
    makes another, and :meth:`Logging.from_config` a middleware with counters of its own.

    Attributes:
        logger: The logger records go to (a name is looked up with :func:`logging.getLogger`).
        level: The level of every record.
        redact: Header names whose values are replaced by ``"[redacted]"``, besides
            :data:`DEFAULT_REDACTED_HEADERS`, compared without regard to case (stored
            case-folded).
    """

    logger: logging.Logger = attrs.field(
        default=logging.getLogger("strands_trio.events"),
        converter=_to_logger,
        repr=lambda lg: repr(lg.name),
    )
    level: int = attrs.field(
        default=logging.INFO,
        validator=[instance_of(int), not_bool("level", "an int"), gt(logging.NOTSET)],
    )
    redact: frozenset[str] = attrs.field(default=(), converter=_to_names)


@attrs.frozen(kw_only=True)
class LoggingStatistics:
    """What a :class:`Logging` middleware has done (:meth:`Logging.statistics`).

    Attributes:
        records: Records emitted (events seen while the logger was enabled for the level).
    """

    records: int


class Logging:
    """Logs one structured record per event once the rest of the chain is done with it.

    List it first (outermost), so that it sees what every other middleware did to the event,
    and the time they took::

        app = StrandsApp(middleware=[Logging(), Metrics(), Timeout(5)])

    Args:
        logger: The logger, or its name.
        level: The level of the records.
        redact: Header names whose values never reach a record (case-insensitive).

    Attributes:
        config: The arguments, frozen and validated (:class:`LoggingConfig`).

    Raises:
        TypeError: *logger* is neither a logger nor a name, *level* is not an int, or
            *redact* is a single string rather than a collection of names.
        ValueError: *level* is a bool or not positive, or a name in *redact* is empty.
    """

    __slots__ = (
        "_handle",
        "_is_enabled",
        "_level",
        "_make_record",
        "_name",
        "_records",
        "_redact",
        "config",
    )

    def __init__(
        self,
        logger: logging.Logger | str = "strands_trio.events",
        *,
        level: int = logging.INFO,
        redact: Collection[str] = DEFAULT_REDACTED_HEADERS,
    ) -> None:
        self._start(LoggingConfig(logger=logger, level=level, redact=redact))

    @classmethod
    def from_config(cls, config: LoggingConfig) -> Logging:
        """A middleware configured by *config*, with counters of its own.

        Raises:
            TypeError: *config* is not a :class:`LoggingConfig`.
        """
        if not isinstance(config, LoggingConfig):
            raise TypeError(f"config must be a LoggingConfig, got {config!r}")
        logging_mw = cls.__new__(cls)
        logging_mw._start(config)
        return logging_mw

    def _start(self, config: LoggingConfig) -> None:
        self.config = config
        # Copied into slots: the hot path reads them once per event.
        self._level = config.level
        self._redact = config.redact
        self._is_enabled = config.logger.isEnabledFor
        # makeRecord() and handle() rather than log(): the level is already checked, and
        # the caller's frame, which log() looks for, would be this module's anyway.
        self._name = config.logger.name
        self._make_record = config.logger.makeRecord
        self._handle = config.logger.handle
        self._records = 0

    def __repr__(self) -> str:
        return f"<Logging {self.config!r}>"

    def statistics(self) -> LoggingStatistics:
        """What this middleware has done so far."""
        return LoggingStatistics(records=self._records)

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        if not self._is_enabled(self._level):
            await call_next(ctx)
            return
        await self._logged(ctx, call_next)

    def wrap_next(self, call_next: CallNext, kind: EventType) -> CallNext:
        """This layer's step in a pipeline (see :class:`~strands_trio.FastMiddleware`): while
        the level is disabled, the rest of the chain itself, at the cost of one check."""
        is_enabled, level, logged = self._is_enabled, self._level, self._logged

        def step(ctx: ExecutionContext) -> Awaitable[None]:
            if not is_enabled(level):
                return call_next(ctx)
            return logged(ctx, call_next)

        return step

    async def _logged(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        start = _now()
        try:
            await call_next(ctx)
        except Exception as exc:
            self._emit(ctx, start, exc)
            raise
        self._emit(ctx, start, None)

    def _emit(self, ctx: ExecutionContext, start: float, error: Exception | None) -> None:
        duration_ms = (_now() - start) * 1000.0
        outcome = outcome_of(ctx, error)
        kind = ctx.get_type()
        event_type = kind.value
        context = ctx.context
        client_id = context.client_id
        room_id = context.room_id
        if "?" in room_id:
            room_id = room_id.partition("?")[0] + "?" + REDACTED
        remote_addr = headers = length = error_name = None
        if kind is _MESSAGE:
            length = len(ctx.get_args()[1])  # the message text: its length, never itself
            fmt: str = _MESSAGE_FORMAT
            args: tuple[Any, ...] = (event_type, client_id, room_id, outcome, duration_ms, length)
        elif kind is _CONNECTION_REQUEST:
            request = ctx.switch_to_connection_request().get_request()
            remote_addr = request.remote_addr
            headers = _redacted(request.headers, self._redact)
            fmt = _REQUEST_FORMAT
            args = (event_type, client_id, room_id, remote_addr, outcome, duration_ms)
        else:
            fmt = _FORMAT
            args = (event_type, client_id, room_id, outcome, duration_ms)
        if error is not None:
            error_name = type(error).__qualname__
            fmt += _ERROR_SUFFIX
            args += (error_name,)
        record = self._make_record(
            self._name,
            self._level,
            __file__,
            0,
            fmt,
            args,
            None,
            "Logging",
            {
                "event_type": event_type,
                "client_id": client_id,
                "room_id": room_id,
                "remote_addr": remote_addr,
                "outcome": outcome,
                "duration_ms": duration_ms,
                "headers": headers,
                "message_length": length,
                "error": error_name,
            },
        )
        self._handle(record)
        self._records += 1


def _redacted(headers: Mapping[str, Sequence[str] | str], redact: frozenset[str]) -> dict[str, str]:
    """*headers* as name to one value (several joined by ``", "``), the values of the names in
    *redact* (case-folded) replaced by ``"[redacted]"``."""
    return {
        name: REDACTED
        if name.casefold() in redact
        else values
        if isinstance(values, str)
        else ", ".join(values)
        for name, values in headers.items()
    }
