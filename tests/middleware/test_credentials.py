"""Credentials for the auth middleware: token sources, identities, JWT, JWKS and API key
verifiers, tested without a broker."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import jwt
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from strands_trio import ConnectionRequestContext
from strands_trio.middleware import _credentials
from strands_trio.middleware._credentials import (
    APIKeyVerifier,
    AuthError,
    Identity,
    as_verifier,
    first_of,
    from_cookie,
    from_header,
    from_query,
    from_subprotocol,
)
from strands_trio.middleware._jwks import JWKSKeys
from strands_trio.middleware._jwt import JWTVerifier

SECRET = b"0123456789abcdef0123456789abcdef-secret"
OTHER_SECRET = b"fedcba9876543210fedcba9876543210-other"


def request(
    headers: dict[str, list[str]] | None = None, url: str = "/ws/chat"
) -> ConnectionRequestContext:
    return ConnectionRequestContext(headers=headers or {}, url=url)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    """A subject and an expiry a day from now, with *overrides* (None removes a claim).

    A day, not a minute: parametrized cases build their tokens when the suite is collected,
    and a loaded machine can take more than a minute to reach them."""
    merged = {"sub": "alice", "exp": int(time.time()) + 86_400, **overrides}
    return {name: value for name, value in merged.items() if value is not None}


def hs256(payload: dict[str, Any], secret: bytes = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


async def refusal(verifier: Any, token: str) -> str:
    """The reason *verifier* gives for refusing *token*."""
    with pytest.raises(AuthError) as caught:
        await verifier.verify(token)
    return str(caught.value)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """An RSA signing key, made once for the module."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    """A second RSA key, for tokens signed by someone else."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def public_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    """The public half of rsa_key, as PEM."""
    return rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- Token sources -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "headers", "token"),
    [
        (from_header(), {"Authorization": ["Bearer abc"]}, "abc"),
        (from_header(), {"authorization": ["bearer abc"]}, "abc"),
        (from_header(), {"AUTHORIZATION": ["BEARER   abc  "]}, "abc"),
        (from_header(), {"Authorization": ["Basic dXNlcg==", "Bearer abc"]}, "abc"),
        (from_header(), {"Authorization": ["Basic dXNlcg=="]}, None),
        (from_header(), {"Authorization": ["Bearer"]}, None),
        (from_header(), {"Authorization": ["Bearerabc"]}, None),
        (from_header(), {"Authorization": []}, None),
        (from_header(), {}, None),
        (from_header("X-Api-Key", scheme=None), {"x-api-key": ["k-1"]}, "k-1"),
        (from_header("X-Api-Key", scheme=None), {"X-Api-Key": ["", "k-2"]}, "k-2"),
        (from_header("X-Token", scheme="Token"), {"X-Token": ["token t"]}, "t"),
    ],
)
def test_from_header(
    source: Callable[[ConnectionRequestContext], str | None],
    headers: dict[str, list[str]],
    token: str | None,
) -> None:
    """A header source finds the token by header name and scheme in any case, among several
    values, and gives None when there is none."""
    assert source(request(headers)) == token


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("/ws/chat?token=abc", "abc"),
        ("/ws/chat?room=1&token=abc&token=def", "abc"),
        ("/ws/chat?token=a%2Bb%3D", "a+b="),
        ("ws://broker:8080/ws?token=abc", "abc"),
        ("/ws/chat?token=", None),
        ("/ws/chat?other=abc", None),
        ("/ws/chat", None),
        ("", None),
    ],
)
def test_from_query(url: str, token: str | None) -> None:
    """A query source reads the first value of its parameter, percent-decoded, or None."""
    assert from_query()(request(url=url)) == token


@pytest.mark.parametrize(
    ("query", "url", "token"),
    [
        ("token=abc", "/ws/chat", "abc"),  # strands-trio's broker: the query field
        ("token=&token=def", "/ws/chat", "def"),  # the first non-empty value
        ("token=a%2Bb+c", "/ws/chat", "a+b c"),
        ("other=1", "/ws/chat?token=glued", None),  # the field wins over the url
        ("", "/ws/chat?token=glued", "glued"),  # an old broker's glued query
    ],
)
def test_from_query_reads_the_query_field(query: str, url: str, token: str | None) -> None:
    """A query source reads the request's ``query`` (the broker's extension field), and
    falls back to a query glued to the url only when there is none."""
    assert from_query()(ConnectionRequestContext(url=url, query=query)) == token


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2lnbmF0dXJl-_"


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"Sec-Websocket-Protocol": [f"strands, bearer.{JWT}"]}, JWT),  # as Go shapes it
        ({"sec-websocket-protocol": ["strands", f"bearer.{JWT}"]}, JWT),
        ({"Sec-Websocket-Protocol": [f"bearer.{JWT},strands"]}, JWT),
        ({"Sec-Websocket-Protocol": ["strands, bearer."]}, None),  # an empty token
        ({"Sec-Websocket-Protocol": ["strands, Bearer.x"]}, None),  # the prefix's case
        ({"Sec-Websocket-Protocol": ["strands"]}, None),
        ({}, None),
    ],
)
def test_from_subprotocol(headers: dict[str, list[str]], token: str | None) -> None:
    """A subprotocol source reads the offered subprotocol with its prefix, without it, from
    one or several Sec-WebSocket-Protocol headers, or gives None."""
    assert from_subprotocol()(request(headers)) == token
    assert from_subprotocol("t-")(request({"Sec-Websocket-Protocol": ["t-abc"]})) == "abc"


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"Cookie": ["session=tok"]}, "tok"),
        ({"Cookie": ["theme=dark; session=tok; lang=en"]}, "tok"),
        ({"Cookie": ["theme=dark", "lang=en; session=tok"]}, "tok"),
        ({"cookie": ['session="tok"']}, "tok"),
        ({"Cookie": ["junk; =x; session=a=b"]}, "a=b"),
        ({"Cookie": ["Session=tok; session2=x"]}, None),
        ({"Cookie": ["session="]}, None),
        ({"Cookie": ["theme=dark"]}, None),
        ({}, None),
    ],
)
def test_from_cookie(headers: dict[str, list[str]], token: str | None) -> None:
    """A cookie source reads its cookie (case-sensitive name) from one or several Cookie
    headers, tolerating junk around it, or gives None."""
    assert from_cookie("session")(request(headers)) == token


def test_first_of_tries_sources_in_order() -> None:
    """first_of returns the first source's token that is not None."""
    source = first_of(from_header(), from_query(), from_cookie("session"))
    both = request({"Authorization": ["Bearer h"]}, url="/ws?token=q")
    assert source(both) == "h"
    assert source(request(url="/ws?token=q")) == "q"
    assert source(request({"Cookie": ["session=c"]})) == "c"
    assert source(request()) is None


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: from_header(""), ValueError),
        (lambda: from_header("Authorization", scheme=""), ValueError),
        (lambda: from_header("Authorization", scheme="Bear er"), ValueError),
        (lambda: from_query(""), ValueError),
        (lambda: from_cookie(" session"), ValueError),
        (lambda: from_subprotocol(""), ValueError),
        (lambda: from_subprotocol("a,b"), ValueError),
        (lambda: first_of(), ValueError),
        (lambda: first_of("token"), TypeError),  # type: ignore[arg-type]
    ],
)
def test_source_arguments_are_checked(make: Callable[[], object], error: type[Exception]) -> None:
    """Token sources refuse empty names, names with spaces and non-callable sources."""
    with pytest.raises(error):
        make()


