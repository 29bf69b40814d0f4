"""The Redis ACL users of ``deploy/redis/users.acl``, loaded (``aclfile``) by a real
redis-server: each process works with its own user (the web process accepts a signed
event and shows it through the API, a worker delivers it, the scheduler releases its
retry, the CLI does its operator work), Redis refuses nothing they do, and a user
cannot do or read what its process does not need: the web user neither flushes, nor
configures, nor reads a worker's ledgers, tokens or kombu's messages.

The users' rules are derived from the code: every key ``relay.state.keys`` names and
every command each Lua script runs has a row here, so a new key or command without a
rule fails this module instead of a production deployment.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from pytest_httpserver import HTTPServer

from relay.cli import main
from relay.cli.embedded import find_redis_server, free_port
from relay.state import keys
from relay.state.apikeys import ApiKeys
from relay.state.lua import script_text
from tests.conftest import ROOT, RelayProcesses, Sink, ops_config, wait_for
from tests.pipeline_support import EVENT, delivery_of, signed_post, status_of

ACL_FILE = ROOT / "deploy" / "redis" / "users.acl"
DOCS = ROOT / "docs" / "running.md"
RENDER = re.compile(r"^```sh users\.acl[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
USERS = ("web", "worker", "scheduler", "cli", "replica", "sentinel", "admin")
OPTIONAL_ON_CONNECT = {"client|setinfo", "client|maint_notifications"}
PASSWORDS = {who: f"acl-{who}-pw-{hashlib.sha256(who.encode()).hexdigest()[:16]}" for who in USERS}


def render(out: Path) -> Path:
    """``users.acl`` with every password set, by the shell commands docs/running.md shows."""
    [snippet] = RENDER.findall(DOCS.read_text())
    env = {f"REDIS_{who.upper()}_PASSWORD": pw for who, pw in PASSWORDS.items()}
    env["PATH"] = "/usr/bin:/bin"
    script = snippet.replace("/etc/redis/users.acl", str(out))
    subprocess.run(["bash", "-euc", script], cwd=ROOT, env=env, check=True, timeout=30)
    return out


class Server:
    """A redis-server started from a config file; the admin user's client to watch it."""

    def __init__(self, folder: Path, lines: list[str], *, sentinel: bool = False) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = folder / "redis.log"
        conf = folder / "redis.conf"
        base = [f"port {self.port}", "bind 127.0.0.1", f"dir {folder}", f"logfile {self.log}"]
        conf.write_text("\n".join(base + lines) + "\n")
        command = [find_redis_server(), str(conf), *(["--sentinel"] if sentinel else [])]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        self.admin = self.client()

    def url(self, who: str) -> str:
        return f"redis://relay-{who}:{PASSWORDS[who]}@127.0.0.1:{self.port}/0"

    def client(self, who: str = "admin") -> redis.Redis:
        return redis.Redis.from_url(self.url(who), socket_timeout=5)

    def wait(self, client: redis.Redis) -> Server:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, timeout=15)
        return self

    def stop(self) -> None:
        self.admin.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def refused(self) -> list[tuple[str, str, str]]:
        """What ``ACL LOG`` holds: (user, reason, object), but for the optional commands
        redis-py sends on connect, refused on a Redis that has them and left at that."""
        entries = self.admin.acl_log(count=1000)
        found = [(e["username"], e["reason"], e["object"]) for e in entries]
        return [f for f in found if f[2] not in OPTIONAL_ON_CONNECT]


def node(folder: Path, acl: Path, *extra: str) -> list[str]:
    """The config of a relay Redis with the users of ``acl``; replicas log in as relay-replica."""
    return [
        f"aclfile {acl}",
        "save ''",
        "appendonly no",
        "repl-diskless-sync-delay 0",
        "masteruser relay-replica",
        f"masterauth {PASSWORDS['replica']}",
        *extra,
    ]


@pytest.fixture(scope="module")
def acl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("acl") / "users.acl")


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory, acl_file: Path) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("acl-redis")
    server = Server(folder, node(folder, acl_file))
    yield server.wait(server.admin)
    server.stop()


