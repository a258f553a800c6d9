"""The frames of the broker wire protocol, as frozen attrs classes.

Every frame on the wire is ``{"request_id": str, "action": str, "params": object}``. Here each
action is a class: its fields are ``request_id`` plus the params, and its ``ACTION`` class
variable is the action's name on the wire. *Events* go from the broker to a backend, *actions*
from a backend to the broker.

Contexts are the user-facing models of :mod:`strands_trio.context`, already corrected for the
reference broker's quirks by the codec, so a client can hand them to handlers as they are.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from ..context import ConnectionRequestContext, Context

__all__ = [
    "Action",
    "Authenticate",
    "BadFrame",
    "Broadcast",
    "BrokerMember",
    "CloseConnection",
    "ConnectionRequest",
    "Disconnected",
    "ErrorEvent",
    "Event",
    "Frame",
    "Heartbeat",
    "Hello",
    "JoinRoom",
    "LeaveRoom",
    "MessageToConnection",
    "MessageToRoom",
    "NewConnection",
    "NewMessage",
    "PresenceReply",
    "PresenceRequest",
    "Response",
]

# ---------------------------------------------------------------- broker to backend (events)


@attrs.frozen(kw_only=True)
class ConnectionRequest:
    """A WebSocket client asks to connect; the backend must answer with a :class:`Response`
    carrying the same ``request_id``.

    ``query`` is an extension of strands-trio's broker: the raw query string of the handshake
    (without ``?``; ``""`` when there is none). ``None`` when the broker did not send it (the
    reference never does; the field is then left out on the wire); a value that is not a
    string is read as ``None``, without losing the request.
    """

    ACTION: ClassVar[str] = "connection_request"
    request_id: str
    headers: dict[str, list[str]]
    url: str
    remote_addr: str
    query: str | None = None


@attrs.frozen(kw_only=True)
class NewConnection:
    """An accepted WebSocket client is now connected."""

    ACTION: ClassVar[str] = "new_connection"
    request_id: str
    context: Context


@attrs.frozen(kw_only=True)
class NewMessage:
    """A connected WebSocket client sent a message (a binary frame arrives as a string too)."""

    ACTION: ClassVar[str] = "new_message"
    request_id: str
    context: Context
    message: str


@attrs.frozen(kw_only=True)
class Disconnected:
    """A WebSocket client left.

    ``rooms`` is an extension of strands-trio's broker: every room the client was in (its
    connect-time room, ``context.room_id``, first, then the rooms it joined with
    :class:`JoinRoom`). ``None`` when the broker did not send it (the reference never does;
    the field is then left out on the wire); a value that is not a list of strings is read as
    ``None``, without losing the event.
    """

    ACTION: ClassVar[str] = "disconnected"
    request_id: str
    context: Context
    rooms: tuple[str, ...] | None = None


@attrs.frozen(kw_only=True)
class ErrorEvent:
    """The broker reports an error.

    ``context`` is a :class:`~strands_trio.Context` for an error about a connected client, or
    a :class:`~strands_trio.ConnectionRequestContext` when the error is about a connection
    request that came while no backend was connected (WIRE.md quirk 2).
    """

    ACTION: ClassVar[str] = "error"
    request_id: str
    error: str
    context: Context | ConnectionRequestContext


@attrs.frozen(kw_only=True)
class Heartbeat:
    """The broker's liveness signal, every 15 s from the reference broker."""

    ACTION: ClassVar[str] = "heartbeat"
    request_id: str = "heartbeat"


@attrs.frozen(kw_only=True)
class Hello:
    """Who the broker is: strands-trio's broker sends it first on every backend link (after
    the ``authenticate`` exchange, when it has a secret). An extension: the reference broker
    sends none, and the asyncio ``pystrands`` client ignores it (an unknown action).

    Attributes:
        broker: The broker's stable name: its cluster ``node_id`` when one was set, else
            ``host:tcp_port`` of its backends' port. The same after a restart.
        instance: A random id, new at every start of the broker: a backend that sees another
            one under the same name knows that the broker restarted, and that the clients it
            had are gone.
        version: The broker's strands-trio version (``""`` if it did not say).
    """

    ACTION: ClassVar[str] = "hello"
    request_id: str = "hello"
    broker: str
    instance: str
    version: str = ""


# ---------------------------------------------------------------- backend to broker (actions)


@attrs.frozen(kw_only=True)
class Response:
    """The answer to a :class:`ConnectionRequest`.

    When ``accepted``, ``client_id`` and ``room_id`` are required (the reference broker drops
    the client otherwise) and ``metadata`` is what later events carry in their context.

    When refused, two extensions of strands-trio's broker (the reference ignores them) say why
    to the client: ``reason`` (words safe to show it, the WebSocket close reason) and ``code``
    (an HTTP-like status such as ``401``, or a close code from 4000 to 4999: the client sees
    the socket closed with ``4000 + code``). Fields left ``None`` are not sent.
    """

    ACTION: ClassVar[str] = "response"
    request_id: str
    accepted: bool
    client_id: str | None = None
    room_id: str | None = None
    metadata: dict[str, Any] | None = None
    reason: str | None = None
    code: int | None = None


@attrs.frozen(kw_only=True)
class MessageToRoom:
    """Send ``message`` to every client in ``room_id``."""

    ACTION: ClassVar[str] = "message_to_room"
    request_id: str
    room_id: str
    message: str