# --- Identity ------------------------------------------------------------------------------


def test_identity_json_round_trip() -> None:
    """An identity survives to_json/from_json, and to_json is plain JSON."""
    identity = Identity(subject="alice", roles=("admin", "chat"), claims={"sub": "alice"})
    data = identity.to_json()
    assert (
        json.loads(json.dumps(data))
        == data
        == {
            "subject": "alice",
            "roles": ["admin", "chat"],
            "claims": {"sub": "alice"},
        }
    )
    assert Identity.from_json(data) == identity
    assert hash(identity) == hash(Identity.from_json(data))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"roles": []}, "required field missing @ $.subject"),
        ({"subject": ""}, "expected a non-empty string @ $.subject"),
        ({"subject": 7}, "expected a non-empty string @ $.subject"),
        ({"subject": "a", "roles": "admin"}, "list of non-empty strings @ $.roles"),
        ({"subject": "a", "roles": ["admin", 1]}, "list of non-empty strings @ $.roles"),
        ({"subject": "a", "claims": []}, "expected an object @ $.claims"),
        (["a"], "expected an object, got list"),
    ],
)
def test_identity_from_bad_json(data: Any, message: str) -> None:
    """from_json says what is wrong and where, as a ValueError."""
    with pytest.raises(ValueError, match="invalid Identity") as caught:
        Identity.from_json(data)
    assert message in str(caught.value)


