"""What a running relay process holds: settings, config, Redis, and the built sources."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from relay.config import RelayConfig, load_config
from relay.queue import Queue
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

    def __post_init__(self) -> None:
        from relay.registry import source_kinds

        self.queue = Queue(
            self.redis, lease=self.settings.visibility_timeout, retention=self.settings.retention
        )
        self.store = Store(self.redis, retention=self.settings.retention)
        kinds = source_kinds()
        self.sources = {sid: kinds[sc.kind](sc) for sid, sc in self.config.sources.items()}

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
