"""The gate's cap on attempts in flight and its slow-call signal, against a real Redis.

A target that accepts connections and never answers must not hold more than
``max_in_flight`` attempts at once (the rest wait, sparing the worker threads), must give
a slot back when an attempt finishes or its worker dies, and must open its breaker as
soon as its running attempts pass the slow-call threshold, not when they end.
"""

from __future__ import annotations

import time

import pytest
import redis

from relay.config.circuit import CircuitPolicy
from relay.config.rates import parse_rates
from relay.state import keys
from relay.state.gate import Admission, TargetGate

NO_BREAKER = CircuitPolicy(enabled=False)
FAST = CircuitPolicy(failures=3, open_for=0.3, max_open_for=1.0, min_calls=100)


@pytest.fixture
def gate(redis_client: redis.Redis) -> TargetGate:
    return TargetGate(redis_client)


def admit(
    gate: TargetGate,
    token: str,
    *,
    cap: int | None = 2,
    lease: float = 30.0,
    circuit: CircuitPolicy = NO_BREAKER,
    slow_after: float | None = None,
    rate: str = "off",
) -> Admission:
    return gate.admit(
        "t",
        token,
        rates=parse_rates(rate),
        circuit=circuit,
        probe_ttl=lease,
        max_in_flight=cap,
        slow_after=slow_after,
    )


def finish(
    gate: TargetGate, token: str, ok: bool = True, circuit: CircuitPolicy = NO_BREAKER
) -> str:
    return gate.record("t", token, ok=ok, counts=True, circuit=circuit)


def test_over_the_cap_a_delivery_waits_with_its_reason(gate: TargetGate) -> None:
    assert admit(gate, "a").admitted and admit(gate, "b").admitted
    refused = admit(gate, "c")
    assert refused.reason == "concurrency_limited" and refused.wait > 0
    assert gate.status("t", max_in_flight=2)["in_flight"] == 2
    assert gate.status("t", max_in_flight=2)["max_in_flight"] == 2


def test_a_refused_delivery_takes_no_rate_slot(gate: TargetGate) -> None:
    assert admit(gate, "a", cap=1, rate="2/min").admitted
    for _ in range(3):
        assert admit(gate, "b", cap=1, rate="2/min").reason == "concurrency_limited"
    assert gate.status("t", parse_rates("2/min"))["rates"][0]["used"] == 1


def test_a_finished_attempt_gives_its_slot_back(gate: TargetGate) -> None:
    assert admit(gate, "a", cap=1).admitted
    assert not admit(gate, "b", cap=1).admitted
    finish(gate, "a", ok=False)  # failed or not, the attempt no longer runs
    assert admit(gate, "b", cap=1).admitted
    assert gate.status("t")["in_flight"] == 1


def test_no_cap_admits_any_number(gate: TargetGate) -> None:
    assert all(admit(gate, f"d{i}", cap=None).admitted for i in range(50))
    assert gate.status("t")["in_flight"] == 50


def test_the_slot_of_a_dead_worker_comes_back_when_its_lease_ends(
    gate: TargetGate, redis_client: redis.Redis
) -> None:
    assert admit(gate, "killed", cap=1, lease=0.3).admitted  # its worker never finishes it
    assert admit(gate, "next", cap=1, lease=0.3).reason == "concurrency_limited"
    time.sleep(0.35)
    assert admit(gate, "next", cap=1, lease=0.3).admitted
    assert redis_client.zrange(keys.target_running("t"), 0, -1) == [b"next"]
    assert redis_client.pttl(keys.target_running("t")) > 0  # an idle target leaves no key


def test_a_redelivered_run_is_not_blocked_by_its_own_lost_slot(gate: TargetGate) -> None:
    """The watchdog pushes a delivery again when its worker died: the slot it held is
    its own, and taking it again does not count twice."""
    assert admit(gate, "lost", cap=1).admitted
    assert admit(gate, "lost", cap=1).admitted
    assert gate.status("t")["in_flight"] == 1


def test_the_wait_grows_with_how_long_the_oldest_attempt_has_run(gate: TargetGate) -> None:
    """Waiters of a hung target look again less and less often, not every 100 ms."""
    assert admit(gate, "hung", cap=1).admitted
    assert admit(gate, "x", cap=1).wait < 0.5
    time.sleep(0.6)
    assert admit(gate, "x", cap=1).wait >= 0.5


def test_running_attempts_past_the_slow_call_threshold_open_the_breaker_at_once(
    gate: TargetGate,
) -> None:
    for i in range(3):  # a hung target: three attempts that never end
        assert admit(gate, f"h{i}", cap=10, circuit=FAST, slow_after=0.2).admitted
    assert gate.status("t")["circuit"] == "closed"
    time.sleep(0.25)
    refused = admit(gate, "next", cap=10, circuit=FAST, slow_after=0.2)
    assert refused.reason == "circuit_open"
    status = gate.status("t")
    assert status["circuit"] == "open" and status["slow_calls"] == 3
    assert status["consecutive_failures"] == 3
    # When they finally end (a timeout, or even an answer), they are not counted again.
    for i in range(3):
        assert finish(gate, f"h{i}", ok=i == 0, circuit=FAST) == "open"
    assert gate.status("t")["consecutive_failures"] == 3
    assert gate.status("t")["in_flight"] == 0


def test_a_slow_attempt_counts_as_failed_even_when_it_ends_before_anyone_asks(
    gate: TargetGate,
) -> None:
    assert admit(gate, "slow", circuit=FAST, slow_after=0.1).admitted
    time.sleep(0.15)
    assert finish(gate, "slow", ok=True, circuit=FAST) == "closed"
    status = gate.status("t")
    assert status["consecutive_failures"] == 1 and status["slow_calls"] == 1
    assert status["successes"] == 1  # the totals still say how the attempt ended


def test_a_quick_attempt_is_not_slow(gate: TargetGate) -> None:
    assert admit(gate, "quick", circuit=FAST, slow_after=5).admitted
    assert finish(gate, "quick", ok=True, circuit=FAST) == "closed"
    assert gate.status("t")["slow_calls"] == 0


def test_a_hung_probe_reopens_the_breaker_at_the_threshold(gate: TargetGate) -> None:
    for i in range(3):
        finish(gate, f"d{i}", ok=False, circuit=FAST)
    time.sleep(0.35)
    assert admit(gate, "probe", circuit=FAST, slow_after=0.2).admitted
    other = admit(gate, "other", circuit=FAST, slow_after=0.2)
    assert other.reason == "circuit_probing"
    time.sleep(0.25)
    assert admit(gate, "other", circuit=FAST, slow_after=0.2).reason == "circuit_open"