def test_identity_validated_at_construction() -> None:
    """An empty subject, or roles given as one string, are refused when constructed."""
    with pytest.raises(ValueError, match="subject"):
        Identity(subject="")
    with pytest.raises(TypeError, match="tuple of strings"):
        Identity(subject="a", roles="admin")
    assert Identity(subject="a", roles=["x"]).roles == ("x",)


# --- JWTVerifier ---------------------------------------------------------------------------


async def test_hs256_valid_token() -> None:
    """A good HS256 token gives its subject, roles and verified claims."""
    payload = claims(roles=["admin", "chat"], room="lobby")
    identity = await JWTVerifier(key=SECRET, algorithms=("HS256",)).verify(hs256(payload))
    assert identity == Identity(subject="alice", roles=("admin", "chat"), claims=payload)


async def test_rs256_valid_token(rsa_key: rsa.RSAPrivateKey, public_pem: bytes) -> None:
    """A good RS256 token verifies with a PEM public key, a key object or the private key."""
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    for key in (public_pem, public_pem.decode(), rsa_key.public_key(), rsa_key):
        identity = await JWTVerifier(key=key, algorithms=("RS256",)).verify(token)
        assert identity.subject == "alice"


@pytest.mark.parametrize(
    ("payload", "options", "reason"),
    [
        (claims(exp=int(time.time()) - 10), {}, "token expired"),
        (claims(nbf=int(time.time()) + 600), {}, "token not yet valid"),
        (claims(iat=int(time.time()) + 600), {}, "token not yet valid"),
        (claims(aud="other"), {"audience": "chat"}, "wrong audience"),
        (claims(aud="chat"), {}, "wrong audience"),
        (claims(), {"audience": "chat"}, "missing claim: aud"),
        (claims(iss="https://evil"), {"issuer": "https://idp"}, "wrong issuer"),
        (claims(exp=None), {}, "missing claim: exp"),
        (claims(), {"require": ("exp", "jti")}, "missing claim: jti"),
        (claims(sub=None), {}, "missing claim: sub"),
        (claims(sub=42), {}, "invalid claim: sub"),
        (claims(uid=""), {"subject_claim": "uid"}, "invalid claim: uid"),
        (claims(roles=3), {}, "invalid claim: roles"),
        (claims(roles=["a", 1]), {}, "invalid claim: roles"),
    ],
)
async def test_claims_refused(
    payload: dict[str, Any], options: dict[str, Any], reason: str
) -> None:
    """Tokens with bad or missing claims are refused with the matching reason."""
    verifier = JWTVerifier(key=SECRET, algorithms=("HS256",), **options)
    assert await refusal(verifier, hs256(payload)) == reason


async def test_claims_accepted() -> None:
    """Leeway, a matching audience among several, the issuer and optional exp are honoured."""
    late = hs256(claims(exp=int(time.time()) - 5))
    assert await refusal(JWTVerifier(key=SECRET, algorithms=("HS256",)), late) == "token expired"
    lenient = JWTVerifier(key=SECRET, algorithms=("HS256",), leeway=30)
    assert (await lenient.verify(late)).subject == "alice"

    verifier = JWTVerifier(
        key=SECRET, algorithms=("HS256",), audience=["chat", "admin"], issuer="https://idp"
    )
    token = hs256(claims(aud=["other", "admin"], iss="https://idp"))
    assert (await verifier.verify(token)).subject == "alice"

    forever = JWTVerifier(key=SECRET, algorithms=("HS256",), require=())
    assert (await forever.verify(hs256(claims(exp=None)))).subject == "alice"


