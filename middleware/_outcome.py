"""What became of an event, in one word: shared by the logging and metrics middleware.

An event that went through the rest of the chain is ``"ok"``, or, for a connection request,
``"accepted"`` / ``"rejected"`` from the answer the client will send. An exception that passed
through makes it ``"error"``, whatever the request's answer was (the client rejects a request
whose chain raised). Both middleware compute the word here, so a log line and a counter never
disagree about the same event.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

from strands_trio import EventType, ExecutionContext

__all__ = ["ACCEPTED", "ERROR", "OK", "OUTCOMES", "REJECTED", "EventOutcome", "outcome_of"]

EventOutcome: TypeAlias = Literal["ok", "accepted", "rejected", "error"]

OK: Final = "ok"
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
ERROR: Final = "error"

#: The outcomes each kind of event can have.
OUTCOMES: Final[dict[EventType, tuple[EventOutcome, ...]]] = {
    kind: (ACCEPTED, REJECTED, ERROR) if kind is EventType.CONNECTION_REQUEST else (OK, ERROR)
    for kind in EventType
}


def outcome_of(ctx: ExecutionContext, error: BaseException | None) -> EventOutcome:
    """The outcome of the event of *ctx*, once the rest of the chain has returned or raised.

    Args:
        ctx: The event's context.
        error: The exception that passed through, or ``None`` if the chain returned.

    A connection request nobody answered counts as rejected, as the pipeline rejects it.
    """
    if error is not None:
        return ERROR
    if ctx.get_type() is EventType.CONNECTION_REQUEST:
        view = ctx.switch_to_connection_request()
        return ACCEPTED if ctx.answered and view.get_request().accepted else REJECTED
    return OK
