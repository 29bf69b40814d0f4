"""``kill -9`` of a worker in the middle of deliveries loses nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.state import keys
from tests.conftest import ops_config, wait_for
from tests.pipeline_support import EVENT, signed_post


def test_kill_9_of_a_worker_mid_delivery_loses_nothing(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    threaded_httpserver: HTTPServer,
    redis_client: redis.Redis,
) -> None:
    arrivals: list[str] = []
    lock = threading.Lock()
    first_seen = threading.Event()

    def slow_sink(request: Request) -> Response:
        with lock:
            arrivals.append(request.headers["webhook-id"])
        first_seen.set()
        time.sleep(2.0)  # long enough to be killed mid-request
        return Response("ok")

    httpserver = threaded_httpserver
    httpserver.expect_request("/in", method="POST").respond_with_handler(slow_sink)
    path = write_config(
        ops_config(httpserver.url_for("/in"), retry={"max_attempts": 5, "backoff_base": "0.2s"})
    )
    client = client_for(path)
    procs = relay_processes(path)
    accepted = [signed_post(client, EVENT).get_json()["event_id"] for _ in range(10)]

    assert first_seen.wait(30)
    procs.kill("worker")  # SIGKILL to the whole worker process group
    procs.start_worker("worker-2")

    def delivery_ids() -> set[str]:
        return {
            m.decode() for e in accepted for m in redis_client.smembers(keys.event_deliveries(e))
        }

    def all_delivered() -> bool:
        ids = delivery_ids()
        statuses = [redis_client.hget(keys.delivery(d), "status") for d in ids]
        return len(ids) == len(accepted) and all(s == b"delivered" for s in statuses)

    wait_for(all_delivered, timeout=90, interval=0.5)
    delivered_ids = delivery_ids()
    assert delivered_ids <= set(arrivals)  # every accepted event reached the sink
    assert redis_client.zcard(keys.DLQ) == 0
    attempts = [
        json.loads(a) for d in delivered_ids for a in redis_client.lrange(keys.attempts(d), 0, -1)
    ]
    lost = [a for a in attempts if a["outcome"] == "lost"]
    assert lost, "the interrupted attempt is recorded as lost"
