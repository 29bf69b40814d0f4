"""``GET /metrics``: Prometheus text (or OpenMetrics, if asked) read from Redis at scrape time.

Nothing is counted in this process's memory: the counters live in Redis
(``relay.state.stats``), written by whichever gunicorn or Celery process saw the fact, and
the gauges (queue depths, schedule, in-flight, dead letters, circuit state) are read
from the records themselves. Every web process therefore answers a scrape with the
same numbers, and no ``PROMETHEUS_MULTIPROC_DIR`` is needed. Per-process metrics
(CPU, memory of one gunicorn worker) are left out for the same reason: they would
differ from scrape to scrape. Every metric is described in ``docs/metrics.md``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import redis
from flask import Blueprint, Response, current_app, request
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from relay.context import WebContext
from relay.state import keys
from relay.state.stats import LATENCY_BUCKETS_MS, Stats

metrics = Blueprint("metrics", __name__)

CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
OUTCOMES = ("delivered", "retry", "dead")


class RelayCollector(Collector):
    """Reads every metric from Redis on each ``collect()`` (a handful of round trips)."""

    def __init__(self, runtime: WebContext) -> None:
        self.runtime = runtime
        self.stats = Stats(runtime.redis)

    def describe(self) -> list[Metric]:
        return []  # no names to check up front: keeps registration free of Redis reads

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("relay_redis_up", "1 if Redis answered this scrape, else 0.")
        try:
            families = list(self._families())
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        config = self.runtime.config
        yield from self._sources(list(config.sources))
        yield from self._queues()
        yield from self._targets(list(config.targets))

    def _sources(self, configured: list[str]) -> Iterator[Metric]:
        sources = self.stats.sources()
        for source_id in configured:
            sources.setdefault(source_id, {"accepted": 0, "duplicates": 0, "rejected": {}})
        accepted = CounterMetricFamily(
            "relay_events_accepted",
            "Events accepted and queued, by source (resends not included).",
            labels=["source"],
        )
        duplicates = CounterMetricFamily(
            "relay_events_duplicate",
            "Resends of an already accepted event, answered without queueing, by source.",
            labels=["source"],
        )
        rejected = CounterMetricFamily(
            "relay_events_rejected",
            "Inbound requests refused, by source ('(unknown)' for ids not configured) "
            "and reason (the error code of the JSON answer).",
            labels=["source", "reason"],
        )
        for source_id, entry in sorted(sources.items()):
            accepted.add_metric([source_id], entry["accepted"])
            duplicates.add_metric([source_id], entry["duplicates"])
            for reason, n in sorted(entry["rejected"].items()):
                rejected.add_metric([source_id, reason], n)
        yield from (accepted, duplicates, rejected)

    def _queues(self) -> Iterator[Metric]:
        beat = self.runtime.redis.get(keys.SCHEDULER_HEARTBEAT)
        stats = self.runtime.store.queue_stats()
        depth = GaugeMetricFamily(
            "relay_queue_depth", "Task messages waiting in each Celery queue.", labels=["queue"]
        )
        for name, n in stats["queues"].items():
            depth.add_metric([name], n)
        yield depth
        yield _gauge(
            "relay_scheduled_deliveries",
            "Deliveries parked in the schedule (retry backoff, rate-limit or breaker waits).",
            stats["scheduled"],
        )
        yield _gauge(
            "relay_scheduled_due_deliveries",
            "Scheduled deliveries whose time has come but the scheduler has not moved yet.",
            stats["scheduled_due"],
        )
        yield _gauge(
            "relay_schedule_lag_seconds",
            "How long the oldest due scheduled delivery has been waiting past its time.",
            stats["schedule_lag_seconds"],
        )
        yield _gauge(
            "relay_in_flight_tasks",
            "Tasks queued or running, each with a deadline after which it is pushed again.",
            stats["in_flight"],
        )
        yield _gauge(
            "relay_dead_letters", "Deliveries in the dead-letter queue.", stats["dead_letters"]
        )
        if beat:
            yield _gauge(
                "relay_scheduler_heartbeat_age_seconds",
                "Seconds since a scheduler last reported in.",
                round(max(0.0, time.time() - float(beat)), 3),
            )

    def _targets(self, configured: list[str]) -> Iterator[Metric]:
        targets = self.stats.targets()
        for target_id in configured:
            targets.setdefault(target_id, _empty_target())
        deliveries = CounterMetricFamily(
            "relay_deliveries",
            "Delivery outcomes by target: 'delivered' (an attempt succeeded), 'retry' (an "
            "attempt failed and a retry was scheduled), 'dead' (dead-lettered).",
            labels=["target", "outcome"],
        )
        latency = HistogramMetricFamily(
            "relay_attempt_duration_seconds",
            "Duration of delivery attempts (successful or failed) by target.",
            labels=["target"],
        )
        waits = CounterMetricFamily(
            "relay_target_waits",
            "Times a delivery was parked without spending an attempt, by target and reason "
            "(paused, throttled, circuit_open, circuit_probing, rate_limited).",
            labels=["target", "reason"],
        )
        for target_id, entry in sorted(targets.items()):
            for outcome in OUTCOMES:
                deliveries.add_metric([target_id, outcome], entry["outcomes"].get(outcome, 0))
            hist = entry["latency"]
            buckets = [(repr(le / 1000), float(n)) for le, n in sorted(hist["buckets"].items())]
            buckets.append(("+Inf", float(hist["count"])))
            latency.add_metric([target_id], buckets, sum_value=hist["sum_ms"] / 1000)
            for reason, n in sorted(entry["waits"].items()):
                waits.add_metric([target_id, reason], n)
        yield from (deliveries, latency, waits)
        yield from self._gates(configured)

    def _gates(self, configured: list[str]) -> Iterator[Metric]:
        """Circuit state and pause flag of every configured target, in one round trip."""
        pipe = self.runtime.redis.pipeline(transaction=False)
        for target_id in configured:
            pipe.hmget(keys.target_state(target_id), ["paused", "state", "open_until"])
        rows = pipe.execute() if configured else []
        circuit = GaugeMetricFamily(
            "relay_target_circuit_state",
            "Circuit breaker of each target: 0 closed, 1 half-open, 2 open.",
            labels=["target"],
        )
        paused = GaugeMetricFamily(
            "relay_target_paused", "1 if an operator paused the target, else 0.", labels=["target"]
        )
        now_ms = time.time() * 1000
        for target_id, (pause_flag, state, open_until) in zip(configured, rows, strict=True):
            name = state.decode() if state else "closed"
            if name == "open" and float(open_until or 0) <= now_ms:
                name = "half_open"  # the next delivery becomes the probe (as TargetGate.status)
            circuit.add_metric([target_id], CIRCUIT_STATES.get(name, 0))
            paused.add_metric([target_id], 1 if pause_flag == b"1" else 0)
        yield from (circuit, paused)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _empty_target() -> dict[str, Any]:
    buckets = {float(le): 0 for le in LATENCY_BUCKETS_MS}
    return {"outcomes": {}, "waits": {}, "latency": {"buckets": buckets, "sum_ms": 0.0, "count": 0}}


def registry_for(runtime: WebContext) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(runtime))
    return registry


@metrics.get("/metrics")
def serve() -> Response:
    extensions = current_app.extensions
    registry = extensions.get("relay.metrics")
    if registry is None:
        registry = extensions.setdefault("relay.metrics", registry_for(extensions["relay"]))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), status=200, content_type=content_type)
