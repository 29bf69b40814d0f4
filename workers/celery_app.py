"""The Celery app: ``celery -A workers.celery_app worker -P gevent``.

The delivery semantics the README promises live in this configuration: late acks,
reject on worker loss, prefetch 1, no result backend, and a visibility timeout longer
than any task may run. Settings are read from ``RELAY_*`` when this entry module is imported.

A ``redis+sentinel://`` ``RELAY_REDIS_URL`` becomes kombu's Sentinel transport (one
``sentinel://`` URL per Sentinel, the master's name as a transport option), so the
broker follows a failover as the relay's own clients do; with ``rediss+sentinel://`` it
speaks TLS to the Sentinels (``sentinel_kwargs``) and to the master (``broker_use_ssl``).
Celery's remote control is off there: its broadcast consumer reads a pub/sub connection
that a failover leaving the old primary running never closes, and the worker, waiting
for that consumer to stop before it reconnects, stops consuming for good. The relay uses
no remote control (its workers beat through ``workers.heartbeat``).
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

from celery import Celery
from kombu import Exchange, Queue

from relay.errors import ConfigError
from relay.settings import Settings, load_settings
from relay.state import keys
from relay.state.connection import SentinelUrl
from relay.state.redis_tls import broker_use_ssl
from workers.speedups import broker

SOCKET_TIMEOUT = 10  # seconds; the broker's, and the Sentinels' when they need a password
CONNECT_TIMEOUT = 5
SENTINEL_TRANSPORT = f"{broker.__name__}:SentinelTransport"


def broker_for(settings: Settings) -> tuple[str, str | None, dict[str, Any]]:
    """The broker URL, the transport class (None: kombu's own) and the transport
    options that name a Sentinel-guarded master."""
    found = SentinelUrl.parse(settings.redis_url)
    if found is None:
        scheme = settings.redis_url.partition("://")[0]
        transport = f"{broker.__name__}:Transport" if scheme in broker.SCHEMES else None
        return settings.redis_url, transport, {}
    user = quote(found.username or "", safe="")
    password = "" if found.password is None else ":" + quote(found.password, safe="")
    auth = f"{user}{password}@" if user or password else ""
    urls = [f"sentinel://{auth}{_host(host)}:{port}/{found.db}" for host, port in found.sentinels]
    options: dict[str, Any] = {"master_name": found.master}
    asking: dict[str, Any] = found.tls_options()  # TLS to the Sentinels too
    if settings.redis_sentinel_password:
        asking["password"] = settings.redis_sentinel_password
    if asking:  # given any, kombu asks the Sentinels with only these
        options["sentinel_kwargs"] = {
            **asking,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
        }
    return ";".join(urls), SENTINEL_TRANSPORT, options


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def make_celery(settings: Settings) -> Celery:
    broker_url, broker_transport, sentinel = broker_for(settings)
    app = Celery("group-relay", broker=broker_url, include=["workers.tasks"])
    vt = int(settings.visibility_timeout)
    transport = {
        **sentinel,
        "visibility_timeout": vt,
        # Scan for unacked messages every 10 s (kombu's default throttle makes it ~100 s).
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "retry_on_timeout": True,
        # Every green thread acks through the broker pool: kombu's default of 10
        # connections makes acks fail ("Too many connections") under load.
        "max_connections": 2 * settings.worker_concurrency + 16,
    }
    app.conf.update(
        # a rediss:// broker verifies the server, as every other client of the relay does
        broker_use_ssl=broker_use_ssl(settings.redis_url),
        broker_transport=broker_transport,
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
        worker_enable_remote_control=broker_transport != SENTINEL_TRANSPORT,
        task_send_sent_event=False,
    )
    app.conf.relay_settings = settings
    return app


def _app() -> Celery:
    """The worker's app; a malformed Sentinel URL exits 2 naming the variable, as a bad
    setting does (``load_settings``)."""
    try:
        return make_celery(load_settings())
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        raise SystemExit(2) from None


app = _app()