@pytest.fixture
def acl(acl_redis: Server) -> Server:
    """The module's Redis, empty and with an empty ACL log, for each test."""
    acl_redis.admin.flushall()
    acl_redis.admin.acl_log_reset()
    return acl_redis


def test_the_shipped_file_loads_only_once_every_password_is_set(tmp_path: Path) -> None:
    """No user has a password until the operator sets one: Redis refuses the file as shipped."""
    server = Server(tmp_path, node(tmp_path, ACL_FILE))
    assert server.process.wait(15) != 0
    assert "password hash must be exactly 64 characters" in server.log.read_text()
    names = [line.split()[1] for line in ACL_FILE.read_text().splitlines()]
    assert names == ["default", *(f"relay-{who}" for who in USERS)]
    assert ACL_FILE.read_text().startswith("user default off ")


@dataclass
class Operator:
    """The ``relay`` command and the management API, each with its own user."""

    env: dict[str, str]
    web: Any
    token: str = ""

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=self.env)
        assert result.exit_code == 0, result.output
        return str(result.stdout)

    def api(self, method: str, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        response = self.web.open("/api/v1" + path, method=method, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()


def is_dead(client: redis.Redis, delivery_id: str) -> bool:
    return status_of(client, delivery_id) == "dead"


def test_each_process_works_with_its_own_user(
    acl: Server,
    make_app: Callable[..., Flask],
    write_config: Callable[..., Path],
    relay_processes: Callable[..., RelayProcesses],
    httpserver: HTTPServer,
    tmp_path: Path,
) -> None:
    sink = Sink(httpserver, [(500, {}), (200, {}), (410, {}), (200, {}), (410, {})])
    path = write_config(ops_config(sink.url, retry={"max_attempts": 5, "backoff_base": "0.2s"}))
    web = make_app(path, redis_url=acl.url("web")).test_client()
    env = {"RELAY_REDIS_URL": acl.url("cli"), "RELAY_CONFIG": str(path)}
    ops = Operator(env | {"RELAY_STATE_DIR": str(tmp_path / "state")}, web)
    ops.token = ops.cli("keys", "create", "ops", "--scope", "admin").splitlines()[1]
    relay_processes(path, scheduler=False, RELAY_REDIS_URL=acl.url("worker"))
    admin = acl.admin

    # intake (web) -> fan-out and a first attempt that fails (worker) -> scheduled
    first = signed_post(web, EVENT)
    assert first.status_code == 202, first.get_data(as_text=True)
    event_id = first.get_json()["event_id"]
    delivery_id = delivery_of(admin, event_id)
    wait_for(lambda: status_of(admin, delivery_id) == "scheduled", timeout=60)
    # only the scheduler releases the retry, and the worker delivers it
    relay_processes(path, worker=False, RELAY_REDIS_URL=acl.url("scheduler"))
    wait_for(lambda: status_of(admin, delivery_id) == "delivered", timeout=60)
    shown = ops.api("GET", f"/events/{event_id}")
    assert [(a["n"], a["status"]) for a in shown["deliveries"][0]["attempts_log"]] == [
        (1, 500),
        (2, 200),
    ]

    # a dead letter replayed, another purged, a target paused and resumed: the operator's
    # actions through the API
    for action, done in (("replay", "replayed"), ("purge", "purged")):
        dead_event = signed_post(web, {**EVENT, "text": action}).get_json()["event_id"]
        dead = delivery_of(admin, dead_event)
        wait_for(partial(is_dead, admin, dead), timeout=60)
        assert ops.api("POST", f"/dead-letters/{dead}/{action}")[done] is True
    wait_for(lambda: len(sink.arrivals) == 5, timeout=60)
    assert ops.api("POST", "/targets/sink/pause")["paused"] is True
    assert ops.api("POST", "/targets/sink/resume")["paused"] is False
    assert ops.api("POST", "/targets/sink/reset")["id"] == "sink"
    for read in ("/events", "/deliveries", "/dead-letters", "/queues", "/targets", "/sources"):
        ops.api("GET", read)
    assert {"replay", "purge", "pause"} <= {e["action"] for e in ops.api("GET", "/audit")["items"]}
    assert web.get("/readyz").status_code == 200
    assert b"relay_events_accepted_total" in web.get("/metrics").data

    # the operator's commands
    assert event_id in ops.cli("events", "ls")
    for command in (["queues"], ["dlq", "ls"], ["targets"], ["keys", "ls"], ["status"]):
        ops.cli(*command)

    assert acl.refused() == []


@pytest.mark.parametrize(
    "command",
    [
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "requirepass"),
        ("CONFIG", "SET", "appendonly", "no"),
        ("KEYS", "*"),
        ("SCAN", "0"),
        ("ACL", "LIST"),
        ("SCRIPT", "FLUSH"),
        ("SHUTDOWN",),
        ("MONITOR",),
        ("SELECT", "1"),
        ("GET", "relay:feishu:token:0123"),  # a platform access token the workers cache
        ("HGETALL", "relay:ledger:dlv_1"),  # what a delivery did in a project tool
        ("SMEMBERS", "relay:apikeys"),  # the list of API keys (only the CLI manages it)
        ("HGETALL", "unacked"),  # kombu's reserved messages
        ("SMEMBERS", "_kombu.binding.relay.fanout"),
        ("GET", "relay:lock:dlv_1"),
        ("ZADD", "relay:schedule", "1", "dlv_1"),  # read-only for the web process
        ("PUBLISH", "/0.celery.pidbox", "x"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_the_web_user_cannot(acl: Server, command: tuple[str, ...]) -> None:
    web = acl.client("web")
    with pytest.raises(redis.exceptions.NoPermissionError):
        web.execute_command(*command)
    web.close()


# Who may read (r) or read and write (rw) each key, by the process that uses it. Every
# name in relay.state.keys needs a row (or a place in NOT_KEYS); keys the workers spell
# themselves and kombu's keys are listed too.
W, R, NO = "rw", "r", ""
ACCESS: dict[str, dict[str, str]] = {
    # name in relay.state.keys (or a literal key): web, worker, scheduler, cli
    "FANOUT_QUEUE": {"web": W, "worker": W, "scheduler": W, "cli": W},
    "deliver_queue": {"web": W, "worker": W, "scheduler": W, "cli": W},
    "SCHEDULE": {"web": R, "worker": W, "scheduler": W, "cli": R},
    "INFLIGHT": {"web": W, "worker": W, "scheduler": W, "cli": W},
    "DLQ": {"web": W, "worker": W, "scheduler": NO, "cli": W},
    "EVENTS": {"web": W, "worker": R, "scheduler": W, "cli": W},
    "lane": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "FANNED_OUT": {"web": NO, "worker": W, "scheduler": W, "cli": NO},
    "SCHEDULER_HEARTBEAT": {"web": R, "worker": NO, "scheduler": W, "cli": R},
    "SEEN": {"web": NO, "worker": NO, "scheduler": NO, "cli": R},
    "WORKERS": {"web": NO, "worker": W, "scheduler": W, "cli": R},
    "KOMBU_UNACKED": {"web": NO, "worker": W, "scheduler": W, "cli": NO},
    "KOMBU_UNACKED_INDEX": {"web": NO, "worker": W, "scheduler": W, "cli": NO},
    "dedupe": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "single_use": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "event": {"web": W, "worker": W, "scheduler": R, "cli": W},
    "event_deliveries": {"web": W, "worker": W, "scheduler": R, "cli": W},
    "delivery": {"web": W, "worker": W, "scheduler": W, "cli": W},
    "attempts": {"web": W, "worker": W, "scheduler": NO, "cli": W},
    "lock": {"web": NO, "worker": W, "scheduler": W, "cli": NO},
    "worker_held": {"web": NO, "worker": W, "scheduler": W, "cli": NO},
    "target_state": {"web": W, "worker": W, "scheduler": W, "cli": W},
    "target_calls": {"web": W, "worker": W, "scheduler": NO, "cli": W},
    "target_throttle": {"web": W, "worker": W, "scheduler": W, "cli": W},
    "target_running": {"web": W, "worker": W, "scheduler": W, "cli": W},
    "target_slow": {"web": W, "worker": W, "scheduler": W, "cli": W},
    "target_rate": {"web": W, "worker": W, "scheduler": NO, "cli": W},
    "API_KEYS": {"web": NO, "worker": NO, "scheduler": NO, "cli": W},
    "api_key": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "AUDIT": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "AUDIT_PENDING": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "audit_failures": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "source_rate": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "poll_offset": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "STATS_SOURCES": {"web": W, "worker": W, "scheduler": NO, "cli": W},
    "STATS_TARGETS": {"web": W, "worker": W, "scheduler": NO, "cli": W},
    "stats_minute": {"web": W, "worker": W, "scheduler": NO, "cli": W},
    "DASHBOARD_SECRET_KEY": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "dashboard_session": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "dashboard_replay": {"web": W, "worker": NO, "scheduler": NO, "cli": W},
    "sent_steps": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "dingtalk_token": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "feishu_token": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "wecom_token": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "ledger": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "message_tasks": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "event_tasks": {"web": R, "worker": W, "scheduler": NO, "cli": R},
    "task_origin": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "task_echoes": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "task_burst": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "task_updates": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "content": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "github_token": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "linear_team": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "RESEAL": {"web": NO, "worker": NO, "scheduler": NO, "cli": W},  # relay keys rotate-data
    "RESEAL_LOCK": {"web": NO, "worker": NO, "scheduler": NO, "cli": W},
    "feishu_drive_pace": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "feishu_folder": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "feishu_file": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "feishu_pending": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "unacked_mutex": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "_kombu.binding.relay.fanout": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
    "relay.deliver.webhook\x06\x163": {"web": W, "worker": W, "scheduler": W, "cli": W},
    "notify@host.celery.pidbox": {"web": NO, "worker": W, "scheduler": NO, "cli": NO},
}
NOT_KEYS = {"PREFIX", "FAMILIES", "FANOUT_TASK", "DELIVER_TASK", "ALL_QUEUES", "USED_BY_RELAY"}


def sample_key(name: str) -> str:
    """A key of that name in ``relay.state.keys`` (arguments filled in), or the literal."""
    found = getattr(keys, name, None)
    if found is None:
        return name
    if callable(found):
        given = {"family": "notify", "kind": "telegram"}  # sent_steps: telegram, apprise
        args = [given.get(p, "7") for p in inspect.signature(found).parameters]
        return str(found(*args))
    return str(found)


def test_every_key_the_relay_names_has_a_row() -> None:
    named = {
        name
        for name, value in vars(keys).items()
        if not name.startswith("_") and (isinstance(value, str) or inspect.isfunction(value))
    }
    missing = named - set(ACCESS) - NOT_KEYS - {"annotations"}
    assert not missing, f"give these keys a row in ACCESS and a rule in {ACL_FILE.name}"


@pytest.mark.parametrize("name", sorted(ACCESS))
def test_each_user_reaches_exactly_the_keys_its_process_uses(acl: Server, name: str) -> None:
    key, admin = sample_key(name), acl.admin
    for who, wanted in ACCESS[name].items():
        reads = admin.acl_dryrun(f"relay-{who}", "GET", key) == b"OK"
        writes = admin.acl_dryrun(f"relay-{who}", "SET", key, "x") == b"OK"
        got = W if writes and reads else R if reads else NO if not writes else "w"
        assert got == wanted, f"relay-{who} on {key!r}: {got or 'none'}, wanted {wanted or 'none'}"


# Who runs each script (relay/state/lua/*.lua): every command in it must be granted.
SCRIPT_USERS = {
    "intake.lua": ("web",),
    "windows_acquire.lua": ("web", "worker"),
    "audit_failure.lua": ("web",),
    "replay.lua": ("web", "cli"),
    "fanout.lua": ("worker",),
    "begin.lua": ("worker",),
    "finish.lua": ("worker",),
    "dead.lua": ("worker",),
    "gate_admit.lua": ("worker",),
    "gate_record.lua": ("worker",),
    "heartbeat.lua": ("worker",),
    "compare_and_delete.lua": ("worker",),
    "release_due.lua": ("scheduler",),
    "lane_admit.lua": ("worker",),
    "fanout_mark.lua": ("scheduler",),
    "reseal.lua": ("cli",),
    "requeue_inflight.lua": ("scheduler",),
    "dead_workers.lua": ("scheduler",),
    "recover_worker.lua": ("scheduler",),
}
CALL = re.compile(r"redis\.p?call\(\s*['\"]([A-Za-z]+)['\"]")


def granted(who: str) -> set[str]:
    """The commands a user's line in the shipped file allows (``+name``)."""
    [line] = [ln for ln in ACL_FILE.read_text().splitlines() if ln.split()[1] == f"relay-{who}"]
    return {rule[1:].lower() for rule in line.split() if rule.startswith("+")}


def test_every_command_a_script_runs_is_granted_to_whoever_runs_it() -> None:
    shipped = {p.name for p in (ROOT / "relay" / "state" / "lua").glob("*.lua")}
    assert shipped == set(SCRIPT_USERS), "say in SCRIPT_USERS which processes run a new script"
    for script, users in SCRIPT_USERS.items():
        calls = {c.lower() for c in CALL.findall(script_text(script))}
        for who in users:
            assert calls <= granted(who), f"{script}: relay-{who} lacks {calls - granted(who)}"
            assert {"evalsha", "script|load"} <= granted(who)


def linked(server: Server) -> bool:
    """Whether ``server`` is a replica whose link to its primary is up."""
    return bool(server.admin.info("replication").get("master_link_status") == "up")


def master_port(sentinel: redis.Redis) -> int | None:
    found = sentinel.sentinel_get_master_addr_by_name("relay")
    return int(found[1]) if found else None


def test_replicas_confirm_writes_and_a_sentinel_promotes_one_with_their_users(
    tmp_path: Path,
    acl_file: Path,
    make_app: Callable[..., Flask],
    write_config: Callable[..., Path],
) -> None:
    """Replication logs in as relay-replica; the web user waits for it to confirm intake
    and an operator's write (``RELAY_REDIS_MIN_REPLICAS``); Sentinel, as relay-sentinel,
    watches both nodes and promotes the replica; nothing is refused. (Turning the old
    primary into a replica waits for Sentinel's next 10 s look at it, same commands.)"""
    primary = Server(tmp_path / "a", node(tmp_path / "a", acl_file))
    primary.wait(primary.admin)
    replica = Server(
        tmp_path / "b", node(tmp_path / "b", acl_file, f"replicaof 127.0.0.1 {primary.port}")
    )
    replica.wait(replica.admin)
    sentinel = Server(
        tmp_path / "s",
        [
            f"sentinel monitor relay 127.0.0.1 {primary.port} 1",
            f"sentinel known-replica relay 127.0.0.1 {replica.port}",
            "sentinel auth-user relay relay-sentinel",
            f"sentinel auth-pass relay {PASSWORDS['sentinel']}",
            "sentinel down-after-milliseconds relay 2000",
            "sentinel failover-timeout relay 10000",
        ],
        sentinel=True,
    )
    watcher = redis.Redis(port=sentinel.port, socket_timeout=5)
    try:
        sentinel.wait(watcher)
        wait_for(lambda: linked(replica), timeout=30)
        path = write_config(ops_config("http://127.0.0.1:9/in"))
        web = make_app(
            path,
            redis_url=primary.url("web"),
            redis_min_replicas=1,
            redis_replica_timeout=2.0,  # a loaded machine can be slow to acknowledge
            redis_timeout=5.0,
        ).test_client()
        assert signed_post(web, EVENT).status_code == 202
        _, token = ApiKeys(primary.admin).create("ops", "admin")
        paused = web.post(
            "/api/v1/targets/sink/pause", headers={"Authorization": f"Bearer {token}"}
        )
        assert paused.status_code == 200, paused.get_data(as_text=True)
        assert primary.admin.info("commandstats")["cmdstat_wait"]["calls"] >= 2
        wait_for(lambda: watcher.execute_command("SENTINEL", "REPLICAS", "relay"), timeout=30)
        watcher.execute_command("SENTINEL", "FAILOVER", "relay")
        wait_for(lambda: master_port(watcher) == replica.port, timeout=30)
        wait_for(lambda: replica.admin.info("replication")["role"] == "master", timeout=30)
        assert primary.refused() == [] and replica.refused() == []
    finally:
        watcher.close()
        for server in (sentinel, replica, primary):
            server.stop()
