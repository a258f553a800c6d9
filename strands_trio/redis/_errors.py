"""The exceptions of the Redis client.

One base class, :class:`RedisError` (itself a :class:`~strands_trio.StrandsError`), and two
kinds below it, for the two things a caller does differently:

- :class:`RedisConnectionError`: the connection could not be made, or is gone. Every call
  pending on it fails with this, and the connection stays unusable: open a new one (after a
  backoff delay) and redo what the old one held (subscriptions, for instance).
- :class:`RedisReplyError`: Redis answered the command with an error (``-ERR ...``,
  ``-NOSCRIPT ...``, ``-WRONGTYPE ...``). The connection is fine; the message is kept as
  Redis sent it.

hiredis builds these itself: the client hands both classes to ``hiredis.Reader``, so an error
reply is parsed straight into a :class:`RedisReplyError` (as an element of the list, not
raised, when it sits inside an array reply such as ``EXEC``'s), and a byte stream that is not
RESP into a :class:`RedisConnectionError`.
"""

from __future__ import annotations

from .._errors import StrandsError

__all__ = ["RedisConnectionError", "RedisError", "RedisReplyError"]


class RedisError(StrandsError):
    """Base class of every exception the Redis client raises on purpose."""


class RedisConnectionError(RedisError):
    """The connection to Redis could not be opened, was lost, or was closed.

    Raised by ``open_redis`` and ``open_pubsub`` when connecting or the handshake (``AUTH``,
    ``SELECT``) fails, and by every call pending on, or made on, a connection that has ended.
    The original error is the ``__cause__``.
    """


class RedisReplyError(RedisError):
    """Redis answered a command with an error reply.

    ``str(error)`` is the message as Redis sent it, for example ``"NOSCRIPT No matching script.
    Please use EVAL."``; :attr:`code` is its first word.
    """

    @property
    def code(self) -> str:
        """The first word of the message, which names the error (``"ERR"``, ``"NOSCRIPT"``,
        ``"WRONGTYPE"``, ...)."""
        message = str(self)
        return message.split(" ", 1)[0]
