"""Celery tasks: thin glue around ``workers.delivery``."""

from __future__ import annotations

from relay import keys
from workers.celery_app import app
from workers.context import worker_context
from workers.delivery import fanout as fanout_event
from workers.delivery import run_delivery


@app.task(name=keys.FANOUT_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def fanout(event_id: str) -> int:
    """Turn one accepted event into its deliveries."""
    return fanout_event(worker_context(app.conf.relay_settings), event_id)


@app.task(name=keys.DELIVER_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def deliver(delivery_id: str) -> str:
    """Run one attempt of one delivery."""
    return run_delivery(worker_context(app.conf.relay_settings), delivery_id)
