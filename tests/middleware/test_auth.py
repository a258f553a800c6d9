"""The Auth middleware and the role guard: tokens checked at the connection request, the
identity carried in metadata to later events, roles on handlers, and no secret in any log."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import jwt
import pytest
import trio

from strands_trio import Context, StrandsApp, set_metadata
from strands_trio.middleware import (
    IDENTITY,
    ROLES,
    APIKeyVerifier,
    Auth,
    AuthError,
    Identity,
    JWTVerifier,
    RoleGuard,
    from_header,
    from_query,
    roles,
)
from strands_trio.testing import ConnectionRejected, MiddlewareHarness, open_fake_broker

SECRET = "a test secret that is long enough for HS256!"
VERIFIER = JWTVerifier(key=SECRET, algorithms=("HS256",), audience="chat", issuer="demo")


def token(**claims: Any) -> str:
    """A signed token for user ann, valid for a day, with *claims* overriding.

    A day, not a minute: parametrized cases build their tokens when the suite is collected,
    and the whole suite takes over a minute to reach them."""
    now = int(time.time())
    body = {"sub": "ann", "aud": "chat", "iss": "demo", "exp": now + 86_400, "roles": ["member"]}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, "HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def unsigned() -> str:
    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"sub": "ann", "aud": "chat", "iss": "demo", "exp": int(time.time()) + 86_400}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


async def test_valid_token_stores_the_identity() -> None:
    """A valid bearer JWT is accepted, and its identity is in the metadata the client gets
    and readable, typed, from the context."""
    harness = MiddlewareHarness([Auth(verifier=VERIFIER)])
    outcome = await harness.connection_request(headers=bearer(token()))
    assert outcome.accepted is True
    assert outcome.reached
    identity = outcome.ctx.get_state(IDENTITY)
    assert identity is not None
    assert (identity.subject, identity.roles) == ("ann", ("member",))
    assert outcome.request is not None
    assert outcome.request.context.metadata["identity"]["subject"] == "ann"


async def test_claims_stay_out_of_metadata_unless_asked() -> None:
    """By default only subject and roles ride in metadata; keep_claims=True keeps the claims."""
    lean = await MiddlewareHarness([Auth(verifier=VERIFIER)]).connection_request(
        headers=bearer(token())
    )
    assert lean.request is not None
    assert lean.request.context.metadata["identity"]["claims"] == {}
    full = await MiddlewareHarness([Auth(verifier=VERIFIER, keep_claims=True)]).connection_request(
        headers=bearer(token())
    )
    identity = full.ctx.get_state(IDENTITY)
    assert identity is not None
    assert identity.claims["aud"] == "chat"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "no credentials"),
        (bearer(token(exp=int(time.time()) - 5)), "token expired"),
        (bearer(token(nbf=int(time.time()) + 600)), "token not yet valid"),
        (bearer(token(aud="other")), "wrong audience"),
        (bearer(token(iss="evil")), "wrong issuer"),
        (bearer(token()[:-4] + "AAAA"), "bad signature"),
        (bearer(unsigned()), "algorithm not allowed"),
        (bearer("not.a.jwt"), "malformed token"),
        ({"Authorization": "Basic abc"}, "no credentials"),
    ],
)
async def test_bad_credentials_are_rejected(
    headers: dict[str, str], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Missing, expired, premature, misaddressed, tampered and unsigned tokens are rejected
    before the handler, with code 401 and the reason for the client; the log gives the reason
    and never the token."""
    caplog.set_level(logging.DEBUG)
    auth = Auth(verifier=VERIFIER)
    harness = MiddlewareHarness([auth])
    outcome = await harness.connection_request(headers=headers, remote_addr="10.1.2.3:5")
    assert (outcome.accepted, outcome.reached) == (False, False)
    assert outcome.request is not None
    assert (outcome.request.code, outcome.request.reason) == (401, reason)
    assert f"rejected 10.1.2.3:5: {reason}" in caplog.text
    for value in headers.values():
        assert value.split()[-1] not in caplog.text
    assert SECRET not in caplog.text
    stats = auth.statistics()
    assert stats.missing + stats.refused == 1


async def test_anonymous_allows_no_token_but_not_a_bad_one() -> None:
    """With anonymous=True a request without a token is accepted without an identity; an
    invalid token is still rejected."""
    harness = MiddlewareHarness([Auth(verifier=VERIFIER, anonymous=True)])
    outcome = await harness.connection_request()
    assert outcome.accepted is True
    assert outcome.ctx.get_state(IDENTITY) is None
    assert (await harness.connection_request(headers=bearer("junk"))).accepted is False
    assert (await harness.message("hi")).reached  # anonymous connections may talk


