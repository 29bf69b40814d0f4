"""Celery tasks: thin glue around ``workers.delivery``."""

from __future__ import annotations

import socket
import sys
from typing import Any

from celery import Task
from celery.signals import task_received, worker_init

from relay.errors import ConfigError
from relay.logging import configure_logging, quiet_celery_task_lines
from relay.state import keys
from workers import heartbeat, liveness
from workers.celery_app import app
from workers.context import worker_context
from workers.delivery import run_deliveries
from workers.fanout import fanout as fanout_event
from workers.speedups import green_redis


@worker_init.connect  # type: ignore[untyped-decorator]
def _load_config_at_start(sender: Any = None, **_: Any) -> None:
    """Fail at start, naming every config problem, rather than at the first task; then
    beat, so the work this worker will hold is given back within seconds if it dies."""
    settings = app.conf.relay_settings
    configure_logging(settings)
    quiet_celery_task_lines(settings)
    green_redis.use_os_poll_for_idle_checks()  # under -P gevent, select is patched by now
    try:
        ctx = worker_context(settings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)
        raise SystemExit(1) from None
    nodename = getattr(sender, "hostname", None) or socket.gethostname()
    heartbeat.start(settings, nodename, ctx.store.redis)
    liveness.start(settings.liveness_file)


@task_received.connect  # type: ignore[untyped-decorator]
def _hold_reserved_message(request: Any = None, **_: Any) -> None:
    """Note the message as this worker's before any greenlet may begin it."""
    heartbeat.hold_message(getattr(getattr(request, "message", None), "delivery_tag", None))


def _tag(task: Task) -> str | None:
    """The delivery tag of the message the task runs (kombu's unacked key for it)."""
    properties = getattr(task.request, "properties", None) or {}
    tag = properties.get("delivery_tag")
    return str(tag) if tag else None


@app.task(bind=True, name=keys.FANOUT_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def fanout(self: Task, event_id: str) -> int:
    """Turn one accepted event into its deliveries."""
    held = heartbeat.holding(_tag(self))
    try:
        return fanout_event(worker_context(app.conf.relay_settings), event_id)
    finally:
        heartbeat.finished(held)


@app.task(bind=True, name=keys.DELIVER_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def deliver(self: Task, *delivery_ids: str) -> list[str]:
    """Run one attempt of each delivery (a fan-out's share of this queue), side by side."""
    held = heartbeat.holding(_tag(self))
    try:
        return run_deliveries(worker_context(app.conf.relay_settings), delivery_ids, holding=held)
    finally:
        heartbeat.finished(held, delivery_ids)
