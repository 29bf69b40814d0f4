"""The Redis client every relay process opens (web, CLI, scheduler, workers' records)."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from relay.settings import Settings


def redis_client(settings: Settings) -> redis.Redis:
    """A client that fails fast: intake answers 503 within seconds when Redis is away."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
    )
