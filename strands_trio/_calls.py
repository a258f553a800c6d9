"""Replies to correlated messages: a browser's ``call()`` gets an answer, never silence.

Theory of operation. A JSON message that carries the app's reply field (``"ref"`` by default)
is a *call*. The pipeline reads the ref when it routes the message and keeps it in the
execution context, so that every error frame sent for the message (by the router, a guard, a
middleware, through ``ctx.send_error``) carries it. Once the routed handler
returns, :meth:`Calls.reply` sends the caller alone ``{"type": "reply", "ref": ..., "data":
...}``; if the chain raised instead, :meth:`Calls.failed` sends an error frame with the ref
(``timeout`` for a deadline, ``internal_error`` for anything else: the reason is generic, the
exception is logged by the client as before).

A caller may leave while its call runs. The broker drops a frame to a client it no longer has,
so the backend would never know; instead the pipeline counts the calls in flight per client,
and a ``disconnected`` for a client with calls in flight marks it gone: their replies are then
dropped here, counted (``replies_dropped``) and logged at DEBUG, never an error storm.

A message without a ref never reaches this module's sending side: a backend written before
replies existed sends exactly what it sent before.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import cattrs
import orjson
import trio

from ._errors import StrandsError

if TYPE_CHECKING:
    from ._host import ExecutionContext
    from ._router import Router
    from ._statistics import Counters

__all__ = ["REF_TYPES", "REPLY", "Calls", "error_code_of", "reply_message"]

logger = logging.getLogger("strands_trio.calls")

#: The types a ref may have: a JSON string or number (``type(ref) in REF_TYPES``: a bool is
#: no number here).
REF_TYPES: Final = frozenset((str, int, float))

#: The type of a reply frame.
REPLY: Final = "reply"

#: What a caller is told when the handler raised: never the exception itself.
_INTERNAL = "the server could not handle this message"


def reply_message(
    ref: str | int | float, data: Any, *, type_field: str = "type", reply_field: str = "ref"
) -> str:
    """The JSON text of a reply frame: ``{"type": "reply", "ref": ref, "data": data}``, for a
    handler that answers a call itself (a raw ``on_message``, a middleware); the app's typed
    routes send it for you (see the replies guide in the docs).

    *data* must be JSON data already (unstructure a model with the app's converter first).

    Raises:
        TypeError: *data* is not JSON-able.
    """
    return orjson.dumps({type_field: REPLY, reply_field: ref, "data": data}).decode()


def error_code_of(exc: BaseException) -> tuple[str, str]:
    """The error frame code and the reason a caller is told for *exc*, raised by the chain.

    A :class:`~strands_trio.StrandsError` may name its own: a class attribute ``error_code``
    and an attribute ``client_reason`` (as :class:`~strands_trio.middleware.HandlerTimeout`
    does: ``timeout``). A :class:`trio.TooSlowError` (the handler's own ``fail_after``) is a
    ``timeout`` too. Anything else is an ``internal_error`` with a generic reason.
    """
    code = getattr(exc, "error_code", None)
    if isinstance(exc, StrandsError) and isinstance(code, str):
        return code, str(getattr(exc, "client_reason", _INTERNAL))
    if isinstance(exc, trio.TooSlowError):
        return "timeout", "the server ran out of time handling this message"
    return "internal_error", _INTERNAL


class Calls:
    """The calls of one pipeline: reads refs, sends replies and errors, drops what is late.

    Args:
        router: The app's router: its type field and reply field name the frames' fields,
            its converter unstructures what handlers return (attrs instances to dicts).
        counters: Where ``replies_sent`` and ``replies_dropped`` are counted.
    """

    def __init__(self, router: Router, counters: Counters) -> None:
        self.reply_field = router.reply_field or "ref"
        self._type_field = router.type_field
        self._converter = router.converter
        self._counters = counters
        #: Calls being handled now, per client id.
        self._in_flight: dict[str, int] = {}
        #: Clients that left while calls of theirs were being handled.
        self._gone: set[str] = set()

    # ---------------------------------------------------------------- callers in flight

    def begin(self, client_id: str) -> None:
        """A call of *client_id* is being handled."""
        self._in_flight[client_id] = self._in_flight.get(client_id, 0) + 1

    def end(self, client_id: str) -> None:
        """A call of *client_id* was answered (or dropped)."""
        left = self._in_flight[client_id] - 1
        if left:
            self._in_flight[client_id] = left
        else:
            del self._in_flight[client_id]
            self._gone.discard(client_id)

    def left(self, client_id: str) -> None:
        """*client_id* disconnected: replies to its calls in flight will be dropped."""
        if client_id in self._in_flight:
            self._gone.add(client_id)

    # ---------------------------------------------------------------- answers

    async def reply(self, ctx: ExecutionContext, value: Any) -> None:
        """Send the caller of *ctx*'s message the handler's return *value* (``None`` too).

        An attrs instance (or a dataclass, or containers of them) is unstructured by the app's
        converter: its fields, without a type tag. A value that cannot be encoded is a bug of
        the handler: logged at ERROR, and the caller gets an ``internal_error``.
        """
        ref = ctx.ref
        assert ref is not None
        client_id = ctx.client_id
        if self._gone and self._dropped(client_id, ref, "reply"):
            return
        try:
            frame = {self._type_field: REPLY, self.reply_field: ref}
            frame["data"] = self._converter.unstructure(value)
            text = orjson.dumps(frame).decode()
        except (TypeError, ValueError, cattrs.BaseValidationError) as exc:
            logger.error(
                "cannot encode the reply of %r to client %s: %s",
                ctx.get_handler(),
                client_id,
                exc,
            )
            await ctx.send_error("internal_error", _INTERNAL)
            return
        try:
            await ctx.get_client().send_private_message(client_id, text)
        except StrandsError as exc:
            logger.warning("cannot send the reply to client %s: %s", client_id, exc)
            return
        self._counters.replies_sent += 1

    async def failed(self, ctx: ExecutionContext, exc: BaseException) -> None:
        """Tell the caller of *ctx*'s message that the chain raised *exc* (see
        :func:`error_code_of`)."""
        ref = ctx.ref
        assert ref is not None
        if self._dropped(ctx.client_id, ref, "error"):
            return
        code, reason = error_code_of(exc)
        await ctx.send_error(code, reason)

    def _dropped(self, client_id: str, ref: object, what: str) -> bool:
        if client_id not in self._gone:
            return False
        self._counters.replies_dropped += 1
        logger.debug("dropped the %s to call %r: client %s left", what, ref, client_id)
        return True