async def test_roles_from_list_and_scope() -> None:
    """Roles come from a list of strings, or from a space-separated string such as scope."""
    by_list = JWTVerifier(key=SECRET, algorithms=("HS256",))
    assert (await by_list.verify(hs256(claims(roles=["a", "b"])))).roles == ("a", "b")
    assert (await by_list.verify(hs256(claims()))).roles == ()
    by_scope = JWTVerifier(key=SECRET, algorithms=("HS256",), roles_claim="scope")
    token = hs256(claims(scope="chat:read  chat:write"))
    assert (await by_scope.verify(token)).roles == ("chat:read", "chat:write")


async def test_tampered_tokens_refused(rsa_key: rsa.RSAPrivateKey, public_pem: bytes) -> None:
    """A changed payload or signature, or a token signed with another key, is a bad signature."""
    verifier = JWTVerifier(key=SECRET, algorithms=("HS256",))
    header, _, signature = hs256(claims()).split(".")
    forged = f"{header}.{segment(claims(sub='mallory'))}.{signature}"
    assert await refusal(verifier, forged) == "bad signature"
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    payload = hs256(claims()).split(".")[1]
    assert await refusal(verifier, f"{header}.{payload}.{flipped}") == "bad signature"
    assert await refusal(verifier, hs256(claims(), OTHER_SECRET)) == "bad signature"

    rs = JWTVerifier(key=public_pem, algorithms=("RS256",))
    head, _, sig = jwt.encode(claims(), rsa_key, algorithm="RS256").split(".")
    assert await refusal(rs, f"{head}.{segment(claims(sub='mallory'))}.{sig}") == "bad signature"


async def test_other_rsa_key_refused(public_pem: bytes, other_rsa_key: rsa.RSAPrivateKey) -> None:
    """An RS256 token signed with a key other than the configured one is a bad signature."""
    token = jwt.encode(claims(), other_rsa_key, algorithm="RS256")
    assert (
        await refusal(JWTVerifier(key=public_pem, algorithms=("RS256",)), token) == "bad signature"
    )


async def test_alg_none_refused() -> None:
    """An unsigned token (alg "none", empty signature), crafted by hand, is refused."""
    for alg in ("none", "None", "NONE"):
        token = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(claims())}."
        assert await refusal(JWTVerifier(key=SECRET, algorithms=("HS256",)), token) == (
            "algorithm not allowed"
        )


async def test_key_confusion_refused(public_pem: bytes) -> None:
    """An HS256 token signed with the RS verifier's public key as the secret is refused."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(mac)}"
    verifier = JWTVerifier(key=public_pem, algorithms=("RS256",))
    assert await refusal(verifier, token) == "algorithm not allowed"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "a.b.c.d", "\u00e9.x.y"])
async def test_malformed_tokens_refused(token: str) -> None:
    """Tokens that are not three base64url JSON segments are malformed."""
    assert await refusal(JWTVerifier(key=SECRET, algorithms=("HS256",)), token) == "malformed token"


async def test_secrets_never_shown(rsa_key: rsa.RSAPrivateKey, public_pem: bytes) -> None:
    """Neither a refusal's message nor a verifier's repr contains the secret or the token."""
    hs = JWTVerifier(key=SECRET, algorithms=("HS256",), audience="chat")
    tokens = [
        hs256(claims(exp=int(time.time()) - 10)),
        hs256(claims(aud="other")),
        hs256(claims(), OTHER_SECRET),
        hs256(claims(exp=None)),
        "not-a-token-" + SECRET.decode(),
    ]
    for token in tokens:
        reason = await refusal(hs, token)
        assert SECRET.decode() not in reason
        for part in token.split("."):
            assert part not in reason
    assert SECRET.decode() not in repr(hs)
    assert "HS256" in repr(hs)

    rs = JWTVerifier(key=rsa_key, algorithms=("RS256",))
    pem_body = public_pem.decode().splitlines()[1]
    assert pem_body not in repr(rs)
    assert "RSA" not in repr(rs)

    api = APIKeyVerifier(keys={"key-" + SECRET.decode(): "alice"})
    assert SECRET.decode() not in repr(api)
    assert SECRET.decode() not in await refusal(api, "key-" + SECRET.decode()[:-1])


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"algorithms": ()}, ValueError, "at least one"),
        ({"algorithms": ("none",)}, ValueError, "'none'"),
        ({"algorithms": ("HS256", "None")}, ValueError, "'none'"),
        ({"algorithms": ("HS999",)}, ValueError, "unknown algorithm"),
        ({"algorithms": ("HS256", "RS256")}, ValueError, "mix HMAC"),
        ({"algorithms": "HS256"}, TypeError, "tuple of strings"),
        ({"key": b"too short", "algorithms": ("HS256",)}, ValueError, "too weak"),
        ({"key": SECRET, "algorithms": ("HS512",)}, ValueError, "too weak"),
        ({"leeway": -1}, ValueError, "leeway"),
        ({"leeway": float("nan")}, ValueError, "leeway"),
        ({"issuer": ""}, ValueError, "issuer"),
        ({"audience": ""}, ValueError, "audience"),
        ({"audience": []}, ValueError, "audience"),
        ({"require": "exp"}, TypeError, "tuple of strings"),
        ({"subject_claim": ""}, ValueError, "subject_claim"),
    ],
)
def test_jwt_verifier_config_checked(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Unsafe or wrong JWTVerifier settings are refused at construction, saying what to fix."""
    with pytest.raises(error, match=match):
        JWTVerifier(**{"key": SECRET, "algorithms": ("HS256",), **options})


