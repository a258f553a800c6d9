"""The host context every middleware, guard and exception handler receives.

Modelled on Ellar's ``HostContext`` / ``ExecutionContext``: one object per broker event that
says what kind of event it is (:meth:`HostContext.get_type`), gives the raw pieces
(:meth:`~HostContext.get_args`), the app and the client to send with, and typed views of the
event through ``switch_to_*()`` methods. Switching to a view of another kind of event raises
:class:`EventTypeError`, as Ellar does.

In strands-trio the handler of an event is known before any middleware runs (routing is a
dictionary lookup), so every middleware already receives an :class:`ExecutionContext`, which
adds :meth:`~ExecutionContext.get_handler` and :meth:`~ExecutionContext.get_class`: what the
:class:`~strands_trio.Reflector` reads metadata such as ``@roles("admin")`` from.

State that must outlive one event, such as the identity an auth middleware verified at the
connection request, goes in the connection's ``metadata`` under a :class:`MetadataKey`. The
broker carries that metadata in every later event of the connection, so the key reads it back,
typed, in any later event: ``ctx.get_state(IDENTITY)``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import attrs
import cattrs
import orjson

from ._errors import StrandsError
from ._sender import Sender
from .context import ConnectionRequestContext, Context

__all__ = [
    "ConnectionHost",
    "ConnectionRequestHost",
    "ErrorHost",
    "EventType",
    "EventTypeError",
    "ExecutionContext",
    "HostContext",
    "MessageHost",
    "MetadataKey",
    "Target",
    "error_message",
]

logger = logging.getLogger("strands_trio.pipeline")

T = TypeVar("T")

_STATE_CONVERTER = cattrs.Converter()


class EventType(enum.StrEnum):
    """What a broker event is; the values are the wire protocol's action names.

    Heartbeats never reach middleware: the client counts them and watches for silence.
    """

    CONNECTION_REQUEST = "connection_request"
    NEW_CONNECTION = "new_connection"
    MESSAGE = "new_message"
    DISCONNECT = "disconnected"
    ERROR = "error"


class EventTypeError(StrandsError, TypeError):
    """A ``switch_to_*()`` call asked for a view of another kind of event."""


def error_message(
    code: str,
    reason: str,
    *,
    type_field: str = "type",
    ref: str | int | float | None = None,
    reply_field: str = "ref",
) -> str:
    """The JSON text of an error frame sent to a WebSocket client:
    ``{"type": "error", "code": code, "reason": reason}``.

    Built-in middleware and the router send these when they refuse or drop a client's message;
    *type_field* is the app's message type field, so clients route errors like any message.
    The error of a call (a message with a ref: see ``docs/replies.md``) carries its *ref*, in
    the app's *reply_field*, so the caller can match it.
    """
    if ref is None:
        return orjson.dumps({type_field: "error", "code": code, "reason": reason}).decode()
    frame = {type_field: "error", reply_field: ref, "code": code, "reason": reason}
    return orjson.dumps(frame).decode()


@attrs.frozen
class MetadataKey(Generic[T]):
    """A typed slot in a connection's ``metadata``, for state that must last as long as the
    connection::

        IDENTITY = MetadataKey("identity", Identity)

        ctx.set_state(IDENTITY, identity)       # at the connection request
        identity = ctx.get_state(IDENTITY)      # in any later event: an Identity, or None

    Values are stored as JSON data (unstructured by cattrs) and structured back when read, so
    any attrs class, dataclass or JSON type works.

    Attributes:
        name: The key in the metadata dict.
        type: What a value is structured into when read.
        converter: The cattrs converter to use; a plain ``cattrs.Converter()`` by default.
    """

    name: str
    type: type[T]
    converter: cattrs.Converter = attrs.field(default=_STATE_CONVERTER, eq=False, repr=False)

    def get(self, context: Context | ConnectionRequestContext) -> T | None:
        """The value stored in *context*'s metadata, or ``None`` if there is none.

        Raises:
            ValueError: the stored data does not fit :attr:`type` (the message says where).
        """
        if isinstance(context, ConnectionRequestContext):
            context = context.context
        data = context.metadata.get(self.name)
        if data is None:
            return None
        try:
            return self.converter.structure(data, self.type)
        except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"metadata[{self.name!r}] is not a {self.type!r}: {exc}") from exc

    def set(self, context: Context | ConnectionRequestContext, value: T) -> None:
        """Store *value* in *context*'s metadata, as JSON data."""
        if isinstance(context, ConnectionRequestContext):
            context = context.context
        context.metadata[self.name] = self.converter.unstructure(value)


