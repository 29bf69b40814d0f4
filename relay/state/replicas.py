"""Writes a caller is told are safe survive a failover: ``WAIT`` for replicas after them.

Redis replicates asynchronously: the primary answers a write before any replica has it,
and a replica promoted after the primary dies lacks whatever had not reached it yet. So
before intake answers 2xx (and before an operator is told a replay or a pause is done),
``RELAY_REDIS_MIN_REPLICAS`` replicas must confirm the write within
``RELAY_REDIS_REPLICA_TIMEOUT``; fewer is ``NotReplicated``, which every caller answers
with a 503. The write stays on the primary and reaches the replicas if it stays up; a
sender's resend of an event is then answered as a duplicate, which is correct either way.

``WAIT`` counts the replicas that acknowledged every write made on *its own connection*
so far (it cannot run inside a script or ``MULTI``), so it travels in one pipeline with
the write: one round trip, one connection. Replication offsets are global, so a write
that only counts (a resend's duplicate counter) also covers the earlier write it
answers for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from relay.settings import Settings
from relay.state.lua import ScriptCall


class NotReplicated(redis.RedisError):  # type: ignore[misc]  # redis is untyped here
    """The primary has the write, but fewer replicas than required confirmed it in time."""

    def __init__(self, confirmed: int, required: int, timeout: float) -> None:
        self.confirmed, self.required, self.timeout = confirmed, required, timeout
        super().__init__(
            f"{confirmed} of {required} required Redis replica(s) confirmed the write "
            f"within {timeout:g}s"
        )


@dataclass(frozen=True)
class Replicas:
    """How many replicas must confirm a promised write, and how long to wait for them."""

    required: int = 0
    timeout: float = 0.5

    @classmethod
    def of(cls, settings: Settings) -> Replicas:
        return cls(settings.redis_min_replicas, settings.redis_replica_timeout)

    def run(self, client: redis.Redis, call: ScriptCall) -> Any:
        """The script's reply, once enough replicas hold what it wrote.

        A script the server does not know (a promoted replica never loaded it) answers
        ``NOSCRIPT`` and did nothing; it is sent again in full, which loads it too."""
        if not self.required:
            return call.run()
        nkeys = len(call.keys)
        replies, confirmed = self._pipeline(
            client, lambda p: p.evalsha(call.script.sha, nkeys, *call.keys, *call.args)
        )
        if isinstance(replies[0], NoScriptError):
            replies, confirmed = self._pipeline(
                client, lambda p: p.eval(call.script.script, nkeys, *call.keys, *call.args)
            )
        self._check(replies, confirmed)
        return replies[0]

    def write(self, client: redis.Redis, steps: Callable[[Pipeline], object]) -> None:
        """Run the commands ``steps`` queues on a pipeline (their replies unused), then
        wait for the replicas as ``run`` does."""
        if not self.required:
            pipe = client.pipeline(transaction=False)
            steps(pipe)
            pipe.execute()
            return
        self._check(*self._pipeline(client, steps))

    def _pipeline(
        self, client: redis.Redis, steps: Callable[[Pipeline], object]
    ) -> tuple[list[Any], Any]:
        """The replies of ``steps`` and of the ``WAIT`` after them, errors included."""
        pipe = client.pipeline(transaction=False)
        steps(pipe)
        pipe.wait(self.required, max(1, round(self.timeout * 1000)))  # 0 would wait forever
        *replies, confirmed = pipe.execute(raise_on_error=False)
        return replies, confirmed

    def _check(self, replies: list[Any], confirmed: Any) -> None:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if isinstance(confirmed, Exception):  # WAIT sent to a replica, for one
            raise confirmed
        if confirmed < self.required:
            raise NotReplicated(confirmed, self.required, self.timeout)
