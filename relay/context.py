"""What a web or CLI process holds: settings, config, one Redis client, and the parts
built on it (the intake with its sources, the outbox, the delivery store).

Everything here answers a caller (a sender, an operator), so the client is
``caller_client``: no retries, at most ``RELAY_REDIS_TIMEOUT`` per call, fast failures
while Redis stalls (``relay.state.connection``).

Workers hold their own ``workers.context.WorkerContext``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from relay.config.loader import load_config
from relay.config.models import RelayConfig
from relay.intake.accept import Intake
from relay.intake.sources.base import Source
from relay.settings import Settings
from relay.state.connection import caller_client
from relay.state.deliveries import Store
from relay.state.outbox import Outbox
from relay.state.sealing import Sealer


@dataclass
class WebContext:
    settings: Settings
    config: RelayConfig
    redis: redis.Redis
    outbox: Outbox = field(init=False)
    store: Store = field(init=False)
    intake: Intake = field(init=False)

    def __post_init__(self) -> None:
        self.outbox = Outbox(
            self.redis, lease=self.settings.visibility_timeout, retention=self.settings.retention
        )
        self.store = Store(
            self.redis, retention=self.settings.retention, sealer=Sealer.of(self.settings)
        )
        self.intake = Intake(self.settings, self.config, self.redis, self.outbox)

    @property
    def sources(self) -> dict[str, Source]:
        return self.intake.sources

    @classmethod
    def build(cls, settings: Settings, config: RelayConfig | None = None) -> WebContext:
        if config is None:
            config = load_config(settings.config, with_targets=False)
        return cls(settings, config, caller_client(settings))
