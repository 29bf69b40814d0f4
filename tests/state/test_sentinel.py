"""A Sentinel set in ``RELAY_REDIS_URL``: parsed in one place, followed by every client
(callers, loops, the Celery broker) across a failover without a restart.

Real processes: a primary, a replica and Sentinels (``tests/sentinel_support.py``); the
failover is the one an operator asks for (``SENTINEL FAILOVER``), fast and certain. A
primary killed under load is ``tests/chaos/test_failover.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.errors import ConfigError
from relay.settings import Settings
from relay.state import keys
from relay.state.connection import SentinelUrl, caller_client, redis_client
from relay.state.outbox import Outbox
from tests.conftest import ops_config, wait_for
from tests.pipeline_support import EVENT, signed_post
from tests.sentinel_support import SentinelSet
from workers.celery_app import broker_for, make_celery


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    """A primary, one replica and two Sentinels."""
    found = SentinelSet(tmp_path / "ha", replicas=1, sentinels=2).start(peers=False)
    yield found
    found.stop()


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    found = SentinelUrl.parse("redis+sentinel://:p%40ss@s1:26380,s2,[::1]:26381/relay-main/3")
    assert found == SentinelUrl(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        master="relay-main",
        db=3,
        password="p@ss",
    )
    assert "p@ss" not in repr(found)
    named = SentinelUrl.parse("redis+sentinel://relay:pw@s1/main")
    assert named is not None and (named.username, named.password, named.db) == ("relay", "pw", 0)
    for plain in ("redis://:pw@h:6379/0", "rediss://h/0", "unix:///run/redis.sock"):
        assert SentinelUrl.parse(plain) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://:hunter2@s1:26379", "names no master"),
        ("redis+sentinel://:hunter2@s1:26379/", "names no master"),
        ("redis+sentinel://:hunter2@s1:port/relay", "port that is not a number"),
        ("redis+sentinel://:hunter2@s1:70000/relay", "port that is not a number"),
        ("redis+sentinel://:hunter2@s1,,s2/relay", "empty Sentinel address"),
        ("redis+sentinel://:hunter2@s1/relay/zero", "database that is not a number"),
        ("redis+sentinel://:hunter2@s1/relay?ssl=true", "takes no query options"),
        ("redis+sentinel://:hunter2@[::1/relay", "cannot be parsed"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_naming_the_variable_not_the_password(
    url: str, why: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        SentinelUrl.parse(url)
    [problem] = refused.value.problems
    assert problem.startswith("RELAY_REDIS_URL: ") and why in problem
    assert "hunter2" not in problem and "redis+sentinel://[[user]:password@]host" in problem


def test_the_broker_uses_kombus_sentinel_transport_with_the_master_name() -> None:
    url = "redis+sentinel://:p%40ss@10.0.0.1:26379,[fd00::2]:26380/relay/2"
    broker_url, transport, options = broker_for(Settings(redis_url=url))
    assert broker_url == "sentinel://:p%40ss@10.0.0.1:26379/2;sentinel://:p%40ss@[fd00::2]:26380/2"
    assert transport == "workers.speedups.broker:SentinelTransport"
    assert options == {"master_name": "relay"}
    guarded = Settings(redis_url=url, redis_sentinel_password="s-pw")
    assert broker_for(guarded)[2]["sentinel_kwargs"]["password"] == "s-pw"
    plain = broker_for(Settings(redis_url="redis://h:6379/0"))
    assert plain == ("redis://h:6379/0", "workers.speedups.broker:Transport", {})
    # Remote control's broadcast consumer would hang on the old primary: off with Sentinel.
    assert make_celery(Settings(redis_url=url)).conf.worker_enable_remote_control is False
    assert make_celery(Settings(redis_url="redis://h:6379/0")).conf.worker_enable_remote_control


def test_callers_and_loops_follow_a_failover_and_scripts_load_on_the_new_primary(
    sentinels: SentinelSet,
) -> None:
    settings = Settings(redis_url=sentinels.url)
    caller, loop = caller_client(settings), redis_client(settings)
    outbox = Outbox(caller, lease=60, retention=600)
    assert outbox.accept_event("ops", "evt_1", "{}", dedupe_key="m1", dedupe_ttl=60) is None
    old = sentinels.master_port()

    def replicated() -> bool:  # replication is asynchronous: what this test is not about
        for node in (n for n in sentinels.nodes if n.port != old):
            with sentinels.client(node) as replica:
                if replica.zrange(keys.EVENTS, 0, -1) != [b"evt_1"]:
                    return False
        return True

    wait_for(replicated, timeout=10)
    sentinels.failover()
    new = sentinels.wait_for_promotion(old)

    def accepted() -> bool:
        try:  # a caller never retries: the first call may meet the demoted primary
            return outbox.accept_event("ops", "evt_2", "{}", dedupe_key="m2", dedupe_ttl=60) is None
        except redis.ConnectionError:
            return False

    wait_for(accepted, timeout=10)
    # The intake script was never loaded on the new primary: NOSCRIPT, then loaded.
    on_new = redis.Redis(port=new)
    assert on_new.zrange(keys.EVENTS, 0, -1) == [b"evt_1", b"evt_2"]
    assert outbox.accept_event("ops", "evt_3", "{}", dedupe_key="m1", dedupe_ttl=60) == "evt_1"
    # The loop's client reconnects on its own (it retries), to the new primary.
    assert loop.zcard(keys.EVENTS) == 2 and loop.connection_pool.get_master_address()[1] == new
    on_new.close()
    caller.close()
    loop.close()


def test_sentinels_that_require_a_password_are_asked_with_the_sentinel_password(
    tmp_path: Path,
) -> None:
    guarded = SentinelSet(tmp_path / "ha", replicas=0, sentinels=1, sentinel_password="s-pw")
    guarded.start()
    try:
        without = caller_client(Settings(redis_url=guarded.url))
        with pytest.raises(redis.ConnectionError):
            without.ping()
        with_it = caller_client(Settings(redis_url=guarded.url, redis_sentinel_password="s-pw"))
        assert with_it.ping() is True
        with_it.close()
    finally:
        guarded.stop()


def test_a_worker_on_sentinel_delivers_before_and_after_a_failover_without_a_restart(
    sentinels: SentinelSet,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., Any],
    threaded_httpserver: HTTPServer,
) -> None:
    arrived: list[str] = []
    lock = threading.Lock()

    def sink(request: Request) -> Response:
        with lock:
            arrived.append(json.loads(request.get_data())["id"])
        return Response("ok")

    threaded_httpserver.expect_request("/in", method="POST").respond_with_handler(sink)
    path = write_config(ops_config(threaded_httpserver.url_for("/in")))
    client = make_app(path, redis_url=sentinels.url).test_client()
    relay_processes(path, RELAY_REDIS_URL=sentinels.url)

    first = signed_post(client, EVENT)
    assert first.status_code == 202, first.get_json()
    wait_for(lambda: first.get_json()["event_id"] in arrived, timeout=30)

    old = sentinels.master_port()
    sentinels.failover()
    sentinels.wait_for_promotion(old)

    def post() -> Any:
        answer = signed_post(client, EVENT, msg_id="after-failover")
        return answer if answer.status_code == 202 else None

    second = wait_for(post, timeout=10, interval=0.2)
    wait_for(lambda: second.get_json()["event_id"] in arrived, timeout=60)
    assert sorted(arrived) == sorted([first.get_json()["event_id"], second.get_json()["event_id"]])
