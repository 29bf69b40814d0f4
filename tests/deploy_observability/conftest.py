"""What the shipped Prometheus rules and Grafana dashboard may refer to: the series a real
``/metrics`` scrape of the relay serves, and the metric names a PromQL expression reads."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import redis
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from relay.state import keys
from relay.state.deliveries import Store
from relay.state.outbox import Outbox
from tests.conftest import ROOT, TEST_SECRET

RULES = ROOT / "deploy" / "prometheus" / "relay-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "relay-dashboard.json"
# Series Prometheus records itself for every scrape target, not served by /metrics.
PROMETHEUS_OWN = frozenset({"up"})
# Grafana's interval variables, given a duration PromQL accepts so the rest can be parsed.
GRAFANA_INTERVALS = re.compile(r"\$\{?__(rate_interval|interval|range)\}?")


@pytest.fixture
def served_series(
    write_config: Callable[..., Path], make_app: Callable[..., Flask], redis_client: redis.Redis
) -> frozenset[str]:
    """Every series name one scrape of a real app serves once each kind of fact exists: a
    configured source and target, a refused request, a delivery parked by its target's
    gate, a scheduler's heartbeat."""
    config = {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": [
            {"id": "t", "kind": "webhook", "url": "http://127.0.0.1:9/", "allow_private": True}
        ],
        "routes": [{"source": "ops", "targets": ["t"]}],
    }
    client = make_app(write_config(config)).test_client()
    refused = client.post("/hooks/ops", data=b"{}", headers={"content-type": "application/json"})
    assert refused.status_code == 401
    refused.close()  # the refusal is counted once its answer has gone out
    Outbox(redis_client, lease=60, retention=3600).fan_out(
        "e1", [({"id": "d1", "target": "t", "status": "queued"}, keys.deliver_queue("webhook"))]
    )
    Store(redis_client, retention=3600).park(
        "d1", time.time() + 60, "rate_limited", attempts=0, token=""
    )
    redis_client.set(keys.SCHEDULER_HEARTBEAT, time.time())
    scrape = client.get("/metrics")
    assert scrape.status_code == 200
    names = {
        sample.name
        for family in text_string_to_metric_families(scrape.get_data(as_text=True))
        for sample in family.samples
    }
    assert {"relay_events_rejected_total", "relay_target_waits_total"} <= names
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (by name or by a ``__name__`` matcher)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)
        return None

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as PromQL: Grafana's interval variables become ``5m``."""
    return GRAFANA_INTERVALS.sub("5m", expr)


def load_dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded
