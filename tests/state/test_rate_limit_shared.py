"""Three worker processes share one target's rate limit through Redis.

The limit is DingTalk's kind (20 a minute per robot), scaled to 6 in 12 seconds so the
test takes one window, not a minute: the same sliding window enforces both. Nine
events are posted at once. The sink records when each delivery arrives; in no 12-second
window may more than 6 arrive, every event must still be delivered, and no attempt may
be spent (or a dead letter made) just for waiting.
"""

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

from relay.config.kinds import source_kinds
from relay.config.loader import parse_config
from relay.state import keys
from tests.conftest import ops_config, wait_for

EVENTS = 9
LIMIT, WINDOW = 6, 12.0


def test_three_workers_never_exceed_a_shared_rate(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    httpserver: HTTPServer,
    redis_client: redis.Redis,
) -> None:
    arrivals: list[float] = []
    lock = threading.Lock()

    def record(request: Request) -> Response:
        with lock:
            arrivals.append(time.time())
        return Response("ok")

    httpserver.expect_request("/in").respond_with_handler(record)
    config = ops_config(httpserver.url_for("/in"), rate_limit=f"{LIMIT}/{WINDOW:g}s")
    path = write_config(config)
    procs = relay_processes(path)
    procs.start_worker("worker-2")
    procs.start_worker("worker-3")
    client = client_for(path)
    source = source_kinds()["standard_webhooks"](parse_config(config).sources["ops"])
    for n in range(EVENTS):
        body = {"type": "message.created", "data": {"group": {"id": "g"}, "text": f"#{n}"}}
        signed = source.sample(json.dumps(body).encode())
        assert (
            client.post("/hooks/ops", data=signed.body, headers=signed.headers).status_code == 202
        )

    wait_for(lambda: len(arrivals) >= EVENTS, timeout=WINDOW * 2 + 30, interval=0.5)
    time.sleep(1.0)  # nothing more may arrive
    times = sorted(arrivals)
    assert len(times) == EVENTS
    busiest = max(sum(1 for t in times if start <= t < start + WINDOW) for start in times)
    assert busiest <= LIMIT
    assert times[LIMIT] - times[0] >= WINDOW  # the first over the limit waited for the window
    assert redis_client.zcard(keys.DLQ) == 0
    for delivery_id in redis_client.keys(keys.delivery("*")):
        record_ = {k.decode(): v.decode() for k, v in redis_client.hgetall(delivery_id).items()}
        assert record_["status"] == "delivered"
        assert record_["attempts"] == "1"  # waiting spent no attempt
