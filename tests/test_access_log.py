"""gunicorn's access log masks a secret a caller pastes into a path or query string, as
the relay's own log line does (docs/api.md), whatever the access-log format.

A real gunicorn runs ``deploy/gunicorn.conf.py`` on the suite's Redis; the test reads
the log file it writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml

from relay.cli.embedded import free_port
from relay.redact import MASK
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET, wait_for

# base64 with '+' and '/' and '=': percent-encoded in a raw request line
PASTED = "whsec_/+++mnJlbGF5LXBhc3RlZC1zZWNyZXQhIf7/"
API_KEY = "rk_0123456789ab_" + "Q" * 43


def config(tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sources": [
                    {"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]},
                    {"id": "gh", "kind": "standard_webhooks", "secrets": ["${PASTED}"]},
                ],
                "targets": [{"id": "outbox", "kind": "file", "path": str(tmp_path / "out")}],
                "routes": [{"source": "ops", "targets": ["outbox"]}],
            }
        )
    )
    return path


class Gunicorn:
    def __init__(self, env: dict[str, str], log: Path, *extra: str) -> None:
        self.port, self.log = free_port(), log
        conf = str(ROOT / "deploy" / "gunicorn.conf.py")
        command = [sys.executable, "-m", "gunicorn", "-c", conf, "-b", f"127.0.0.1:{self.port}",
                   "-w", "1", *extra, "relay.wsgi:app"]  # fmt: skip
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            return requests.get(self.base + "/healthz", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def lines(self, marker: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if marker in line]

    def stop(self) -> None:
        """Stop it (its log is then complete); a second call does nothing."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def gunicorn(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., Gunicorn]]:
    started: list[Gunicorn] = []

    def start(*extra: str) -> Gunicorn:
        env = {**os.environ, **TEST_ENV, "RELAY_REDIS_URL": redis_url, "PASTED": PASTED,
               "RELAY_CONFIG": str(config(tmp_path)), "RELAY_LOG_LEVEL": "WARNING"}  # fmt: skip
        server = Gunicorn(env, tmp_path / f"gunicorn{len(started)}.log", *extra)
        started.append(server)
        wait_for(server.ready, timeout=30, interval=0.2)
        return server

    yield start
    for server in started:
        server.stop()


def leaks(text: str) -> list[str]:
    forms = {PASTED, quote(PASTED, safe=""), quote(PASTED), "Q" * 43}
    return sorted(form for form in forms if form in text)


def get(server: Gunicorn, path: str, **kwargs: Any) -> None:
    requests.get(server.base + path, timeout=10, **kwargs)


def test_the_default_access_log_masks_a_secret_pasted_into_an_api_path(
    gunicorn: Callable[..., Gunicorn],
) -> None:
    server = gunicorn()
    get(server, f"/api/v1/events/{quote(PASTED, safe='')}")
    get(server, f"/api/v1/deliveries/{PASTED}")  # '/' splits it: no route, still masked
    get(server, f"/dashboard/events/{API_KEY}")
    server.stop()
    lines = server.lines("/api/v1/") + server.lines("/dashboard/events/")
    assert len(lines) == 3, server.log.read_text()
    assert leaks("\n".join(lines)) == []
    assert all(MASK in line for line in lines), lines
    assert any(f"/dashboard/events/rk_0123456789ab_{MASK}" in line for line in lines)


def test_any_format_masks_the_query_string_request_line_and_credentials(
    gunicorn: Callable[..., Gunicorn],
) -> None:
    log_format = (
        'ACCESS "%(r)s" q=%(q)s auth=%({authorization}i)s env=%({relay.secrets}e)s '
        "cookie=%({cookie}i)s ref=%(f)s"
    )
    server = gunicorn("--access-logformat", log_format)
    get(
        server,
        f"/api/v1/events?q={quote(PASTED, safe='')}&token=t0ps3cret&limit=5",
        headers={
            "Authorization": f"Bearer {API_KEY}",
            "Cookie": "session=c00kie",
            "Referer": f"https://example.com/?key={PASTED}",
        },  # fmt: skip
    )
    server.stop()
    [line] = server.lines("GET /api/v1/events")
    assert leaks(line) == []
    for secret in ("t0ps3cret", "c00kie"):
        assert secret not in line
    assert "limit=5" in line  # the rest of the query is still there to read
    assert f"auth={MASK}" in line and f"cookie={MASK}" in line
    assert "env=-" in line  # the secrets the app leaves for the logger are never an atom
