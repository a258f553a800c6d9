"""Answering a connection request: the handler decides, the client always answers.

The reference broker waits for the answer forever (WIRE.md quirk 5), so a request must get one
whatever the handler does: returns a bool, sets ``request.accepted``, raises, runs past the
client's deadline, or leaves a context the broker cannot use. The client runs :func:`ask`
under its deadline, then always sends what :func:`encode_answer` returns.
"""

from __future__ import annotations

import logging
import uuid

from ._handlers import RequestHandler
from ._statistics import Counters
from .context import ConnectionRequestContext, Context
from .protocol import ConnectionRequest, Response, encode

__all__ = ["ask", "encode_answer", "new_request"]

logger = logging.getLogger("strands_trio.client")


def new_request(event: ConnectionRequest) -> ConnectionRequestContext:
    """The request a handler is given: client id a fresh UUID4, room the url (as the peer)."""
    return ConnectionRequestContext(
        headers=event.headers,
        url=event.url,
        remote_addr=event.remote_addr,
        context=Context(client_id=str(uuid.uuid4()), room_id=event.url),
    )


async def ask(
    on_connection_request: RequestHandler, request: ConnectionRequestContext, counters: Counters
) -> bool:
    """The handler's answer: its bool, else ``request.accepted``; ``False`` if it raised."""
    try:
        result = await on_connection_request(request)
    except Exception:
        counters.handler_errors += 1
        logger.exception("on_connection_request raised: rejecting %s", request.remote_addr)
        return False
    return result if isinstance(result, bool) else bool(request.accepted)


def encode_answer(
    event: ConnectionRequest, request: ConnectionRequestContext, accepted: bool, counters: Counters
) -> bytes:
    """The ``response`` frame: accepted with the request's context if it can be encoded,
    rejected otherwise (logged and counted)."""
    if accepted:
        try:
            context = request.context
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
    return encode(Response(request_id=event.request_id, accepted=False))
