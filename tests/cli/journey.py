"""The operator's first hour, as the README writes it, against a real ``relay up``.

Run as ``python -m tests.cli.journey WORKDIR [--redis-on-6379]`` so that
``tests/cli/test_first_hour.py`` can run it inside a private network namespace when
the machine has a Redis of its own on the default port (then "no Redis on 6379" and
"our own Redis on 6379" are both real there, and the machine's Redis is never touched).
Exit 0 when every step gave the right answer; an assertion names the step otherwise.

Every command of the second shell runs with ``RELAY_REDIS_URL`` unset: it must find
the running relay by itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests
import yaml

RELAY = [sys.executable, "-m", "relay.cli"]
ENV = {
    "RELAY_VISIBILITY_TIMEOUT": "20",
    "RELAY_TASK_TIME_LIMIT": "12",
    "RELAY_HTTP_TIMEOUT": "5",
    "RELAY_SCHEDULER_INTERVAL": "0.05",
    "RELAY_LOG_FORMAT": "json",
    "RELAY_WORKER_CONCURRENCY": "4",
    "WEB_CONCURRENCY": "1",
}


def shell_env() -> dict[str, str]:
    """A second terminal: no RELAY_REDIS_URL, nothing exported from the banner."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return {**env, **ENV}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.2)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Journey:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.up: subprocess.Popen[bytes] | None = None
        self.log = workdir / "up.log"

    def relay(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*RELAY, *args],
            cwd=self.workdir,
            env=shell_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(f"$ relay {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}")
        assert "Traceback" not in result.stderr, f"relay {args}: a traceback"
        if ok:
            assert result.returncode == 0, f"relay {args} failed: {result.stderr}"
        return result

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.up = subprocess.Popen(
                [*RELAY, "up", "--port", str(self.port)],
                cwd=self.workdir,
                env=shell_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            assert self.up is not None
            if self.up.poll() is not None:
                raise AssertionError(f"relay up exited:\n{self.log.read_text()}")
            try:
                return requests.get(f"{self.base}/readyz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 60, "relay up ready")

    def stop(self) -> int:
        assert self.up is not None
        if self.up.poll() is None:
            os.killpg(self.up.pid, signal.SIGINT)  # Ctrl-C in its terminal
        try:
            return self.up.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(self.up.pid, signal.SIGKILL)
            self.up.wait()
            raise AssertionError("relay up did not stop on Ctrl-C") from None


def add_failing_target(config: Path) -> None:
    """A webhook target nobody answers, tried once: its deliveries end as dead letters,
    so ``relay dlq ls`` has something to find in the relay's Redis."""
    data = yaml.safe_load(config.read_text())
    data["targets"].append(
        {
            "id": "gone",
            "kind": "webhook",
            "url": f"http://127.0.0.1:{free_port()}/nobody-listens",
            "allow_private": True,
            "retry": {"max_attempts": 1},
        }
    )
    data["routes"][0]["targets"].append("gone")
    config.write_text(yaml.safe_dump(data))
    config.chmod(0o600)


def run(workdir: Path) -> None:
    j = Journey(workdir)
    j.relay("init")
    add_failing_target(workdir / "relay.yaml")
    j.start()
    try:
        steps(j)
    finally:
        code = j.stop()
        print(j.log.read_text(errors="replace")[-4000:])
    assert code == 0, f"relay up exited {code} after Ctrl-C"
    after = j.relay("queues", ok=False)  # relay up is gone: one line, no traceback
    assert after.returncode == 1 and len(after.stderr.strip().splitlines()) == 1, after.stderr


def steps(j: Journey) -> None:
    status = j.relay("status")
    assert "relay up:  running" in status.stdout and f"PID {j.up.pid}" in status.stdout  # type: ignore[union-attr]
    assert j.base in status.stdout

    sent = j.relay("send", "ops")  # as the README says: it finds the running relay up
    event_id = json.loads(sent.stdout.splitlines()[-1])["event_id"]
    outbox = j.workdir / ".relay" / "outbox" / "outbox.jsonl"
    wait_for(lambda: outbox.exists() and event_id in outbox.read_text(), 30, "outbox")

    queues = j.relay("queues", "--json")
    assert "relay.fanout" in queues.stdout
    verbose = j.relay("--verbose", "queues")
    assert "the relay up running in .relay" in verbose.stderr

    events = j.relay("events", "ls", "--json")
    assert event_id in events.stdout, "events ls does not show the event the relay accepted"

    wait_for(
        lambda: event_id in j.relay("dlq", "ls", "--json").stdout, 40, "the dead letter in dlq ls"
    )

    created = j.relay("keys", "create", "admin", "--scope", "admin")
    token = created.stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    listed = requests.get(f"{j.base}/api/v1/events", headers=auth, timeout=10)
    assert listed.status_code == 200, f"the API refused the key: {listed.status_code}"
    assert event_id in listed.text

    j.relay("targets", "pause", "outbox")
    target = requests.get(f"{j.base}/api/v1/targets/outbox", headers=auth, timeout=10)
    assert target.status_code == 200 and target.json()["paused"] is True, target.text

    landing = requests.get(f"{j.base}/", allow_redirects=False, timeout=10)
    assert landing.status_code in (301, 302, 303, 307, 308)
    assert landing.headers["Location"].endswith("/dashboard/")


def main() -> None:
    workdir = Path(sys.argv[1])
    own: subprocess.Popen[bytes] | None = None
    if "--redis-on-6379" in sys.argv:  # a Redis of our own where the default URL points
        own = subprocess.Popen(
            ["redis-server", "--port", "6379", "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=6379)
        wait_for(lambda: _pings(client), 10, "our redis-server on 6379")
    try:
        run(workdir)
        if own is not None:
            assert client.dbsize() == 0, "a command wrote to the Redis on 6379, not the relay's"
    finally:
        if own is not None:
            own.terminate()
            own.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


if __name__ == "__main__":
    main()