def test_jwt_verifier_key_must_suit_algorithms(
    rsa_key: rsa.RSAPrivateKey, public_pem: bytes
) -> None:
    """A PEM key is refused as an HMAC secret, and a secret or wrong key type as an RSA or EC key."""
    with pytest.raises(ValueError, match="does not suit HS256"):
        JWTVerifier(key=public_pem, algorithms=("HS256",))
    with pytest.raises(ValueError, match="does not suit RS256"):
        JWTVerifier(key=SECRET, algorithms=("RS256",))
    with pytest.raises(ValueError, match="does not suit ES256"):
        JWTVerifier(key=rsa_key, algorithms=("RS256", "ES256"))
    with pytest.raises(ValueError, match="JWKS"):
        JWTVerifier(
            key=JWKSKeys("https://idp/jwks", fetch=FakeJWKS({}).fetch), algorithms=("HS256",)
        )
    JWTVerifier(key=public_pem, algorithms=("RS256", "PS256"))  # one RSA key serves both


# --- JWKSKeys ------------------------------------------------------------------------------


def jwk(key: rsa.RSAPrivateKey, kid: str | None, alg: str | None = "RS256") -> dict[str, Any]:
    """The public JWK of *key*, with a kid and alg when given."""
    data: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    data["use"] = "sig"
    if kid is not None:
        data["kid"] = kid
    if alg is not None:
        data["alg"] = alg
    return data


class FakeJWKS:
    """A fetch function that serves a JWKS document, counts calls and can fail or be slow."""

    def __init__(self, *keys: dict[str, Any], delay: float = 0, as_bytes: bool = False) -> None:
        self.keys = list(keys)
        self.delay = delay
        self.as_bytes = as_bytes
        self.fail = False
        self.calls = 0

    async def fetch(self, url: str) -> bytes | dict[str, Any]:
        self.calls += 1
        await trio.sleep(self.delay)
        if self.fail:
            raise OSError(f"connection refused by {url}")
        document = {"keys": self.keys}
        return json.dumps(document).encode() if self.as_bytes else document


def signed(key: rsa.RSAPrivateKey, kid: str | None = "k1", alg: str = "RS256", **extra: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**extra), key, algorithm=alg, headers=headers)


@pytest.mark.parametrize("as_bytes", [False, True])
async def test_jwks_fetched_once_and_cached(
    rsa_key: rsa.RSAPrivateKey, autojump_clock: trio.testing.MockClock, as_bytes: bool
) -> None:
    """Keys are fetched on first use (as a dict or JSON bytes) and served from the cache."""
    server = FakeJWKS(jwk(rsa_key, "k1"), as_bytes=as_bytes)
    keys = JWKSKeys("https://idp/jwks", fetch=server.fetch)
    verifier = JWTVerifier(key=keys, algorithms=("RS256",))
    for _ in range(3):
        assert (await verifier.verify(signed(rsa_key))).subject == "alice"
    assert server.calls == 1
    assert keys.statistics().fetches == 1
    assert keys.statistics().keys == 1


