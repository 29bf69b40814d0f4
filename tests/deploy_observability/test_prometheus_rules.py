"""``deploy/prometheus/relay-rules.yml``: well-formed rule groups whose expressions parse
and read only series the relay serves; with ``promtool``, Prometheus's own check and unit
tests (``alerts_test.yml``) that each alert fires when it should and stays quiet otherwise."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from tests.deploy_observability.conftest import PROMETHEUS_OWN, RULES, metric_names

ALERT_KEYS = {"alert", "expr", "for", "labels", "annotations"}
SEVERITIES = {"critical", "warning", "info"}
PROMTOOL_HINT = "promtool is not installed (apt-get install -y prometheus brings it)"


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_the_file_is_prometheus_rule_groups() -> None:
    loaded = yaml.safe_load(RULES.read_text())
    assert set(loaded) == {"groups"}
    groups = loaded["groups"]
    assert groups, "no rule groups"
    names = [group["name"] for group in groups]
    assert len(names) == len(set(names)), f"group names repeat: {names}"
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"}, group["name"]
        assert group["rules"], f"group {group['name']} has no rules"
        for rule in group["rules"]:
            assert set(rule) <= ALERT_KEYS and {"alert", "expr", "labels", "annotations"} <= set(
                rule
            ), rule
    alerts = [rule["alert"] for rule in rules()]
    assert len(alerts) == len(set(alerts)), "alert names repeat"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_alert_parses_and_says_how_bad_and_what_to_do(rule: dict[str, Any]) -> None:
    expr = promql_parser.parse(rule["expr"])
    assert not isinstance(expr, promql_parser.NumberLiteral | promql_parser.StringLiteral)
    if "for" in rule:
        assert promql_parser.parse_duration(rule["for"]) > timedelta(0)
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    assert len(rule["annotations"]["description"].split()) >= 10, "say what to do about it"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_alert_reads_only_series_the_relay_serves(
    rule: dict[str, Any], served_series: frozenset[str]
) -> None:
    used = metric_names(rule["expr"])
    assert used, "an alert on no series"
    unknown = used - served_series - PROMETHEUS_OWN
    assert not unknown, f"{rule['alert']} reads series /metrics does not serve: {sorted(unknown)}"


def test_the_name_check_catches_a_misspelt_metric(served_series: frozenset[str]) -> None:
    """The check above is only worth something if a wrong name fails it."""
    assert metric_names("rate(relay_deliveries_totl[5m])") - served_series == {
        "relay_deliveries_totl"
    }
    assert "relay_queue_depth" in served_series
    assert "relay_attempt_duration_seconds_bucket" in served_series


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(PROMTOOL_HINT)
    return found


def test_promtool_accepts_the_rules(promtool: str) -> None:
    """Prometheus's own loader: expressions, durations and the annotations' templates."""
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_alerts_fire_on_the_series_that_should_raise_them(promtool: str, tmp_path: Path) -> None:
    """``alerts_test.yml`` replays series through the shipped expressions, ``for`` and
    labels. Annotations are prose checked by ``promtool check rules``, so the copy under
    test drops them and the cases state only the labels each alert must carry."""
    loaded = yaml.safe_load(RULES.read_text())
    for group in loaded["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "relay-rules.yml").write_text(yaml.safe_dump(loaded, sort_keys=False))
    cases = Path(__file__).with_name("alerts_test.yml")
    shutil.copy(cases, tmp_path / cases.name)
    covered = {
        case["alertname"]
        for test in yaml.safe_load(cases.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert covered == {rule["alert"] for rule in rules()}, "every alert has a case"
    done = subprocess.run(
        [promtool, "test", "rules", cases.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