@attrs.frozen
class Target:
    """What handles an event: the app, the client, and, once resolved, the handler and its
    class. One per handler, shared by every event that resolves to it."""

    app: Any
    client: Sender
    handler: Callable[..., Any] | None = None
    cls: type | None = None


class HostContext:
    """What middleware, guards and exception handlers are told about one broker event.

    Created by the client for every event that reaches the pipeline; not meant to be built by
    hand except in tests of a middleware. The typed views (``switch_to_*()``) are the way to the
    event's own data; :meth:`get_args` gives the raw pieces.
    """

    # Four slots set per event; what few events need (an answer, a payload, state) lives in
    # the lazily made _extra dict, so that the common event costs as little as possible.
    __slots__ = ("_args", "_extra", "_target", "_type")

    def __init__(self, type: EventType, args: tuple[Any, ...], *, app: Any, client: Sender) -> None:
        self._type = type
        self._args = args
        self._target = Target(app, client)
        self._extra: dict[str, Any] | None = None

    @property
    def answered(self) -> bool:
        """Whether a connection request got an answer (from the handler, a guard, or
        ``accept()`` / ``reject()``). A request nobody answered is rejected."""
        return self._extra is not None and self._extra.get("answered", False)

    @answered.setter
    def answered(self, value: bool) -> None:
        self._extras()["answered"] = value

    @property
    def outcome(self) -> str | None:
        """What the layer that stopped the event made of it, in one word, for logs and
        metrics: ``"forbidden"`` (a guard refused a message), ``"rate_limited"``,
        ``"invalid"`` (a typed message that failed validation or matched no route), or
        ``None`` if nothing stopped it. A middleware that drops an event without calling
        ``call_next`` should set it."""
        return None if self._extra is None else self._extra.get("outcome")

    @outcome.setter
    def outcome(self, value: str | None) -> None:
        self._extras()["outcome"] = value

    @property
    def payload(self) -> Any:
        """A routed message's decoded JSON object, before validation; ``None`` otherwise."""
        return None if self._extra is None else self._extra.get("payload")

    @payload.setter
    def payload(self, value: Any) -> None:
        self._extras()["payload"] = value

    @property
    def ref(self) -> str | int | float | None:
        """The correlation id of a message sent with ``call()`` (its reply field, ``"ref"``
        by default), or ``None``: every error frame :meth:`send_error` sends for the message
        carries it, and the handler's return value is sent back with it."""
        return None if self._extra is None else self._extra.get("ref")

    def set_ref(self, ref: str | int | float, reply_field: str) -> None:
        """Mark this message as a call with *ref* in *reply_field* (the pipeline does)."""
        extra = self._extras()
        extra["ref"] = ref
        extra["reply_field"] = reply_field

    def _extras(self) -> dict[str, Any]:
        if self._extra is None:
            self._extra = {}
        return self._extra

    def _states(self) -> dict[str, tuple[MetadataKey[Any], Any]]:
        return self._extras().setdefault("state", {})  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._type.value} client={self.client_id!r}>"

    def get_type(self) -> EventType:
        """The kind of event."""
        return self._type

    def get_app(self) -> Any:
        """The :class:`~strands_trio.StrandsApp` handling the event, or the
        :class:`~strands_trio.StrandsClient` subclass for a client without an app."""
        return self._target.app

    def get_client(self) -> Sender:
        """What sends to the broker (the :class:`~strands_trio.StrandsClient`, or the
        :class:`~strands_trio.StrandsApp`): see :class:`~strands_trio.Sender`."""
        return self._target.client

    def get_args(self) -> tuple[Any, ...]:
        """The raw pieces: the decoded frame, then the handler's arguments. For example
        ``(NewMessage(...), message, context)`` or ``(ConnectionRequest(...), request)``."""
        return self._args

    # ---------------------------------------------------------------- the context at hand

    @property
    def context(self) -> Context:
        """The WebSocket client's context; for a connection request, the context it will get
        (``request.context``); for a broker error about a request, that request's context."""
        context = self._args[-1]
        if type(context) is not Context:
            context = cast(ConnectionRequestContext, context).context
        return context

    @property
    def client_id(self) -> str:
        """The WebSocket client's id (for a connection request, the one it will get)."""
        context = self._args[-1]
        if type(context) is Context:  # the common case, on the hot path of key functions
            return context.client_id
        return self.context.client_id

    def get_state(self, key: MetadataKey[T]) -> T | None:
        """The value of *key* for this connection: set earlier in this event, or carried in
        ``context.metadata`` from the connection request. Read once per event, then cached.

        Raises:
            ValueError: the metadata holds data that does not fit ``key.type``.
        """
        state = self._states()
        if key.name in state:
            return cast(T, state[key.name][1])
        value = key.get(self.context)
        state[key.name] = (key, value)
        return value

    def set_state(self, key: MetadataKey[T], value: T) -> None:
        """Set *key* for this event and store it in ``context.metadata``.

        At a connection request, the value is stored again once the handler has run, so a
        handler that replaces ``request.context.metadata`` does not lose it, and the broker
        carries it in every later event of the connection.
        """
        key.set(self.context, value)
        self._states()[key.name] = (key, value)

    def store_state(self) -> None:
        """Write every value set with :meth:`set_state` into ``context.metadata`` again."""
        state = None if self._extra is None else self._extra.get("state")
        if state:
            context = self.context
            for key, value in state.values():
                if value is not None:
                    key.set(context, value)

    async def send_error(self, code: str, reason: str) -> None:
        """Send an error frame (see :func:`error_message`) to this event's WebSocket client,
        with the message's :attr:`ref` if it is a call.

        Does nothing for a connection request: the client is not connected yet, and the
        rejection is its answer. Errors sending it (no connection to the broker) are logged.
        """
        if self._type is EventType.CONNECTION_REQUEST:
            return
        client_id = self.client_id
        if not client_id:
            return
        field = getattr(self._target.app, "message_type_field", "type")
        extra = self._extra
        if extra is not None and "ref" in extra:
            text = error_message(
                code, reason, type_field=field, ref=extra["ref"], reply_field=extra["reply_field"]
            )
        else:
            text = error_message(code, reason, type_field=field)
        try:
            await self.get_client().send_private_message(client_id, text)
        except StrandsError as exc:
            logger.warning("cannot send the %s error to client %s: %s", code, client_id, exc)

    # ---------------------------------------------------------------- typed views

    def _expect(self, wanted: tuple[EventType, ...], method: str) -> None:
        if self._type not in wanted:
            kinds = " or ".join(w.value for w in wanted)
            raise EventTypeError(
                f"{method}() needs a {kinds} event, but this is a {self._type.value} event; "
                "check ctx.get_type() first"
            )

    def switch_to_connection_request(self) -> ConnectionRequestHost:
        """The view of a ``connection_request`` event.

        Raises:
            EventTypeError: this is another kind of event.
        """
        self._expect((EventType.CONNECTION_REQUEST,), "switch_to_connection_request")
        return ConnectionRequestHost(self)

    def switch_to_message(self) -> MessageHost:
        """The view of a ``new_message`` event.

        Raises:
            EventTypeError: this is another kind of event.
        """
        self._expect((EventType.MESSAGE,), "switch_to_message")
        return MessageHost(self)

    def switch_to_connection(self) -> ConnectionHost:
        """The view of a ``new_connection`` or ``disconnected`` event.

        Raises:
            EventTypeError: this is another kind of event.
        """
        self._expect((EventType.NEW_CONNECTION, EventType.DISCONNECT), "switch_to_connection")
        return ConnectionHost(self)

    def switch_to_error(self) -> ErrorHost:
        """The view of an ``error`` event from the broker.

        Raises:
            EventTypeError: this is another kind of event.
        """
        self._expect((EventType.ERROR,), "switch_to_error")
        return ErrorHost(self)


