"""Re-sealing stored records under the newest key (``relay.state.reseal``, ``relay keys
rotate-data``): every value moves, nothing written meanwhile is overwritten, a stopped
walk resumes, and a value no configured key opens is named and left alone."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from relay.cli import main
from relay.events import GroupEvent, Party
from relay.state import keys
from relay.state.deliveries import Store
from relay.state.lifecycle import DeliveryRecord
from relay.state.lua import load_script
from relay.state.outbox import Outbox
from relay.state.reseal import LOCK, STATE, Busy, Resealer, saved_progress
from relay.state.sealing import PLAIN, Sealer, key_id, new_key, parse_keys
from tests.conftest import TEST_SECRET

TEXT = "rotation canary 5d1e"


def sealer(*keys_: str) -> Sealer:
    return Sealer(parse_keys(",".join(keys_)))


def kid(key: str) -> str:
    return key_id(base64.urlsafe_b64decode(key))


def write_records(client: redis.Redis, s: Sealer, n: int) -> list[tuple[str, str]]:
    """``n`` events, each with a delivery that failed once and then died, all written
    by the relay's store under ``s``; (event id, delivery id) of each."""
    outbox = Outbox(client, lease=60, retention=3600, sealer=s)
    store = Store(client, retention=3600, sealer=s)
    made = []
    for i in range(n):
        event = GroupEvent(source="ops", group=Party(id="g1"), text=f"{TEXT} {i}")
        outbox.accept_event("ops", event.id, s.seal_event(event.to_json(), event),
                            dedupe_key=None, dedupe_ttl=60)  # fmt: skip
        delivery_id = f"dlv_{uuid.uuid4().hex}"
        record = DeliveryRecord.new(
            id=delivery_id, event_id=event.id, source="ops", target="sink", route=0,
            queue="q", now=time.time(), vars=json.dumps({"vars": {"title": TEXT}}),
        )  # fmt: skip
        outbox.fan_out(event.id, [(record.to_fields(), "q")])
        attempt = {"n": 1, "outcome": "retry", "status": 500, "response": TEXT, "error": TEXT}
        store.finish_retry(delivery_id, attempt, time.time(), token="")
        store.finish_dead(delivery_id, {**attempt, "n": 2}, "permanent failure",
                          event.to_json(), token="")  # fmt: skip
        made.append((event.id, delivery_id))
    client.delete("q")
    return made


def sealed_values(client: redis.Redis) -> list[str]:
    """Every value the walk covers, as stored (attempts' sealed fields one by one): eight
    per record of ``write_records``."""
    found: list[str] = []
    for key in client.scan_iter(match=keys.event("*"), _type="hash"):
        found.append((client.hget(key, "data") or b"").decode())
    for key in client.scan_iter(match=keys.delivery("*"), _type="hash"):
        found += [v.decode() for v in client.hmget(key, "event", "vars", "last_error") if v]
    for key in client.scan_iter(match=keys.attempts("*"), _type="list"):
        for item in client.lrange(key, 0, -1):
            attempt = json.loads(item)
            found += [attempt["response"], attempt["error"]]
    return found


def readable_with(client: redis.Redis, s: Sealer, made: list[tuple[str, str]]) -> bool:
    store = Store(client, retention=3600, sealer=s)
    for event_id, delivery_id in made:
        event = store.event(event_id)
        d = store.delivery(delivery_id)
        assert event is not None and "unreadable" not in event, event
        assert event["event"]["text"].startswith(TEXT)
        assert d is not None and d.last_error == TEXT and TEXT in (d.vars or "")
        assert json.loads(d.event or "")["text"] == event["event"]["text"]
        assert [a["response"] for a in store.attempts(delivery_id)] == [TEXT, TEXT]
    return True


