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


class OneClientPerChannel:
    """The client reuse, for the plain and the Sentinel channel alike (a Sentinel
    channel's pool stays the same object across a failover: its connections ask the
    Sentinels for the master whenever they reconnect)."""

    _sync_client: Any = None
    pool: Any

    def _create_client(self, asynchronous: bool = False) -> Any:
        make = super()._create_client  # type: ignore[misc]  # the kombu channel's
        if asynchronous:
            return make(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = make()
        return client


class Channel(OneClientPerChannel, kombu_redis.Channel):  # type: ignore[misc]
    pass


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


class SentinelChannel(OneClientPerChannel, kombu_redis.SentinelChannel):  # type: ignore[misc]
    pass


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = SentinelChannel