class ExecutionContext(HostContext):
    """A :class:`HostContext` whose handler is known: what every middleware, guard and
    exception handler receives."""

    __slots__ = ()

    def __init__(self, type: EventType, args: tuple[Any, ...], target: Target) -> None:
        # Not through super().__init__: one call less per event.
        self._type = type
        self._args = args
        self._target = target
        self._extra = None

    def get_handler(self) -> Callable[..., Any]:
        """The function that will handle the event, as the user wrote it (for a sync handler,
        the function itself, not its thread wrapper): where decorators put metadata."""
        handler = self._target.handler
        assert handler is not None
        return handler

    def get_class(self) -> type | None:
        """The class the handler is a method of (a :class:`~strands_trio.StrandsClient`
        subclass), or ``None`` for a plain function."""
        return self._target.cls


@attrs.frozen
class ConnectionRequestHost:
    """The view of a ``connection_request`` event
    (:meth:`HostContext.switch_to_connection_request`)."""

    host: HostContext

    def get_request(self) -> ConnectionRequestContext:
        """The request: headers, url, remote address, and the context it will get."""
        return cast(ConnectionRequestContext, self.host.get_args()[1])

    def get_context(self) -> Context:
        """The context the client will get if accepted (``request.context``)."""
        return self.get_request().context

    def accept(self) -> None:
        """Answer the request: accepted (unless something later rejects it)."""
        self.get_request().accepted = True
        self.host.answered = True

    def reject(self, reason: str | None = None, *, code: int | None = None) -> None:
        """Answer the request: rejected. The handler is not called if the chain stops here.

        *reason* (safe to show the client: never a secret) and *code* (an HTTP-like status,
        ``401`` for a missing or bad credential) go to the client as the WebSocket close
        code ``4000 + code`` and reason (see :meth:`ConnectionRequestContext.refuse`).

        Raises:
            ValueError: *code* is not between 400 and 599 (or 4000 and 4999).
        """
        self.get_request().refuse(reason, code=code)
        self.host.answered = True


