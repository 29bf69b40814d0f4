"""Config loading: env substitution, strict keys, cross references, readable paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.config.loader import load_config, parse_config
from relay.errors import ConfigError
from tests.conftest import TEST_SECRET

GOOD = """
sources:
  - {id: ops, kind: standard_webhooks, secrets: ["${OPS_SECRET}"]}
targets:
  - {id: sink, kind: webhook, url: "http://127.0.0.1:9000/in", allow_private: true,
     secret: "${SINK_SECRET}", retry: {max_attempts: 8, max_age: 24h}}
routes:
  - {source: ops, when: {type: message.created}, targets: [sink]}
"""
ENV = {"OPS_SECRET": TEST_SECRET, "SINK_SECRET": TEST_SECRET}


def problems_of(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "relay.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=ENV if env is None else env)
    return caught.value.problems


def test_the_documented_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(GOOD)
    config = load_config(path, env=ENV)
    assert config.targets["sink"].retry.max_age == 24 * 3600
    assert config.targets["sink"].retry.max_attempts == 8
    assert config.routes[0].when.type == ["message.created"]
    assert TEST_SECRET in config.secrets


def test_unknown_target_is_named_by_path_with_a_suggestion(tmp_path: Path) -> None:
    text = GOOD.replace("targets: [sink]", "targets: [sink, jria]").replace("id: sink", "id: jira")
    problems = problems_of(text, tmp_path)
    assert "routes[0].targets[0]: unknown target 'sink'" in problems
    assert "routes[0].targets[1]: unknown target 'jria' (did you mean 'jira'?)" in problems


def test_missing_environment_variable_names_it_and_where(tmp_path: Path) -> None:
    problems = problems_of(GOOD, tmp_path, env={"OPS_SECRET": TEST_SECRET})
    assert problems == ["targets[0].secret: environment variable SINK_SECRET is not set"]


def test_unknown_keys_are_errors_everywhere(tmp_path: Path) -> None:
    text = (
        GOOD.replace("allow_private: true", "allow_private: true, retyr: {}").replace(
            "when: {type: message.created}", "when: {type: message.created, colour: red}"
        )
        + "extra: 1\n"
    )
    problems = problems_of(text, tmp_path)
    assert "targets[0].retyr: unknown key (did you mean 'retry'?)" in problems
    assert "routes[0].when.colour: unknown key" in problems
    assert "extra: unknown key (expected sources, targets, routes, people)" in problems


def test_bad_values_are_explained(tmp_path: Path) -> None:
    text = (
        GOOD.replace("max_age: 24h", "max_age: soon")
        .replace("type: message.created", "type: message.deleted")
        .replace('secrets: ["${OPS_SECRET}"]', "secrets: [hunter2]")
        .replace("kind: webhook", "kind: carrier_pigeon")
    )
    problems = problems_of(text, tmp_path)
    assert any(p.startswith("targets[0].retry.max_age: 'soon' is not a duration") for p in problems)
    assert any(
        p.startswith("routes[0].when.type: unknown event type 'message.deleted'") for p in problems
    )
    assert any(
        p.startswith("sources[0].secrets[0]: a Standard Webhooks secret starts") for p in problems
    )
    assert any(p.startswith("targets[0].kind: unknown kind 'carrier_pigeon'") for p in problems)


def test_duplicate_ids_and_yaml_keys(tmp_path: Path) -> None:
    text = GOOD.replace("routes:", "  - {id: sink, kind: file, path: /tmp/x}\nroutes:")
    assert "targets[1].id: 'sink' is used twice" in problems_of(text, tmp_path)
    doubled = "sources: []\nsources: []\n"
    [problem] = problems_of(doubled, tmp_path)
    assert "relay.yaml:2:1: invalid YAML" in problem and "written twice" in problem


def test_dollar_dollar_escapes_a_literal_reference() -> None:
    data = {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": [{"id": "out", "kind": "file", "path": "/tmp/$${HOME}"}],
        "routes": [],
    }
    config = parse_config(data, env={})
    assert config.targets["out"].options == {"path": "/tmp/${HOME}"}


def test_relay_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(GOOD.replace("targets: [sink]", "targets: [jria]"))
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(path)], env=ENV)
    assert result.exit_code == 1
    assert "routes[0].targets[0]: unknown target 'jria'" in result.output
    assert "1 problem" in result.output


def test_relay_check_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(GOOD)
    result = CliRunner().invoke(main, ["check", str(path)], env=ENV)
    assert result.exit_code == 0, result.output
    assert "ok (1 sources, 1 targets, 1 routes)" in result.output


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "no such file (run `relay init` to write one)" in result.output
