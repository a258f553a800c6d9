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
from typing import Any, Literal, Self, TypeVar
from urllib.parse import parse_qs

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
    and return ``True``/``False`` (or set ``accepted``) to answer; ``return request.refuse(
    "name taken")`` also says why, in words the client may read. The client fills in a fresh
    UUID4 ``client_id`` and ``room_id = path`` beforehand (the asyncio peer uses the url, which
    is the path with the reference broker): never the query string, which may hold a token.

    The same class is used for the reference broker's second ``error`` shape (WIRE.md quirk 2):
    a request that arrived while no backend was connected. Then ``accepted`` is ``False`` and
    ``context.client_id`` is empty, since no backend ever answered it.

    Attributes:
        headers: The HTTP headers of the WebSocket upgrade request, name to list of values.
            The reference broker sends names in Go's canonical form (``Sec-Websocket-Key``);
            use :meth:`header` for a case-insensitive lookup.
        url: The request path, for example ``/ws/chat``, as the reference broker sends it
            (a broker run with ``pass_query_string`` glues ``?query`` to it; :attr:`path` never
            has it).
        query: The raw query string, without ``?`` (``"token=abc&x=1"``; ``""`` when there is
            none). strands-trio's broker sends it (an extension); the reference drops it.
            Read it with :meth:`param` or :attr:`query_params`.
        remote_addr: ``"ip:port"`` of the WebSocket client.
        context: Where the client goes if accepted.
        accepted: The answer, when the handler returns neither ``True`` nor ``False``.
        reason: When refused, why, in words safe to show the client (never a secret); see
            :meth:`refuse`. strands-trio's broker sends it as the WebSocket close reason.
        code: When refused, an HTTP-like status for the client (``401``, ``403``, ``409``...);
            strands-trio's broker closes with ``4000 + code``. ``None``: 403.
    """

    headers: dict[str, list[str]] = attrs.field(factory=dict)
    url: str = ""
    query: str = ""
    remote_addr: str = ""
    context: Context = attrs.field(factory=lambda: Context(client_id="", room_id=""))
    accepted: bool = True
    reason: str | None = None
    code: int | None = None

    @property
    def path(self) -> str:
        """The request path (``/ws/chat``), without a query string even when a broker glued one
        to :attr:`url`.

        >>> ConnectionRequestContext(url="/ws/chat?token=x").path
        '/ws/chat'
        """
        return self.url.partition("?")[0]

    @property
    def query_params(self) -> dict[str, list[str]]:
        """Each query parameter's values, in order, by name (blank values kept, ``+`` and
        ``%xx`` decoded), parsed from :attr:`query`, or from a query glued to :attr:`url`.

        >>> ConnectionRequestContext(query="tag=a&tag=b&debug").query_params
        {'tag': ['a', 'b'], 'debug': ['']}
        """
        query = self.query or self.url.partition("?")[2]
        return parse_qs(query, keep_blank_values=True) if query else {}

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter *name* (case-sensitive), or *default*.

        >>> request = ConnectionRequestContext(url="/ws/lobby", query="name=ada&name=bob")
        >>> request.param("name"), request.param("room", "lobby")
        ('ada', 'lobby')
        """
        values = self.query_params.get(name)
        return values[0] if values else default

    def refuse(self, reason: str | None = None, *, code: int | None = None) -> Literal[False]:
        """Refuse the client, saying why: sets :attr:`accepted`, :attr:`reason` and
        :attr:`code`, and returns ``False`` so that a handler can ``return request.refuse(...)``.

        With strands-trio's broker a browser then sees the WebSocket closed with code
        ``4000 + code`` (4403 by default) and *reason* as the close reason; the reference
        broker ignores both (close code 1006). *reason* is sent to the client as it is:
        never put a token or a secret in it.

        Raises:
            ValueError: *code* is not an HTTP-like status (400 to 599) or a close code of the
                private range (4000 to 4999).
        """
        if code is not None and (
            type(code) is not int or not (400 <= code <= 599 or 4000 <= code <= 4999)
        ):
            raise ValueError(f"code must be between 400 and 599 (or 4000 and 4999), got {code!r}")
        self.accepted = False
        self.reason = reason
        self.code = code
        return False

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
        """The JSON object for this request, with ``context`` as a nested dict (and ``query``
        when it is not empty)."""
        return {
            "headers": self.headers,
            "url": self.url,
            "remote_addr": self.remote_addr,
            "context": self.context.to_json(),
            "accepted": self.accepted,
            # Only when there is one: a request from the reference broker keeps the peer's shape.
            **({"query": self.query} if self.query else {}),
        }


def _structure(data: Mapping[str, Any], cls: type[_T]) -> _T:
    try:
        return model_converter().structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"invalid {cls.__name__}: {describe_error(exc)}") from exc
