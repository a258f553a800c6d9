"""Where a Redis server is and how to log in to it: :class:`RedisConfig`, read from a URL.

``redis://[[user]:password@]host[:port][/db]``, or ``rediss://`` for TLS. The user name and
password are percent-decoded, so a password holding ``@`` or ``:`` is written ``%40`` or
``%3A``. A URL is checked whole when it is read: an unknown scheme, a query string, a port out
of range or a database that is not a number is a ``ValueError`` that says what to write
instead, not a surprise at the first reconnection.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import attrs
from attrs import validators as v

__all__ = ["RedisConfig"]

_SCHEMES = {"redis": False, "rediss": True}


@attrs.frozen(kw_only=True)
class RedisConfig:
    """How to reach and log in to one Redis server.

    Attributes:
        host: The server's host name or address.
        port: Its TCP port.
        db: The database to ``SELECT`` after connecting (``0``, Redis's default, sends none).
        username: The ACL user for ``AUTH`` (Redis 6+), or ``None`` for the default user.
        password: The password for ``AUTH``, or ``None`` to send no ``AUTH``. Never shown in
            ``repr``.
        tls: Connect with TLS (the ``rediss://`` scheme).
        client_name: A name for ``CLIENT SETNAME``, shown by ``CLIENT LIST`` on the server.
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=6379, validator=[v.instance_of(int), v.ge(1), v.le(65535)])
    db: int = attrs.field(default=0, validator=[v.instance_of(int), v.ge(0)])
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    client_name: str | None = None

    @classmethod
    def from_url(cls, url: str, *, client_name: str | None = None) -> RedisConfig:
        """Read ``redis://[[user]:password@]host[:port][/db]`` (or ``rediss://``).

        Raises:
            ValueError: the URL is not of that form.
        """
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                f"a Redis URL starts with redis:// or rediss:// (TLS), got {url!r}; "
                "for example redis://localhost:6379/0"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"a Redis URL takes no query string or fragment, got {url!r}")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"the port of the Redis URL {url!r} is not a number") from None
        path = parts.path.lstrip("/")
        if path and not path.isdigit():
            raise ValueError(
                f"the path of a Redis URL is a database number (redis://host:6379/2), "
                f"got {parts.path!r}"
            )
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=6379 if port is None else port,
            db=int(path) if path else 0,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=_SCHEMES[parts.scheme],
            client_name=client_name,
        )

    def handshake(self) -> list[tuple[str, ...]]:
        """The commands to send on a new connection before any other: ``AUTH``, ``SELECT``
        and ``CLIENT SETNAME``, as needed."""
        commands: list[tuple[str, ...]] = []
        if self.password is not None:
            if self.username:
                commands.append(("AUTH", self.username, self.password))
            else:
                commands.append(("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", str(self.db)))
        if self.client_name:
            commands.append(("CLIENT", "SETNAME", self.client_name))
        return commands

    @property
    def where(self) -> str:
        """``host:port/db``, for messages (never the password)."""
        return f"{self.host}:{self.port}/{self.db}"
