"""A worker with a broken config or settings stops at once and says why."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from relay.cli.up import worker_command
from tests.conftest import ROOT, TEST_ENV

WORKER = worker_command(4)


def run_worker(redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **TEST_ENV, "RELAY_REDIS_URL": redis_url, **env}
    return subprocess.run(
        WORKER, env=full_env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_invalid_config_stops_the_worker_naming_the_problem(redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text(
        "sources: []\ntargets: [{id: x, kind: webhook, url: 'http://127.0.0.1/'}]\nroutes: []\n"
    )
    result = run_worker(redis_url, RELAY_CONFIG=str(config))
    assert result.returncode != 0
    assert "config: targets[0].url: 127.0.0.1 is a loopback address" in result.stderr


def test_invalid_settings_stop_the_worker_naming_the_variable(redis_url: str) -> None:
    result = run_worker(redis_url, RELAY_TASK_TIME_LIMIT="7200")
    assert result.returncode == 2
    assert "RELAY_TASK_TIME_LIMIT must be shorter than RELAY_VISIBILITY_TIMEOUT" in result.stderr
