"""Counters of what the relay did, kept in Redis and shared by the API, the dashboard and
``/metrics``.

The processes that see a fact count it, inside the Redis step that makes it happen:
the intake script counts accepted events and duplicates, the receiver counts refusals,
the workers' finish scripts count outcomes, attempt latencies and waits. Any number of
gunicorn and Celery processes therefore add up in one place, with no multiprocess
directory, and a scrape that lands on any web process reads the same numbers.

Two kinds of keys (field names join ids with ``|``, which an id cannot contain):

- cumulative hashes that never expire: ``relay:stats:sources`` (``<source>|accepted``,
  ``<source>|duplicates``, ``<source>|rejected|<code>``) and ``relay:stats:targets``
  (``<target>|outcome|<delivered|retry|dead>``, ``<target>|wait|<reason>``,
  ``<target>|le|<bound ms or +Inf>``, ``<target>|sum_ms``, ``<target>|count``);
- one hash per minute, ``relay:stats:minute:<epoch of the minute>``, expiring after
  ``MINUTE_TTL``: totals ``received``, ``delivered``, ``failed``, ``dead`` and per target
  ``<target>|delivered``, ``<target>|failed``, ``<target>|le|<bound>``.

Latency buckets are stored per bucket (not cumulated) under their bound, so a change of
``LATENCY_BUCKETS_MS`` never misreads old counts: reads cumulate every stored bound.
Minutes come from the writer's clock (``time.time()``), like the records' timestamps.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import redis

from relay.state import keys

# Histogram upper bounds of attempt durations, in milliseconds (``+Inf`` is implied).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0
)  # fmt: skip
MINUTE_TTL = 2 * 3600  # per-minute hashes live this long: windows and charts up to 2 h
UNKNOWN_SOURCE = "(unknown)"  # refusals for a source id that is not configured

SERIES = ("received", "delivered", "failed", "dead")
INF = "+Inf"


def minute_of(now: float) -> int:
    return int(now // 60) * 60


def bucket_label(duration_ms: float) -> str:
    """The bound of the histogram bucket a duration falls in (``+Inf`` past the last)."""
    index = bisect_left(LATENCY_BUCKETS_MS, duration_ms)
    return INF if index == len(LATENCY_BUCKETS_MS) else f"{LATENCY_BUCKETS_MS[index]:g}"


def _bound(label: str) -> float:
    return math.inf if label == INF else float(label)


def _int(value: bytes | str | None) -> int:
    return int(value) if value else 0


def cumulate(raw: dict[str, int]) -> dict[float, int]:
    """Per-bucket counts by bound label → cumulative counts at each ``LATENCY_BUCKETS_MS``."""
    bounds = sorted((_bound(label), n) for label, n in raw.items())
    out: dict[float, int] = {}
    total, i = 0, 0
    for le in LATENCY_BUCKETS_MS:
        while i < len(bounds) and bounds[i][0] <= le:
            total += bounds[i][1]
            i += 1
        out[float(le)] = total
    return out


def quantile(q: float, cumulative: dict[float, int], count: int) -> float | None:
    """Prometheus's ``histogram_quantile``: linear inside the bucket holding rank ``q·count``;
    past the last finite bound it answers that bound. ``None`` without observations."""
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0
    for le, cum in sorted(cumulative.items()):
        if cum >= rank and cum > below:
            return round(lower + (le - lower) * (rank - below) / (cum - below), 3)
        lower, below = le, cum
    return float(max(cumulative)) if cumulative else None


class Stats:
    """Reads the counters. ``clock`` is for tests (default ``time.time``)."""

    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.clock = clock

    def sources(self) -> dict[str, dict[str, Any]]:
        """Per source id since the counters began: {"accepted": int, "duplicates": int,
        "rejected": {reason_code: int}}."""
        out: dict[str, dict[str, Any]] = {}
        for field, value in self.redis.hgetall(keys.STATS_SOURCES).items():
            source, _, rest = field.decode().partition("|")
            entry = out.setdefault(source, {"accepted": 0, "duplicates": 0, "rejected": {}})
            kind, _, code = rest.partition("|")
            if kind == "rejected":
                entry["rejected"][code] = int(value)
            elif kind in ("accepted", "duplicates"):
                entry[kind] = int(value)
        return out

    def targets(self) -> dict[str, dict[str, Any]]:
        """Per target id since the counters began: {"outcomes": {"delivered"|"retry"|"dead":
        int}, "waits": {reason: int}, "latency": {"buckets": {le_ms: cumulative_count},
        "sum_ms": float, "count": int}}."""
        raw: dict[str, dict[str, Any]] = {}
        for field, value in self.redis.hgetall(keys.STATS_TARGETS).items():
            target, kind, label = (field.decode().split("|", 2) + ["", ""])[:3]
            entry = raw.setdefault(
                target, {"outcomes": {}, "waits": {}, "le": {}, "sum_ms": 0.0, "count": 0}
            )
            if kind == "outcome":
                entry["outcomes"][label] = int(value)
            elif kind == "wait":
                entry["waits"][label] = int(value)
            elif kind == "le":
                entry["le"][label] = int(value)
            elif kind == "sum_ms":
                entry["sum_ms"] = float(value)
            elif kind == "count":
                entry["count"] = int(value)
        out: dict[str, dict[str, Any]] = {}
        for target, entry in raw.items():
            outcomes = {"delivered": 0, "retry": 0, "dead": 0, **entry["outcomes"]}
            latency = {
                "buckets": cumulate(entry["le"]),
                "sum_ms": round(entry["sum_ms"], 3),
                "count": entry["count"],
            }
            out[target] = {"outcomes": outcomes, "waits": entry["waits"], "latency": latency}
        return out

    def _minutes(self, count: int) -> list[int]:
        now = minute_of(self.clock())
        return [now - 60 * i for i in range(count - 1, -1, -1)]

    def target_window(self, target_id: str, seconds: int) -> dict[str, Any]:
        """Over the last ``seconds`` (whole minutes, the current one included, at most
        ``MINUTE_TTL``): {"attempts": int, "delivered": int, "failed": int,
        "success_rate": float | None, "p50_ms": float | None, "p99_ms": float | None}."""
        count = max(1, min(math.ceil(seconds / 60), MINUTE_TTL // 60))
        labels = [f"{le:g}" for le in LATENCY_BUCKETS_MS] + [INF]
        fields = [f"{target_id}|delivered", f"{target_id}|failed"]
        fields += [f"{target_id}|le|{label}" for label in labels]
        pipe = self.redis.pipeline(transaction=False)
        for minute in self._minutes(count):
            pipe.hmget(keys.stats_minute(minute), fields)
        delivered = failed = 0
        per_bucket = dict.fromkeys(labels, 0)
        for row in pipe.execute():
            delivered += _int(row[0])
            failed += _int(row[1])
            for label, value in zip(labels, row[2:], strict=True):
                per_bucket[label] += _int(value)
        observed = sum(per_bucket.values())
        cumulative = cumulate(per_bucket)
        attempts = delivered + failed
        return {
            "attempts": attempts,
            "delivered": delivered,
            "failed": failed,
            "success_rate": round(delivered / attempts, 4) if attempts else None,
            "p50_ms": quantile(0.5, cumulative, observed),
            "p99_ms": quantile(0.99, cumulative, observed),
        }

    def series(self, minutes: int = 60) -> dict[str, list[tuple[int, int]]]:
        """Per-minute totals for charts, oldest first, one point per minute (zeros
        included), the current minute last: {"received": [(minute_epoch, n)],
        "delivered": [...], "failed": [...], "dead": [...]}."""
        stamps = self._minutes(max(1, min(minutes, MINUTE_TTL // 60)))
        pipe = self.redis.pipeline(transaction=False)
        for minute in stamps:
            pipe.hmget(keys.stats_minute(minute), list(SERIES))
        rows = pipe.execute()
        return {
            name: [(minute, _int(row[i])) for minute, row in zip(stamps, rows, strict=True)]
            for i, name in enumerate(SERIES)
        }


def count_refusal(client: redis.Redis, source_id: str, code: str) -> None:
    """One refused request of ``source_id`` (already mapped to ``UNKNOWN_SOURCE`` if it is
    not configured); raises ``redis.RedisError`` for the caller to swallow."""
    client.hincrby(keys.STATS_SOURCES, f"{source_id}|rejected|{code}", 1)
