"""A delivery parked because its target is blocked stays in the schedule while the block
lasts: the scheduler looks at the target before it releases the delivery, so waiters
behind a hung or broken target do not come back as task messages in the queue the healthy
targets share (each one a claim and a gate call in a worker, only to be parked again).
Once the target may take it, it is released as before; the worker's gate still decides.

Each delivery is parked the way a worker parks it (``Store.begin`` then ``Store.park``
with the gate's reason), against a real Redis and the real gate scripts.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
import redis

from relay.config.circuit import CircuitPolicy
from relay.config.rates import parse_rates
from relay.state import keys
from relay.state.deliveries import Store
from relay.state.gate import Admission, TargetGate
from relay.state.outbox import Outbox
from relay.state.scheduler import Scheduler

QUEUE = "relay.deliver.webhook"
TARGET = "t"
NO_BREAKER = CircuitPolicy(enabled=False)
FAST = CircuitPolicy(failures=3, open_for=0.5, max_open_for=5.0, min_calls=100)


class Relay:
    """The parts a parked delivery meets: the outbox, the store, the gate, a scheduler."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.outbox = Outbox(client, lease=60, retention=3600)
        self.store = Store(client, retention=3600)
        self.gate = TargetGate(client)
        self.scheduler = Scheduler(client, self.outbox, interval=0.01, retention=3600)

    def admit(
        self, token: str, *, cap: int | None = 2, circuit: CircuitPolicy = NO_BREAKER
    ) -> Admission:
        return self.gate.admit(
            TARGET,
            token,
            rates=parse_rates("off"),
            circuit=circuit,
            probe_ttl=30.0,
            max_in_flight=cap,
        )

    def park(self, delivery_id: str, reason: str) -> None:
        """A delivery a worker claimed, then parked for ``reason``: due now."""
        now = time.time()
        fields: dict[str, str | int] = {
            "id": delivery_id,
            "event_id": "evt_1",
            "source": "ops",
            "target": TARGET,
            "route": 0,
            "queue": QUEUE,
            "status": "queued",
            "attempts": 0,
            "created_at": f"{now:.6f}",
            "window_start": f"{now:.6f}",
            "updated_at": f"{now:.6f}",
        }
        self.outbox.fan_out("evt_1", [(fields, QUEUE)])
        token = uuid.uuid4().hex
        begun = self.store.begin(delivery_id, token, lock_ttl=60, deadline=now + 60)
        assert begun.verdict == "run"
        self.store.park(delivery_id, now - 0.001, reason, attempts=0, token=token)
        self.redis.delete(QUEUE)  # the fan-out's message was the one the worker ran

    def queued(self) -> list[str]:
        """The delivery ids in the task messages pushed to the queue."""
        messages = [json.loads(m) for m in self.redis.lrange(QUEUE, 0, -1)]
        return sorted(delivery_id for m in messages for delivery_id in task_args(m))

    def record(self, delivery_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(keys.delivery(delivery_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def due_in(self, delivery_id: str) -> float:
        score = self.redis.zscore(keys.SCHEDULE, delivery_id)
        assert score is not None, f"{delivery_id} is not scheduled"
        return float(score) - time.time()

    def come_due(self, *delivery_ids: str) -> None:
        """The time a held delivery waits has passed (without sleeping through it)."""
        self.redis.zadd(keys.SCHEDULE, {d: time.time() - 0.001 for d in delivery_ids})


def task_args(message: dict[str, str]) -> list[str]:
    """The delivery ids a task message carries (its positional arguments)."""
    args: list[str] = json.loads(base64.b64decode(message["body"]))[0]
    return args


@pytest.fixture
def relay(redis_client: redis.Redis) -> Relay:
    return Relay(redis_client)


def assert_held(relay: Relay, delivery_id: str, reason: str) -> None:
    """Still scheduled, waiting for ``reason``, no attempt spent, no message."""
    record = relay.record(delivery_id)
    assert record["status"] == "scheduled"
    assert record["waiting"] == reason
    assert record["attempts"] == "0"
    assert float(record["next_at"]) == pytest.approx(
        relay.redis.zscore(keys.SCHEDULE, delivery_id), abs=1e-5
    )
    assert delivery_id not in relay.queued()
    assert relay.redis.zscore(keys.INFLIGHT, f"deliver:{delivery_id}") is None


def test_a_delivery_waiting_for_a_full_cap_is_not_pushed_until_a_slot_frees(
    relay: Relay,
) -> None:
    assert relay.admit("run_a").admitted and relay.admit("run_b").admitted  # cap 2: full
    refused = relay.admit("dlv_1")
    assert refused.reason == "concurrency_limited"
    relay.park("dlv_1", refused.reason)

    assert relay.scheduler.tick() == (0, 0)
    assert relay.scheduler.held == 1
    assert_held(relay, "dlv_1", "concurrency_limited")
    assert 0.09 < relay.due_in("dlv_1") < 0.2  # the gate's wait: the oldest run is new

    time.sleep(0.2)  # due again; both runs still hold their slots
    assert relay.scheduler.tick() == (0, 0)
    assert_held(relay, "dlv_1", "concurrency_limited")

    relay.gate.record(TARGET, "run_a", ok=True, counts=True, circuit=NO_BREAKER)
    relay.come_due("dlv_1")
    assert relay.scheduler.tick() == (1, 0)
    assert relay.queued() == ["dlv_1"]
    assert relay.record("dlv_1")["status"] == "queued"
    assert relay.record("dlv_1")["attempts"] == "0"


def test_a_sweep_releases_no_more_than_the_free_slots(relay: Relay) -> None:
    assert relay.admit("run_a", cap=3).admitted  # 2 of 3 slots free
    ids = [f"dlv_{n}" for n in range(5)]
    for delivery_id in ids:
        relay.park(delivery_id, "concurrency_limited")

    assert relay.scheduler.tick() == (2, 0)
    assert relay.scheduler.held == 3
    assert len(relay.queued()) == 2
    for delivery_id in set(ids) - set(relay.queued()):
        assert_held(relay, delivery_id, "concurrency_limited")


def test_a_slot_whose_lease_ended_counts_as_free(relay: Relay) -> None:
    """A worker died mid-attempt: its slot is free when its lease ends, even before the
    next gate call drops it."""
    for token in ("run_a", "run_b"):
        assert relay.gate.admit(
            TARGET, token, rates=(), circuit=NO_BREAKER, probe_ttl=0.3, max_in_flight=2
        ).admitted
    relay.park("dlv_1", "concurrency_limited")
    assert relay.scheduler.tick() == (0, 0)
    time.sleep(0.35)
    relay.come_due("dlv_1")
    assert relay.scheduler.tick() == (1, 0)
    assert relay.queued() == ["dlv_1"]


def test_a_delivery_waiting_for_an_open_breaker_is_not_pushed_until_it_may_probe(
    relay: Relay,
) -> None:
    for n in range(3):
        assert relay.admit(f"run_{n}", cap=None, circuit=FAST).admitted
        relay.gate.record(TARGET, f"run_{n}", ok=False, counts=True, circuit=FAST)
    refused = relay.admit("dlv_0", cap=None, circuit=FAST)
    assert refused.reason == "circuit_open"
    ids = ["dlv_0", "dlv_1", "dlv_2"]
    for delivery_id in ids:
        relay.park(delivery_id, refused.reason)

    open_until = float(relay.redis.hget(keys.target_state(TARGET), "open_until") or 0) / 1000
    assert relay.scheduler.tick() == (0, 0)
    for delivery_id in ids:
        assert_held(relay, delivery_id, "circuit_open")
        assert relay.redis.zscore(keys.SCHEDULE, delivery_id) >= open_until - 0.01

    time.sleep(max(0.0, open_until - time.time()) + 0.05)
    relay.come_due(*ids)
    assert relay.scheduler.tick() == (1, 0)  # one asks to be the probe; the others wait
    [probe] = relay.queued()
    for delivery_id in set(ids) - {probe}:
        assert_held(relay, delivery_id, "circuit_probing")
        assert relay.due_in(delivery_id) > 1.9

    others = sorted(set(ids) - {probe})
    assert relay.admit(probe, cap=None, circuit=FAST).admitted  # the worker: it probes
    relay.come_due(*others)
    assert relay.scheduler.tick() == (0, 0)  # while it runs, the others stay
    relay.gate.record(TARGET, probe, ok=True, counts=True, circuit=FAST)  # closed again
    relay.come_due(*others)
    assert relay.scheduler.tick() == (2, 0)
    assert relay.queued() == sorted(ids)


def test_a_paused_targets_deliveries_stay_until_it_is_resumed(relay: Relay) -> None:
    assert relay.admit("run_a").admitted
    relay.gate.pause(TARGET)
    refused = relay.admit("dlv_1")
    assert refused.reason == "paused"
    relay.park("dlv_1", refused.reason)

    assert relay.scheduler.tick() == (0, 0)
    assert_held(relay, "dlv_1", "paused")
    assert 9.9 < relay.due_in("dlv_1") < 11.1  # the gate's pause re-check

    relay.gate.resume(TARGET)
    relay.come_due("dlv_1")
    assert relay.scheduler.tick() == (1, 0)
    assert relay.queued() == ["dlv_1"]


def test_a_throttled_targets_deliveries_stay_until_the_throttle_ends(relay: Relay) -> None:
    relay.gate.throttle(TARGET, 0.5)
    relay.park("dlv_1", "throttled")
    assert relay.scheduler.tick() == (0, 0)
    assert_held(relay, "dlv_1", "throttled")
    assert 0.3 < relay.due_in("dlv_1") < 0.6

    time.sleep(0.55)
    relay.come_due("dlv_1")
    assert relay.scheduler.tick() == (1, 0)


def test_a_retry_and_a_rate_limited_wait_are_released_as_before(relay: Relay) -> None:
    """The look is about blocks the scheduler can see: a retry's backoff ended, and the
    rate windows are the worker gate's to judge (it parks the delivery again if full)."""
    assert relay.admit("run_a").admitted  # one of two slots free
    relay.park("dlv_retry", "")
    relay.park("dlv_rate", "rate_limited")
    assert relay.scheduler.tick() == (1, 0)  # one free slot: one of them now
    [held] = {"dlv_retry", "dlv_rate"} - set(relay.queued())
    assert_held(relay, held, "concurrency_limited")
    relay.gate.record(TARGET, "run_a", ok=True, counts=True, circuit=NO_BREAKER)
    relay.come_due(held)
    assert relay.scheduler.tick() == (1, 0)
    assert relay.queued() == ["dlv_rate", "dlv_retry"]


def test_a_target_the_gate_has_not_seen_is_not_held(relay: Relay) -> None:
    """No gate call recorded the target's cap yet (a fresh target, or state written by an
    older release): only what the state shows is checked."""
    ids = [f"dlv_{n}" for n in range(40)]
    for delivery_id in ids:
        relay.park(delivery_id, "concurrency_limited")
    assert relay.scheduler.tick() == (40, 0)
    assert relay.queued() == sorted(ids)


def test_the_worker_gate_still_decides_after_a_release(relay: Relay) -> None:
    """The scheduler's look reads the state as it was: the gate refuses a released
    delivery if the cap filled up meanwhile."""
    assert relay.admit("run_a").admitted
    relay.park("dlv_1", "concurrency_limited")
    assert relay.scheduler.tick() == (1, 0)
    assert relay.admit("run_b").admitted  # another worker took the last slot
    assert relay.admit("dlv_1").reason == "concurrency_limited"
