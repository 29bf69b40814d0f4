"""What a worker process holds: settings, config, Redis records and built target adapters.

Built once per process on first use (after gevent has patched the world), not at import.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from relay.config import RelayConfig, load_config
from relay.queue import Queue
from relay.registry import build_targets
from relay.runtime import redis_client
from relay.settings import Settings
from relay.store import Store
from workers.targets.base import Target


@dataclass
class WorkerContext:
    settings: Settings
    config: RelayConfig
    store: Store = field(init=False)
    queue: Queue = field(init=False)
    targets: dict[str, Target] = field(init=False)

    def __post_init__(self) -> None:
        client = redis_client(self.settings)
        self.store = Store(client, retention=self.settings.retention)
        self.queue = Queue(
            client, lease=self.settings.visibility_timeout, retention=self.settings.retention
        )
        self.targets: dict[str, Target] = build_targets(self.config)


_lock = threading.Lock()
_context: WorkerContext | None = None


def worker_context(settings: Any = None) -> WorkerContext:
    global _context
    with _lock:
        if _context is None:
            settings = settings or Settings()
            _context = WorkerContext(settings, load_config(settings.config))
        return _context
