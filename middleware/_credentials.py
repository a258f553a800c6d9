"""Credentials for the authentication middleware: where a token is read from, who it proves the
client is, and the verifiers that decide.

Theory of operation: authentication is split in two steps that the middleware composes. A
*token source* (:func:`from_header`, :func:`from_query`, :func:`from_cookie`,
:func:`from_subprotocol`, :func:`first_of`)
reads the credential from a :class:`~strands_trio.ConnectionRequestContext` and returns it, or
``None`` when the request carries none. A *verifier* (anything with ``async def verify(token) ->
Identity``, see :class:`Verifier`) turns the token into an :class:`Identity` or raises
:class:`AuthError`. Nothing here does I/O except a JWKS fetch (``_jwks.py``), so both steps are
tested without a broker.

An :class:`AuthError` carries a short reason that is safe to send to the client and to log:
``"token expired"``, never the token. Verifiers hold secrets in fields with ``repr=False``.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, Self, TypeAlias, cast

import attrs
import trio
from attrs.validators import instance_of

from strands_trio import ConnectionRequestContext, StrandsError

from ._validators import NON_EMPTY_STR

__all__ = [
    "APIKeyVerifier",
    "AuthError",
    "Identity",
    "TokenSource",
    "Verifier",
    "as_verifier",
    "first_of",
    "from_cookie",
    "from_header",
    "from_query",
    "from_subprotocol",
]

#: Reads a credential from a connection request; ``None`` when the request has none.
TokenSource: TypeAlias = Callable[[ConnectionRequestContext], str | None]


class AuthError(StrandsError):
    """A credential was refused. The message is a short reason (``"token expired"``) that is
    safe to send to the client and to log: it never contains the token, key or secret."""


def _names(value: Iterable[str]) -> tuple[str, ...]:
    # A bare string is an iterable of one-letter names: almost always a forgotten tuple.
    if isinstance(value, str):
        raise TypeError(
            f"expected a tuple of strings, got the string {value!r}: write ({value!r},)"
        )
    names = tuple(value)
    if not all(isinstance(name, str) and name for name in names):
        raise TypeError(f"expected non-empty strings, got {names!r}")
    return names


@attrs.frozen(kw_only=True)
class Identity:
    """Who a verified credential says the client is.

    It rides in the connection's metadata as :meth:`to_json`, and is read back with
    :meth:`from_json`.

    Attributes:
        subject: The principal, for example a JWT's ``sub`` claim or an API key's owner.
        roles: What the principal may do, for authorization middleware further in.
        claims: The verified claims (JSON data); empty for an API key.
    """

    subject: str = attrs.field(validator=NON_EMPTY_STR)
    roles: tuple[str, ...] = attrs.field(default=(), converter=_names)
    claims: dict[str, Any] = attrs.field(factory=dict, validator=instance_of(dict), hash=False)

    def to_json(self) -> dict[str, Any]:
        """This identity as a JSON object: ``subject``, ``roles`` (a list) and ``claims``."""
        return {"subject": self.subject, "roles": list(self.roles), "claims": self.claims}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """Read back an identity written by :meth:`to_json`.

        Raises:
            ValueError: a field is missing or has the wrong type; the message says which.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"invalid Identity: expected an object, got {type(data).__name__}")
        subject = data.get("subject")
        roles = data.get("roles", [])
        claims = data.get("claims", {})
        if not isinstance(subject, str) or not subject:
            reason = "required field missing" if subject is None else "expected a non-empty string"
            raise ValueError(f"invalid Identity: {reason} @ $.subject")
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            raise ValueError("invalid Identity: expected a list of non-empty strings @ $.roles")
        if not isinstance(claims, dict):
            raise ValueError("invalid Identity: expected an object @ $.claims")
        return cls(subject=subject, roles=tuple(roles), claims=claims)


# --- Token sources -------------------------------------------------------------------------


def _header_values(request: ConnectionRequestContext, name: str) -> list[str]:
    folded = name.casefold()
    return [
        value
        for key, values in request.headers.items()
        if key.casefold() == folded
        for value in values
    ]


