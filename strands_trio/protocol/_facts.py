"""What the reference broker does that every side must agree on, beyond the frames: the text
of its no-backend error and the form of the header names it forwards (WIRE.md)."""

from __future__ import annotations

__all__ = ["NO_BACKEND", "canonical_header"]

#: The ``error`` event's text when a connection request finds no backend connected, and the
#: reason of the 503 the WebSocket client gets (WIRE.md quirk 3).
NO_BACKEND = "no backend available to handle connection request"


def canonical_header(name: str) -> str:
    """Go's canonical form of a header name, as the reference broker forwards them in a
    ``connection_request`` (``sec-websocket-key`` -> ``Sec-Websocket-Key``)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
