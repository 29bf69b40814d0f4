"""The bare baselines the relay is compared with (not part of the relay).

- ``bench.baseline_app:app`` — a Flask app that checks the Standard Webhooks HMAC-SHA256
  (over ``id.timestamp.body``, ``hmac.compare_digest``) and ``LPUSH``es the body to Redis.
  ``BENCH_MODE=celery`` makes it enqueue a bare Celery task instead (``send_task``).
- ``bench.baseline_app:celery_app`` — bare Celery tasks: ``bench.fanout`` sends one
  ``bench.post`` per URL in ``BENCH_TARGET_URLS``; ``bench.post`` POSTs the body there
  with a shared ``requests`` session (run with the same gevent pool as the relay).

Settings come from the environment: ``BENCH_REDIS_URL``, ``BENCH_MODE`` (``lpush`` or
``celery``), ``BENCH_TARGET_URLS`` (comma-separated), ``BENCH_POOL_SIZE`` (HTTP pool per process).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time

import redis
import requests
from celery import Celery
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
MODE = os.environ.get("BENCH_MODE", "lpush")
TARGETS = [u for u in os.environ.get("BENCH_TARGET_URLS", "").split(",") if u]
QUEUE = "bench.intake"

celery_app = Celery("bench-baseline", broker=REDIS_URL)
celery_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    broker_connection_retry_on_startup=True,
    # kombu's Redis channel pool defaults to 10 connections: with -c 64..200 green
    # threads acking at once that raises MaxConnectionsError ("Couldn't ack").
    broker_transport_options={"visibility_timeout": 3600, "max_connections": 1024},
)

app = Flask(__name__)
_redis = redis.Redis.from_url(REDIS_URL)


def _verified(body: bytes) -> bool:
    msg_id = request.headers.get("webhook-id", "")
    stamp = request.headers.get("webhook-timestamp", "")
    header = request.headers.get("webhook-signature", "")
    expected = base64.b64encode(
        hmac.new(KEY, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    )
    return any(
        hmac.compare_digest(expected, entry[3:].encode())
        for entry in header.split(" ")
        if entry.startswith("v1,")
    )


@app.post("/hooks/<source_id>")
def receive(source_id: str) -> Response:
    body = request.get_data(cache=False)
    if not _verified(body):
        return Response('{"error": "invalid_signature"}', 401, content_type="application/json")
    event_id = f"evt_{int(time.time() * 1000):012x}{secrets.token_hex(10)}"
    if MODE == "celery":
        payload = json.loads(body)
        payload["id"] = event_id
        celery_app.send_task("bench.fanout", args=[json.dumps(payload)], queue=QUEUE)
    else:
        _redis.lpush(QUEUE, body)
    return Response(json.dumps({"event_id": event_id}), 202, content_type="application/json")


_session = requests.Session()
_session.trust_env = False
# One pooled connection per green thread (BENCH_POOL_SIZE = the worker's -c), so no
# request opens a fresh TCP connection.
_pool = int(os.environ.get("BENCH_POOL_SIZE", "64"))
_adapter = HTTPAdapter(pool_connections=4, pool_maxsize=_pool, max_retries=0)
_session.mount("http://", _adapter)


@celery_app.task(name="bench.fanout", ignore_result=True)  # type: ignore[untyped-decorator]
def fanout(body: str) -> int:
    for url in TARGETS:
        celery_app.send_task("bench.post", args=[url, body], queue=QUEUE)
    return len(TARGETS)


@celery_app.task(name="bench.post", ignore_result=True)  # type: ignore[untyped-decorator]
def post(url: str, body: str) -> int:
    response = _session.post(
        url, data=body.encode(), timeout=15, headers={"content-type": "application/json"}
    )
    response.raise_for_status()
    return response.status_code