async def test_api_key_and_custom_verifier() -> None:
    """An API key from a header without a scheme, and a user's async function, both work."""
    api = Auth(
        verifier=APIKeyVerifier(keys={"k-123": "bot"}), source=from_header("X-Api-Key", None)
    )
    harness = MiddlewareHarness([api])
    assert (await harness.connection_request(headers={"X-Api-Key": "k-123"})).accepted is True
    assert (await harness.connection_request(headers={"X-Api-Key": "k-999"})).accepted is False

    async def verify(value: str) -> Identity:
        await trio.lowlevel.checkpoint()
        if value != "open sesame":
            raise AuthError("wrong word")
        return Identity(subject="ali", roles=("admin",))

    custom = MiddlewareHarness([Auth(verifier=verify, source=from_query("token"))])
    outcome = await custom.connection_request("/ws/x?token=open+sesame")
    assert outcome.accepted is True
    assert outcome.ctx.get_state(IDENTITY) == Identity(subject="ali", roles=("admin",))
    assert (await custom.connection_request("/ws/x?token=nope")).accepted is False


async def test_messages_need_an_identity() -> None:
    """Later events pass on the identity in metadata; a message from a connection without
    one is dropped with an unauthenticated error frame."""
    auth = Auth(verifier=VERIFIER)
    harness = MiddlewareHarness([auth])
    identity = Identity(subject="ann").to_json()
    assert (await harness.message("hi", metadata={"identity": identity})).reached
    assert not (await harness.message("hi", client_id="eve")).reached
    ((to, frame),) = harness.sent
    assert to == "eve"
    assert json.loads(frame)["code"] == "unauthenticated"
    assert (await harness.disconnect("eve")).reached  # other events pass
    assert auth.statistics().unauthenticated == 1


async def test_roles_guard_a_handler() -> None:
    """@roles lets through only identities with one of the roles, and sends the others a
    forbidden error frame; handlers without @roles are open to all."""

    @roles("admin", "moderator")
    async def on_message(message: str, context: Context) -> None: ...

    harness = MiddlewareHarness([Auth(verifier=VERIFIER)], handlers={"on_message": on_message})
    member = {"identity": Identity(subject="ann", roles=("member",)).to_json()}
    moderator = {"identity": Identity(subject="bob", roles=("moderator",)).to_json()}
    assert not (await harness.message("close", metadata=member)).reached
    assert (await harness.message("close", metadata=moderator)).reached
    assert json.loads(harness.sent[0][1])["code"] == "forbidden"
    assert (await harness.new_connection(metadata=member)).reached
    with pytest.raises(ValueError, match="one or more role names"):
        roles()


async def test_role_guard_reads_the_class_and_refuses_bad_metadata() -> None:
    """RoleGuard reads @roles from the handler's class too, and refuses an identity it
    cannot read."""

    @set_metadata(ROLES, ("admin",))
    class Admin:
        async def on_message(self, message: str, context: Context) -> None: ...

    harness = MiddlewareHarness(guards=[RoleGuard()], handlers={"on_message": Admin().on_message})
    admin = {"identity": Identity(subject="root", roles=("admin",)).to_json()}
    assert (await harness.message("x", metadata=admin)).reached
    assert not (await harness.message("x", metadata={"identity": {"roles": 5}})).reached


async def test_chat_end_to_end(caplog: pytest.LogCaptureFixture) -> None:
    """Through an app and a broker: a token in the query string admits a client, its identity
    reaches the handler in metadata, an admin-only route refuses a member, and the token
    appears in no log record."""
    caplog.set_level(logging.DEBUG)
    app = StrandsApp(middleware=[Auth(verifier=VERIFIER, source=from_query("token"))])

    @app.on_message
    async def say(message: str, context: Context) -> None:
        identity = IDENTITY.get(context)
        assert identity is not None
        await app.send_room_message(context.room_id, f"{identity.subject}: {message}")

    @roles("admin")
    @app.on_message("kick")
    async def kick(payload: dict[str, Any], context: Context) -> None:
        await app.send_room_message(context.room_id, "kicked")

    ann = token()
    # As strands-trio's broker with its defaults: the query travels in the ``query`` field.
    async with (
        open_fake_broker(reference=False, heartbeat_interval=None) as broker,
        app.connected(connect=broker.open_backend_stream),
    ):
        with pytest.raises(ConnectionRejected) as refused:
            await broker.connect("/ws/chat?token=forged")
        assert (refused.value.close_code, str(refused.value)) == (4401, "malformed token")
        ws = await broker.connect(f"/ws/chat?token={ann}")
        await ws.send("hello")
        assert await ws.receive() == "ann: hello"
        await ws.send('{"type": "kick"}')
        assert json.loads(await ws.receive())["code"] == "forbidden"
    assert ann not in caplog.text
    assert SECRET not in caplog.text
