"""The one shape of the built-in middleware: each is made from its arguments, keeps them as a
frozen, validated config record, holds its own counters in slots and reports them from
statistics(); attrs.evolve on a config and from_config make another middleware that counts
on its own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
from prometheus_client import CollectorRegistry

from strands_trio import MetadataKey
from strands_trio.middleware import (
    APIKeyVerifier,
    Auth,
    AuthConfig,
    Identity,
    Logging,
    LoggingConfig,
    MemoryPresence,
    MemoryStore,
    Metrics,
    MetricsConfig,
    Presence,
    PresenceConfig,
    Rate,
    RateLimit,
    RateLimitConfig,
    Timeout,
    TimeoutConfig,
    by_identity,
    by_room,
    from_header,
    from_query,
)
from strands_trio.testing import MiddlewareHarness

VERIFIER = APIKeyVerifier(keys={"k-1": "ann"})
RATE = Rate(burst=1, per_second=1)

#: Each middleware made from non-default arguments, and its config class.
MAKERS: dict[str, tuple[Callable[[], Any], type[Any]]] = {
    "Auth": (lambda: Auth(verifier=VERIFIER, source=from_query("t"), anonymous=True), AuthConfig),
    "RateLimit": (lambda: RateLimit(messages=RATE, message_key=by_room), RateLimitConfig),
    "Presence": (lambda: Presence(fields={"user": by_identity}, heal=False), PresenceConfig),
    "Logging": (lambda: Logging("shape.test", level=logging.DEBUG), LoggingConfig),
    "Timeout": (lambda: Timeout(2.5), TimeoutConfig),
    "Metrics": (lambda: Metrics(CollectorRegistry(), namespace="shape"), MetricsConfig),
}


@pytest.mark.parametrize("name", MAKERS)
def test_every_middleware_has_the_same_shape(name: str) -> None:
    """Every built-in middleware is a slotted object with a frozen config record of its own
    class, a frozen statistics() record, a repr that shows the config, and from_config."""
    make, config_class = MAKERS[name]
    middleware = make()
    assert type(middleware).__name__ == name
    assert not hasattr(middleware, "__dict__")  # slotted: no stray attributes
    assert type(middleware.config) is config_class
    assert attrs.has(config_class)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        middleware.config.x = 1
    stats = middleware.statistics()
    assert attrs.has(type(stats))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(stats, attrs.fields(type(stats))[0].name, 99)
    assert repr(middleware) == f"<{name} {middleware.config!r}>"
    again = type(middleware).from_config(middleware.config)
    assert again.config is middleware.config
    assert again.statistics() == stats
    with pytest.raises(TypeError, match=f"config must be an? {config_class.__name__}"):
        type(middleware).from_config(object())


def test_the_arguments_are_kept_in_the_config() -> None:
    """The constructor's arguments land in the config, and the attributes users read are
    read-only views of it."""
    auth = Auth(verifier=VERIFIER, anonymous=True, keep_claims=True)
    assert auth.config == AuthConfig(verifier=VERIFIER, anonymous=True, keep_claims=True)
    assert (auth.verifier, auth.anonymous, auth.keep_claims) == (VERIFIER, True, True)
    assert auth.source is auth.config.source
    assert auth.key is auth.config.key
    with pytest.raises(AttributeError):
        auth.anonymous = False  # type: ignore[misc]

    limit = RateLimit(connections=RATE, on_message_limit="drop")
    assert (limit.messages, limit.connections, limit.on_message_limit) == (None, RATE, "drop")
    assert limit.config.store is None  # no store given: the middleware's own
    assert isinstance(limit.store, MemoryStore)

    store = MemoryPresence()
    presence = Presence(store=store, fields={"room": by_room})
    assert presence.store is store
    assert dict(presence.fields) == {"room": by_room}
    assert presence.heal is True


async def test_evolve_makes_a_new_config_and_from_config_fresh_counters() -> None:
    """attrs.evolve on a config gives a new config and leaves the old one alone; a middleware
    made from it starts at zero while the first keeps its counts, and without a store in the
    config each has buckets of its own."""
    first = RateLimit(messages=RATE)
    harness = MiddlewareHarness([first])
    with trio.fail_after(5):
        assert (await harness.message("x", client_id="ann")).reached
        assert not (await harness.message("x", client_id="ann")).reached

    config = attrs.evolve(first.config, on_message_limit="drop")
    assert config is not first.config
    assert (config.on_message_limit, first.config.on_message_limit) == ("drop", "error")
    assert config.messages is first.config.messages
    second = RateLimit.from_config(config)
    assert (second.statistics().allowed, second.statistics().messages_limited) == (0, 0)
    assert second.store is not first.store
    with trio.fail_after(5):
        assert (await MiddlewareHarness([second]).message("x", client_id="ann")).reached
    assert (first.statistics().allowed, first.statistics().messages_limited) == (1, 1)
    assert (second.statistics().allowed, second.statistics().messages_limited) == (1, 0)


async def test_a_store_named_in_the_config_stays_shared() -> None:
    """A store given in the config (a shared one, such as Redis) is the same store for every
    middleware made from that config; only the counters are the middleware's own."""
    store = MemoryPresence(instance_id="here")
    first = Presence(store=store)
    second = Presence.from_config(attrs.evolve(first.config, heal=False))
    with trio.fail_after(5):
        await MiddlewareHarness([first]).new_connection("ann", room_id="lobby")
        assert [m.client_id for m in await second.members("lobby")] == ["ann"]
    assert (first.statistics().joined, second.statistics().joined) == (1, 0)
    assert second.store is first.store