def test_the_walk_moves_every_older_and_plain_value_under_the_newest_key(
    redis_client: redis.Redis,
) -> None:
    old, new = new_key(), new_key()
    made = write_records(redis_client, sealer(old), 6) + write_records(redis_client, PLAIN, 4)
    ttl = redis_client.ttl(keys.event(made[0][0]))
    resealer = Resealer(redis_client, sealer(new, old), batch=3)
    progress = resealer.start()
    resealer.run(progress)

    assert progress.done and progress.counts["unreadable"] == 0
    values = sealed_values(redis_client)
    assert len(values) == 10 * 8 and all(sealer(new).sealed_with(v) == kid(new) for v in values)
    assert progress.counts["resealed"] == 6 * 8 and progress.counts["sealed"] == 4 * 8
    assert progress.by_key == {kid(old): 6 * 8, "plain": 4 * 8}
    assert readable_with(redis_client, sealer(new), made)  # the old key is no longer needed
    assert 0 < redis_client.ttl(keys.event(made[0][0])) <= ttl  # the records keep their TTL
    assert redis_client.get(LOCK) is None
    again = Resealer(redis_client, sealer(new, old))
    second = again.start()
    assert not second.resumed  # the finished walk is not resumed: a new one starts
    again.run(second)
    assert second.counts["current"] == 80 and second.counts["resealed"] == 0


def test_a_value_written_since_it_was_read_is_left_as_written(redis_client: redis.Redis) -> None:
    cas = load_script(redis_client, "reseal.lua")
    redis_client.hset("relay:delivery:x", mapping={"last_error": "newer", "vars": "old"})
    redis_client.rpush("relay:attempts:x", "a0", "a1")
    assert cas(keys=["relay:delivery:x"], args=["hash", "last_error", "read", "re-sealed",
                                                 "vars", "old", "re-sealed"]) == [0, 1]  # fmt: skip
    assert redis_client.hgetall("relay:delivery:x") == {
        b"last_error": b"newer",
        b"vars": b"re-sealed",
    }
    assert cas(keys=["relay:attempts:x"], args=["list", 0, "stale", "new", 1, "a1", "new"]) == [
        0,
        1,
    ]
    assert redis_client.lrange("relay:attempts:x", 0, -1) == [b"a0", b"new"]
    assert cas(keys=["relay:delivery:gone"], args=["hash", "vars", "old", "new"]) == [0]
    assert not redis_client.exists("relay:delivery:gone")  # never recreates an expired record


def test_a_walk_stopped_midway_resumes_where_it_was_and_one_runs_at_a_time(
    redis_client: redis.Redis,
) -> None:
    old, new = new_key(), new_key()
    made = write_records(redis_client, sealer(old), 12)
    first = Resealer(redis_client, sealer(new, old), batch=2)
    progress = first.start()
    for _ in range(200):  # SCAN's batches are hints: step until some records were re-sealed
        first.step(progress)
        if progress.counts["records"] > 0:
            break
    assert not progress.done  # then the process dies midway: no release, the lock stays
    with pytest.raises(Busy):
        Resealer(redis_client, sealer(new, old)).start()
    saved = saved_progress(redis_client)
    assert saved is not None and (saved.phase, saved.cursor) == (progress.phase, progress.cursor)
    assert saved.counts["records"] == progress.counts["records"] > 0

    redis_client.pexpire(LOCK, 1)  # its TTL runs out
    time.sleep(0.01)
    second = Resealer(redis_client, sealer(new, old), batch=2)
    resumed = second.start()
    assert resumed.resumed and (resumed.phase, resumed.cursor) == (progress.phase, progress.cursor)
    second.run(resumed)
    assert resumed.done and resumed.counts["records"] >= 12 * 3
    assert all(sealer(new).sealed_with(v) == kid(new) for v in sealed_values(redis_client))
    assert readable_with(redis_client, sealer(new), made)

    newer = new_key()  # a walk to another key does not resume this one's position
    redis_client.hset(STATE, mapping={"phase": "attempts", "cursor": "0"})
    third = Resealer(redis_client, sealer(newer, new))
    assert third.start().phase == "events"
    redis_client.delete(LOCK)


