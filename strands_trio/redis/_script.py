"""``Script``: a Lua script run by its SHA1 (``EVALSHA``), loaded again when Redis forgot it.

Theory of operation: Redis keeps the scripts it has run in a cache keyed by their SHA1, and
loses that cache when it restarts (or on ``SCRIPT FLUSH``). A :class:`Script` knows its SHA1
from the start and always tries ``EVALSHA`` first: the script's body is sent only when Redis
answers ``NOSCRIPT``, and then with ``EVAL``, which runs it and caches it again in the same
round trip. So a script costs one round trip per call, two once after each restart, and
needs no loading step, no lock and no state: many tasks hitting ``NOSCRIPT`` at once each send
one ``EVAL``, which is harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import attrs

from ._client import Arg, Redis
from ._errors import RedisReplyError
from ._live import LiveRedis

__all__ = ["Script"]


def _sha1(script: Script) -> str:
    return hashlib.sha1(script.source.encode()).hexdigest()


@attrs.frozen
class Script:
    """A Lua script, to call on any :class:`Redis` or :class:`LiveRedis` connection:
    ``await script(redis, keys=[...], args=[...])``.

    Attributes:
        source: The Lua code.
        sha1: Its SHA1 in hexadecimal, as Redis names it.
    """

    source: str
    sha1: str = attrs.field(init=False, default=attrs.Factory(_sha1, takes_self=True))

    async def __call__(
        self, redis: Redis | LiveRedis, *, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()
    ) -> Any:
        """Run the script with ``KEYS`` and ``ARGV``, and return its reply.

        ``EVALSHA`` first; on ``NOSCRIPT`` (Redis restarted or flushed its scripts),
        ``EVAL``, which caches the script again.

        Raises:
            RedisReplyError: the script failed (a Lua error, ``redis.error_reply``), or
                does not compile.
            RedisConnectionError: the connection is lost or closed.
        """
        try:
            return await redis.execute("EVALSHA", self.sha1, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
        return await redis.execute("EVAL", self.source, len(keys), *keys, *args)

    async def load(self, redis: Redis | LiveRedis) -> None:
        """Load the script into Redis's cache now (``SCRIPT LOAD``): not needed before
        calling it, but a way to find a syntax error at startup.

        Raises:
            RedisReplyError: the script does not compile.
            RedisConnectionError: the connection is lost or closed.
        """
        await redis.execute("SCRIPT", "LOAD", self.source)
