"""``relay up`` as a user runs it: real web, worker, scheduler and embedded Redis.

Every stop path must leave no process behind, so each test records the whole tree
from ``/proc`` before stopping and checks afterwards that every one of them is gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from relay.cli.embedded import free_port
from tests.conftest import TEST_ENV, wait_for

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
    pytest.mark.timeout(90),
]

GRACE = 20.0
RELAY = [sys.executable, "-m", "relay.cli"]


# --- the process tree, from /proc -------------------------------------------------------


def stat_of(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rpartition(")")[2].split()  # after "pid (comm)"
    return int(fields[1]), fields[0], int(fields[19])


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def process_tree(root: int) -> dict[int, tuple[int, str]]:
    """Every live descendant of ``root``: pid → (start time, command line)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (info := stat_of(int(entry.name))) and info[1] != "Z":
            children.setdefault(info[0], []).append(int(entry.name))
    tree: dict[int, tuple[int, str]] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        info = stat_of(pid)
        if info is not None:
            tree[pid] = (info[2], cmdline_of(pid))
            todo.extend(children.get(pid, []))
    return tree


def survivors(tree: dict[int, tuple[int, str]]) -> dict[int, str]:
    """The processes of ``tree`` still running (same pid *and* start time, not a zombie)."""
    left = {}
    for pid, (started, cmd) in tree.items():
        info = stat_of(pid)
        if info is not None and info[2] == started and info[1] != "Z":
            left[pid] = cmd
    return left


def find(tree: dict[int, tuple[int, str]], fragment: str) -> list[int]:
    return [pid for pid, (_, cmd) in tree.items() if fragment in cmd]


