"""Which Redis the CLI uses, and what it says when that Redis fails or holds no relay.

The commands run as subprocesses, as an operator runs them; none of them may reach the
machine's own Redis, so each names its Redis (``RELAY_REDIS_URL``) or finds a relay up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from relay.cli.discovery import choose_redis
from relay.cli.embedded import free_port
from relay.state import keys
from tests.conftest import TEST_ENV

RELAY = [sys.executable, "-m", "relay.cli"]
COMMANDS = [
    ("queues",),
    ("events", "ls"),
    ("dlq", "ls"),
    ("keys", "ls"),
    ("keys", "create", "admin", "--scope", "admin"),
    ("targets",),
    ("targets", "pause", "outbox"),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    subprocess.run([*RELAY, "init"], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def relay(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.run(
        [*RELAY, *args],
        cwd=workdir,
        env={**base, **TEST_ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_an_unreachable_redis_is_one_line_naming_the_url_never_a_traceback(
    workdir: Path, args: tuple[str, ...]
) -> None:
    url = f"redis://:s3cretpass@127.0.0.1:{free_port()}/0"
    result = relay(workdir, *args, RELAY_REDIS_URL=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    masked = url.replace("s3cretpass", "***")
    assert line.startswith(f"relay: cannot reach Redis at {masked} (from RELAY_REDIS_URL): ")
    assert "refused" in line.lower()
    assert "s3cretpass" not in result.stdout + result.stderr


LOOKING = [args for args in COMMANDS if args[:2] != ("keys", "create")]


@pytest.mark.parametrize("args", LOOKING, ids=" ".join)
def test_a_redis_no_relay_has_used_is_said_so_not_shown_as_zeros(
    workdir: Path, redis_url: str, args: tuple[str, ...]
) -> None:
    result = relay(workdir, *args, RELAY_REDIS_URL=redis_url)
    assert result.returncode == 1, result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert "has never been used by a relay" in line and redis_url in line
    assert result.stdout == ""  # no zeros, no "no dead letters", no key created
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0  # nothing was written to a Redis that is not the relay's
    finally:
        client.close()


def test_a_key_may_be_provisioned_on_a_named_redis_before_the_relay_first_starts(
    workdir: Path, redis_url: str
) -> None:
    """Creating the first admin key before the first deploy is normal; the note names the
    Redis so a key never lands in the wrong one unseen."""
    result = relay(
        workdir, "keys", "create", "admin", "--scope", "admin", RELAY_REDIS_URL=redis_url
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("created ")
    assert f"no relay has used Redis at {redis_url} (from RELAY_REDIS_URL) yet" in result.stderr
    assert "Traceback" not in result.stderr
    listed = relay(workdir, "keys", "ls", RELAY_REDIS_URL=redis_url)
    assert listed.returncode == 0 and "admin" in listed.stdout  # keys written mean a relay's


def test_status_and_verbose_say_which_redis_and_why(workdir: Path, redis_url: str) -> None:
    fresh = relay(workdir, "status", RELAY_REDIS_URL=redis_url)
    assert fresh.returncode == 1
    assert "relay up:  not running in .relay" in fresh.stdout
    assert f"redis: {redis_url} (from RELAY_REDIS_URL)" in fresh.stdout
    assert "no relay has ever used it" in fresh.stdout

    client = redis.Redis.from_url(redis_url)
    client.set(keys.SEEN, "1700000000")  # as relay up marks it
    client.close()
    used = relay(workdir, "status", RELAY_REDIS_URL=redis_url)
    assert used.returncode == 0, used.stdout
    assert "holds relay data" in used.stdout and "0 dead letters" in used.stdout
    verbose = relay(workdir, "queues", "--verbose", RELAY_REDIS_URL=redis_url)
    assert verbose.returncode == 0
    assert verbose.stderr.strip() == f"redis: {redis_url} (from RELAY_REDIS_URL)"


def test_a_live_relay_up_is_found_and_a_dead_one_is_not(tmp_path: Path) -> None:
    """The lock of another process, as relay up holds it; the kernel drops it on exit."""
    state = tmp_path / ".relay"
    (state / "redis").mkdir(parents=True)
    (state / "redis" / "url").write_text("redis://:pw@127.0.0.1:40000/0\n")
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys
                from pathlib import Path
                from relay.cli.discovery import UpLock
                lock = UpLock(Path({str(state)!r})).acquire()
                lock.publish(web="http://127.0.0.1:8123", embedded=True)
                print("locked", flush=True)
                sys.stdin.read()
            """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        choice = choose_redis(state, env={})
        assert choice.origin == "relay up" and choice.url == "redis://:pw@127.0.0.1:40000/0"
        assert choice.up is not None and choice.up.pid == holder.pid
        assert choice.up.web == "http://127.0.0.1:8123"
        assert "***" in choice.line() and ":pw@" not in choice.line()
        given = choose_redis(state, env={"RELAY_REDIS_URL": "redis://elsewhere:6379/0"})
        assert given.origin == "RELAY_REDIS_URL" and "unset RELAY_REDIS_URL" in given.hint()
        holder.kill()
    gone = choose_redis(state, env={})
    assert gone.origin == "default" and gone.up is None