def test_values_no_key_opens_are_named_left_alone_and_the_rest_moves(
    redis_client: redis.Redis,
) -> None:
    lost, old, new = new_key(), new_key(), new_key()
    kept = write_records(redis_client, sealer(old), 2)
    gone = write_records(redis_client, sealer(lost), 1)
    before = redis_client.hget(keys.event(gone[0][0]), "data")
    resealer = Resealer(redis_client, sealer(new, old))
    progress = resealer.start()
    resealer.run(progress)
    assert progress.counts["unreadable"] == 8 and progress.counts["resealed"] == 16
    assert redis_client.hget(keys.event(gone[0][0]), "data") == before
    assert any(
        e.startswith(f"relay:event:{gone[0][0]}#data: sealed with key {kid(lost)}, which")
        for e in progress.examples
    )
    assert readable_with(redis_client, sealer(new), kept)


def test_a_dry_run_counts_and_writes_nothing(redis_client: redis.Redis) -> None:
    old, new = new_key(), new_key()
    write_records(redis_client, sealer(old), 3)
    before = sealed_values(redis_client)
    resealer = Resealer(redis_client, sealer(new, old), dry_run=True)
    progress = resealer.start()
    resealer.run(progress)
    assert progress.counts["resealed"] == 24 and sealed_values(redis_client) == before
    assert not redis_client.exists(STATE) and not redis_client.exists(LOCK)


# the command ----------------------------------------------------------------------------
@pytest.fixture
def env(redis_url: str, write_config: Callable[..., Path], tmp_path: Path) -> dict[str, str]:
    path = write_config(
        {
            "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
            "targets": [{"id": "a", "kind": "file", "path": str(tmp_path / "a")}],
            "routes": [{"source": "ops", "targets": ["a"]}],
        }
    )
    return {"RELAY_REDIS_URL": redis_url, "RELAY_CONFIG": str(path)}


def test_the_command_makes_keys_and_rotates_printing_progress_never_a_key(
    redis_client: redis.Redis, env: dict[str, str]
) -> None:
    runner = CliRunner()
    made = runner.invoke(main, ["keys", "new-data-key"])
    assert made.exit_code == 0
    new = made.stdout.strip()
    assert len(base64.urlsafe_b64decode(new)) == 32 and f"key id {kid(new)}" in made.stderr
    old = new_key()
    records = write_records(redis_client, sealer(old), 3)
    redis_client.set("relay:event:junk", "x")  # not a record: skipped by type

    keys_env = {**env, "RELAY_ENCRYPTION_KEYS": f"{new},{old}"}
    dry = runner.invoke(main, ["keys", "rotate-data", "--dry-run"], env=keys_env)
    assert dry.exit_code == 0, dry.output
    assert "would re-seal 24" in dry.stdout and f"{kid(old)}: 24" in dry.stdout
    done = runner.invoke(main, ["keys", "rotate-data"], env=keys_env)
    assert done.exit_code == 0, done.output
    assert f"sealing under key {kid(new)} (configured: {kid(new)}, {kid(old)})" in done.stdout
    assert "done: 9 records; re-sealed 24" in done.stdout
    assert new not in done.output and old not in done.output
    assert readable_with(redis_client, sealer(new), records)
    [entry] = [e for e in redis_client.xrange(keys.AUDIT) if e[1][b"action"] == b"data.rotate"]
    assert entry[1][b"target"] == kid(new).encode()

    only_new = {**env, "RELAY_ENCRYPTION_KEYS": new}
    write_records(redis_client, sealer(old), 1)
    left = runner.invoke(main, ["keys", "rotate-data"], env=only_new)
    assert left.exit_code == 1
    assert "which RELAY_ENCRYPTION_KEYS no longer holds" in left.stderr
    assert "add their key to RELAY_ENCRYPTION_KEYS" in left.stderr

    unset = runner.invoke(main, ["keys", "rotate-data"], env=env)
    assert unset.exit_code == 2 and "RELAY_ENCRYPTION_KEYS is not set" in unset.stderr
    bad = runner.invoke(main, ["keys", "rotate-data"], env={**env, "RELAY_ENCRYPTION_KEYS": "x"})
    assert bad.exit_code != 0 and "RELAY_ENCRYPTION_KEYS: key 1 of 1" in bad.output
