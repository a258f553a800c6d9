"""JSON Web Token verification with PyJWT: :class:`JWTVerifier`.

Theory of operation: the configuration is checked once, at construction, against the mistakes
that make JWT verification unsafe: no algorithm list, ``"none"``, and HMAC algorithms mixed
with public-key ones (key confusion: a token signed with HS256 using the *public* key as the
secret would pass). A fixed key is parsed once for every allowed algorithm, so a key that does
not fit (or is too short, RFC 7518 section 3.2) is a :class:`ValueError` at startup, not an
error on every connection. A :class:`~strands_trio.middleware._jwks.JWKSKeys` key is looked up
per token by its ``kid``.

PyJWT's exceptions are translated into short :class:`AuthError` reasons. Expiry uses the wall
clock, as JWT ``exp``/``nbf`` are Unix times; trio's clock is not involved.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio
from attrs.validators import and_, ge, instance_of, lt, optional

from ._credentials import AuthError, Identity, _names
from ._jwks import JWKSKeys
from ._validators import NON_EMPTY_STR, not_bool

if TYPE_CHECKING:
    from jwt import PyJWK
    from jwt.algorithms import AllowedPublicKeys

__all__ = ["JWTVerifier"]

_INSTALL_HINT = "pip install 'strands-trio[auth]'"


def _algorithms(value: Sequence[str]) -> tuple[str, ...]:
    if importlib.util.find_spec("jwt") is None:
        raise ImportError(f"JWTVerifier needs PyJWT, which is not installed: {_INSTALL_HINT}")
    import jwt.algorithms

    names = _names(value)
    if not names:
        raise ValueError("algorithms must name at least one algorithm, for example ('RS256',)")
    known = jwt.algorithms.get_default_algorithms()
    for name in names:
        if name.casefold() == "none":
            raise ValueError("the 'none' algorithm accepts unsigned tokens and is refused")
        if name not in known:
            raise ValueError(
                f"unknown algorithm {name!r}; PyJWT knows {sorted(set(known) - {'none'})}"
            )
    if len({name.startswith("HS") for name in names}) > 1:
        raise ValueError(
            f"algorithms {names!r} mix HMAC (HS*) with public-key algorithms, which lets a token "
            "signed with the public key as an HMAC secret pass: use one kind"
        )
    return names


def _audience(value: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        if value == "":
            raise ValueError("audience must not be empty")
        return value
    audiences = _names(value)
    if not audiences:
        raise ValueError("audience must name at least one audience, or be None")
    return audiences


#: A number of seconds >= 0 and finite (NaN fails ge(0)).
_LEEWAY = and_(instance_of((int, float)), not_bool("leeway"), ge(0.0), lt(math.inf))


@attrs.frozen(kw_only=True)
class JWTVerifier:
    """Verify JSON Web Tokens (RFC 7519) and turn their claims into an :class:`Identity`.

    >>> verifier = JWTVerifier(key=b"a secret of at least 32 bytes...", algorithms=("HS256",))

    Attributes:
        key: The secret for HS*, a PEM string or a ``cryptography`` public key for RS*, PS*,
            ES* and EdDSA (a private key is accepted: only its public half is used), or a
            :class:`JWKSKeys`. Never shown in the repr.
        algorithms: The algorithms a token may use. Required: never derived from the token.
        issuer: The ``iss`` a token must have, if given.
        audience: The ``aud`` a token must have (one of them, if several), if given. A token
            with an ``aud`` is refused when no audience is configured.
        leeway: Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        require: Claims a token must have.
        subject_claim: The claim that becomes :attr:`Identity.subject`; must be a string.
        roles_claim: The claim that becomes :attr:`Identity.roles`: a list of strings, or a
            space-separated string such as OAuth's ``scope``. Absent means no roles.

    Raises:
        ValueError: at construction, a setting is unsafe or does not fit (the message says
            which); ``"none"``, HS* mixed with others, or HS* with :class:`JWKSKeys`; a key that
            does not suit an algorithm or is shorter than it should be.
        TypeError: at construction, a tuple of names was given as a bare string.
        ImportError: PyJWT is not installed.
    """

    key: str | bytes | AllowedPublicKeys | JWKSKeys = attrs.field(repr=False)
    algorithms: tuple[str, ...] = attrs.field(converter=_algorithms)
    issuer: str | None = attrs.field(default=None, validator=optional(NON_EMPTY_STR))
    audience: str | tuple[str, ...] | None = attrs.field(default=None, converter=_audience)
    leeway: float = attrs.field(default=0, validator=_LEEWAY)
    require: tuple[str, ...] = attrs.field(default=("exp",), converter=_names)
    subject_claim: str = attrs.field(default="sub", validator=NON_EMPTY_STR)
    roles_claim: str = attrs.field(default="roles", validator=NON_EMPTY_STR)
    _prepared: Any = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.key, JWKSKeys):
            if any(name.startswith("HS") for name in self.algorithms):
                raise ValueError("HS* algorithms need a shared secret, not keys from a JWKS URL")
            prepared = None
        else:
            prepared = _prepare(self.key, self.algorithms)
        object.__setattr__(self, "_prepared", prepared)

    async def verify(self, token: str) -> Identity:
        """Check *token*'s signature and claims and return who it identifies.

        Raises:
            AuthError: the token is refused. The reason is one of ``"malformed token"``,
                ``"algorithm not allowed"``, ``"bad signature"``, ``"token expired"``,
                ``"token not yet valid"``, ``"wrong audience"``, ``"wrong issuer"``,
                ``"missing claim: <name>"``, ``"invalid claim: <name>"``, ``"unusable
                signing key"``, or for :class:`JWKSKeys` ``"unknown key id"``, ``"missing key
                id"`` and ``"cannot fetch signing keys"``.
        """
        import jwt

        await trio.lowlevel.checkpoint()
        if not isinstance(token, str):
            raise AuthError("malformed token")
        try:
            key: Any = self._prepared
            if isinstance(self.key, JWKSKeys):
                key = await self._jwks_key(self.key, token)
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(self.require), "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(_reason(exc)) from exc
        return Identity(subject=self._subject(claims), roles=self._roles(claims), claims=claims)

    async def _jwks_key(self, keys: JWKSKeys, token: str) -> PyJWK:
        import jwt

        header = jwt.get_unverified_header(token)  # DecodeError: "malformed token"
        alg, kid = header.get("alg"), header.get("kid")
        # Checked before any lookup, so junk headers cannot make us fetch.
        if alg not in self.algorithms:
            raise AuthError("algorithm not allowed")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed token")
        return await keys.get_key(kid, alg)

    def _subject(self, claims: dict[str, Any]) -> str:
        subject = claims.get(self.subject_claim)
        if subject is None:
            raise AuthError(f"missing claim: {self.subject_claim}")
        if not isinstance(subject, str) or not subject:
            raise AuthError(f"invalid claim: {self.subject_claim}")
        return subject

    def _roles(self, claims: dict[str, Any]) -> tuple[str, ...]:
        roles = claims.get(self.roles_claim)
        if roles is None:
            return ()
        if isinstance(roles, str):
            return tuple(roles.split())
        if isinstance(roles, list) and all(isinstance(role, str) and role for role in roles):
            return tuple(roles)
        raise AuthError(f"invalid claim: {self.roles_claim}")


def _prepare(key: Any, algorithms: tuple[str, ...]) -> Any:
    """Parse *key* once, checking that it suits every algorithm and is long enough."""
    import jwt

    prepared = None
    for name in algorithms:
        algorithm = jwt.get_algorithm_by_name(name)
        try:
            prepared = algorithm.prepare_key(key)
        except (jwt.InvalidKeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the key does not suit {name}: {exc}") from exc
        weakness = algorithm.check_key_length(prepared)
        if weakness:
            raise ValueError(f"the key is too weak for {name}: {weakness}")
    # Verifying needs only the public half; do not keep a private key around.
    public_key = getattr(prepared, "public_key", None)
    return public_key() if callable(public_key) else prepared


def _reason(exc: Exception) -> str:
    """A short reason for PyJWT's *exc*, safe to show: PyJWT's own messages are not shown."""
    import jwt

    reasons: list[tuple[type[Exception], str]] = [
        (jwt.ExpiredSignatureError, "token expired"),
        (jwt.ImmatureSignatureError, "token not yet valid"),
        (jwt.InvalidAudienceError, "wrong audience"),
        (jwt.InvalidIssuerError, "wrong issuer"),
        (jwt.InvalidSignatureError, "bad signature"),  # a DecodeError: tested first
        (jwt.InvalidAlgorithmError, "algorithm not allowed"),
        (jwt.InvalidIssuedAtError, "invalid claim: iat"),
        (jwt.exceptions.InvalidSubjectError, "invalid claim: sub"),
        (jwt.exceptions.InvalidJTIError, "invalid claim: jti"),
        (jwt.InvalidKeyError, "unusable signing key"),
    ]
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim: {exc.claim}"
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return "malformed token"