# --- running `relay up` -----------------------------------------------------------------


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    workdir: Path
    port: int
    log: Path
    seen: dict[int, tuple[int, str]] = field(default_factory=dict)
    """Every process seen in the tree, so teardown can clean up even after a failure."""

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self, timeout: float = 45.0) -> None:
        def answered() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"relay up exited {self.proc.returncode}:\n{self.output}")
            try:
                return requests.get(f"{self.base}/readyz", timeout=2).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # still starting up
                return False

        wait_for(answered, timeout=timeout, interval=0.2)

    def wait_for_children(self, *fragments: str) -> dict[int, tuple[int, str]]:
        """The tree, once a process matching each fragment is in it."""

        def complete() -> dict[int, tuple[int, str]] | None:
            tree = process_tree(self.proc.pid)
            self.seen.update(tree)
            return tree if all(find(tree, f) for f in fragments) else None

        found: dict[int, tuple[int, str]] = wait_for(complete, timeout=30, interval=0.1)
        return found

    def stop_and_check(
        self,
        sig: int | None,
        *,
        group: bool = False,
        expect: int = 0,
        tree: dict[int, tuple[int, str]] | None = None,
    ) -> None:
        """Send ``sig`` (None: none), expect exit ``expect`` within the grace, no survivors."""
        tree = tree or process_tree(self.proc.pid)
        self.seen.update(tree)
        started = time.monotonic()
        if sig is not None:
            (os.killpg if group else os.kill)(self.proc.pid, sig)
        code = self.proc.wait(GRACE + 10)
        took = time.monotonic() - started
        assert code == expect, self.output
        assert took < GRACE + 5, f"took {took:.1f}s\n{self.output}"
        assert wait_for(lambda: not survivors(tree), timeout=5), survivors(tree)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return {**env, **TEST_ENV, "RELAY_WORKER_CONCURRENCY": "4", "WEB_CONCURRENCY": "1", **extra}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with a fresh ``relay init`` config, as a new user has."""
    subprocess.run([*RELAY, "init"], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


@pytest.fixture
def start_up(workdir: Path) -> Iterator[Callable[..., Up]]:
    started: list[Up] = []

    def start(*args: str, **env: str) -> Up:
        port = free_port()
        log = workdir / f"up-{len(started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*RELAY, "up", "--port", str(port), *args],
                cwd=workdir,
                env=base_env(**env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group, like a terminal's foreground job
            )
        up = Up(proc, workdir, port, log)
        started.append(up)
        return up

    yield start
    for up in started:  # a failed test must not leak its relay
        tree = {**up.seen, **process_tree(up.proc.pid)}
        if up.proc.poll() is None:
            up.proc.send_signal(signal.SIGTERM)
            try:
                up.proc.wait(GRACE + 5)
            except subprocess.TimeoutExpired:
                up.proc.kill()
                up.proc.wait()
        for pid in survivors(tree):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def relay(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """One command in a second shell of ``workdir`` (nothing exported unless ``env``)."""
    return subprocess.run(
        [*RELAY, *args],
        cwd=workdir,
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a command that had to refuse: exit 1, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def redis_url_in(output: str) -> str:
    match = re.search(r"redis:\s+(redis://\S+)", output)
    assert match, output
    return match.group(1)


# --- the tests --------------------------------------------------------------------------


def test_up_runs_a_first_event_end_to_end_and_stops_on_sigterm(
    start_up: Callable[..., Up], workdir: Path
) -> None:
    up = start_up()
    up.ready()
    assert f"POST {up.base}/hooks/ops" in up.output
    assert f"dashboard: {up.base}/dashboard/" in up.output
    assert f"api:       {up.base}/api/v1" in up.output
    assert "relay keys create admin --scope admin" in up.output
    assert "find this relay by themselves" in up.output
    assert "Ctrl-C to stop" in up.output
    landing = requests.get(f"{up.base}/", allow_redirects=False, timeout=5)
    assert landing.status_code == 302 and landing.headers["Location"].endswith("/dashboard/")
    recorded = json.loads((workdir / ".relay" / "redis" / "version").read_text())
    binary_says = subprocess.run(
        [recorded["binary"], "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"v={recorded['version']} " in binary_says  # the server that runs, recorded

    tree = up.wait_for_children("redis-server", "gunicorn", "celery", "relay.cli scheduler")
    assert redis_url_in(up.output).startswith("redis://:***@")  # the password is not shown
    client = redis.Redis.from_url((workdir / ".relay" / "redis" / "url").read_text().strip())
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("dir")["dir"] == str(workdir / ".relay" / "redis")
    finally:
        client.close()
    assert find(tree, "redis-server")

    sent = subprocess.run(
        [*RELAY, "send", "ops", "--url", up.base],
        cwd=workdir,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    event_id = json.loads(sent.stdout.splitlines()[-1])["event_id"]

    outbox = workdir / ".relay" / "outbox" / "outbox.jsonl"
    wait_for(lambda: outbox.exists() and event_id in outbox.read_text(), timeout=20)
    record = json.loads(outbox.read_text().splitlines()[0])
    assert record["event"]["source"] == "ops"

    up.stop_and_check(signal.SIGTERM)
    assert "all stopped" in up.output
    assert (workdir / ".relay" / "redis" / "appendonlydir").is_dir()  # kept for the next run


def test_ctrl_c_stops_everything_and_redis_last(start_up: Callable[..., Up], workdir: Path) -> None:
    up = start_up()
    up.ready()
    up.wait_for_children("redis-server", "gunicorn", "celery", "relay.cli scheduler")
    # A terminal sends SIGINT to the whole foreground group, redis-server included.
    up.stop_and_check(signal.SIGINT, group=True)
    assert "SIGINT received" in up.output
    redis_log = (workdir / ".relay" / "redis" / "redis.log").read_text()
    assert "SIGINT" not in redis_log and "SIGTERM" in redis_log  # stopped by us, after all


def test_a_child_dying_stops_everything_with_exit_1(start_up: Callable[..., Up]) -> None:
    up = start_up()
    up.ready()
    tree = up.wait_for_children("redis-server", "gunicorn", "celery", "relay.cli scheduler")
    (scheduler,) = find(tree, "relay.cli scheduler")
    os.kill(scheduler, signal.SIGKILL)
    up.stop_and_check(None, expect=1, tree=tree)  # relay up stops by itself
    assert "scheduler exited on its own (killed by SIGKILL)" in up.output


def test_a_killed_relay_up_leaves_no_children(start_up: Callable[..., Up], redis_url: str) -> None:
    """SIGKILL cannot be handled: PR_SET_PDEATHSIG makes the children stop themselves."""
    up = start_up(RELAY_REDIS_URL=redis_url)
    up.ready()
    tree = up.wait_for_children("gunicorn", "celery", "relay.cli scheduler")
    assert not find(tree, "redis-server")  # RELAY_REDIS_URL set: no embedded Redis
    assert f"redis:     {redis_url} (RELAY_REDIS_URL)" in up.output
    os.kill(up.proc.pid, signal.SIGKILL)
    assert up.proc.wait(5) == -signal.SIGKILL
    assert wait_for(lambda: not survivors(tree), timeout=GRACE + 5), survivors(tree)
    status = relay(up.workdir, "status", RELAY_REDIS_URL=redis_url)
    assert "relay up:  not running" in status.stdout  # the kernel dropped its lock


def test_up_refuses_an_invalid_config(workdir: Path) -> None:
    (workdir / "bad.yaml").write_text(
        "sources: [{id: ops, kind: standard_webhooks, secrets: [nope]}]\n"
    )
    result = subprocess.run(
        [*RELAY, "up", "--config", "bad.yaml"],
        cwd=workdir,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "sources[0].secrets" in result.stderr and "whsec_" in result.stderr
    assert not (workdir / ".relay" / "redis").exists()  # nothing was started


def test_up_without_a_config_suggests_init(tmp_path: Path) -> None:
    result = subprocess.run(
        [*RELAY, "up"], cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "relay init" in result.stderr


def test_a_second_relay_up_in_the_same_folder_is_refused_naming_the_pid(
    start_up: Callable[..., Up], workdir: Path
) -> None:
    first = start_up()
    first.ready()
    aof = workdir / ".relay" / "redis" / "appendonlydir"
    before = sorted(p.name for p in aof.iterdir())
    second = relay(workdir, "up", "--port", str(free_port()))
    line = refused(second)
    assert f"in use by another relay up (PID {first.proc.pid}" in line, line
    assert "relay up\n" not in second.stdout  # refused before any banner or child
    assert sorted(p.name for p in aof.iterdir()) == before  # no second server on its AOF
    assert requests.get(f"{first.base}/readyz", timeout=5).status_code == 200


def test_an_unreachable_redis_url_exits_at_once_naming_it(workdir: Path) -> None:
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    result = relay(workdir, "up", "--port", str(free_port()), RELAY_REDIS_URL=url)
    line = refused(result)
    assert url.replace("hunter2secret", "***") in line and "RELAY_REDIS_URL" in line, line
    assert "hunter2secret" not in result.stdout + result.stderr
    assert "relay up\n" not in result.stdout


def test_a_redis_url_left_from_a_stopped_relay_up_is_named_as_such(
    start_up: Callable[..., Up], workdir: Path
) -> None:
    up = start_up()
    up.ready()
    left = (workdir / ".relay" / "redis" / "url").read_text().strip()  # the old workaround
    up.stop_and_check(signal.SIGTERM)
    for args in (("up", "--port", str(free_port())), ("queues",)):
        line = refused(relay(workdir, *args, RELAY_REDIS_URL=left))
        assert "earlier relay up" in line and "unset RELAY_REDIS_URL" in line, line


def test_a_busy_port_is_refused_before_anything_starts_suggesting_port(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(relay(workdir, "up", "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is already in use" in line and "--port" in line, line
    assert not (workdir / ".relay" / "redis").exists()  # no Redis was started


def test_data_written_by_another_major_version_is_refused_saying_what_to_do(
    workdir: Path,
) -> None:
    data = workdir / ".relay" / "redis"
    (data / "appendonlydir").mkdir(parents=True)
    (data / "version").write_text('{"version": "6.2.14", "binary": "/opt/old/redis-server"}')
    line = refused(relay(workdir, "up", "--port", str(free_port())))
    assert "written by redis-server 6.2.14 (/opt/old/redis-server)" in line, line
    assert "RELAY_REDIS_SERVER" in line and "move" in line, line
    assert not (data / "redis.log").exists()  # the server was never started on it
    assert json.loads((data / "version").read_text())["version"] == "6.2.14"
