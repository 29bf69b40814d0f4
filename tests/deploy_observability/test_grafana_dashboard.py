"""``deploy/grafana/relay-dashboard.json``: a dashboard Grafana can import, whose every
query parses as PromQL and reads only series the relay serves."""

from __future__ import annotations

import re
from typing import Any

import promql_parser
import pytest

from tests.deploy_observability.conftest import (
    PROMETHEUS_OWN,
    grafana_to_promql,
    load_dashboard,
    metric_names,
)

LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panels() -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found: list[dict[str, Any]] = []
    for panel in load_dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries() -> list[tuple[str, str]]:
    return [
        (f"{panel['title']}/{target['refId']}", target["expr"])
        for panel in panels()
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_has_what_grafana_needs_to_import_it() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["targets"], f"{panel['title']} has no query"
            assert panel.get("description"), f"{panel['title']} does not say what it shows"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]


@pytest.mark.parametrize(("where", "expr"), queries(), ids=[where for where, _ in queries()])
def test_each_query_parses_and_reads_only_series_the_relay_serves(
    where: str, expr: str, served_series: frozenset[str]
) -> None:
    promql = grafana_to_promql(expr)
    promql_parser.parse(promql)
    used = metric_names(promql)
    assert used, f"{where} reads no series"
    unknown = used - served_series - PROMETHEUS_OWN
    assert not unknown, f"{where} reads series /metrics does not serve: {sorted(unknown)}"


def test_the_variables_list_labels_the_relay_serves(served_series: frozenset[str]) -> None:
    dashboard = load_dashboard()
    queried = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert {v["name"] for v in queried} == {"deployment", "source", "target"}
    for variable in queried:
        found = LABEL_VALUES.match(variable["query"]["query"])
        assert found, variable["query"]
        assert set() < metric_names(found["selector"]) <= served_series
        assert found["label"] == variable["name"]
        assert variable["definition"] == variable["query"]["query"]
    # Every panel query that filters by a variable names one that exists.
    names = {v["name"] for v in dashboard["templating"]["list"]}
    for where, expr in queries():
        for used in re.findall(r"\$\{?(\w+)", expr):
            assert used.startswith("__") or used in names, f"{where} uses ${used}"


def test_grafana_intervals_become_promql_durations() -> None:
    assert grafana_to_promql("rate(x[$__rate_interval])") == "rate(x[5m])"
    assert grafana_to_promql("rate(x[${__interval}])") == "rate(x[5m])"
    with pytest.raises(ValueError):  # what a query with an unknown variable would do
        promql_parser.parse("rate(x[$window])")