@attrs.frozen
class MessageHost:
    """The view of a ``new_message`` event (:meth:`HostContext.switch_to_message`)."""

    host: HostContext

    def get_message(self) -> str:
        """The message text, as the client sent it."""
        return cast(str, self.host.get_args()[1])

    def get_context(self) -> Context:
        """The sending client's context."""
        return cast(Context, self.host.get_args()[2])

    def get_payload(self) -> Any:
        """For a routed message, its decoded JSON object (before validation); else ``None``."""
        return self.host.payload


@attrs.frozen
class ConnectionHost:
    """The view of a ``new_connection`` or ``disconnected`` event
    (:meth:`HostContext.switch_to_connection`)."""

    host: HostContext

    def get_context(self) -> Context:
        """The client's context."""
        return cast(Context, self.host.get_args()[1])

    @property
    def is_disconnect(self) -> bool:
        """Whether the client left (``disconnected``) rather than arrived."""
        return self.host.get_type() is EventType.DISCONNECT


@attrs.frozen
class ErrorHost:
    """The view of an ``error`` event (:meth:`HostContext.switch_to_error`)."""

    host: HostContext

    def get_error(self) -> str:
        """The broker's error text."""
        return cast(str, self.host.get_args()[1])

    def get_context(self) -> Context | ConnectionRequestContext:
        """The context the error is about: a :class:`ConnectionRequestContext` for a request
        that arrived while no backend was connected (WIRE.md quirk 2)."""
        return cast(Context | ConnectionRequestContext, self.host.get_args()[2])
