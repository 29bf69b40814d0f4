"""A target whose one attempt may outlast the task time limit is a config error: every
such attempt would be cut off and the delivery dead-lettered although the target answered.
``relay check`` and a worker's start refuse it, naming the key, the value and the limit."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from relay.cli import main
from relay.cli.up import worker_command
from tests.conftest import ROOT, TEST_ENV

URL = "https://hooks.example.com/in"


def config(*targets: dict[str, Any]) -> dict[str, Any]:
    fast = [{"id": f"t{i}", "kind": "webhook", "url": URL} for i in range(2)]
    return {"sources": [], "targets": [*fast, *targets], "routes": []}


def check(path: Path, **env: str) -> Any:
    limits = {"RELAY_TASK_TIME_LIMIT": "300", "RELAY_HTTP_TIMEOUT": "15", **env}
    return CliRunner().invoke(main, ["check", str(path)], env=limits)


def test_a_timeout_longer_than_the_task_limit_is_refused(
    write_config: Callable[..., Path],
) -> None:
    path = write_config(config({"id": "slow", "kind": "webhook", "url": URL, "timeout": "400s"}))
    result = check(path)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "targets[2].timeout: 400s is too long for the task time limit "
        "RELAY_TASK_TIME_LIMIT=300s: one attempt to 'slow' (webhook) may wait 2 × 400s = 800s, "
        "and an attempt cut off at the limit is never delivered; lower the timeout below 150s "
        "or raise the limit"
    )
    assert check(path, RELAY_TASK_TIME_LIMIT="900", RELAY_VISIBILITY_TIMEOUT="3600").exit_code == 0


def test_a_timeout_that_fits_passes(write_config: Callable[..., Path]) -> None:
    path = write_config(config({"id": "slow", "kind": "webhook", "url": URL, "timeout": "140s"}))
    result = check(path)
    assert result.exit_code == 0, result.output
    assert "ok (0 sources, 3 targets, 0 routes)" in result.output


def test_an_smtp_timeout_is_checked_too(write_config: Callable[..., Path]) -> None:
    mail = {"id": "mail", "kind": "email", "host": "smtp.example.com", "from": "r@example.com"}
    mail |= {"to": ["ops@example.com"], "timeout": "200s"}
    result = check(write_config(config(mail)))
    assert result.exit_code == 1
    assert result.stderr.startswith("targets[2].timeout: 200s is too long")
    assert "'mail' (email) may wait 2 × 200s = 400s" in result.stderr


def test_the_default_timeout_is_checked_with_a_kinds_own_count(
    write_config: Callable[..., Path], monkeypatch: Any
) -> None:
    """A kind that makes several requests per attempt declares ``timeout_waits``."""
    from workers.targets.webhook import WebhookTarget

    monkeypatch.setattr(WebhookTarget, "timeout_waits", 30, raising=False)
    result = check(write_config(config()))
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        "targets[0]: the default RELAY_HTTP_TIMEOUT=15s is too long for the task time limit "
        "RELAY_TASK_TIME_LIMIT=300s: one attempt to 't0' (webhook) may wait 30 × 15s = 450s, "
        "and an attempt cut off at the limit is never delivered; lower the timeout below 10s "
        "or raise the limit"
    )


def test_the_worker_refuses_to_start(redis_url: str, write_config: Callable[..., Path]) -> None:
    path = write_config(config({"id": "slow", "kind": "webhook", "url": URL, "timeout": "10s"}))
    env = {**os.environ, **TEST_ENV, "RELAY_REDIS_URL": redis_url, "RELAY_CONFIG": str(path)}
    result = subprocess.run(
        worker_command(4), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert (
        "config: targets[2].timeout: 10s is too long for the task time limit "
        "RELAY_TASK_TIME_LIMIT=12s" in result.stderr
    ), result.stderr
