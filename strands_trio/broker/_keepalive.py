"""TCP keepalive on the broker's accepted sockets, so that a peer that vanished without closing
(a half-open connection: a laptop lid shut, a cable pulled, a NAT entry dropped) is noticed by
the kernel and the socket fails, instead of holding a slot, a room seat and memory forever.

The WebSocket protocol's own ping would do it too, but only with a task per connection; the
kernel does this for free. With these settings a dead peer is noticed within about
``IDLE + INTERVAL * COUNT`` = 60 s of silence.
"""

from __future__ import annotations

import socket

import trio

__all__ = ["IDLE", "enable_keepalive"]

IDLE = 30  # seconds of silence before the first probe
INTERVAL = 10  # seconds between probes
COUNT = 3  # unanswered probes before the connection is declared dead


def enable_keepalive(stream: trio.abc.Stream) -> None:
    """Turn on TCP keepalive for *stream*'s socket (a ``SocketStream``, or an ``SSLStream``
    over one); anything else, or a platform without the options, is left as it is."""
    inner = getattr(stream, "transport_stream", stream)
    if not isinstance(inner, trio.SocketStream):
        return
    inner.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", IDLE),
        ("TCP_KEEPINTVL", INTERVAL),
        ("TCP_KEEPCNT", COUNT),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            inner.setsockopt(socket.IPPROTO_TCP, option, value)
