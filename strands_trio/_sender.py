"""What sends to the broker: the small door that middleware, guards and handlers use.

``ExecutionContext.get_client()`` returns a :class:`Sender`: the
:class:`~strands_trio.StrandsClient` of a subclassed backend, or the
:class:`~strands_trio.StrandsApp` of a decorated one. Code that only sends depends on this
protocol, not on the client, so the pipeline and the host context know nothing of the
connection engine behind it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .protocol import BrokerMember

__all__ = ["Sender"]


class Sender(Protocol):
    """The send API of a connected backend (see :class:`~strands_trio.StrandsClient`)."""

    async def send_room_message(self, room_id: str, message: str, *, wait: bool = False) -> None:
        """Send *message* to every client in *room_id*."""
        ...

    async def send_private_message(
        self, client_id: str, message: str, *, wait: bool = False
    ) -> None:
        """Send *message* to the client *client_id*."""
        ...

    async def broadcast_message(self, message: str, *, wait: bool = False) -> None:
        """Send *message* to every client."""
        ...

    async def close_connection(
        self, client_id: str, code: int = 1000, reason: str = "", *, wait: bool = False
    ) -> None:
        """Ask the broker to close *client_id*'s socket (an extension of strands-trio's
        broker)."""
        ...

    async def join_room(self, client_id: str, room_id: str, *, wait: bool = False) -> None:
        """Put *client_id* in *room_id* too (an extension of strands-trio's broker)."""
        ...

    async def leave_room(self, client_id: str, room_id: str, *, wait: bool = False) -> None:
        """Take *client_id* out of a room it joined (an extension of strands-trio's
        broker)."""
        ...

    async def presence(self, room_id: str, *, wait: bool = False) -> list[BrokerMember]:
        """Ask the broker who is in *room_id* (an extension of strands-trio's broker)."""
        ...
