"""The per-target gate against a real Redis: rate windows, breaker, pause, throttle."""

from __future__ import annotations

import time

import pytest
import redis

from relay.config.circuit import CircuitPolicy
from relay.config.rates import Rate, parse_rates
from relay.state.gate import Admission, TargetGate

NO_BREAKER = CircuitPolicy(enabled=False)
FAST = CircuitPolicy(failures=3, open_for=0.3, max_open_for=1.0, min_calls=100)


@pytest.fixture
def gate(redis_client: redis.Redis) -> TargetGate:
    return TargetGate(redis_client)


def admit(
    gate: TargetGate, token: str, rates: list[Rate], circuit: CircuitPolicy = NO_BREAKER
) -> Admission:
    return gate.admit("t", token, rates=rates, circuit=circuit, probe_ttl=5)


@pytest.mark.parametrize(
    ("text", "limit", "per"),
    [
        ("20/min", 20, 60),
        ("5/s", 5, 1),
        ("100/10m", 100, 600),
        ("3 / hour", 3, 3600),
        ("7/2d", 7, 172800),
    ],
)
def test_rates_parse(text: str, limit: int, per: float) -> None:
    [rate] = parse_rates(text)
    assert (rate.limit, rate.per) == (limit, per)
    assert per < rate.window <= per + 1


@pytest.mark.parametrize("text", ["20", "20/fortnight", "x/min", "/s"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rates(text)


def test_off_means_no_limit() -> None:
    assert parse_rates("off") == [] and parse_rates(False) == []


def test_a_full_window_makes_the_next_send_wait_until_a_slot_frees(gate: TargetGate) -> None:
    rates = parse_rates("3/1s")
    assert all(admit(gate, f"d{i}", rates).admitted for i in range(3))
    refused = admit(gate, "d3", rates)
    assert refused.reason == "rate_limited"
    assert 0.9 < refused.wait <= 1.03
    time.sleep(refused.wait)
    assert admit(gate, "d3", rates).admitted


def test_every_rate_must_have_room(gate: TargetGate) -> None:
    rates = parse_rates(["5/s", "7/min"])
    admitted = [admit(gate, f"d{i}", rates).admitted for i in range(5)]
    assert admitted == [True] * 5
    assert admit(gate, "d5", rates).reason == "rate_limited"  # the 5/s window is full
    time.sleep(1.05)
    assert admit(gate, "d5", rates).admitted and admit(gate, "d6", rates).admitted
    refused = admit(gate, "d7", rates)  # 7 sent this minute: the minute window is full
    assert refused.reason == "rate_limited" and refused.wait > 55


def test_a_refused_send_takes_no_slot(gate: TargetGate) -> None:
    rates = parse_rates("1/1s")
    assert admit(gate, "a", rates).admitted
    for _ in range(5):
        assert not admit(gate, "b", rates).admitted
    time.sleep(1.05)
    assert admit(gate, "b", rates).admitted
    assert gate.status("t", rates)["rates"][0]["used"] == 1


def test_consecutive_failures_open_the_breaker_then_a_probe_closes_it(gate: TargetGate) -> None:
    for i in range(2):
        assert gate.record("t", f"d{i}", ok=False, counts=True, circuit=FAST) == "closed"
    assert gate.record("t", "d2", ok=False, counts=True, circuit=FAST) == "opened"
    refused = admit(gate, "d3", [], FAST)
    assert refused.reason == "circuit_open" and 0.2 < refused.wait <= 0.3
    assert gate.status("t")["circuit"] == "open"
    time.sleep(0.35)
    assert admit(gate, "probe", [], FAST).admitted  # half-open: one probe goes
    other = admit(gate, "d4", [], FAST)
    assert other.reason == "circuit_probing" and other.wait > 0
    assert gate.record("t", "probe", ok=True, counts=True, circuit=FAST) == "recovered"
    assert admit(gate, "d4", [], FAST).admitted
    assert gate.status("t")["circuit"] == "closed"


def test_a_failed_probe_reopens_for_longer(gate: TargetGate) -> None:
    for i in range(3):
        gate.record("t", f"d{i}", ok=False, counts=True, circuit=FAST)
    time.sleep(0.35)
    assert admit(gate, "probe", [], FAST).admitted
    assert gate.record("t", "probe", ok=False, counts=True, circuit=FAST) == "opened"
    refused = admit(gate, "d9", [], FAST)
    assert refused.reason == "circuit_open" and 0.5 < refused.wait <= 0.6  # doubled


def test_a_high_failure_rate_opens_the_breaker(gate: TargetGate) -> None:
    policy = CircuitPolicy(failures=100, failure_rate=0.5, min_calls=4, window=60)
    outcomes = [True, False, True, False]
    states = [
        gate.record("t", f"d{i}", ok=ok, counts=True, circuit=policy)
        for i, ok in enumerate(outcomes)
    ]
    assert states == ["closed", "closed", "closed", "opened"]


def test_outcomes_that_do_not_count_leave_the_breaker_closed(gate: TargetGate) -> None:
    for i in range(10):
        assert gate.record("t", f"d{i}", ok=False, counts=False, circuit=FAST) == "ignored"
    assert admit(gate, "x", [], FAST).admitted
    status = gate.status("t")
    assert status["failures"] == 10 and status["consecutive_failures"] == 0


def test_pause_and_resume(gate: TargetGate) -> None:
    gate.pause("t")
    refused = admit(gate, "d", [], FAST)
    assert refused.reason == "paused" and refused.wait > 0
    assert gate.status("t")["paused"] is True
    gate.resume("t")
    assert admit(gate, "d", [], FAST).admitted


def test_a_platform_throttle_holds_the_whole_target(gate: TargetGate) -> None:
    gate.throttle("t", 0.5)
    refused = admit(gate, "any", [], FAST)
    assert refused.reason == "throttled" and 0.3 < refused.wait <= 0.5
    assert gate.status("t")["throttled_until"] is not None
    time.sleep(0.55)
    assert admit(gate, "any", [], FAST).admitted


def test_reset_closes_an_open_breaker(gate: TargetGate) -> None:
    for i in range(3):
        gate.record("t", f"d{i}", ok=False, counts=True, circuit=FAST)
    gate.reset("t")
    assert admit(gate, "d", [], FAST).admitted
