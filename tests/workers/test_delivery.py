"""``run_delivery`` without Celery: the outcome policy against a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from relay.errors import PermanentDeliveryError
from relay.state import keys
from relay.state.lifecycle import DeliveryRecord
from tests.conftest import TEST_SECRET
from tests.workers.support import accept
from workers.context import WorkerContext
from workers.delivery import run_delivery
from workers.targets.base import DeliveryContext, DeliveryResult


class BuggyAdapter:
    """A target plugin with a bug: it raises something that is not a delivery error."""

    family = "storage"

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        raise ZeroDivisionError("division by zero in a plugin")


class LeakyAdapter:
    """A plugin bug whose message carries a configured secret."""

    family = "storage"

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        raise RuntimeError(f"could not sign with {TEST_SECRET}")


class RefusingAdapter:
    family = "storage"

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        raise PermanentDeliveryError("HTTP 404", status=404, excerpt="no such hook")


@pytest.fixture
def context(file_worker: Callable[..., WorkerContext]) -> WorkerContext:
    return file_worker(max_attempts=2)


def test_an_adapter_bug_is_retried_then_dead_lettered(context: WorkerContext) -> None:
    context.targets["out"] = BuggyAdapter()  # type: ignore[assignment]
    delivery_id = accept(context)
    assert run_delivery(context, delivery_id) == "retry"
    time.sleep(0.05)  # past the 10 ms backoff
    assert run_delivery(context, delivery_id) == "dead"
    delivery = context.store.delivery(delivery_id) or DeliveryRecord()
    assert delivery.dead_reason == "retries exhausted after 2 attempts"
    attempts = context.store.attempts(delivery_id)
    assert [a["outcome"] for a in attempts] == ["retry", "failed"]
    assert attempts[0]["error"] == "unexpected ZeroDivisionError: division by zero in a plugin"


def test_a_permanent_error_dead_letters_at_once(
    context: WorkerContext, redis_client: redis.Redis
) -> None:
    context.targets["out"] = RefusingAdapter()  # type: ignore[assignment]
    delivery_id = accept(context)
    assert run_delivery(context, delivery_id) == "dead"
    [attempt] = context.store.attempts(delivery_id)
    assert attempt == {**attempt, "outcome": "failed", "status": 404, "response": "no such hook"}
    assert redis_client.zscore(keys.DLQ, delivery_id) is not None
    assert run_delivery(context, delivery_id) == "dead"  # a stale message changes nothing
    assert len(context.store.attempts(delivery_id)) == 1


def test_a_delivered_delivery_is_not_sent_again(context: WorkerContext, tmp_path: Path) -> None:
    delivery_id = accept(context)
    assert run_delivery(context, delivery_id) == "delivered"
    assert run_delivery(context, delivery_id) == "delivered"  # the duplicate message is dropped
    lines = (tmp_path / "out" / "out.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["delivery_id"] == delivery_id


def test_a_removed_target_dead_letters_with_a_reason(context: WorkerContext) -> None:
    delivery_id = accept(context)
    context.config.targets.pop("out")
    assert run_delivery(context, delivery_id) == "dead"
    delivery = context.store.delivery(delivery_id) or DeliveryRecord()
    assert delivery.dead_reason == "target is no longer configured"


def test_an_adapter_traceback_is_logged_without_secrets(
    context: WorkerContext, capsys: pytest.CaptureFixture[str]
) -> None:
    context.config = replace(context.config, secrets=frozenset({TEST_SECRET}))
    context.targets["out"] = LeakyAdapter()  # type: ignore[assignment]
    assert run_delivery(context, accept(context)) == "retry"
    logged = "".join(capsys.readouterr())
    assert "deliver.adapter_error" in logged and "could not sign with [redacted]" in logged
    assert TEST_SECRET not in logged


def test_a_replay_gets_a_fresh_budget_and_numbering_goes_on(context: WorkerContext) -> None:
    """After a replay the retry policy starts over (``max_attempts`` 2 again), while the
    attempt records keep counting, so the history reads #1, #2, #3, #4."""
    context.targets["out"] = BuggyAdapter()  # type: ignore[assignment]
    delivery_id = accept(context)
    assert run_delivery(context, delivery_id) == "retry"
    time.sleep(0.05)
    assert run_delivery(context, delivery_id) == "dead"
    assert context.outbox.replay(delivery_id, keys.deliver_queue("storage"))
    delivery = context.store.delivery(delivery_id) or DeliveryRecord()
    assert delivery.attempts == 2 and delivery.status == "queued"
    assert run_delivery(context, delivery_id) == "retry"  # not dead at once: a new budget
    time.sleep(0.05)
    assert run_delivery(context, delivery_id) == "dead"
    delivery = context.store.delivery(delivery_id) or DeliveryRecord()
    assert delivery.dead_reason == "retries exhausted after 2 attempts"
    attempts = context.store.attempts(delivery_id)
    assert [(a["n"], a["outcome"]) for a in attempts] == [
        (1, "retry"),
        (2, "failed"),
        (3, "retry"),
        (4, "failed"),
    ]
