"""What a running relay process holds: settings, config, Redis, and the built sources."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from relay import keys
from relay.config import RelayConfig, load_config
from relay.errors import TooManyRequests, Unavailable
from relay.queue import Queue
from relay.ratelimit import SlidingWindows
from relay.settings import Settings
from relay.sources.base import Source
from relay.store import Store


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


@dataclass
class Runtime:
    settings: Settings
    config: RelayConfig
    redis: redis.Redis
    queue: Queue = field(init=False)
    store: Store = field(init=False)
    sources: dict[str, Source] = field(init=False)
    windows: SlidingWindows = field(init=False)

    def __post_init__(self) -> None:
        from relay.registry import source_kinds

        self.queue = Queue(
            self.redis, lease=self.settings.visibility_timeout, retention=self.settings.retention
        )
        self.store = Store(self.redis, retention=self.settings.retention)
        kinds = source_kinds()
        self.sources = {sid: kinds[sc.kind](sc) for sid, sc in self.config.sources.items()}
        self.windows = SlidingWindows(self.redis)

    def inbound_limit(self, source_id: str) -> None:
        """Take a slot of the source's inbound rate limit, or refuse with 429.

        Checked after verification, so only authentic requests spend the budget: a
        flood of forged requests is refused (401) without locking out the platform."""
        rates = self.config.sources[source_id].rate_limit
        if not rates:
            return
        try:
            wait = self.windows.acquire(lambda i: keys.source_rate(source_id, i), rates)
        except redis.RedisError:
            raise Unavailable("the queue is unreachable; retry later", retry_after=5) from None
        if wait > 0:
            limits = ", ".join(str(rate) for rate in rates)
            raise TooManyRequests(
                f"source {source_id!r} is over its inbound limit ({limits})",
                retry_after=max(1, math.ceil(wait)),
            )

    def dedupe_ttl(self, source_id: str) -> float:
        """The source's own window, else the global override, else its kind's default."""
        source = self.config.sources[source_id]
        if source.dedupe_ttl is not None:
            return source.dedupe_ttl
        if self.settings.dedupe_ttl is not None:
            return self.settings.dedupe_ttl
        return self.sources[source_id].default_dedupe_ttl

    @classmethod
    def build(cls, settings: Settings, config: RelayConfig | None = None) -> Runtime:
        if config is None:
            config = load_config(settings.config, with_targets=False)
        return cls(settings, config, redis_client(settings))
