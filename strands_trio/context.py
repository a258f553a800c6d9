"""What a handler is told about a WebSocket client: :class:`Context` and
:class:`ConnectionRequestContext`.

These mirror ``pystrands.context`` from the asyncio peer, attribute for attribute, so that a
backend written for ``pystrands`` ports by changing its imports. Unlike the peer's models they
are typed attrs classes (an IDE knows every attribute), ``from_json()`` checks types instead of
accepting anything, and ``to_json()`` returns plain JSON data all the way down.

Both classes are mutable on purpose: ``on_connection_request`` answers by setting
``request.context.room_id``, ``request.context.metadata`` and ``request.accepted``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

import attrs
import cattrs

from ._strict import describe_error, model_converter

__all__ = ["ConnectionRequestContext", "Context"]

_T = TypeVar("_T")


@attrs.define(kw_only=True)
class Context:
    """A WebSocket client, as the broker describes it in every event after it was accepted.

    Attributes:
        client_id: The unique id the backend gave the client when it accepted it.
        room_id: The room the client is in.
        metadata: What the backend set on ``request.context.metadata`` when it accepted the
            client. Always the backend's own dict: the reference broker's nested copy is
            unwrapped by the protocol layer before a handler sees it.
    """

    client_id: str
    room_id: str
    metadata: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """Build a context from its JSON object (``client_id``, ``room_id``, ``metadata``).

        Raises:
            ValueError: a field is missing or has the wrong type; the message says which.
        """
        return _structure(data, cls)

    def to_json(self) -> dict[str, Any]:
        """The JSON object for this context, as the wire protocol carries it."""
        return {"client_id": self.client_id, "room_id": self.room_id, "metadata": self.metadata}


@attrs.define(kw_only=True)
class ConnectionRequestContext:
    """A WebSocket client asking to connect, handed to ``on_connection_request``.

    Set ``context.client_id``, ``context.room_id`` and ``context.metadata`` to place the client,
    and return ``True``/``False`` (or set ``accepted``) to answer. The client fills in a fresh
    UUID4 ``client_id`` and ``room_id = url`` beforehand, as the asyncio peer does.

    The same class is used for the reference broker's second ``error`` shape (WIRE.md quirk 2):
    a request that arrived while no backend was connected. Then ``accepted`` is ``False`` and
    ``context.client_id`` is empty, since no backend ever answered it.

    Attributes:
        headers: The HTTP headers of the WebSocket upgrade request, name to list of values.
            The reference broker sends names in Go's canonical form (``Sec-Websocket-Key``);
            use :meth:`header` for a case-insensitive lookup.
        url: The request path, for example ``/ws/chat`` (the reference drops the query string).
        remote_addr: ``"ip:port"`` of the WebSocket client.
        context: Where the client goes if accepted.
        accepted: The answer, when the handler returns neither ``True`` nor ``False``.
    """

    headers: dict[str, list[str]] = attrs.field(factory=dict)
    url: str = ""
    remote_addr: str = ""
    context: Context = attrs.field(factory=lambda: Context(client_id="", room_id=""))
    accepted: bool = True

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header *name*, compared without regard to case, or *default*.

        >>> request = ConnectionRequestContext(headers={"Authorization": ["Bearer x"]})
        >>> request.header("authorization")
        'Bearer x'
        """
        values = self.headers.get(name)
        if values is None:
            folded = name.casefold()
            for key, candidate in self.headers.items():
                if key.casefold() == folded:
                    values = candidate
                    break
        return values[0] if values else default

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """Build a request from its JSON object; ``context`` may be a dict or a :class:`Context`.

        Raises:
            ValueError: a field is missing or has the wrong type; the message says which.
        """
        if isinstance(data.get("context"), Context):
            data = {**data, "context": data["context"].to_json()}
        return _structure(data, cls)

    def to_json(self) -> dict[str, Any]:
        """The JSON object for this request, with ``context`` as a nested dict."""
        return {
            "headers": self.headers,
            "url": self.url,
            "remote_addr": self.remote_addr,
            "context": self.context.to_json(),
            "accepted": self.accepted,
        }


def _structure(data: Mapping[str, Any], cls: type[_T]) -> _T:
    try:
        return model_converter().structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"invalid {cls.__name__}: {describe_error(exc)}") from exc
