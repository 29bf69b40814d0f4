"""Celery tasks: thin glue around ``workers.delivery``."""

from __future__ import annotations

import sys
from typing import Any

from celery.signals import worker_init

from relay.errors import ConfigError
from relay.logging import configure_logging, quiet_celery_task_lines
from relay.state import keys
from workers.celery_app import app
from workers.context import worker_context
from workers.delivery import run_deliveries
from workers.fanout import fanout as fanout_event
from workers.speedups import green_redis


@worker_init.connect  # type: ignore[untyped-decorator]
def _load_config_at_start(**_: Any) -> None:
    """Fail at start, naming every config problem, rather than at the first task."""
    settings = app.conf.relay_settings
    configure_logging(settings)
    quiet_celery_task_lines(settings)
    green_redis.use_os_poll_for_idle_checks()  # under -P gevent, select is patched by now
    try:
        worker_context(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)
        raise SystemExit(1) from None


@app.task(name=keys.FANOUT_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def fanout(event_id: str) -> int:
    """Turn one accepted event into its deliveries."""
    return fanout_event(worker_context(app.conf.relay_settings), event_id)


@app.task(name=keys.DELIVER_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def deliver(*delivery_ids: str) -> list[str]:
    """Run one attempt of each delivery (a fan-out's share of this queue), side by side."""
    return run_deliveries(worker_context(app.conf.relay_settings), delivery_ids)
