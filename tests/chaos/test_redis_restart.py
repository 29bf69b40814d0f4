"""Redis killed with SIGKILL and restarted (AOF) while deliveries are retrying: nothing lost."""

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

from relay.cli.embedded import EmbeddedRedis
from relay.state import keys
from tests.conftest import ops_config, wait_for
from tests.pipeline_support import EVENT, signed_post


def test_redis_crash_and_restart_while_retrying_loses_nothing(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    threaded_httpserver: HTTPServer,
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
) -> None:
    arrived: set[str] = set()
    failures = {"left": 40}
    lock = threading.Lock()

    def flaky_sink(request: Request) -> Response:
        with lock:
            if failures["left"] > 0:
                failures["left"] -= 1
                return Response("busy", status=503)
            arrived.add(json.loads(request.get_data())["id"])
        return Response("ok")

    threaded_httpserver.expect_request("/in", method="POST").respond_with_handler(flaky_sink)
    path = write_config(
        ops_config(
            threaded_httpserver.url_for("/in"),
            retry={"max_attempts": 20, "backoff_base": "0.3s", "backoff_cap": "2s"},
            circuit={"open_for": "0.5s", "max_open_for": "2s"},  # the breaker opens, too
        )
    )
    client = client_for(path)
    relay_processes(path)
    accepted = [signed_post(client, EVENT).get_json()["event_id"] for _ in range(30)]

    time.sleep(0.5)  # deliveries are now queued, running and scheduled for retries
    redis_server.kill()
    time.sleep(2)
    redis_server.start()  # same port and data folder: the AOF is replayed

    wait_for(lambda: set(accepted) <= arrived, timeout=120, interval=0.5)
    assert redis_client.zcard(keys.DLQ) == 0
