"""The authentication middleware and the role guard.

Theory of operation. :class:`Auth` acts at the ``connection_request``: it reads a token with its
token source, has its verifier check it, and either rejects the request (no token, or an
:class:`AuthError`; with code ``401`` and the error's safe reason, which strands-trio's broker
shows the client as close code 4401) or stores the verified :class:`Identity` with
``ctx.set_state(IDENTITY, ...)``. The pipeline writes that state into the connection's
``metadata``, which the broker carries in every later event, so later events need no token: they
read the identity back from metadata (``ctx.get_state(IDENTITY)``). On those events
:class:`Auth` only checks that an identity is there (a dictionary lookup) and drops messages
from connections without one, which a broker only sends if some other backend accepted the
client.

:func:`roles` marks a handler with the roles it needs and puts :class:`RoleGuard` on it; the
guard compares them with the identity's roles. Reasons from verifiers are safe to log and to
send: tokens, keys and secrets never reach a log record or an error frame.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import attrs
from attrs.validators import instance_of, is_callable

from strands_trio import (
    CallNext,
    EventType,
    ExecutionContext,
    MetadataKey,
    reflector,
    set_metadata,
    use_guards,
)

from ._credentials import AuthError, Identity, TokenSource, Verifier, as_verifier, from_header

__all__ = ["IDENTITY", "ROLES", "Auth", "AuthConfig", "AuthStatistics", "RoleGuard", "roles"]

logger = logging.getLogger("strands_trio.middleware.auth")

# An enum member is an attribute look-up on every access (slow on CPython 3.11): hot paths
# use these.
_CONNECTION_REQUEST = EventType.CONNECTION_REQUEST
_MESSAGE = EventType.MESSAGE

F = TypeVar("F")

#: Where :class:`Auth` keeps the verified identity: ``ctx.get_state(IDENTITY)`` in any event,
#: or ``IDENTITY.get(context)`` in a handler.
IDENTITY: MetadataKey[Identity] = MetadataKey("identity", Identity)

#: The reflector key :func:`roles` sets on a handler.
ROLES = "strands:roles"

_BEARER = from_header()  # the default token source


@attrs.frozen(kw_only=True)
class AuthStatistics:
    """What an :class:`Auth` middleware has counted."""

    #: Connection requests accepted with a verified identity.
    verified: int
    #: Connection requests rejected for want of a token, or for a token the verifier refused.
    missing: int
    refused: int
    #: Messages dropped because their connection had no identity.
    unauthenticated: int


@attrs.frozen(kw_only=True)
class AuthConfig:
    """How an :class:`Auth` authenticates; validated when made.

    The arguments of :class:`Auth`, as a record: ``attrs.evolve(auth.config, ...)`` makes
    another, and :meth:`Auth.from_config` a middleware with counters of its own.

    Attributes:
        verifier: The verifier (an async function is wrapped by :func:`as_verifier`).
        source: Where the token is read from.
        anonymous: Whether requests without a token are accepted, without an identity.
        keep_claims: Whether the identity keeps the token's verified claims.
        key: Where the identity is kept in metadata.

    Raises:
        TypeError: *verifier* is not a verifier, *source* not a function, *anonymous* or
            *keep_claims* not a bool, or *key* not a :class:`~strands_trio.MetadataKey`.
    """

    verifier: Verifier = attrs.field(converter=as_verifier)
    source: TokenSource = attrs.field(default=_BEARER, validator=is_callable())
    anonymous: bool = attrs.field(default=False, validator=instance_of(bool))
    keep_claims: bool = attrs.field(default=False, validator=instance_of(bool))
    key: MetadataKey[Identity] = attrs.field(default=IDENTITY, validator=instance_of(MetadataKey))


class Auth:
    """Authenticate WebSocket clients when they connect::

        Auth(verifier=JWTVerifier(key=PUBLIC_KEY, algorithms=("RS256",), audience="chat"))
        Auth(verifier=APIKeyVerifier(keys={"k-123": "bot"}), source=from_header("X-Api-Key", None))
        Auth(verifier=my_verify, source=first_of(from_query("token"), from_cookie("session")))

    Args:
        verifier: A :class:`JWTVerifier`, :class:`APIKeyVerifier`, any object with
            ``async def verify(token) -> Identity``, or such an async function.
        source: Where the token is read from: the ``Authorization: Bearer`` header by default.
        anonymous: Accept requests that carry no token, without an identity (for apps where
            signing in is optional). A token that is present and invalid is still rejected.
        keep_claims: Keep the token's verified claims in the identity. Off by default: the
            identity rides in the metadata of every event of the connection, and a JWT's
            claims would cost about a microsecond of decoding per event (subject and roles
            are always kept).
        key: Where the identity is kept in metadata.

    Rejections are logged at INFO with the remote address and the verifier's reason (never the
    token) and counted; see :meth:`statistics`.

    Attributes:
        config: The arguments, frozen and validated (:class:`AuthConfig`).

    Raises:
        TypeError: an argument has the wrong type (see :class:`AuthConfig`).
    """

    __slots__ = (
        "_anonymous",
        "_keep_claims",
        "_key",
        "_key_name",
        "_missing",
        "_refused",
        "_source",
        "_unauthenticated",
        "_verified",
        "_verify",
        "config",
    )

    def __init__(
        self,
        *,
        verifier: Verifier | Callable[[str], Awaitable[Identity]],
        source: TokenSource = _BEARER,
        anonymous: bool = False,
        keep_claims: bool = False,
        key: MetadataKey[Identity] = IDENTITY,
    ) -> None:
        self._start(
            AuthConfig(
                verifier=verifier,
                source=source,
                anonymous=anonymous,
                keep_claims=keep_claims,
                key=key,
            )
        )

    @classmethod
    def from_config(cls, config: AuthConfig) -> Auth:
        """A middleware configured by *config*, with counters of its own.

        Raises:
            TypeError: *config* is not an :class:`AuthConfig`.
        """
        if not isinstance(config, AuthConfig):
            raise TypeError(f"config must be an AuthConfig, got {config!r}")
        auth = cls.__new__(cls)
        auth._start(config)
        return auth

    def _start(self, config: AuthConfig) -> None:
        self.config = config
        # Copied into slots: the hot path reads them once per event.
        self._verify = config.verifier.verify
        self._source = config.source
        self._anonymous = config.anonymous
        self._keep_claims = config.keep_claims
        self._key = config.key
        self._key_name = config.key.name
        self._verified = self._missing = self._refused = self._unauthenticated = 0

    def __repr__(self) -> str:
        return f"<Auth {self.config!r}>"

    @property
    def verifier(self) -> Verifier:
        """The verifier (from :attr:`config`)."""
        return self.config.verifier

    @property
    def source(self) -> TokenSource:
        """Where the token is read from (from :attr:`config`)."""
        return self._source

    @property
    def anonymous(self) -> bool:
        """Whether requests without a token are accepted (from :attr:`config`)."""
        return self._anonymous

    @property
    def keep_claims(self) -> bool:
        """Whether the identity keeps the token's claims (from :attr:`config`)."""
        return self._keep_claims

    @property
    def key(self) -> MetadataKey[Identity]:
        """Where the identity is kept in metadata (from :attr:`config`)."""
        return self._key

    async def __call__(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        kind = ctx.get_type()
        if kind is _CONNECTION_REQUEST:
            await self._authenticate(ctx, call_next)
        elif (
            kind is _MESSAGE and not self._anonymous and self._key_name not in ctx.context.metadata
        ):
            await self._refuse_message(ctx)
        else:
            await call_next(ctx)

    def wrap_next(self, call_next: CallNext, kind: EventType) -> CallNext:
        """This layer's step in a pipeline (see :class:`~strands_trio.FastMiddleware`): for a
        message with an identity, the rest of the chain itself; for events other than
        messages and connection requests, no step at all."""
        if kind is _CONNECTION_REQUEST:
            return partial(self._authenticate, call_next=call_next)
        if kind is not _MESSAGE or self._anonymous:
            return call_next
        key_name, refuse = self._key_name, self._refuse_message

        def step(ctx: ExecutionContext) -> Awaitable[None]:
            if key_name in ctx.context.metadata:
                return call_next(ctx)
            return refuse(ctx)

        return step

    async def _refuse_message(self, ctx: ExecutionContext) -> None:
        # DEBUG: a client flooding without an identity must not flood the log too.
        self._unauthenticated += 1
        logger.debug("dropped a message from client %s: no identity", ctx.client_id)
        await ctx.send_error("unauthenticated", "sign in first")

    async def _authenticate(self, ctx: ExecutionContext, call_next: CallNext) -> None:
        view = ctx.switch_to_connection_request()
        request = view.get_request()
        token = self._source(request)
        if token is None:
            if self._anonymous:
                await call_next(ctx)
                return
            self._missing += 1
            logger.info("rejected %s: no credentials", request.remote_addr)
            view.reject("no credentials", code=401)
            return
        try:
            identity = await self._verify(token)
        except AuthError as exc:
            self._refused += 1
            logger.info("rejected %s: %s", request.remote_addr, exc)
            view.reject(str(exc), code=401)  # an AuthError's message is safe to send
            return
        self._verified += 1
        if identity.claims and not self._keep_claims:
            identity = attrs.evolve(identity, claims={})
        ctx.set_state(self._key, identity)
        await call_next(ctx)

    def statistics(self) -> AuthStatistics:
        """What this middleware has counted so far."""
        return AuthStatistics(
            verified=self._verified,
            missing=self._missing,
            refused=self._refused,
            unauthenticated=self._unauthenticated,
        )


@attrs.frozen
class RoleGuard:
    """Lets an event through only if the connection's identity has one of the roles that
    :func:`roles` set on the handler (or its class). Handlers without ``@roles`` pass.

    Args:
        key: Where :class:`Auth` keeps the identity.
    """

    key: MetadataKey[Identity] = IDENTITY

    def can_activate(self, ctx: ExecutionContext) -> bool:
        needed = reflector.get_all_and_override(ROLES, ctx.get_handler(), ctx.get_class())
        if not needed:
            return True
        try:
            identity = ctx.get_state(self.key)
        except ValueError:
            logger.warning("client %s has unreadable identity metadata", ctx.client_id)
            return False
        return identity is not None and not set(needed).isdisjoint(identity.roles)


def roles(*names: str) -> Callable[[F], F]:
    """Allow a handler only to connections whose identity has at least one of *names*::

        @roles("admin", "moderator")
        @app.on_message("room.close", model=CloseRoom)
        async def close_room(payload, context): ...

    Sets the :data:`ROLES` metadata and puts a :class:`RoleGuard` on the handler, so nothing
    else needs registering. A refused message goes to the app's ``on_forbidden`` hook (by
    default: a ``forbidden`` error frame to the client).

    Raises:
        ValueError: no role names were given.
    """
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"roles() needs one or more role names, got {names!r}")
    mark = set_metadata(ROLES, names)
    guard = use_guards(RoleGuard())

    def decorate(fn: F) -> F:
        return guard(mark(fn))

    return decorate
