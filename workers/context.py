"""What a worker process holds: settings, config, Redis records and built target adapters.

Built once per process on first use (after gevent has patched the world), not at import.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from relay.config.kinds import build_targets, effective_rates
from relay.config.limits import attempt_problems
from relay.config.loader import load_config
from relay.config.models import RelayConfig
from relay.config.people import People
from relay.config.rates import Rate
from relay.errors import ConfigError
from relay.settings import Settings
from relay.state.connection import redis_client
from relay.state.deliveries import Store
from relay.state.gate import TargetGate
from relay.state.outbox import Outbox
from relay.state.sealing import Sealer
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
        sealer = Sealer.of(self.settings)  # opens what intake sealed; seals what workers write
        self.store = Store(client, retention=self.settings.retention, sealer=sealer)
        self.outbox = Outbox(
            client,
            lease=self.settings.visibility_timeout,
            retention=self.settings.retention,
            sealer=sealer,
        )
        self.targets: dict[str, Target] = build_targets(self.config)
        too_long = attempt_problems(
            self.config,
            self.targets,
            task_time_limit=self.settings.task_time_limit,
            default_timeout=self.settings.http_timeout,
        )
        if too_long:  # every attempt would be cut off by the task limit: refuse to start
            raise ConfigError(too_long)
        self.gate = TargetGate(client)
        self.rates = {
            target_id: effective_rates(config, _kind_rates(self.targets[target_id]))[0]
            for target_id, config in self.config.targets.items()
        }
        self.people = People(self.config.people)


def _kind_rates(adapter: Any) -> tuple[str, ...]:
    """The kind's platform limits; a plugin adapter may not declare any."""
    return tuple(getattr(adapter, "default_rate_limits", ()))


_lock = threading.Lock()
_context: WorkerContext | None = None


def worker_context(settings: Any = None) -> WorkerContext:
    global _context
    with _lock:
        if _context is None:
            settings = settings or Settings()
            _context = WorkerContext(settings, load_config(settings.config))
        return _context
