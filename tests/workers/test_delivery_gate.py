"""``run_delivery`` with the target gate: waiting never spends an attempt or dead-letters."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import redis

from relay.config.loader import load_config
from relay.errors import RetryableDeliveryError, TargetThrottled
from relay.settings import Settings
from relay.state import keys
from relay.state.lifecycle import DeliveryRecord
from tests.conftest import TEST_SECRET
from tests.workers.support import accept, fan_out
from workers.context import WorkerContext
from workers.delivery import run_deliveries, run_delivery
from workers.targets.base import DeliveryContext, DeliveryResult


class Failing:
    family = "storage"

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        raise RetryableDeliveryError("HTTP 503", status=503)


class Throttling:
    family = "storage"

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        raise TargetThrottled("send too fast (130101)", retry_after=600)


@pytest.fixture
def build(file_worker: Callable[..., WorkerContext]) -> Callable[..., WorkerContext]:
    return partial(file_worker, max_attempts=3)


def parked(ctx: WorkerContext, delivery_id: str) -> DeliveryRecord:
    delivery = ctx.store.delivery(delivery_id) or DeliveryRecord()
    assert delivery.status == "scheduled"
    assert ctx.store.redis.zscore(keys.SCHEDULE, delivery_id) is not None
    assert ctx.store.redis.zscore(keys.INFLIGHT, f"deliver:{delivery_id}") is None
    assert not ctx.store.redis.exists(keys.lock(delivery_id))
    return delivery


def test_a_rate_limited_delivery_waits_without_spending_an_attempt(
    build: Callable[..., WorkerContext],
) -> None:
    ctx = build(rate_limit="1/min")
    first, second = accept(ctx, 1), accept(ctx, 2)
    assert run_delivery(ctx, first) == "delivered"
    assert run_delivery(ctx, second) == "waiting"
    delivery = parked(ctx, second)
    assert delivery.attempts == 0 and delivery.waiting == "rate_limited"
    assert 55 < (delivery.next_at or 0) - time.time() < 70
    assert ctx.store.attempts(second) == []


def test_a_paused_target_parks_deliveries_until_resumed(
    build: Callable[..., WorkerContext], tmp_path: Path
) -> None:
    ctx = build()
    delivery_id = accept(ctx)
    ctx.gate.pause("out")
    for _ in range(5):  # however often it comes back, it neither runs nor ages out
        assert run_delivery(ctx, delivery_id) == "waiting"
        ctx.store.redis.hset(keys.delivery(delivery_id), "next_at", "0")
    assert parked(ctx, delivery_id).attempts == 0
    ctx.gate.resume("out")
    assert run_delivery(ctx, delivery_id) == "delivered"
    assert (ctx.store.delivery(delivery_id) or DeliveryRecord()).attempts == 1
    assert len((tmp_path / "out" / "out.jsonl").read_text().splitlines()) == 1


def test_the_breaker_opens_and_parks_the_next_deliveries(
    build: Callable[..., WorkerContext],
) -> None:
    ctx = build(circuit={"failures": 2, "open_for": "30s"})
    ctx.targets["out"] = Failing()  # type: ignore[assignment]
    for n in (1, 2):
        assert run_delivery(ctx, accept(ctx, n)) == "retry"
    third = accept(ctx, 3)
    assert run_delivery(ctx, third) == "waiting"
    delivery = parked(ctx, third)
    assert delivery.waiting == "circuit_open" and delivery.attempts == 0
    assert ctx.gate.status("out")["circuit"] == "open"


def test_a_platform_throttle_makes_the_whole_target_wait(
    build: Callable[..., WorkerContext],
) -> None:
    ctx = build()
    ctx.targets["out"] = Throttling()  # type: ignore[assignment]
    first = accept(ctx, 1)
    assert run_delivery(ctx, first) == "retry"
    [attempt] = ctx.store.attempts(first)
    assert attempt["retry_after"] == 600
    other = accept(ctx, 2)  # a different delivery to the same target
    assert run_delivery(ctx, other) == "waiting"
    assert parked(ctx, other).waiting == "throttled"
    assert ctx.gate.status("out")["circuit"] == "closed"  # throttling is not ill health


def test_the_route_template_wins_over_the_target_template(
    make_settings: Callable[..., Settings],
    write_config: Callable[..., Path],
    tmp_path: Path,
    redis_client: redis.Redis,
) -> None:
    path = write_config(
        {
            "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
            "targets": [
                {"id": "a", "kind": "file", "path": str(tmp_path), "template": "target {{ 1 }}"},
            ],
            "routes": [
                {"source": "ops", "targets": ["a"], "template": "route {{ event.source }}"},
                {"source": "ops", "targets": ["a"]},
            ],
        }
    )
    ctx = WorkerContext(make_settings(config=path), load_config(path))
    seen: list[str] = []

    class Recording:
        family = "storage"

        def deliver(self, context: DeliveryContext) -> DeliveryResult:
            seen.append(context.render("default"))
            return DeliveryResult()

    ctx.targets["a"] = Recording()  # type: ignore[assignment]
    for delivery_id in fan_out(ctx, "evt_t"):
        assert run_delivery(ctx, delivery_id) == "delivered"
    assert sorted(seen) == ["route ops", "target 1"]


def test_one_message_of_several_deliveries_each_gets_its_own_outcome(
    build: Callable[..., WorkerContext], tmp_path: Path
) -> None:
    """A task message carrying several deliveries: claimed together, gated together,
    and each one ends on its own (sent, told to wait, already done, unknown)."""
    ctx = build(rate_limit="2/min")
    first, second, third = accept(ctx, 1), accept(ctx, 2), accept(ctx, 3)
    done = accept(ctx, 4)
    assert run_delivery(ctx, done) == "delivered"  # takes one of the two slots
    outcomes = run_deliveries(ctx, [first, done, "dlv_unknown", second, third])
    assert outcomes[1:3] == ["delivered", "missing"]
    assert sorted([outcomes[0], outcomes[3], outcomes[4]]) == ["delivered", "waiting", "waiting"]
    for delivery_id, outcome in zip(
        (first, second, third), (outcomes[0], *outcomes[3:]), strict=True
    ):
        delivery = ctx.store.delivery(delivery_id) or DeliveryRecord()
        if outcome == "delivered":
            assert delivery.status == "delivered" and delivery.attempts == 1
        else:
            assert parked(ctx, delivery_id).attempts == 0
    lines = (tmp_path / "out" / "out.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the earlier one and the one admitted now, each once
