"""group-relay: verified intake of chat-group events, fanned out by Celery workers.

Only re-exports, resolved on first use, so importing a leaf module (``relay.state.keys``)
builds nothing. The pipeline, one package per step: ``intake`` (receive, verify,
queue) → ``state`` (Redis: outbox, deliveries, gate, scheduler) → ``workers`` (fan-out,
delivery, targets). ``config`` is what the operator declares; ``admin``, ``api``,
``dashboard`` and ``cli`` are how they look and act.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Settings", "__version__", "create_app"]

if TYPE_CHECKING:
    from relay.app import create_app
    from relay.settings import Settings


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from relay.app import create_app

        return create_app
    if name == "Settings":
        from relay.settings import Settings

        return Settings
    raise AttributeError(f"module 'relay' has no attribute {name!r}")
