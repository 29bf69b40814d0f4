"""Secrets are resolved only where they are used: a command that only looks at the relay
or acts on its queues runs with a target's ``${VAR}`` unset; ``relay check``, ``relay
up``, the web process and the workers still refuse, naming it; no secret is printed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from relay import create_app
from relay.cli import main
from relay.config.loader import load_config
from relay.config.models import UnresolvedOptions
from relay.errors import ConfigError
from relay.settings import Settings
from relay.state import keys
from tests.conftest import ROOT, TEST_ENV, TEST_SECRET, worker_command

APP_SECRET = "app-secret-value-that-must-not-show"
OPS_VALUE = TEST_SECRET


def config(sink: str) -> dict[str, Any]:
    return {
        "sources": [
            {"id": "ops", "kind": "standard_webhooks", "secrets": ["${OPS_SECRET}"]},
            {"id": "gh", "kind": "hmac", "preset": "github", "secrets": ["${GH_SECRET}"]},
        ],
        "targets": [
            {
                "id": "app",
                "kind": "webhook",
                "url": sink,
                "secret": "${MY_APP_SECRET}",
                "allow_private": True,
            },
        ],
        "routes": [{"source": "ops", "targets": ["app"]}, {"source": "gh", "targets": ["app"]}],
    }


@pytest.fixture
def setup(
    write_config: Callable[..., Path],
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    httpserver: HTTPServer,
) -> tuple[Path, dict[str, str]]:
    """The config, and an operator's shell: Redis and OPS_SECRET, no MY_APP_SECRET or
    GH_SECRET."""
    path = write_config(config(httpserver.url_for("/in")))
    redis_client.set(keys.SEEN, "1")  # a relay has used this Redis
    env = {
        "RELAY_REDIS_URL": redis_url,
        "RELAY_CONFIG": str(path),
        "RELAY_STATE_DIR": str(tmp_path / "state"),
        "OPS_SECRET": OPS_VALUE,
    }
    for name in ("MY_APP_SECRET", "GH_SECRET"):
        assert name not in os.environ
    return path, env


READ_ONLY = [
    ["queues"],
    ["queues", "--json"],
    ["events", "ls"],
    ["events", "ls", "--json"],
    ["dlq", "ls"],
    ["dlq", "ls", "--json"],
    ["dlq", "replay", "--all", "--dry-run"],
    ["keys", "ls"],
    ["keys", "create", "ops", "--scope", "read"],
    ["targets"],
    ["targets", "--json"],
    ["targets", "pause", "app"],
    ["targets", "resume", "app"],
    ["status"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_operator_commands_run_without_the_secrets_they_do_not_use(
    setup: tuple[Path, dict[str, str]], args: list[str]
) -> None:
    _, env = setup
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "not set" not in result.output and "MY_APP_SECRET" not in result.output
    assert OPS_VALUE not in result.output


def test_show_commands_say_what_is_missing_not_the_config(
    setup: tuple[Path, dict[str, str]],
) -> None:
    _, env = setup
    for args in (["dlq", "show", "dlv_nope"], ["events", "show", "evt_nope"]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 1 and "MY_APP_SECRET" not in result.output, result.output


def test_send_needs_only_its_own_source_secret(
    setup: tuple[Path, dict[str, str]], httpserver: HTTPServer
) -> None:
    _, env = setup
    httpserver.expect_request("/hooks/ops", method="POST").respond_with_json(
        {"event_id": "evt_1"}, status=202
    )
    base = httpserver.url_for("/").rstrip("/")
    sent = CliRunner().invoke(main, ["send", "ops", "--url", base], env=env)
    assert sent.exit_code == 0, sent.output
    [(request, _)] = httpserver.log
    assert request.headers["webhook-signature"].startswith("v1,")
    assert OPS_VALUE not in sent.output

    refused = CliRunner().invoke(main, ["send", "gh", "--url", base], env=env)
    assert refused.exit_code == 1
    assert refused.output.strip() == (
        "sources[1].secrets[0]: environment variable GH_SECRET is not set "
        "(relay send signs with 'gh''s secret)"
    )
    assert "Traceback" not in refused.output


def test_check_still_names_every_missing_variable(setup: tuple[Path, dict[str, str]]) -> None:
    path, env = setup
    result = CliRunner().invoke(main, ["check", str(path)], env=env)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "sources[1].secrets[0]: environment variable GH_SECRET is not set",
        "targets[0].secret: environment variable MY_APP_SECRET is not set",
        f"{path}: 2 problems",
    ]


def test_the_web_process_still_refuses(
    setup: tuple[Path, dict[str, str]], make_settings: Callable[..., Settings]
) -> None:
    path, env = setup
    with pytest.raises(ConfigError) as refused:
        create_app(make_settings(config=path, redis_url=env["RELAY_REDIS_URL"]))
    assert any("MY_APP_SECRET is not set" in p for p in refused.value.problems)


def test_relay_up_still_refuses_naming_it(setup: tuple[Path, dict[str, str]]) -> None:
    path, env = setup
    full = {k: v for k, v in os.environ.items() if k != "RELAY_REDIS_URL"}
    full |= {**TEST_ENV, **env, "RELAY_PORT": "0"}
    full.pop("RELAY_REDIS_URL")  # relay up would start its own: it must refuse first
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "up", "--config", str(path)],
        env=full,
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "targets[0].secret: environment variable MY_APP_SECRET is not set" in done.stderr
    assert "Traceback" not in done.stderr and OPS_VALUE not in done.stdout + done.stderr


def test_a_worker_still_refuses_naming_it(setup: tuple[Path, dict[str, str]]) -> None:
    _, env = setup
    done = subprocess.run(
        worker_command(2),
        env={**os.environ, **TEST_ENV, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "config: targets[0].secret: environment variable MY_APP_SECRET is not set" in output
    assert OPS_VALUE not in output


def test_the_loader_keeps_unset_secrets_as_placeholders(
    setup: tuple[Path, dict[str, str]],
) -> None:
    path, env = setup
    loaded = load_config(path, env=env, resolve_secrets=False)
    unresolved = loaded.unresolved()
    assert sorted(unresolved) == ["sources.gh", "targets.app"]
    assert unresolved["targets.app"].names == ("MY_APP_SECRET",)
    assert isinstance(loaded.targets["app"].options, UnresolvedOptions)
    assert OPS_VALUE in loaded.secrets  # the redaction set keeps every value it could read
    assert "MY_APP_SECRET" not in repr(loaded.targets["app"].options.problems[0].split(":")[0])


def test_a_missing_variable_outside_kind_options_is_still_an_error(
    write_config: Callable[..., Path],
) -> None:
    data = config("http://127.0.0.1:9/in")
    data["targets"][0]["timeout"] = "${APP_TIMEOUT}"
    path = write_config(data)
    with pytest.raises(ConfigError) as refused:
        load_config(path, env={"OPS_SECRET": OPS_VALUE}, resolve_secrets=False)
    assert refused.value.problems == [
        "targets[0].timeout: environment variable APP_TIMEOUT is not set"
    ]
