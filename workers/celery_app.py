"""The Celery app: ``celery -A workers.celery_app worker -P gevent``.

The delivery semantics the README promises live in this configuration: late acks,
reject on worker loss, prefetch 1, no result backend, and a visibility timeout longer
than any task may run. Settings are read from ``RELAY_*`` when this entry module is imported.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from relay.settings import Settings, load_settings
from relay.state import keys
from workers.speedups import broker


def make_celery(settings: Settings) -> Celery:
    app = Celery("group-relay", broker=settings.redis_url, include=["workers.tasks"])
    vt = int(settings.visibility_timeout)
    transport = {
        "visibility_timeout": vt,
        # Scan for unacked messages every 10 s (kombu's default throttle makes it ~100 s).
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "retry_on_timeout": True,
        # Every green thread acks through the broker pool: kombu's default of 10
        # connections makes acks fail ("Too many connections") under load.
        "max_connections": 2 * settings.worker_concurrency + 16,
    }
    scheme = settings.redis_url.partition("://")[0]
    app.conf.update(
        broker_transport=f"{broker.__name__}:Transport" if scheme in broker.SCHEMES else None,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=False,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=10.0,
        task_time_limit=int(settings.task_time_limit),
        task_soft_time_limit=max(1, int(settings.task_time_limit) - 2),
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in keys.ALL_QUEUES],
        task_default_queue=keys.FANOUT_QUEUE,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,  # structured logs go to stderr as they are
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    app.conf.relay_settings = settings
    return app


app = make_celery(load_settings())
