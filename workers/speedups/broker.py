"""kombu's Redis transport, with one Redis client per channel instead of one per call.

kombu builds a fresh ``redis.Redis`` for every ack and every piece of unacked
bookkeeping (``Channel.conn_or_acquire``), and building one copies a table of some 200
response callbacks: a visible share of a worker's CPU under load (bench/README.md).
The client holds no
state of its own (connections come from the channel's pool), so one per channel, made
again whenever kombu replaces the pool (after a fork or a reconnect), does the same work.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

SCHEMES = ("redis", "rediss")  # the URLs kombu serves with its plain Redis transport


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel
