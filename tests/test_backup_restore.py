"""The backup and restore of docs/redis.md, done as written, on real redis-servers.

Redis is the relay's database: the queued events and the dead letters exist nowhere
else. The doc's procedure (``BGREWRITEAOF``, wait, pause automatic rewrites, copy the
AOF folder, resume) must give a copy that a fresh redis-server started on it reads back
whole, including what was written after the rewrite (it sits in the incremental file,
not the base), and nothing written after the copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from relay.cli.embedded import free_port
from relay.events import GroupEvent
from relay.state import keys
from relay.state.deliveries import Store
from relay.state.lifecycle import DeliveryRecord, DeliveryStatus
from relay.state.outbox import Outbox
from relay.state.records import Records
from tests.conftest import wait_for

RETENTION = 7 * 86400
QUEUED = 12  # events accepted, waiting for fan-out
DEAD = 5  # deliveries dead-lettered
LATE = 3  # events accepted after the rewrite, before the copy


def redis_binary() -> str:
    """redis-server from PATH, 7.0 or later (the AOF folder with its manifest)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH (apt-get install redis-server)")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\d+)\.", out)
    if found is None or int(found.group(1)) < 7:
        pytest.skip(f"docs/redis.md describes Redis 7's AOF folder; PATH has {out.strip()!r}")
    return binary


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[Path], redis.Redis]]:
    """``start(data_dir)`` runs a redis-server with deploy/redis.conf's persistence on a
    free loopback port and returns a client; every server is stopped at the end."""
    binary = redis_binary()
    procs: list[subprocess.Popen[bytes]] = []

    def start(data_dir: Path) -> redis.Redis:
        data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        procs.append(
            subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
                + ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
                + ["--aof-use-rdb-preamble", "yes", "--maxmemory-policy", "noeviction"]
                + ["--logfile", str(data_dir / "redis.log")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        client = redis.Redis(port=port)
        wait_for(lambda: _loaded(client), timeout=20)
        return client

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(20)


def _loaded(client: redis.Redis) -> bool:
    try:
        return int(client.info("persistence")["loading"]) == 0
    except redis.ConnectionError:
        return False


def accept(outbox: Outbox, n: int) -> str:
    event = GroupEvent.model_validate(
        {
            "id": f"evt_backup_{n}",
            "source": "ops",
            "type": "message.created",
            "occurred_at": "2025-01-01T00:00:00Z",
            "text": f"message {n} 你好",
        }  # fmt: skip
    )
    outbox.accept_event("ops", event.id, event.to_json(), dedupe_key=f"m{n}", dedupe_ttl=86400)
    return event.id


def dead_letter(client: redis.Redis, outbox: Outbox, store: Store, n: int) -> str:
    """An event fanned out to one target whose delivery failed for good, as workers do."""
    event_id = accept(outbox, 1000 + n)
    client.delete(keys.FANOUT_QUEUE)  # a worker took the fan-out message
    record = DeliveryRecord.new(
        id=f"dlv_backup_{n}", event_id=event_id, source="ops", target="sink", route=0,
        queue=keys.deliver_queue("webhook"), now=time.time(),
    )  # fmt: skip
    outbox.fan_out(event_id, [(record.to_fields(), record.queue or "")])
    client.lpop(keys.deliver_queue("webhook"))  # and the delivery message
    attempt = {"n": 1, "started_at": time.time(), "duration_ms": 3.0, "outcome": "failed",
               "status": 410, "response": "gone", "error": "HTTP 410"}  # fmt: skip
    event_json = (client.hget(keys.event(event_id), "data") or b"").decode()
    store.finish_dead(record.id or "", attempt, "permanent failure", event_json, token="")
    return record.id or ""


def in_files(client: redis.Redis, text: str) -> bool:
    """Whether ``text`` has reached the server's append-only files."""
    config = client.config_get("dir") | client.config_get("appenddirname")
    folder = Path(config["dir"]) / config["appenddirname"]
    return any(text.encode() in path.read_bytes() for path in folder.iterdir())


def back_up(client: redis.Redis, into: Path, meanwhile: Callable[[], None]) -> None:
    """docs/redis.md, "Backup", step by step; ``meanwhile`` writes as the relay would
    between the rewrite and the copy."""
    client.bgrewriteaof()
    wait_for(
        lambda: (
            (info := client.info("persistence"))["aof_rewrite_in_progress"] == 0
            and info["aof_rewrite_scheduled"] == 0
        ),
        timeout=30,
    )
    previous = client.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"]
    client.config_set("auto-aof-rewrite-percentage", 0)
    meanwhile()
    try:
        assert client.info("persistence")["aof_rewrite_in_progress"] == 0
        config = client.config_get("dir") | client.config_get("appenddirname")
        shutil.copytree(Path(config["dir"]) / config["appenddirname"], into)
    finally:
        client.config_set("auto-aof-rewrite-percentage", previous)


def test_a_backup_restored_into_a_fresh_redis_has_the_queued_events_and_dead_letters(
    tmp_path: Path, start_server: Callable[[Path], redis.Redis]
) -> None:
    live = start_server(tmp_path / "live")
    outbox = Outbox(live, lease=3600, retention=RETENTION)
    store = Store(live, retention=RETENTION)

    dead_ids = [dead_letter(live, outbox, store, n) for n in range(DEAD)]
    queued_ids = [accept(outbox, n) for n in range(QUEUED)]

    def late() -> None:  # after the rewrite: only in the incremental file
        queued_ids.extend(accept(outbox, QUEUED + n) for n in range(LATE))
        # With appendfsync everysec, Redis may hold a write back for up to 2 s behind a
        # slow fsync, having answered it already (docs/redis.md): a copy holds what
        # reached the files, so the copy waits for these.
        wait_for(lambda: in_files(live, queued_ids[-1]), timeout=10)

    backup = tmp_path / "backup" / "appendonlydir"
    back_up(live, backup, late)
    after = accept(outbox, 9999)  # written after the copy: not in the backup
    manifest = (backup / "appendonly.aof.manifest").read_text()
    assert "type b" in manifest and "type i" in manifest, manifest

    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    shutil.copytree(backup, restored_dir / "appendonlydir")
    restored = start_server(restored_dir)

    records = Records(restored)
    queue = [m for m in restored.lrange(keys.FANOUT_QUEUE, 0, -1)]
    assert len(queue) == QUEUED + LATE, "every queued fan-out message came back"
    for event_id in queued_ids:
        assert records.event(event_id) is not None, event_id
        assert restored.zscore(keys.INFLIGHT, f"fanout:{event_id}") is not None
    assert records.event(after) is None, "the restore is the backup, not the live folder"

    letters = list(records.dead_letters())
    assert sorted(d.delivery.id or "" for d in letters) == sorted(dead_ids)
    for letter in letters:
        assert letter.delivery.status == DeliveryStatus.DEAD
        assert letter.delivery.event and "你好" in letter.delivery.event
        assert records.attempts(letter.delivery.id or "")[0]["status"] == 410
        assert restored.ttl(keys.delivery(letter.delivery.id or "")) == -1, "kept until purged"
    # A resend of a queued event is still a duplicate after the restore.
    again = Outbox(restored, lease=3600, retention=RETENTION)
    event = records.event(queued_ids[0])
    assert event is not None
    assert (
        again.accept_event("ops", "evt_other", "{}", dedupe_key="m0", dedupe_ttl=86400)
        == queued_ids[0]
    )
