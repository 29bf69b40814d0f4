"""What a worker process holds: settings, config, Redis records and built target adapters.

Built once per process on first use (after gevent has patched the world), not at import.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from relay.config.kinds import build_targets
from relay.config.models import RelayConfig, TargetConfig, load_config
from relay.config.people import People
from relay.config.rates import Rate, parse_rates
from relay.settings import Settings
from relay.state.connection import redis_client
from relay.state.deliveries import Store
from relay.state.gate import TargetGate
from relay.state.outbox import Outbox
from workers.targets.base import Target


@dataclass
class WorkerContext:
    settings: Settings
    config: RelayConfig
    store: Store = field(init=False)
    outbox: Outbox = field(init=False)
    targets: dict[str, Target] = field(init=False)
    gate: TargetGate = field(init=False)
    rates: dict[str, list[Rate]] = field(init=False)
    people: People = field(init=False)

    def __post_init__(self) -> None:
        client = redis_client(self.settings)
        self.store = Store(client, retention=self.settings.retention)
        self.outbox = Outbox(
            client, lease=self.settings.visibility_timeout, retention=self.settings.retention
        )
        self.targets: dict[str, Target] = build_targets(self.config)
        self.gate = TargetGate(client)
        self.rates = {
            target_id: target_rates(self.config.targets[target_id], adapter)
            for target_id, adapter in self.targets.items()
        }
        self.people = People(self.config.people)


def target_rates(config: TargetConfig, adapter: Any) -> list[Rate]:
    """The configured rates, else the kind's platform defaults."""
    if config.rate_limit is not None:
        return list(config.rate_limit)
    return parse_rates(getattr(adapter, "default_rate_limits", ()))


_lock = threading.Lock()
_context: WorkerContext | None = None


def worker_context(settings: Any = None) -> WorkerContext:
    global _context
    with _lock:
        if _context is None:
            settings = settings or Settings()
            _context = WorkerContext(settings, load_config(settings.config))
        return _context
