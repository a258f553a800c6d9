"""What became of an event, in one word: shared by the logging and metrics middleware.

An event that went through the rest of the chain is ``"ok"``, or, for a connection request,
``"accepted"`` / ``"refused"`` from the answer the client will send. An event a layer stopped
says so, from the note that layer left in :attr:`~strands_trio.ExecutionContext.outcome`:
``"forbidden"`` (a guard refused a message), ``"rate_limited"`` (a message or a connection
request over its limit), ``"invalid"`` (a typed message that failed validation or matched no
route). An exception that passed through makes it ``"error"``, whatever the request's answer
was (the client rejects a request whose chain raised). Both middleware compute the word here,
so a log line and a counter never disagree about the same event.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, cast

from strands_trio import EventType, ExecutionContext

__all__ = [
    "ACCEPTED",
    "ERROR",
    "FORBIDDEN",
    "INVALID",
    "OK",
    "OUTCOMES",
    "RATE_LIMITED",
    "REFUSED",
    "EventOutcome",
    "outcome_of",
]

EventOutcome: TypeAlias = Literal[
    "ok", "accepted", "refused", "forbidden", "rate_limited", "invalid", "error"
]

OK: Final = "ok"
ACCEPTED: Final = "accepted"
REFUSED: Final = "refused"
FORBIDDEN: Final = "forbidden"
RATE_LIMITED: Final = "rate_limited"
INVALID: Final = "invalid"
ERROR: Final = "error"

#: The outcomes each kind of event can have.
OUTCOMES: Final[dict[EventType, tuple[EventOutcome, ...]]] = {
    kind: (ACCEPTED, REFUSED, RATE_LIMITED, ERROR)
    if kind is EventType.CONNECTION_REQUEST
    else (OK, FORBIDDEN, RATE_LIMITED, INVALID, ERROR)
    if kind is EventType.MESSAGE
    else (OK, ERROR)
    for kind in EventType
}

_NOTES: Final = frozenset({FORBIDDEN, RATE_LIMITED, INVALID})


def outcome_of(ctx: ExecutionContext, error: BaseException | None) -> EventOutcome:
    """The outcome of the event of *ctx*, once the rest of the chain has returned or raised.

    Args:
        ctx: The event's context.
        error: The exception that passed through, or ``None`` if the chain returned.

    A connection request nobody answered counts as refused, as the pipeline refuses it. A
    note in ``ctx.outcome`` that is not one of the words above is ignored.
    """
    if error is not None:
        return ERROR
    note = ctx.outcome
    if note in _NOTES:
        return cast(EventOutcome, note)
    if ctx.get_type() is EventType.CONNECTION_REQUEST:
        view = ctx.switch_to_connection_request()
        return ACCEPTED if ctx.answered and view.get_request().accepted else REFUSED
    return OK
