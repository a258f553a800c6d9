"""The exceptions strands-trio raises.

One base class, :class:`StrandsError`, so that ``except StrandsError`` catches everything this
library raises on purpose. Protocol errors are split as in h11: :class:`RemoteProtocolError` is
the peer's fault (a line we could not decode), :class:`LocalProtocolError` is ours (a frame we
were asked to send that the protocol cannot carry). Nothing here imports trio: the sans-IO
protocol package raises these too.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = [
    "BrokerConnectionError",
    "LocalProtocolError",
    "NotConnectedError",
    "PresenceIncomplete",
    "ProtocolError",
    "RemoteProtocolError",
    "RoomsUnsupported",
    "StrandsError",
]


class StrandsError(Exception):
    """Base class of every exception strands-trio raises on purpose."""


class ProtocolError(StrandsError):
    """A frame that does not follow the wire protocol (WIRE.md)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent a line we cannot decode: not JSON, not an object, unknown action, missing
    fields or wrong types.

    The client never lets this escape its reader: the line is logged, counted and skipped.
    """


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol cannot carry (for example an accepted
    ``response`` without a ``client_id``)."""


class NotConnectedError(StrandsError):
    """A send was attempted while the client has no connection to a broker.

    Pass ``wait=True`` to the send methods to wait for the next connection instead.
    """


class BrokerConnectionError(StrandsError):
    """The connection to the broker could not be made or was lost, and reconnecting is turned
    off (``ClientConfig(reconnect=False)``). Raised by ``StrandsClient.run()``."""


class PresenceIncomplete(StrandsError):
    """A broker node answered a presence query without the rest of its cluster (it could
    not reach Redis): :attr:`members` lists only that node's own clients.

    Attributes:
        members: The members the node knew of (a list of
            :class:`~strands_trio.protocol.BrokerMember`).
    """

    def __init__(self, message: str, members: list[Any]) -> None:
        super().__init__(message)
        self.members = members


class RoomsUnsupported(StrandsError):
    """``join_room`` or ``leave_room`` was called while the backend is connected to the
    reference broker, whose clients have one room each, fixed at connect (``docs/rooms.md``
    says why strands-trio does not emulate more rooms there)."""


def raise_type_error(**arguments: object) -> NoReturn:
    """Raise the :class:`TypeError` for the first argument that is not a ``str``."""
    for name, value in arguments.items():
        if type(value) is not str:
            hint = "; encode objects first, e.g. json.dumps(obj)" if name == "message" else ""
            raise TypeError(f"{name} must be a str, got {type(value).__name__}{hint}")
    raise AssertionError("no argument had the wrong type")  # pragma: no cover
