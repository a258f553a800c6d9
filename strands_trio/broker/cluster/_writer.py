"""The cluster node's one road to Redis: an ordered queue of commands, and the task that sends
what has accumulated in it as pipelines, with the cluster's Lua scripts called by SHA1.

Theory of operation. Everything a node writes to Redis (registrations, publications, presence
queries, renewals) is queued here without waiting (:meth:`Writer.write`,
:meth:`Writer.publish`), so the hub never waits for Redis. One task, :meth:`Writer.serve`,
takes up to ``_BATCH`` commands from the head of the queue, sends them as one pipeline
(``LiveRedis.execute_many``), waits for their replies, hands each to its callback, and only
then takes the next batch: at most one pipeline is in flight, and commands reach Redis in the
queue's order (a client's join before its leave, a re-registration after the joins and leaves
before it). Two exceptions to the FIFO order, both chosen by the caller: a renewal of the
node's ``alive`` key is put at the head (``first=True``: stuck behind a long queue of
publications, it could let the node be taken for dead), and publications beyond
``max_queued`` waiting are dropped (counted as lost: the queue is bounded).

At most once. A publication that fails (Redis unreachable, the connection lost with it in
flight, an error reply) or is dropped is *lost*: counted (``lost``) and logged once per
outage (an :class:`~strands_trio.redis.OutageLog` of cross-node delivery), with the count
when a pipeline goes through again. Nothing is retried, except below.

Scripts by SHA1, and why the order holds. The cluster's scripts (``_scripts.py``) are called
with ``EVALSHA``: 40 bytes per call instead of the script's source. Redis answers ``NOSCRIPT``
to an ``EVALSHA`` whose script is not in its cache, and retrying that command later would
move it behind the commands that followed it in its pipeline, which did run. So the writer
makes ``NOSCRIPT`` impossible in practice: Redis loses its script cache only when it restarts
(or fails over to a replica), and then the connection breaks; a new connection is a new
``LiveRedis.statistics().connects``. The first pipeline sent on each connection starts with a
``SCRIPT LOAD`` of every script, and Redis runs one connection's commands in order, so every
``EVALSHA`` on that connection comes after the loads. The connection number is read and the
pipeline handed over without a checkpoint in between, so the pipeline goes to the connection
whose number was read; a pipeline that fails to go through makes the next one load again.

What remains is ``SCRIPT FLUSH`` run by someone while the node runs. Then the ``EVALSHA``\\ s
after the flush fail with ``NOSCRIPT`` (they did not run) while the plain commands among them
(``PUBLISH`` of room messages and broadcasts, ``PING``) did. The writer loads the scripts
again and sends the failed commands once more with ``EVAL`` (which cannot answer
``NOSCRIPT``), in their order, before the replies of the pipeline are handed out, so a caller
waiting for a later command still sees every earlier one done; it counts them
(``script_retries``) and logs a warning. The scripts keep their order among themselves (the
registry writes are all scripts, so the registry stays right); only their order relative to
the plain publications of the same pipeline can change, once, for that flush.

Cancellation: :meth:`Writer.serve` runs until cancelled; a command queued and not sent then
is never sent. A caller of :meth:`Writer.call` that is cancelled leaves its command queued:
it is still sent, and its reply dropped.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn, TypeAlias

import attrs
import trio

from ...redis import Arg, LiveRedis, OutageLog, RedisError, RedisReplyError, Script

__all__ = ["Command", "OnReply", "Writer", "WriterStatistics"]

logger = logging.getLogger("strands_trio.broker.cluster")

#: Commands sent in one pipeline at most.
_BATCH: Final = 1024
#: Publications waiting beyond which new ones are dropped (counted as lost).
MAX_QUEUED: Final = 50_000

Command: TypeAlias = tuple[Arg, ...]
#: Called with a command's reply, or the exception (``RedisError``) that stands for it.
OnReply: TypeAlias = Callable[[Any], None]


@attrs.frozen(kw_only=True)
class WriterStatistics:
    """The writer's figures (:meth:`Writer.statistics`).

    Attributes:
        queued: Commands waiting to be sent now.
        pipelines: Pipelines that reached Redis.
        lost: Publications lost: dropped (the queue full), or failed (Redis unreachable, the
            connection lost, an error reply).
        script_loads: Times the scripts were loaded (once per connection to Redis).
        script_retries: Script calls sent again with ``EVAL`` after a ``NOSCRIPT`` (someone
            ran ``SCRIPT FLUSH``).
    """

    queued: int
    pipelines: int
    lost: int
    script_loads: int
    script_retries: int


class Writer:
    """The ordered queue of commands for Redis, and its task (see the module's theory of
    operation).

    Args:
        node_id: This node's id, for log lines.
        scripts: The scripts the commands call by SHA1 (loaded on each connection).
        max_queued: Commands waiting beyond which publications are dropped.
    """

    def __init__(
        self, node_id: str, scripts: Sequence[Script], *, max_queued: int = MAX_QUEUED
    ) -> None:
        self._node_id = node_id
        self._max_queued = max_queued
        #: (command, callback, whether it publishes: its failure is a loss).
        self._queue: collections.deque[tuple[Command, OnReply | None, bool]] = collections.deque()
        self._wake = trio.Event()
        self._written = trio.lowlevel.ParkingLot()
        self._sources: dict[Arg, str] = {script.sha1: script.source for script in scripts}
        self._loads: list[Command] = [("SCRIPT", "LOAD", script.source) for script in scripts]
        #: The connection (``connects``) the scripts were loaded on, ``None`` if unsure.
        self._loaded_for: int | None = None
        self._pipelines = self._lost = self._script_loads = self._script_retries = 0
        self._outage = OutageLog(
            logger,
            f"node {node_id}: cross-node delivery",
            meanwhile="messages for other nodes are counted as lost until it is back (at most "
            "once)",
            counted="messages lost",
        )

    # ------------------------------------------------------------------ queueing

    def write(self, command: Command, on_reply: OnReply | None, *, first: bool = False) -> None:
        """Queue *command* (never dropped); *on_reply* gets its reply or the exception.
        *first* puts it before everything queued, for what keeps no order with the rest."""
        if first:
            self._queue.appendleft((command, on_reply, False))
        else:
            self._queue.append((command, on_reply, False))
        self._wake.set()

    def publish(self, command: Command, on_published: OnReply) -> None:
        """Queue *command*, which publishes: dropped and counted as lost if the queue is full;
        if it fails, counted as lost; *on_published* gets its reply when it went through."""
        if len(self._queue) >= self._max_queued:
            self._count_lost(1, "the queue to Redis is full")
            return
        self._queue.append((command, on_published, True))
        self._wake.set()

    async def call(self, command: Command, *, first: bool = False) -> Any:
        """Queue *command* behind what is queued (before it, if *first*) and return its
        reply.

        Raises:
            RedisError: it failed (Redis unreachable, connection lost, error reply).
        """
        done = trio.Event()
        result: list[Any] = []

        def on_reply(reply: Any) -> None:
            result.append(reply)
            done.set()

        self.write(command, on_reply, first=first)
        await done.wait()
        reply = result[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def wait_written(self) -> None:
        """Return once the next pipeline has been answered (or has failed)."""
        await self._written.park()

    @property
    def queued(self) -> int:
        """Commands waiting to be sent."""
        return len(self._queue)

    # ------------------------------------------------------------------ the task

    async def serve(self, redis: LiveRedis) -> NoReturn:
        """Send the queue to *redis*, in order, until cancelled."""
        queue = self._queue
        while True:
            if not queue:
                self._wake = trio.Event()
                await self._wake.wait()
            batch = [queue.popleft() for _ in range(min(len(queue), _BATCH))]
            replies = await self._execute(redis, [command for command, _, _ in batch])
            for (_, on_reply, publishes), reply in zip(batch, replies, strict=True):
                if publishes and isinstance(reply, BaseException):
                    self._failed(reply)
                elif on_reply is not None:
                    on_reply(reply)
            self._written.unpark_all()
            await trio.lowlevel.checkpoint()

    async def _execute(self, redis: LiveRedis, commands: list[Command]) -> list[Any]:
        """One pipeline: the scripts loaded first on a new connection, ``NOSCRIPT``\\ s sent
        again; a reply (or an exception) per command, in order."""
        connection = redis.statistics().connects
        loads = self._loads if connection != self._loaded_for else []
        try:  # no checkpoint since `connection` was read: it is the connection used
            replies = await redis.execute_many([*loads, *commands])
        except RedisError as exc:
            self._loaded_for = None
            return [exc] * len(commands)
        self._pipelines += 1
        self._outage.ended()
        if loads:
            self._loaded(connection, replies[: len(loads)])
            replies = replies[len(loads) :]
        forgotten = [
            i
            for i, reply in enumerate(replies)
            if isinstance(reply, RedisReplyError) and self._is_forgotten(commands[i], reply)
        ]
        if forgotten:
            await self._retry(redis, commands, replies, forgotten)
        return replies

    def _is_forgotten(self, command: Command, reply: RedisReplyError) -> bool:
        return reply.code == "NOSCRIPT" and command[0] == "EVALSHA" and command[1] in self._sources

    def _loaded(self, connection: int, replies: list[Any]) -> None:
        self._script_loads += 1
        self._loaded_for = connection
        for reply in replies:
            if isinstance(reply, BaseException):
                logger.error(
                    "node %s: a cluster script could not be loaded: %s", self._node_id, reply
                )

    async def _retry(
        self, redis: LiveRedis, commands: list[Command], replies: list[Any], forgotten: list[int]
    ) -> None:
        """Load the scripts again and send the commands at *forgotten* with ``EVAL``, in
        order; their replies replace the ``NOSCRIPT``\\ s in *replies*."""
        self._script_retries += len(forgotten)
        logger.warning(
            "node %s: Redis had forgotten the cluster's scripts (SCRIPT FLUSH?): loading them "
            "again and sending %d call(s) again with EVAL",
            self._node_id,
            len(forgotten),
        )
        evals = []
        for i in forgotten:
            _, sha1, *rest = commands[i]
            evals.append(("EVAL", self._sources[sha1], *rest))
        loads = self._loads
        connection = redis.statistics().connects
        try:
            again = await redis.execute_many([*loads, *evals])
        except RedisError as exc:
            self._loaded_for = None
            again = [exc] * (len(loads) + len(evals))
        else:
            self._loaded(connection, again[: len(loads)])
        for i, reply in zip(forgotten, again[len(loads) :], strict=True):
            replies[i] = reply

    # ------------------------------------------------------------------ losses

    def _failed(self, reply: BaseException) -> None:
        if isinstance(reply, RedisReplyError):
            logger.error("node %s: publishing to the cluster failed: %s", self._node_id, reply)
            self._count_lost(1, str(reply))
        else:
            self._count_lost(1, "Redis is unavailable")

    def _count_lost(self, count: int, why: str) -> None:
        self._lost += count
        outage = self._outage
        if not outage.on:
            outage.failed(why)
        outage.count(count)

    # ------------------------------------------------------------------ figures

    def statistics(self) -> WriterStatistics:
        """The writer's figures now."""
        return WriterStatistics(
            queued=len(self._queue),
            pipelines=self._pipelines,
            lost=self._lost,
            script_loads=self._script_loads,
            script_retries=self._script_retries,
        )
