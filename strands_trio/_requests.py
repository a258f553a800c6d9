"""Answering a connection request: the handler decides, the engine always answers.

The reference broker waits for the answer forever (WIRE.md quirk 5), so a request must get one
whatever the handler does: returns a bool, sets ``request.accepted``, raises, runs past
``request_timeout``, or leaves a context that cannot be encoded. A request travels as one typed
job, a :class:`PendingRequest`: the frame and the outbox of the connection it came on, where
its answer goes even if another connection has been made since.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable

import attrs
import trio

from ._outbox import Outbox
from ._statistics import Counters
from .context import ConnectionRequestContext, Context
from .protocol import ConnectionRequest, Response, encode

__all__ = ["Decide", "PendingRequest", "answer_request", "request_context"]

logger = logging.getLogger("strands_trio.client")

#: What decides a request: the frame and the request context in, the handler's answer out
#: (``True``/``False``, or ``None`` for ``request.accepted``).
Decide = Callable[[ConnectionRequest, ConnectionRequestContext], Awaitable[bool | None]]


@attrs.define(slots=True, eq=False)
class PendingRequest:
    """A connection request waiting for its handler: the frame, and the outbox of the
    connection its answer goes to."""

    event: ConnectionRequest
    outbox: Outbox


def request_context(event: ConnectionRequest) -> ConnectionRequestContext:
    """The :class:`ConnectionRequestContext` a handler gets for *event*: a fresh UUID4 as the
    client id (as the asyncio peer) and the path as the default room (the peer uses the url,
    which is the path with the reference broker; never the query, which may hold a token)."""
    request = ConnectionRequestContext(
        headers=event.headers,
        url=event.url,
        query=event.query or "",
        remote_addr=event.remote_addr,
    )
    request.context = Context(client_id=str(uuid.uuid4()), room_id=request.path)
    return request


async def answer_request(
    pending: PendingRequest, *, decide: Decide, time_limit: float | None, counters: Counters
) -> None:
    """Ask *decide* about a request, within *time_limit* seconds, and answer on its connection:
    accepted with the context the handler left, or rejected if it said no, raised, ran out of
    time or left a context that cannot be encoded (each logged and counted)."""
    event = pending.event
    request = request_context(event)
    accepted = False
    with trio.move_on_after(math.inf if time_limit is None else time_limit) as timer:
        try:
            result = await decide(event, request)
        except Exception:
            counters.handler_errors += 1
            logger.exception("on_connection_request raised: rejecting %s", event.remote_addr)
        else:
            accepted = result if isinstance(result, bool) else bool(request.accepted)
    if timer.cancelled_caught:
        accepted = False
        counters.requests_timed_out += 1
        logger.warning(
            "on_connection_request took over %g s: rejecting %s", time_limit, event.remote_addr
        )
    try:
        await pending.outbox.send(_encode_answer(event, request, accepted, counters))
    except trio.ClosedResourceError:
        counters.frames_dropped += 1
        logger.warning(
            "cannot answer the connection request from %s: its connection is closed",
            event.remote_addr,
        )


def _encode_answer(
    event: ConnectionRequest, request: ConnectionRequestContext, accepted: bool, counters: Counters
) -> bytes:
    if accepted:
        context = request.context
        try:
            data = encode(
                Response(
                    request_id=event.request_id,
                    accepted=True,
                    client_id=context.client_id,
                    room_id=context.room_id,
                    metadata=context.metadata,
                )
            )
        except Exception as exc:  # whatever the handler left there, the request is answered
            counters.handler_errors += 1
            logger.error("cannot accept %s: %s; rejecting it", event.remote_addr, exc)
        else:
            counters.requests_accepted += 1
            return data
    counters.requests_rejected += 1
    reason, code = request.reason, request.code
    return encode(
        Response(
            request_id=event.request_id,
            accepted=False,
            reason=reason if isinstance(reason, str) and reason else None,
            code=code if type(code) is int else None,
        )
    )
