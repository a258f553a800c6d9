"""Typed message routing: ``@app.on_message("chat.send", model=ChatSend)``.

Most clients send JSON objects with a type field. The :class:`Router` picks a handler by that
field before any middleware runs (so middleware and guards know the handler and its metadata);
the payload is structured into the route's attrs class by cattrs only after the guards passed,
just before the handler is called. A payload that does not fit never reaches the handler: the
client gets an ``invalid_message`` error frame saying why (``"missing required field @ $.text"``)
and the app's ``on_error`` is called.

Messages no route matches (not JSON, not an object, no type field, an unknown type) go to the
fallback: the raw ``@app.on_message`` handler if there is one, else an ``unknown_type`` error
frame to the client.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

from ._strict import describe_error

__all__ = ["MessageRoute", "Router", "make_message_converter"]

#: The tag of a model that two message types share: it cannot be sent as an object.
_AMBIGUOUS = object()


def _strict(kind: type, name: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        # bool is an int subclass, and an int is a fine float: JSON has one number type.
        ok = type(value) is kind or (kind is float and type(value) is int)
        if not ok:
            raise TypeError(f"expected {name}, got {_json_kind(value)}")
        return float(value) if kind is float else value

    return structure


def _json_kind(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    names.update({dict: "an object", list: "an array", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def make_message_converter() -> cattrs.Converter:
    """The default converter for message payloads: strict types (no ``"12"`` for an int, no
    ``1`` for a string), unknown keys refused, every error collected with its path."""
    converter = _make_orjson_converter(detailed_validation=True, forbid_extra_keys=True)
    for kind, name in ((str, "a string"), (bool, "a boolean"), (int, "an integer")):
        converter.register_structure_hook(kind, _strict(kind, name))
    converter.register_structure_hook(float, _strict(float, "a number"))
    return converter


@attrs.frozen
class MessageRoute:
    """One typed route: messages whose type field is :attr:`type` go to :attr:`handler`.

    Attributes:
        type: The value of the type field.
        handler: ``(payload, context)``; *payload* is a :attr:`model` instance, or the decoded
            JSON object when there is no model.
        model: The attrs class (or dataclass) the payload is structured into, or ``None``.
    """

    type: str
    handler: Callable[..., Any]
    model: builtins.type | None = None


class Router:
    """The routes of an app, by message type.

    Args:
        type_field: The field of a message that names its type.
        converter: How payloads are structured; :func:`make_message_converter` by default.
        reply_field: The field of a message that carries its correlation id (a call, answered
            with a reply: see ``docs/replies.md``), or ``None`` for no replies. It is removed
            from a payload before validation, so no model may have a field of that name.

    Raises:
        ValueError: a field name is empty, or both are the same.
    """

    def __init__(
        self,
        *,
        type_field: str = "type",
        converter: cattrs.Converter | None = None,
        reply_field: str | None = "ref",
    ):
        if not isinstance(type_field, str) or not type_field:
            raise ValueError("type_field must be a non-empty string")
        if reply_field is not None and (not isinstance(reply_field, str) or not reply_field):
            raise ValueError("reply_field must be a non-empty string, or None for no replies")
        if reply_field == type_field:
            raise ValueError(f"reply_field and type_field cannot both be {type_field!r}")
        self.type_field = type_field
        self.reply_field = reply_field
        self.converter = converter or make_message_converter()
        self.routes: dict[str, MessageRoute] = {}
        #: Each model's message type, for sending instances (see :meth:`encode`).
        self._tags: dict[type, object] = {}

    def add(self, type: str, handler: Callable[..., Any], model: type | None = None) -> None:
        """Route messages of *type* to *handler*.

        Raises:
            ValueError: *type* already has a handler, or *model* has a field named as the
                reply field (which is removed before validation).
            TypeError: *type* is not a string, or *model* not a class.
        """
        if not isinstance(type, str):
            raise TypeError(f"a message type must be a str, got {type!r}")
        if model is not None and not isinstance(model, builtins.type):
            raise TypeError(f"model must be a class (an attrs class), got {model!r}")
        if (
            model is not None
            and self.reply_field is not None
            and _has_field(model, self.reply_field)
        ):
            raise ValueError(
                f"{model.__qualname__} has a field {self.reply_field!r}, the app's reply field "
                "(a call's correlation id, removed before validation): rename the field, or "
                "choose another with StrandsApp(reply_field=...) (None: no replies)"
            )
        if type in self.routes:
            raise ValueError(f"message type {type!r} already has a handler")
        self.routes[type] = MessageRoute(type, handler, model)
        if model is not None:
            self._tag(model, type)

    def add_outgoing(self, type: str, model: builtins.type) -> None:
        """Make instances of *model* sendable as messages of *type*, without a route for it
        (a message only the backend sends).

        Raises:
            TypeError: *type* is not a string, or *model* not a class.
        """
        if not isinstance(type, str):
            raise TypeError(f"a message type must be a str, got {type!r}")
        if not isinstance(model, builtins.type):
            raise TypeError(f"model must be a class (an attrs class), got {model!r}")
        self._tag(model, type)

    def _tag(self, model: builtins.type, type: str) -> None:
        known = self._tags.get(model)
        self._tags[model] = type if known is None or known == type else _AMBIGUOUS

    def encode(self, obj: object) -> str:
        """The JSON text of *obj*, an instance of a routed (or outgoing) model: its fields
        unstructured by the converter, with the type field set to its message type (unless
        the model has a field of that name).

        Raises:
            TypeError: *obj*'s class is the model of no message type, or of several.
        """
        kind = builtins.type(obj)
        tag = self._tags.get(kind)
        if not isinstance(tag, str):
            name = kind.__qualname__
            if tag is _AMBIGUOUS:
                raise TypeError(f"{name} is the model of several message types: send a str instead")
            raise TypeError(
                f"{name} is not the model of any message type: register it with "
                f"@app.on_message('type', model={name}) or @app.outgoing('type'), "
                "or send a str"
            )
        data = self.converter.unstructure(obj)
        if self.type_field not in data:
            data = {self.type_field: tag, **data}
        return orjson.dumps(data).decode()

    def decode(self, message: str) -> tuple[str | None, Any]:
        """The message's type (``None`` if no route can match) and its decoded object."""
        try:
            data = orjson.loads(message)
        except orjson.JSONDecodeError:
            return None, None
        if type(data) is not dict:
            return None, data
        kind = data.get(self.type_field)
        return (kind if type(kind) is str else None), data

    def structure(self, route: MessageRoute, data: dict[str, Any]) -> Any:
        """The route's payload: *data* structured into its model (the type field left out,
        unless the model has a field of that name; the reply field always left out).

        Raises:
            ValueError: *data* does not fit the model; the message lists every problem as
                ``"reason @ $.path"``.
        """
        model = route.model
        if model is None:
            return data
        field = self.type_field
        drop_type = field in data and not _has_field(model, field)
        reply_field = self.reply_field
        if reply_field is not None and reply_field in data:  # a call: both go, in one copy
            drop = (field, reply_field) if drop_type else (reply_field,)
            data = {k: v for k, v in data.items() if k not in drop}
        elif drop_type:
            data = {k: v for k, v in data.items() if k != field}
        try:
            return self.converter.structure(data, model)
        except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
            raise ValueError(describe_error(exc)) from exc

    def why_unrouted(self, message: str) -> str:
        """Why no route matched *message*, for the client's error frame."""
        try:
            data = orjson.loads(message)
        except orjson.JSONDecodeError:
            return "message is not JSON"
        if type(data) is not dict:
            return "message is not a JSON object"
        kind = data.get(self.type_field)
        if type(kind) is not str:
            return f"message has no string {self.type_field!r} field"
        return f"unknown message type {kind!r}"


def _has_field(model: type, name: str) -> bool:
    if attrs.has(model):
        return any(a.name == name for a in attrs.fields(model))
    return name in getattr(model, "__dataclass_fields__", {})
