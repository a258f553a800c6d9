"""How the broker tells a WebSocket client it was refused: the close codes, and their reasons.

Sans-IO: no trio, no sockets. A browser's ``WebSocket`` cannot read an HTTP status: a
handshake refused with ``403`` is to the page only close code 1006 and no words. So, by
default (``BrokerConfig.refuse_with="close"``), a refusal decided by a backend, or by the
broker while it asked one, completes the upgrade and closes at once with a close code and a
reason the page can read (``CloseEvent.code``, ``CloseEvent.reason``):

========  ==============================================  ===========
code      cause                                           HTTP status
========  ==============================================  ===========
4401      the backend refused a missing or bad credential 403
          (``code=401``: the ``Auth`` middleware)
4403      the backend refused (no code, or ``code=403``)  403
4000+N    the backend refused with ``code=N`` (400-599)   403
4500      the backend accepted without client or room id  403
========  ==============================================  ===========

No backend connected (or it left before answering), or no answer within ``request_timeout``,
is answered with HTTP 503 before the upgrade whatever the setting (the page sees 1006): such
a refusal is transient, the client should retry, and a client that writes its queued sends
as soon as the socket opens (``strands.js`` does) would lose them into a socket closed at
once. :data:`NO_BACKEND` (4503) and :data:`TIMED_OUT` (4504) name them all the same (for
logs, ``FakeBroker``, and clients of other brokers).

(``refuse_with="http"`` answers the HTTP status before the upgrade instead, as before: 403
for every refusal by a backend, since a 401 would need a ``WWW-Authenticate`` challenge that
no WebSocket client answers.)
Refusals that protect the broker stay HTTP statuses before the upgrade whatever the setting
(429 from one address, 503 full or shutting down, 4xx bad handshakes, 403 origin): a refused
client must cost nothing, and an upgrade costs a slot for the closing handshake.

A close frame's reason is at most 123 bytes of UTF-8: :func:`close_reason` cuts a longer one
at a character boundary.
"""

from __future__ import annotations

__all__ = [
    "BAD_ANSWER",
    "NO_BACKEND",
    "REFUSED",
    "TIMED_OUT",
    "UNAUTHENTICATED",
    "close_code_for",
    "close_reason",
]

#: The backend refused a missing or bad credential (``code=401``).
UNAUTHENTICATED = 4401
#: The backend refused (no code given): the default.
REFUSED = 4403
#: The backend accepted without ``client_id`` and ``room_id``: its bug, not the client's.
BAD_ANSWER = 4500
#: No backend was connected, or the one asked left before it answered.
NO_BACKEND = 4503
#: The backend did not answer within ``request_timeout``.
TIMED_OUT = 4504

#: The longest close reason, in bytes (a close frame's payload is at most 125 bytes).
MAX_REASON_BYTES = 123


def close_code_for(code: int | None) -> int:
    """The close code for a backend's refusal with ``code`` (a response's extension field):
    ``4000 + code`` for an HTTP-like status (400 to 599), *code* itself from 4000 to 4999,
    and :data:`REFUSED` (4403) for anything else or nothing."""
    if type(code) is int:
        if 400 <= code <= 599:
            return 4000 + code
        if 4000 <= code <= 4999:
            return code
    return REFUSED


def close_reason(text: str) -> str:
    """*text* cut to :data:`MAX_REASON_BYTES` bytes of UTF-8 without splitting a character
    (a lone surrogate, which UTF-8 cannot carry, is replaced by ``?``).

    >>> close_reason("é" * 100) == "é" * 61
    True
    """
    data = text.encode("utf-8", errors="replace")
    if len(data) <= MAX_REASON_BYTES:
        return data.decode()
    return data[:MAX_REASON_BYTES].decode(errors="ignore")
