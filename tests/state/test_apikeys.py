"""API keys (hash-only storage, scopes, rotation grace, revocation), the audit log and
``relay keys``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from relay.cli import main
from relay.state import keys
from relay.state.apikeys import ApiKeys, UnknownKey, allows
from relay.state.audit import AuditLog


@pytest.fixture
def store(redis_client: redis.Redis) -> ApiKeys:
    return ApiKeys(redis_client)


def test_a_key_verifies_and_only_its_hash_is_stored(
    store: ApiKeys, redis_client: redis.Redis
) -> None:
    key, token = store.create("ci", "replay")
    assert token.startswith(f"rk_{key.id}_")
    found = store.verify(token)
    assert found is not None and found.id == key.id and found.scope == "replay"
    dump = json.dumps(
        {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.api_key(key.id)).items()}
    )
    assert token not in dump and token.split("_", 2)[2] not in dump
    assert "last_used_at" in dump


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t + "x",
        lambda t: "",
        lambda t: "rk_000000000000_" + "a" * 43,
    ],
)
def test_wrong_tokens_do_not_verify(store: ApiKeys, mangle: Callable[[str], str]) -> None:
    _, token = store.create("ci", "read")
    assert store.verify(mangle(token)) is None


def test_scopes_nest() -> None:
    assert allows("admin", "replay") and allows("replay", "read") and allows("read", "read")
    assert not allows("read", "replay") and not allows("replay", "admin")
    assert not allows("bogus", "read")


def test_rotation_keeps_the_old_secret_for_the_grace_period(store: ApiKeys) -> None:
    key, old = store.create("ci", "read")
    _, new = store.rotate(key.id, grace=0.5)
    assert new != old
    assert store.verify(old) is not None and store.verify(new) is not None
    time.sleep(0.6)
    assert store.verify(old) is None and store.verify(new) is not None


def test_revoked_keys_and_their_old_secrets_stop_at_once(store: ApiKeys) -> None:
    key, old = store.create("ci", "admin")
    _, new = store.rotate(key.id, grace=3600)
    store.revoke(key.id)
    assert store.verify(old) is None and store.verify(new) is None
    with pytest.raises(UnknownKey):
        store.rotate(key.id, grace=60)
    with pytest.raises(UnknownKey):
        store.revoke("000000000000")


def test_the_audit_log_pages_newest_first(redis_client: redis.Redis) -> None:
    audit = AuditLog(redis_client)
    for n in range(7):
        audit.record("replay" if n % 2 else "login", actor=f"k{n}", target=f"d{n}")
    first = audit.entries(limit=3)
    assert [e.target for e in first] == ["d6", "d5", "d4"]
    more = audit.entries(limit=3, before=first[-1].id)
    assert [e.target for e in more] == ["d3", "d2", "d1"]
    assert [e.target for e in audit.entries(action="replay")] == ["d5", "d3", "d1"]
    assert [e.actor for e in audit.entries(actor="k2")] == ["k2"]


@pytest.mark.parametrize("before", ["0-0", "0", "00-000"])
def test_nothing_is_older_than_the_smallest_id(redis_client: redis.Redis, before: str) -> None:
    audit = AuditLog(redis_client)
    audit.record("login", actor="k1", target="d1")
    assert audit.entries(before=before) == []


def test_relay_keys_cli(
    write_config: Callable[..., Path], redis_url: str, redis_client: redis.Redis
) -> None:
    path = write_config({"sources": []})
    env = {"RELAY_REDIS_URL": redis_url, "RELAY_CONFIG": str(path)}
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "ops team", "--scope", "replay"], env=env)
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    key_id = token.split("_")[1]
    assert ApiKeys(redis_client).verify(token) is not None

    listed = runner.invoke(main, ["keys", "ls"], env=env)
    assert key_id in listed.output and "replay" in listed.output and token not in listed.output

    rotated = runner.invoke(main, ["keys", "rotate", key_id, "--grace", "1h"], env=env)
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip().splitlines()[-1]
    assert ApiKeys(redis_client).verify(new) and ApiKeys(redis_client).verify(token)

    assert runner.invoke(main, ["keys", "revoke", key_id], env=env).exit_code == 0
    assert ApiKeys(redis_client).verify(new) is None
    assert runner.invoke(main, ["keys", "revoke", "nope"], env=env).exit_code == 1

    actions = [e.action for e in AuditLog(redis_client).entries()]
    assert actions == ["key.revoke", "key.rotate", "key.create"]
    logged = json.dumps([e.public() for e in AuditLog(redis_client).entries()])
    assert token not in logged and new not in logged
