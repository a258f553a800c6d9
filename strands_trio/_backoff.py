"""Delays between attempts to connect again: one policy for every link that reconnects (the
client to its broker, a process to Redis)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

import attrs
from attrs import validators as v

from ._validators import JITTER, POSITIVE

__all__ = ["Backoff"]


@attrs.frozen(kw_only=True)
class Backoff:
    """Delays between attempts to connect again: exponential, capped, jittered.

    Attributes:
        first: The first delay, in seconds.
        maximum: The longest delay.
        factor: How much each failed attempt multiplies the delay by (at least 1).
        jitter: Each delay is multiplied by a random factor in ``[1 - jitter, 1]``, so that
            many processes that lost their peer together do not come back in step; ``0``
            makes the delays exact.

    Raises:
        ValueError: a delay is not positive, *factor* is below 1, or *jitter* not in [0, 1).
    """

    first: float = attrs.field(default=0.05, validator=POSITIVE)
    maximum: float = attrs.field(default=5.0, validator=POSITIVE)
    factor: float = attrs.field(default=2.0, validator=[v.ge(1.0), v.lt(math.inf)])
    jitter: float = attrs.field(default=0.1, validator=JITTER)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The successive delays, starting over from :attr:`first` for a new iterator."""
        uniform = (rng or random).uniform
        delay, jitter = self.first, self.jitter
        while True:
            capped = min(delay, self.maximum)
            yield capped * uniform(1 - jitter, 1) if jitter else capped
            delay = capped * self.factor