def _checked_name(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} must be a non-empty string without spaces, got {value!r}")
    return value


@attrs.frozen
class _Header:
    name: str
    scheme: str | None

    def __call__(self, request: ConnectionRequestContext) -> str | None:
        for value in _header_values(request, self.name):
            if self.scheme is None:
                token = value.strip()
            else:
                scheme, _, token = value.strip().partition(" ")
                if scheme.casefold() != self.scheme.casefold():
                    continue
                token = token.strip()
            if token:
                return token
        return None


@attrs.frozen
class _Query:
    param: str

    def __call__(self, request: ConnectionRequestContext) -> str | None:
        # query_params reads the broker's ``query`` field, or a query glued to the url.
        for value in request.query_params.get(self.param, ()):
            if value:
                return value
        return None


@attrs.frozen
class _Subprotocol:
    prefix: str

    def __call__(self, request: ConnectionRequestContext) -> str | None:
        prefix = self.prefix
        for header in _header_values(request, "Sec-WebSocket-Protocol"):
            for offered in header.split(","):
                offered = offered.strip()
                if offered.startswith(prefix) and len(offered) > len(prefix):
                    return offered[len(prefix) :]
        return None


@attrs.frozen
class _Cookie:
    name: str

    def __call__(self, request: ConnectionRequestContext) -> str | None:
        # A careful split rather than http.cookies, which drops every cookie after one it
        # cannot parse. Several Cookie headers are allowed (HTTP/2 splits them).
        for header in _header_values(request, "Cookie"):
            for pair in header.split(";"):
                name, equals, value = pair.partition("=")
                if equals and name.strip() == self.name:
                    value = value.strip()
                    if len(value) >= 2 and value[0] == value[-1] == '"':
                        value = value[1:-1]
                    if value:
                        return value
        return None


@attrs.frozen
class _FirstOf:
    sources: tuple[TokenSource, ...]

    def __call__(self, request: ConnectionRequestContext) -> str | None:
        for source in self.sources:
            token = source(request)
            if token is not None:
                return token
        return None


def from_header(name: str = "Authorization", scheme: str | None = "Bearer") -> TokenSource:
    """Read the token from header *name* (any case), after *scheme* (any case).

    With several values, the first with the scheme wins: ``Authorization: Basic ...`` then
    ``Authorization: Bearer t`` gives ``t``. ``scheme=None`` takes the whole value.

    Raises:
        ValueError: *name* or *scheme* is empty or has spaces.
    """
    _checked_name("header name", name)
    if scheme is not None:
        _checked_name("scheme", scheme)
    return _Header(name, scheme)


def from_query(param: str = "token") -> TokenSource:
    """Read the token from query parameter *param* of the request URL (``/ws/x?token=...``).

    strands-trio's broker sends the query string in every connection request (the ``query``
    extension field); the reference broker drops it, so this finds nothing there. A broker
    that glues the query to the url (``pass_query_string``) works too. Query strings end up
    in access logs and browser history: use short-lived tokens.

    Raises:
        ValueError: *param* is empty or has spaces.
    """
    return _Query(_checked_name("query parameter", param))


def from_cookie(name: str) -> TokenSource:
    """Read the token from cookie *name* (case-sensitive) in the request's Cookie header(s).

    Raises:
        ValueError: *name* is empty or has spaces.
    """
    return _Cookie(_checked_name("cookie name", name))


def from_subprotocol(prefix: str = "bearer.") -> TokenSource:
    """Read the token from the ``Sec-WebSocket-Protocol`` header: the offered subprotocol that
    starts with *prefix*, without it. A browser, which cannot set ``Authorization`` on a
    WebSocket, offers it with ``new WebSocket(url, ["strands", "bearer." + token])``.

    The broker must answer with a subprotocol the browser offered, or the browser fails the
    connection: strands-trio's broker selects ``"strands"`` (``BrokerConfig.subprotocols``)
    and never the one carrying the token. The reference broker selects none, so only clients
    that offer no subprotocol can connect through it. A subprotocol is an HTTP token: a JWT
    (base64url and dots) fits as it is; other tokens must avoid ``=``, ``/``, spaces and
    commas.

    Raises:
        ValueError: *prefix* is empty or has spaces or commas.
    """
    _checked_name("subprotocol prefix", prefix)
    if "," in prefix:
        raise ValueError(f"subprotocol prefix must not contain a comma, got {prefix!r}")
    return _Subprotocol(prefix)


