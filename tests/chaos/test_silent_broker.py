"""A silent broker (redis-server stopped with SIGSTOP, then resumed): workers recover alone."""

from __future__ import annotations

import json
import os
import signal
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


def test_workers_resume_after_the_broker_hangs(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    threaded_httpserver: HTTPServer,
    redis_server: EmbeddedRedis,
    redis_client: redis.Redis,
) -> None:
    arrived: set[str] = set()
    lock = threading.Lock()

    def sink(request: Request) -> Response:
        with lock:
            arrived.add(json.loads(request.get_data())["id"])
        return Response("ok")

    threaded_httpserver.expect_request("/in", method="POST").respond_with_handler(sink)
    path = write_config(ops_config(threaded_httpserver.url_for("/in")))
    client = client_for(path)
    relay_processes(path)
    before = [signed_post(client, EVENT).get_json()["event_id"] for _ in range(5)]
    wait_for(lambda: set(before) <= arrived, timeout=30)

    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)  # a hung peer, not a dead one
    time.sleep(20)
    os.kill(redis_server.process.pid, signal.SIGCONT)

    after = [signed_post(client, EVENT).get_json()["event_id"] for _ in range(5)]
    wait_for(lambda: set(after) <= arrived, timeout=60, interval=0.5)
    assert redis_client.zcard(keys.DLQ) == 0
