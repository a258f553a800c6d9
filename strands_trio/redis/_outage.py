"""``OutageLog``: an outage logged once when it starts and once when it ends, with its counts.

Theory of operation. What depends on Redis meets failures in a row while Redis is down: one per
call refused, per attempt to reconnect, per write lost. Logging each would fill the log with
one fact. Each owner (a :class:`~strands_trio.redis.LiveRedis`, the broker cluster's queue to
Redis, a presence or rate-limit store) keeps an :class:`OutageLog` instead, which makes two
lines of an outage, in the same words for every owner, *what* naming what is out:

- ``<what> is unavailable (<reason>); <meanwhile>`` at WARNING, at the first failure
  (:meth:`OutageLog.failed`); the failures after it, until the outage ends, at DEBUG;
- ``<what> is back after <seconds> s (<count> <counted> meanwhile)`` at INFO, when the owner
  sees it work again (:meth:`OutageLog.ended`), *count* being what the owner counted in it
  (:meth:`OutageLog.count`: calls refused, messages lost, changes deferred, ...).

It keeps no task and never sleeps: its owner says when things fail and work. Outages are timed
by Trio's clock, so it is used from within ``trio.run``.
"""

from __future__ import annotations

import logging

import attrs
import trio

__all__ = ["OutageLog", "OutageStatistics"]


@attrs.frozen(kw_only=True)
class OutageStatistics:
    """A snapshot of an :class:`OutageLog` (:meth:`OutageLog.statistics`).

    Attributes:
        on: Whether an outage is on now.
        outages: Outages begun (each logged once when it began).
        counted: What the owner counted during outages (refused, lost, deferred ...), in all.
    """

    on: bool
    outages: int
    counted: int


class OutageLog:
    """Logs each outage of *what* twice: when it starts and when it ends (see the module).

    Args:
        logger: Where the lines go.
        what: What is out, first in each line: ``"Redis at 127.0.0.1:6379/0"``,
            ``"node a: cross-node delivery"``.
        meanwhile: What the owner does until it is back, after the reason in the warning.
        counted: What :meth:`count` counts, as a plural noun phrase for the line at the end
            (``"calls refused"``); ``None`` leaves the count out of it.
    """

    __slots__ = (
        "_count",
        "_counted",
        "_logger",
        "_meanwhile",
        "_outages",
        "_since",
        "_total",
        "what",
    )

    def __init__(
        self, logger: logging.Logger, what: str, *, meanwhile: str, counted: str | None
    ) -> None:
        self._logger = logger
        #: What is out, as the lines say it.
        self.what = what
        self._meanwhile = meanwhile
        self._counted = counted
        self._since: float | None = None
        self._count = self._total = self._outages = 0

    def __repr__(self) -> str:
        return f"<OutageLog {self.what!r} {'on' if self.on else 'off'}>"

    @property
    def on(self) -> bool:
        """Whether an outage is on (begun by :meth:`failed`, not yet :meth:`ended`)."""
        return self._since is not None

    def failed(self, reason: object) -> bool:
        """A failure, for *reason* (an exception, or a few words): begins an outage and logs
        it at WARNING, unless one is on (then only at DEBUG). Returns whether it began one."""
        if self._since is not None:
            self._logger.debug("%s is still unavailable: %s", self.what, reason)
            return False
        self._since = trio.current_time()
        self._count = 0
        self._outages += 1
        self._logger.warning("%s is unavailable (%s); %s", self.what, reason, self._meanwhile)
        return True

    def count(self, n: int = 1) -> None:
        """*n* more operations refused (or lost, deferred ...) in the outage on; nothing if
        none is on."""
        if self._since is not None:
            self._count += n
            self._total += n

    def ended(self) -> None:
        """It works again: ends the outage on, logged at INFO with how long it lasted and
        what was counted in it (nothing if none is on)."""
        since = self._since
        if since is None:
            return
        self._since = None
        lasted = trio.current_time() - since
        if self._counted is None:
            self._logger.info("%s is back after %.2f s", self.what, lasted)
        else:
            self._logger.info(
                "%s is back after %.2f s (%d %s meanwhile)",
                self.what,
                lasted,
                self._count,
                self._counted,
            )

    def statistics(self) -> OutageStatistics:
        """The outages so far (see :class:`OutageStatistics`)."""
        return OutageStatistics(on=self.on, outages=self._outages, counted=self._total)