async def test_jwks_cache_expires(
    rsa_key: rsa.RSAPrivateKey, autojump_clock: trio.testing.MockClock
) -> None:
    """The cache is used for exactly cache_ttl seconds of trio time, then fetched again."""
    server = FakeJWKS(jwk(rsa_key, "k1"))
    keys = JWKSKeys("https://idp/jwks", fetch=server.fetch, cache_ttl=300)
    await keys.get_key("k1", "RS256")
    await trio.sleep(299.5)
    await keys.get_key("k1", "RS256")
    assert server.calls == 1
    await trio.sleep(0.5)
    await keys.get_key("k1", "RS256")
    assert server.calls == 2
    assert trio.current_time() == 300


async def test_jwks_unknown_kid_refetch_throttled(
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An unknown kid triggers a refetch at most once per min_refetch_interval, which also
    picks up a rotated key."""
    server = FakeJWKS(jwk(rsa_key, "k1"))
    keys = JWKSKeys("https://idp/jwks", fetch=server.fetch, min_refetch_interval=30)
    verifier = JWTVerifier(key=keys, algorithms=("RS256",))
    junk = signed(rsa_key, kid="junk")
    for _ in range(5):
        assert await refusal(verifier, junk) == "unknown key id"
        await trio.sleep(5)
    assert server.calls == 1  # t = 0 .. 20: the first fetch only
    await trio.sleep(10)  # t = 35
    assert await refusal(verifier, junk) == "unknown key id"
    assert await refusal(verifier, junk) == "unknown key id"
    assert server.calls == 2

    server.keys.append(jwk(other_rsa_key, "k2"))  # the issuer rotates
    rotated = signed(other_rsa_key, kid="k2")
    assert await refusal(verifier, rotated) == "unknown key id"  # t = 35: too soon
    await trio.sleep(30)
    assert (await verifier.verify(rotated)).subject == "alice"
    assert server.calls == 3


async def test_jwks_concurrent_callers_share_one_fetch(
    rsa_key: rsa.RSAPrivateKey, autojump_clock: trio.testing.MockClock
) -> None:
    """Callers arriving while a fetch runs wait for it and use its result, even with no
    refetch throttle."""
    server = FakeJWKS(jwk(rsa_key, "k1"), delay=2)
    keys = JWKSKeys("https://idp/jwks", fetch=server.fetch, min_refetch_interval=0)
    verifier = JWTVerifier(key=keys, algorithms=("RS256",))
    subjects: list[str] = []

    async def verify() -> None:
        subjects.append((await verifier.verify(signed(rsa_key))).subject)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(verify)
    assert subjects == ["alice"] * 10
    assert server.calls == 1
    assert trio.current_time() == 2


async def test_jwks_fetch_failure_keeps_stale_keys(
    rsa_key: rsa.RSAPrivateKey,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When a refetch fails the expired keys are still used, and the failure is logged with
    the URL but not the token."""
    server = FakeJWKS(jwk(rsa_key, "k1"))
    keys = JWKSKeys("https://idp/jwks", fetch=server.fetch, cache_ttl=60)
    verifier = JWTVerifier(key=keys, algorithms=("RS256",))
    token = signed(rsa_key)
    await verifier.verify(token)
    server.fail = True
    await trio.sleep(60)
    with caplog.at_level(logging.WARNING, logger="strands_trio.middleware.auth"):
        assert (await verifier.verify(token)).subject == "alice"
    assert server.calls == 2
    assert keys.statistics().failed_fetches == 1
    assert "https://idp/jwks" in caplog.text
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


async def test_jwks_fetch_failure_without_keys(
    rsa_key: rsa.RSAPrivateKey, autojump_clock: trio.testing.MockClock
) -> None:
    """With no keys ever fetched a failure refuses the token, and retries are throttled."""
    server = FakeJWKS(jwk(rsa_key, "k1"))
    server.fail = True
    keys = JWKSKeys("https://idp/jwks", fetch=server.fetch, min_refetch_interval=30)
    verifier = JWTVerifier(key=keys, algorithms=("RS256",))
    for _ in range(3):
        assert await refusal(verifier, signed(rsa_key)) == "cannot fetch signing keys"
    assert server.calls == 1
    server.fail = False
    await trio.sleep(30)
    assert (await verifier.verify(signed(rsa_key))).subject == "alice"
    assert server.calls == 2


@pytest.mark.parametrize(
    "document",
    [{"keys": []}, {"nokeys": 1}, {"keys": [{"kty": "XYZ"}]}, b"not json", b"[]"],
)
async def test_jwks_bad_documents_are_fetch_failures(
    document: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """A document without usable signing keys counts as a failed fetch."""

    async def fetch(url: str) -> Any:
        return document

    keys = JWKSKeys("https://idp/jwks", fetch=fetch)
    with pytest.raises(AuthError, match="cannot fetch signing keys"):
        await keys.get_key("k1", "RS256")
    assert keys.statistics() == keys.statistics().__class__(fetches=1, failed_fetches=1, keys=0)


async def test_jwks_key_selection(
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A key serves only its declared alg, a key without alg serves RS* and PS*, a token
    without kid needs exactly one candidate, and encryption keys are ignored."""
    declared = FakeJWKS(jwk(rsa_key, "k1", alg="RS256"))
    strict = JWTVerifier(key=JWKSKeys("u", fetch=declared.fetch), algorithms=("RS256", "PS256"))
    assert await refusal(strict, signed(rsa_key, alg="PS256")) == "algorithm not allowed"
    assert (await strict.verify(signed(rsa_key, kid=None))).subject == "alice"

    undeclared = FakeJWKS(jwk(rsa_key, "k1", alg=None))
    loose = JWTVerifier(key=JWKSKeys("u", fetch=undeclared.fetch), algorithms=("RS256", "PS256"))
    assert (await loose.verify(signed(rsa_key, alg="PS256"))).subject == "alice"
    assert (await loose.verify(signed(rsa_key, alg="RS256"))).subject == "alice"

    two = FakeJWKS(jwk(rsa_key, "k1"), jwk(other_rsa_key, "k2"))
    either = JWTVerifier(key=JWKSKeys("u", fetch=two.fetch), algorithms=("RS256",))
    assert await refusal(either, signed(rsa_key, kid=None)) == "missing key id"
    assert (await either.verify(signed(other_rsa_key, kid="k2"))).subject == "alice"
    assert await refusal(either, signed(other_rsa_key, kid="k1")) == "bad signature"

    encryption = {**jwk(rsa_key, "k1"), "use": "enc"}
    enc = FakeJWKS(encryption, jwk(other_rsa_key, "k2"))
    only_sig = JWTVerifier(key=JWKSKeys("u", fetch=enc.fetch), algorithms=("RS256",))
    assert await refusal(only_sig, signed(rsa_key, kid="k1")) == "unknown key id"


async def test_jwks_unusable_keys_skipped(
    rsa_key: rsa.RSAPrivateKey, autojump_clock: trio.testing.MockClock
) -> None:
    """Entries PyJWT cannot use are skipped and the usable keys still serve."""
    junk = [{"kty": "XYZ", "kid": "a"}, {"kty": "oct", "k": "AAAA", "alg": "none"}, "text", {}]
    server = FakeJWKS(*junk, jwk(rsa_key, "k1"))  # type: ignore[arg-type]
    keys = JWKSKeys("u", fetch=server.fetch)
    verifier = JWTVerifier(key=keys, algorithms=("RS256",))
    assert (await verifier.verify(signed(rsa_key))).subject == "alice"
    assert keys.statistics().keys == 1


async def test_jwks_cancelled_fetch_is_not_counted(
    rsa_key: rsa.RSAPrivateKey, autojump_clock: trio.testing.MockClock
) -> None:
    """A fetch cancelled half-way leaves nothing behind: the next caller fetches at once."""
    server = FakeJWKS(jwk(rsa_key, "k1"), delay=2)
    keys = JWKSKeys("u", fetch=server.fetch, min_refetch_interval=30)
    with trio.move_on_after(1):
        await keys.get_key("k1", "RS256")
    assert keys.statistics().fetches == 0
    await keys.get_key("k1", "RS256")
    assert server.calls == 2
    assert keys.statistics().fetches == 1
    assert trio.current_time() == 3


async def test_jwks_disallowed_alg_fetches_nothing(
    rsa_key: rsa.RSAPrivateKey, autojump_clock: trio.testing.MockClock
) -> None:
    """A token whose alg is not allowed is refused before any key lookup or fetch."""
    server = FakeJWKS(jwk(rsa_key, "k1"))
    verifier = JWTVerifier(key=JWKSKeys("u", fetch=server.fetch), algorithms=("RS256",))
    token = f"{segment({'alg': 'none', 'kid': 'k1'})}.{segment(claims())}."
    assert await refusal(verifier, token) == "algorithm not allowed"
    assert await refusal(verifier, hs256(claims())) == "algorithm not allowed"
    assert await refusal(verifier, "garbage") == "malformed token"
    assert server.calls == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"url": ""}, "url"),
        ({"cache_ttl": 0}, "cache_ttl"),
        ({"cache_ttl": float("inf")}, "cache_ttl"),
        ({"min_refetch_interval": -1}, "min_refetch_interval"),
    ],
)
def test_jwks_config_checked(options: dict[str, Any], match: str) -> None:
    """JWKSKeys refuses an empty URL and out-of-range times at construction."""
    with pytest.raises(ValueError, match=match):
        JWKSKeys(**{"url": "https://idp/jwks", **options})


async def test_jwks_default_fetch_over_http(
    rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default fetch gets the document over real HTTP with httpx running on trio, from a
    server on loopback."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    body = json.dumps({"keys": [jwk(rsa_key, "k1")]}).encode()
    requests: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some()
            if not chunk:
                return
            received += chunk
        requests.append(received)
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        await stream.send_all(head.encode() + body)
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            keys = JWKSKeys(f"http://127.0.0.1:{port}/.well-known/jwks.json")
            verifier = JWTVerifier(key=keys, algorithms=("RS256",))
            assert (await verifier.verify(signed(rsa_key))).subject == "alice"
            assert (await verifier.verify(signed(rsa_key))).subject == "alice"
            nursery.cancel_scope.cancel()
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # no asyncio loop: httpx did its I/O with trio
    assert len(requests) == 1
    assert requests[0].startswith(b"GET /.well-known/jwks.json HTTP/1.1\r\n")
    assert b"python-httpx/" in requests[0].lower()


# --- APIKeyVerifier and as_verifier --------------------------------------------------------


async def test_api_key_verifier() -> None:
    """A known key gives its identity (a subject string becomes one); others are refused."""
    admin = Identity(subject="ops", roles=("admin",))
    verifier = APIKeyVerifier(keys={"key-alice": "alice", "key-ops": admin})
    assert await verifier.verify("key-alice") == Identity(subject="alice")
    assert await verifier.verify("key-ops") is admin
    for wrong in ("key-alic", "key-alice ", "", "KEY-ALICE", "key-ops\u00e9"):
        assert await refusal(verifier, wrong) == "unknown API key"


async def test_api_key_compared_with_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every known key is compared with compare_digest, even after a match, without early exit."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    verifier = APIKeyVerifier(keys={f"key-{n}": f"user-{n}" for n in range(5)})
    monkeypatch.setattr(_credentials.hmac, "compare_digest", counting)
    assert (await verifier.verify("key-0")).subject == "user-0"
    assert len(calls) == 5
    assert all(len(a) == len(b) == 32 for a, b in calls)  # digests: the length does not leak


@pytest.mark.parametrize("keys", [{}, {"": "alice"}, {"k": ""}, [("k", "alice")]])
def test_api_key_config_checked(keys: Any) -> None:
    """An empty mapping, an empty key or an empty subject is refused at construction."""
    with pytest.raises(ValueError):  # noqa: PT011  # the messages differ by case
        APIKeyVerifier(keys=keys)


async def test_as_verifier() -> None:
    """as_verifier passes a verifier through and wraps an async function, checking both."""
    api = APIKeyVerifier(keys={"k": "alice"})
    assert as_verifier(api) is api

    async def check(token: str) -> Identity:
        if token != "open sesame":
            raise AuthError("wrong word")
        return Identity(subject="ali")

    wrapped = as_verifier(check)
    assert await wrapped.verify("open sesame") == Identity(subject="ali")
    assert await refusal(wrapped, "open barley") == "wrong word"

    async def broken(token: str) -> Any:
        return "alice"

    with pytest.raises(TypeError, match="not an Identity"):
        await as_verifier(broken).verify("x")
    for bad in (lambda token: Identity(subject="a"), "verify", object()):
        with pytest.raises(TypeError, match="expected a verifier"):
            as_verifier(bad)  # type: ignore[arg-type]
