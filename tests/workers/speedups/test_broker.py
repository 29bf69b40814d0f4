"""The worker's broker transport reuses one Redis client per channel."""

from __future__ import annotations

import redis
from kombu import Connection

from relay.settings import Settings
from workers.celery_app import make_celery
from workers.speedups import broker


def test_celery_uses_the_transport_for_redis_urls(redis_url: str) -> None:
    app = make_celery(Settings(redis_url=redis_url))
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, broker.Transport)
    other = make_celery(Settings(redis_url="sentinel://127.0.0.1:26379"))
    assert other.conf.broker_transport is None


def test_one_client_per_channel_renewed_with_its_pool(redis_url: str) -> None:
    with Connection(redis_url, transport=broker.Transport) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        with channel.conn_or_acquire() as client:
            assert client is first
            assert client.ping()
        channel._disconnect_pools()  # after a fork or a reconnect
        renewed = channel._create_client()
        assert renewed is not first
        assert renewed.connection_pool is channel.pool
        assert renewed.ping()


def test_messages_round_trip_through_the_transport(redis_url: str) -> None:
    with Connection(redis_url, transport=broker.Transport) as conn:
        queue = conn.SimpleQueue("relay.test.broker")
        for n in range(5):
            queue.put({"n": n})
        got = []
        for _ in range(5):
            message = queue.get(timeout=5)
            got.append(message.payload["n"])
            message.ack()
        assert got == [0, 1, 2, 3, 4]
        queue.close()
    client = redis.Redis.from_url(redis_url)
    assert client.llen("relay.test.broker") == 0
    assert client.hlen("unacked") == 0  # every ack went through the shared client