@attrs.frozen(kw_only=True)
class MessageToConnection:
    """Send ``message`` to the client whose ``client_id`` is ``conn_id``."""

    ACTION: ClassVar[str] = "message_to_connection"
    request_id: str
    conn_id: str
    message: str


@attrs.frozen(kw_only=True)
class Broadcast:
    """Send ``message`` to every client."""

    ACTION: ClassVar[str] = "broadcast"
    request_id: str
    message: str


# ---------------------------------------------------------------- extensions (our broker only)


@attrs.frozen(kw_only=True)
class CloseConnection:
    """Close the socket of the client ``conn_id`` with a WebSocket close ``code`` and
    ``reason``.

    An extension of strands-trio's broker: the reference broker ignores unknown actions, so
    against it this does nothing (WIRE.md quirk 6: it has no way to disconnect a client).
    """

    ACTION: ClassVar[str] = "close_connection"
    request_id: str
    conn_id: str
    code: int = 1000
    reason: str = ""


@attrs.frozen(kw_only=True)
class JoinRoom:
    """Put the client ``conn_id`` in the room ``room_id`` too, besides the room it connected
    to: it gets that room's messages until it leaves it (:class:`LeaveRoom`) or disconnects.
    Joining a room the client is already in does nothing.

    An extension of strands-trio's broker: the reference broker ignores unknown actions (its
    clients have one room each, fixed at connect), so the client refuses to send it there
    (:class:`~strands_trio.RoomsUnsupported`).
    """

    ACTION: ClassVar[str] = "join_room"
    request_id: str
    conn_id: str
    room_id: str


@attrs.frozen(kw_only=True)
class LeaveRoom:
    """Take the client ``conn_id`` out of a room it joined with :class:`JoinRoom`.

    A client stays in its connect-time room until it disconnects: leaving that room, or a room
    the client is not in, does nothing (counted by the broker). An extension, as
    :class:`JoinRoom`.
    """

    ACTION: ClassVar[str] = "leave_room"
    request_id: str
    conn_id: str
    room_id: str


@attrs.frozen(kw_only=True)
class Authenticate:
    """A backend's first frame to a broker configured with a shared secret.

    An extension of strands-trio's broker; the reference broker ignores it. The secret is
    never shown in the frame's repr.
    """

    ACTION: ClassVar[str] = "authenticate"
    request_id: str
    secret: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class PresenceRequest:
    """Ask the broker who is in ``room_id``; it answers with a :class:`PresenceReply`
    carrying the same ``request_id``.

    An extension of strands-trio's broker: the reference broker ignores it, and never
    answers.
    """

    ACTION: ClassVar[str] = "presence"
    request_id: str
    room_id: str


@attrs.frozen(kw_only=True)
class BrokerMember:
    """One client in a room, as a :class:`PresenceReply` lists it.

    Attributes:
        client_id: The client's id.
        node: The id of the broker node its socket is connected to (every member has the
            same one on a single broker).
    """

    client_id: str
    node: str


@attrs.frozen(kw_only=True)
class PresenceReply:
    """The broker's answer to a :class:`PresenceRequest` (an event, same ``request_id``).

    ``complete`` is false when a broker node could not ask the rest of its cluster (Redis
    unreachable): ``members`` then lists only the clients of the node that answered.
    """

    ACTION: ClassVar[str] = "presence"
    request_id: str
    room_id: str
    members: tuple[BrokerMember, ...] = ()
    complete: bool = True


# ---------------------------------------------------------------- decoding failures


@attrs.frozen(kw_only=True)
class BadFrame:
    """A line the decoder could not turn into a frame. Not a wire frame: the decoder yields it
    in place of the frame, so the reader can log it, count it and go on with the next line.

    Attributes:
        reason: What was wrong, as ``"reason @ $.path"`` where a field was at fault.
        line: The start of the offending line (at most 200 bytes), for the log.
    """

    reason: str
    line: bytes


#: A frame the broker sends to a backend (:class:`PresenceReply` and :class:`Hello` are
#: strands-trio's extensions).
Event = (
    ConnectionRequest
    | NewConnection
    | NewMessage
    | Disconnected
    | ErrorEvent
    | Heartbeat
    | PresenceReply
    | Hello
)
#: A frame a backend sends to the broker (:class:`CloseConnection`, :class:`Authenticate`,
#: :class:`PresenceRequest`, :class:`JoinRoom` and :class:`LeaveRoom` are strands-trio's
#: extensions).
Action = (
    Response
    | MessageToRoom
    | MessageToConnection
    | Broadcast
    | CloseConnection
    | Authenticate
    | PresenceRequest
    | JoinRoom
    | LeaveRoom
)
#: Any frame, either way.
Frame = Event | Action

EVENT_TYPES: tuple[type[Event], ...] = (
    ConnectionRequest,
    NewConnection,
    NewMessage,
    Disconnected,
    ErrorEvent,
    Heartbeat,
    PresenceReply,
    Hello,
)
ACTION_TYPES: tuple[type[Action], ...] = (
    Response,
    MessageToRoom,
    MessageToConnection,
    Broadcast,
    CloseConnection,
    Authenticate,
    PresenceRequest,
    JoinRoom,
    LeaveRoom,
)