def first_of(*sources: TokenSource) -> TokenSource:
    """Try *sources* in order and return the first token found.

    Raises:
        ValueError: no source was given.
        TypeError: a source is not callable.
    """
    if not sources:
        raise ValueError("first_of() needs at least one token source")
    for source in sources:
        if not callable(source):
            raise TypeError(f"a token source must be callable, got {source!r}")
    return _FirstOf(sources)


# --- Verifiers -----------------------------------------------------------------------------


class Verifier(Protocol):
    """Turns a token into an :class:`Identity`, or refuses it."""

    async def verify(self, token: str) -> Identity:
        """Check *token* and say who it belongs to.

        Raises:
            AuthError: the token is not valid; the message is safe to show the client.
        """
        ...


@attrs.frozen
class _FunctionVerifier:
    function: Callable[[str], Awaitable[Identity]]

    async def verify(self, token: str) -> Identity:
        identity = await self.function(token)
        if not isinstance(identity, Identity):
            raise TypeError(f"{self.function!r} returned {identity!r}, not an Identity")
        return identity


def as_verifier(obj: Verifier | Callable[[str], Awaitable[Identity]]) -> Verifier:
    """Return *obj* if it has an async ``verify()``, or wrap an async function ``(token) ->
    Identity`` so that it has one.

    Raises:
        TypeError: *obj* is neither.
    """
    verify = getattr(obj, "verify", None)
    if verify is not None and _is_async_callable(verify):
        return cast(Verifier, obj)  # an async verify(), checked just above
    if callable(obj) and _is_async_callable(obj):
        return _FunctionVerifier(obj)
    raise TypeError(
        f"expected a verifier (an object with 'async def verify(token)') or an async function "
        f"(token) -> Identity, got {obj!r}"
    )


def _is_async_callable(fn: object) -> bool:
    """Whether calling *fn* returns a coroutine: an ``async def`` function or method (or a
    ``functools.partial`` of one: :func:`inspect.iscoroutinefunction` looks through it), or
    an object whose ``__call__`` is ``async def``."""
    call = getattr(fn, "__call__", None)  # noqa: B004 - looking for an async __call__
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _identities(keys: Mapping[str, Identity | str]) -> dict[str, Identity]:
    if not isinstance(keys, Mapping) or not keys:
        raise ValueError("keys must be a non-empty mapping of API key to Identity or subject")
    identities = {}
    for key, who in keys.items():
        if not isinstance(key, str) or not key:
            raise ValueError("every API key must be a non-empty string")
        identities[key] = who if isinstance(who, Identity) else Identity(subject=who)
    return identities


@attrs.frozen(kw_only=True)
class APIKeyVerifier:
    """Accept a fixed set of API keys.

    Every presented key is compared with every known key in constant time (SHA-256 digests
    compared with :func:`hmac.compare_digest`, no early exit), so the time taken says nothing
    about how close a guess was, nor how long the keys are.

    Attributes:
        keys: API key to :class:`Identity`, or to a subject string. Never shown in the repr.

    Raises:
        ValueError: at construction, *keys* is empty or has an empty key or subject.
    """

    keys: Mapping[str, Identity] = attrs.field(repr=False, converter=_identities)
    _digests: tuple[tuple[bytes, Identity], ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        digests = tuple((_digest(key), who) for key, who in self.keys.items())
        object.__setattr__(self, "_digests", digests)

    async def verify(self, token: str) -> Identity:
        """Return the identity of API key *token*.

        Raises:
            AuthError: ``"unknown API key"``.
        """
        await trio.lowlevel.checkpoint()
        presented = _digest(token)
        found = None
        for digest, who in self._digests:
            if hmac.compare_digest(presented, digest):
                found = who
        if found is None:
            raise AuthError("unknown API key")
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
