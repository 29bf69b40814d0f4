"""``run_delivery`` with a target that hangs: over ``max_in_flight`` a delivery is parked,
not sent, without spending an attempt, and counted as a wait."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from relay.state.lifecycle import DeliveryRecord
from relay.state.stats import Stats
from tests.workers.support import accept
from workers.context import WorkerContext
from workers.delivery import run_delivery
from workers.targets.base import DeliveryContext, DeliveryResult


class Hanging:
    """Accepts the delivery and answers only when the test lets it."""

    family = "webhook"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        self.entered.set()
        assert self.release.wait(30)
        return DeliveryResult(status=200, excerpt="ok")


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    target = Hanging()
    yield target
    target.release.set()


def test_over_the_cap_a_delivery_waits_without_spending_an_attempt(
    file_worker: Callable[..., WorkerContext], hanging: Hanging
) -> None:
    ctx = file_worker(max_attempts=3, max_in_flight=1)
    ctx.targets["out"] = hanging  # type: ignore[assignment]
    first, second = accept(ctx, 1), accept(ctx, 2)
    outcomes: list[str] = []
    running = threading.Thread(target=lambda: outcomes.append(run_delivery(ctx, first)))
    running.start()
    assert hanging.entered.wait(10)

    assert run_delivery(ctx, second) == "waiting"  # not sent: the one slot is taken
    delivery = ctx.store.delivery(second) or DeliveryRecord()
    assert delivery.status == "scheduled" and delivery.waiting == "concurrency_limited"
    assert delivery.attempts == 0 and ctx.store.attempts(second) == []
    waits = Stats(ctx.store.redis).targets()["out"]["waits"]
    assert waits == {"concurrency_limited": 1}

    hanging.release.set()
    running.join(10)
    assert outcomes == ["delivered"]
    assert run_delivery(ctx, second) == "delivered"  # the slot came back with the finish
    assert ctx.gate.status("out")["in_flight"] == 0
