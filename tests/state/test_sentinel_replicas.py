"""``RELAY_REDIS_MIN_REPLICAS``: intake, a replay and a pause answer only once a replica
holds the write (``WAIT`` on the connection that wrote), else 503.

A real primary and replica; a replica that does not confirm is one stopped with SIGSTOP
(its link stays up, it just never acknowledges), as a replica stalled or cut off would.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from relay.admin.ops import Actor, Ops
from relay.cli.embedded import EmbeddedRedis
from relay.context import WebContext
from relay.events import GroupEvent, Party
from relay.settings import Settings, load_settings
from relay.state import keys
from relay.state.apikeys import ApiKeys
from relay.state.outbox import Outbox
from relay.state.replicas import NotReplicated, Replicas
from tests import records
from tests.conftest import ops_config, wait_for
from tests.pipeline_support import EVENT, signed_post

WAIT = 1.0  # RELAY_REDIS_REPLICA_TIMEOUT in these tests: room for a loaded machine


@dataclass
class Pair:
    primary: EmbeddedRedis
    replica: EmbeddedRedis
    to_primary: redis.Redis
    to_replica: redis.Redis

    @contextmanager
    def replica_stopped(self) -> Iterator[None]:
        assert self.replica.process is not None
        os.kill(self.replica.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.replica.process.pid, signal.SIGCONT)

    def caught_up(self) -> None:
        """Until the replica has everything the primary wrote (WAIT on a fresh write)."""
        wait_for(lambda: self.to_primary.execute_command("WAIT", 1, 100) >= 1, timeout=10)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("replicas")
    primary, replica = EmbeddedRedis(base / "primary").start(), EmbeddedRedis(base / "replica")
    replica.start()
    to_primary, to_replica = redis.Redis(port=primary.port), redis.Redis(port=replica.port)
    to_primary.config_set("repl-diskless-sync-delay", 0)
    to_replica.replicaof("127.0.0.1", primary.port)
    found = Pair(primary, replica, to_primary, to_replica)
    wait_for(lambda: to_replica.info("replication")["master_link_status"] == "up", timeout=20)
    yield found
    to_primary.close()
    to_replica.close()
    replica.stop()
    primary.stop()


@pytest.fixture
def settings_for(
    pair: Pair, make_settings: Callable[..., Settings], write_config: Callable[..., Path]
) -> Callable[..., Settings]:
    """Settings on the pair's primary, for the README's config, with ``overrides``."""
    pair.to_primary.flushall()
    path = write_config(ops_config("http://127.0.0.1:9/in"))

    def make(**overrides: Any) -> Settings:
        values = {"redis_min_replicas": 1, "redis_replica_timeout": WAIT, **overrides}
        return make_settings(config=path, redis_url=pair.primary.url, **values)

    return make


def test_an_accepted_event_is_on_the_replica_when_the_sender_hears_202(
    pair: Pair, settings_for: Callable[..., Settings], make_app: Callable[..., Flask]
) -> None:
    settings = settings_for()
    client = make_app(settings.config, redis_url=settings.redis_url, redis_min_replicas=1,
                      redis_replica_timeout=WAIT).test_client()  # fmt: skip
    before = pair.to_primary.info("replication")["master_repl_offset"]
    answer = signed_post(client, EVENT, msg_id="m1")
    assert answer.status_code == 202, answer.get_json()
    # The replica has acknowledged a write made after ``before``: WAIT asked it to (on
    # its own a replica acknowledges once a second, far later than this answer).
    assert pair.to_primary.info("replication")["slave0"]["offset"] > before
    assert pair.to_replica.exists(keys.event(answer.get_json()["event_id"]))


def test_an_unconfirmed_event_is_a_503_and_its_resend_a_duplicate_once_confirmed(
    pair: Pair, settings_for: Callable[..., Settings], make_app: Callable[..., Flask]
) -> None:
    settings = settings_for()
    waiting = make_app(settings.config, redis_url=settings.redis_url, redis_min_replicas=1,
                       redis_replica_timeout=WAIT).test_client()  # fmt: skip
    not_waiting = make_app(settings.config, redis_url=settings.redis_url).test_client()
    with pair.replica_stopped():
        refused = signed_post(waiting, EVENT, msg_id="m1")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        body = refused.get_json()
        assert body["error"] == "unavailable"
        assert "queued on the primary only: 0 of 1 required Redis replica(s)" in body["detail"]
        # RELAY_REDIS_MIN_REPLICAS=0 (the default) never waits for a replica.
        assert signed_post(not_waiting, EVENT, msg_id="m2").status_code == 202
    stored = pair.to_primary.get(keys.dedupe("ops", "m1"))
    assert stored is not None
    pair.caught_up()
    resent = signed_post(waiting, EVENT, msg_id="m1")
    assert resent.status_code == 200, resent.get_json()
    assert resent.get_json() == {"event_id": stored.decode(), "duplicate": True}
    assert pair.to_primary.llen(keys.FANOUT_QUEUE) == 2  # m1 and m2, each queued once


def _dead_letter(runtime: WebContext) -> str:
    event = GroupEvent(source="ops", type="message.created", group=Party(id="g1"), text="hi")
    records.accept(runtime, event)
    [delivery_id] = records.fan_out(runtime, event)
    records.kill(runtime, delivery_id)
    return delivery_id


def test_a_replay_and_a_pause_wait_for_the_replica_and_say_so_in_the_audit_log(
    pair: Pair, settings_for: Callable[..., Settings]
) -> None:
    runtime = WebContext.build(settings_for())
    ops, actor = Ops(runtime), Actor("key_ops", "203.0.113.7")
    first, second = _dead_letter(runtime), _dead_letter(runtime)
    with pair.replica_stopped():
        with pytest.raises(NotReplicated):
            ops.replay(first, actor)
        with pytest.raises(NotReplicated):
            ops.set_paused("sink", True, actor)
    entries = ops.audit(limit=2).items
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("pause", "failed"),
        ("replay", "failed"),
    ]
    assert all("on the primary only: 0 of 1" in e["detail"] for e in entries)
    pair.caught_up()
    assert ops.replay(second, actor) is True
    assert ops.set_paused("sink", True, actor) is not None
    assert pair.to_replica.zscore(keys.DLQ, second) is None
    assert pair.to_replica.hget(keys.target_state("sink"), "paused") == b"1"


def test_the_api_answers_an_unconfirmed_replay_with_503(
    pair: Pair, settings_for: Callable[..., Settings], make_app: Callable[..., Flask]
) -> None:
    settings = settings_for()
    app = make_app(settings.config, redis_url=settings.redis_url, redis_min_replicas=1,
                   redis_replica_timeout=WAIT)  # fmt: skip
    runtime: WebContext = app.extensions["relay"]
    delivery_id = _dead_letter(runtime)
    _, token = ApiKeys(runtime.redis).create("ops", "replay")
    with pair.replica_stopped():
        answer = app.test_client().post(
            f"/api/v1/dead-letters/{delivery_id}/replay",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.get_json()["error"] == "unavailable"


def test_a_script_unknown_to_the_server_is_loaded_and_still_waited_for(pair: Pair) -> None:
    pair.to_primary.flushall()
    pair.to_primary.script_flush()  # as on a promoted replica, which never loaded it
    outbox = Outbox(pair.to_primary, lease=60, retention=600)
    assert outbox.accept_event("ops", "e1", "{}", dedupe_key="k", dedupe_ttl=60,
                               replicas=Replicas(1, WAIT)) is None  # fmt: skip
    assert pair.to_replica.exists(keys.event("e1"))


def test_the_wait_for_replicas_must_fit_in_the_redis_timeout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_REDIS_MIN_REPLICAS", "1")
    monkeypatch.setenv("RELAY_REDIS_REPLICA_TIMEOUT", "2s")
    with pytest.raises(SystemExit) as exited:
        load_settings()
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "RELAY_REDIS_REPLICA_TIMEOUT must be shorter than RELAY_REDIS_TIMEOUT (2s >= 2s)"
    )
    monkeypatch.setenv("RELAY_REDIS_MIN_REPLICAS", "0")  # no wait: no constraint
    assert load_settings().redis_replica_timeout == 2