async def test_auth_counters_are_per_middleware() -> None:
    """Two Auth made from one config count their own requests."""
    first = Auth(verifier=VERIFIER)
    second = Auth.from_config(first.config)
    with trio.fail_after(5):
        await MiddlewareHarness([first]).connection_request(headers={"Authorization": "Bearer k-1"})
        await MiddlewareHarness([second]).connection_request()
    assert (first.statistics().verified, first.statistics().missing) == (1, 0)
    assert (second.statistics().verified, second.statistics().missing) == (0, 1)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: AuthConfig(verifier=42), TypeError, "expected a verifier"),
        (lambda: AuthConfig(verifier=VERIFIER, source="token"), TypeError, "'source' must be"),
        (lambda: AuthConfig(verifier=VERIFIER, anonymous="yes"), TypeError, "'anonymous' must"),
        (lambda: AuthConfig(verifier=VERIFIER, keep_claims=1), TypeError, "'keep_claims' must"),
        (lambda: AuthConfig(verifier=VERIFIER, key="identity"), TypeError, "'key' must be"),
        (lambda: RateLimitConfig(), ValueError, "needs messages=Rate"),
        (lambda: RateLimitConfig(messages=RATE, store=object()), TypeError, "'store' must be"),
        (lambda: RateLimitConfig(messages=RATE, connection_key=1), TypeError, "'connection_key'"),
        (lambda: PresenceConfig(heal=1), TypeError, "'heal' must be"),
        (lambda: PresenceConfig(store=MemoryStore()), TypeError, "'store' must be"),
        (lambda: PresenceConfig(fields={"": by_room}), ValueError, "non-empty"),
        (lambda: TimeoutConfig(seconds=0), ValueError, "'seconds' must be > 0.0"),
        (lambda: LoggingConfig(level=0), ValueError, "'level' must be > 0"),
        (lambda: MetricsConfig(namespace="a-b"), ValueError, "'namespace' must match"),
    ],
)
def test_a_config_refuses_bad_values(
    make: Callable[[], Any], error: type[Exception], message: str
) -> None:
    """A config record checks its values when made, as the middleware does, and the message
    names the field."""
    with pytest.raises(error) as caught:
        make()
    assert message in str(caught.value.args[0])


def test_evolve_checks_the_new_values() -> None:
    """attrs.evolve runs the validators again: a config cannot be evolved into a bad one."""
    config = Auth(verifier=VERIFIER).config
    with pytest.raises(TypeError, match="'anonymous' must be"):
        attrs.evolve(config, anonymous="no")
    with pytest.raises(ValueError, match="needs messages=Rate"):
        attrs.evolve(RateLimit(messages=RATE).config, messages=None)
    key = MetadataKey("who", Identity)
    assert attrs.evolve(config, key=key).key is key


def test_presence_fields_are_a_read_only_copy() -> None:
    """The fields mapping in a config is a copy the caller's dict cannot change, and evolving
    the config keeps it."""
    fields: dict[str, Any] = {"room": by_room}
    config = PresenceConfig(fields=fields)
    fields["user"] = by_identity
    assert dict(config.fields) == {"room": by_room}
    with pytest.raises(TypeError):
        config.fields["user"] = by_identity  # type: ignore[index]
    assert attrs.evolve(config, heal=False).fields == config.fields


class _Plain:
    """A middleware's ``__call__`` alone: hides its ``wrap_next``, so the pipeline calls it."""

    def __init__(self, middleware: Any) -> None:
        self.middleware = middleware

    async def __call__(self, ctx: Any, call_next: Any) -> None:
        await self.middleware(ctx, call_next)


async def _scenario(middleware: Any, plain: bool) -> list[Any]:
    """The same events through one middleware: what reached the handler, what was sent."""
    harness = MiddlewareHarness([_Plain(middleware) if plain else middleware])
    seen: list[Any] = []
    identity = {"identity": {"subject": "ann", "roles": [], "claims": {}}}
    seen.append((await harness.connection_request(headers={"X-Api-Key": "k-1"})).accepted)
    seen.append((await harness.connection_request(headers={"X-Api-Key": "bad"})).accepted)
    seen.append((await harness.connection_request()).accepted)
    for n in range(4):
        seen.append((await harness.message(f"m{n}", metadata=identity)).reached)
    seen.append((await harness.message("anonymous")).reached)
    seen.append((await harness.new_connection(metadata=identity)).reached)
    seen.append((await harness.disconnect()).reached)
    seen.append(list(harness.sent))
    seen.append(middleware.statistics())
    return seen


@pytest.mark.parametrize(
    "make",
    [
        lambda: Logging("test.fast", level=logging.DEBUG),
        lambda: Logging("test.fast.off", level=logging.DEBUG),
        lambda: Auth(
            verifier=APIKeyVerifier(keys={"k-1": "ann"}), source=from_header("X-Api-Key", None)
        ),
        lambda: Auth(
            verifier=APIKeyVerifier(keys={"k-1": "ann"}),
            source=from_header("X-Api-Key", None),
            anonymous=True,
        ),
        lambda: RateLimit(
            messages=Rate(burst=2, per_second=1), connections=Rate(burst=2, per_second=1)
        ),
        lambda: RateLimit(connections=Rate(burst=1, per_second=1)),
    ],
    ids=["logging-on", "logging-off", "auth", "auth-anonymous", "ratelimit", "ratelimit-conn"],
)
async def test_the_fast_step_does_what_the_middleware_does(
    make: Callable[[], Any], autojump_clock: trio.abc.Clock
) -> None:
    """A built-in middleware's wrap_next step (its fast path in a pipeline) and its __call__
    give the same outcomes, the same frames sent and the same counts, event for event."""
    logging.getLogger("test.fast.off").setLevel(logging.WARNING)
    logging.getLogger("test.fast").setLevel(logging.DEBUG)
    fast = await _scenario(make(), plain=False)
    slow = await _scenario(make(), plain=True)
    assert fast == slow
