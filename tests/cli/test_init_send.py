"""``relay init`` writes a private, valid starter config; ``relay send`` signs and posts."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from standardwebhooks.webhooks import Webhook

from relay.cli import main
from relay.cli.embedded import free_port

SECRET_LINE = re.compile(r'^\s*- "(whsec_[A-Za-z0-9+/=]+)"$', re.MULTILINE)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def secret_of(path: Path) -> str:
    match = SECRET_LINE.search(path.read_text())
    assert match, path.read_text()
    return match.group(1)


def test_init_writes_a_valid_private_config(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "relay.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "relay up" in result.output and "relay send ops" in result.output
    assert "tail .relay/outbox/outbox.jsonl" in result.output
    assert "${OPS_SECRET}" in path.read_text()  # the comment on moving it out of the file

    check = runner.invoke(main, ["check", "relay.yaml"])
    assert check.exit_code == 0, check.output
    assert "1 sources, 1 targets, 1 routes" in check.output


def test_each_init_generates_its_own_secret(runner: CliRunner, tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yaml"):
        assert runner.invoke(main, ["init", str(tmp_path / name)]).exit_code == 0
    first, second = secret_of(tmp_path / "a.yaml"), secret_of(tmp_path / "b.yaml")
    assert first != second
    assert "__OPS_SECRET__" not in (tmp_path / "a.yaml").read_text()


def test_init_refuses_to_overwrite_without_force(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text("mine\n")
    path.chmod(0o644)
    result = runner.invoke(main, ["init", str(path)])
    assert result.exit_code == 1
    assert "already exists" in result.output and "--force" in result.output
    assert path.read_text() == "mine\n"

    forced = runner.invoke(main, ["init", str(path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert secret_of(path).startswith("whsec_")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_init_elsewhere_names_the_config_in_the_next_steps(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "conf" / "relay.yaml"
    result = runner.invoke(main, ["init", str(path)])
    assert result.exit_code == 0, result.output
    assert f"relay up --config {path}" in result.output


@pytest.fixture
def config(runner: CliRunner, tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    assert runner.invoke(main, ["init", str(path)]).exit_code == 0
    return path


def test_send_posts_a_correctly_signed_sample(
    runner: CliRunner, config: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_oneshot_request("/hooks/ops", method="POST").respond_with_json(
        {"event_id": "evt_1"}, status=202
    )
    result = runner.invoke(
        main, ["send", "ops", "--config", str(config), "--url", httpserver.url_for("/")]
    )
    assert result.exit_code == 0, result.output
    assert "202" in result.output and "evt_1" in result.output
    request, _ = httpserver.log[0]
    body = request.get_data()
    Webhook(secret_of(config)).verify(body, dict(request.headers))  # raises if not
    assert json.loads(body)["type"] == "message.created"


def test_send_posts_the_given_file(
    runner: CliRunner, config: Path, httpserver: HTTPServer, tmp_path: Path
) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(b'{"type": "message.created", "data": {"text": "from a file"}}')
    httpserver.expect_oneshot_request("/hooks/ops", method="POST").respond_with_data("", 202)
    result = runner.invoke(
        main,
        [
            "send",
            "ops",
            "--config",
            str(config),
            "--file",
            str(event),
            "--url",
            httpserver.url_for("/"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert httpserver.log[0][0].get_data() == event.read_bytes()


def test_send_exits_1_on_a_refusal(runner: CliRunner, config: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_oneshot_request("/hooks/ops").respond_with_json(
        {"error": "invalid_signature"}, status=401
    )
    result = runner.invoke(
        main, ["send", "ops", "--config", str(config), "--url", httpserver.url_for("/")]
    )
    assert result.exit_code == 1
    assert "401" in result.output and "invalid_signature" in result.output


def test_send_to_an_unknown_source_lists_the_known_ones(runner: CliRunner, config: Path) -> None:
    result = runner.invoke(main, ["send", "opz", "--config", str(config)])
    assert result.exit_code == 1
    assert "unknown source 'opz'" in result.output
    assert "ops" in result.output.split("opz", 1)[1]


def test_send_without_a_running_relay_says_so(runner: CliRunner, config: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(main, ["send", "ops", "--config", str(config), "--url", url])
    assert result.exit_code == 1
    assert "is `relay up` running?" in result.output
