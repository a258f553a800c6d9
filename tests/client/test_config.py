"""ClientConfig: validated at construction; reconnection delays grow, cap and jitter."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from strands_trio import ClientConfig, StrandsClient


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reconnect_delay", 0),
        ("reconnect_delay", -1.0),
        ("max_reconnect_delay", math.inf),
        ("reconnect_backoff", 0.5),
        ("reconnect_jitter", 1.5),
        ("heartbeat_interval", 0),
        ("dead_after_heartbeats", -2),
        ("max_concurrency", 0),
        ("max_pending_events", 1.5),
        ("max_pending_bytes", 0),
        ("max_outgoing_bytes", 0),
        ("max_line_length", -1),
        ("request_timeout", 0),
        ("shutdown_timeout", -1),
        ("max_threads", 0),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    """Each setting refuses nonsense at construction, naming the field: a ValueError, or a
    TypeError for a count that is not an integer."""
    with pytest.raises((ValueError, TypeError), match=field):
        ClientConfig(**{field: value})  # type: ignore[arg-type]


def test_client_refuses_a_config_of_the_wrong_type() -> None:
    """Passing a dict instead of a ClientConfig is a TypeError, not a later AttributeError."""
    with pytest.raises(TypeError, match="ClientConfig"):
        StrandsClient(config={"reconnect": False})  # type: ignore[arg-type]


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    """Without jitter: initial delay, times the backoff factor, capped."""
    config = ClientConfig(
        reconnect_delay=0.5, reconnect_backoff=3, max_reconnect_delay=10, reconnect_jitter=0
    )
    assert list(itertools.islice(config.reconnect_delays(), 6)) == [0.5, 1.5, 4.5, 10, 10, 10]


def test_jitter_stays_within_its_fraction() -> None:
    """With jitter j, each delay lies in [(1 - j) * d, d] and they are not all equal."""
    config = ClientConfig(
        reconnect_delay=1, reconnect_backoff=2, max_reconnect_delay=8, reconnect_jitter=0.25
    )
    exact = [1, 2, 4, 8, 8, 8, 8, 8]
    jittered = list(itertools.islice(config.reconnect_delays(random.Random(7)), len(exact)))
    for delay, ceiling in zip(jittered, exact, strict=True):
        assert 0.75 * ceiling <= delay <= ceiling
    assert jittered != exact


def test_silence_timeout() -> None:
    """A broker is dead after heartbeat_interval * dead_after_heartbeats; never if None."""
    assert ClientConfig().silence_timeout == 45
    assert ClientConfig(heartbeat_interval=2, dead_after_heartbeats=1.5).silence_timeout == 3
    assert ClientConfig(heartbeat_interval=None).silence_timeout == math.inf
