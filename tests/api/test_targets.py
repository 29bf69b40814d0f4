"""``/api/v1/targets``: gate state, rate windows, recent success rate and latency;
pause, resume and reset, each audited."""

from __future__ import annotations

import time

from relay.config.circuit import CircuitPolicy
from relay.config.kinds import BUILTIN_TARGET_RATES, target_kinds
from relay.state import keys
from relay.state.gate import TargetGate
from tests.api.conftest import ADDR, Api


def test_the_kind_defaults_match_the_adapters() -> None:
    adapters = {kind: tuple(cls.default_rate_limits) for kind, cls in target_kinds().items()}
    assert BUILTIN_TARGET_RATES == adapters


def test_every_target_with_its_state_and_rates(api: Api) -> None:
    page = api.ok("GET", "/targets")
    assert page["next_cursor"] is None
    by_id = {t["id"]: t for t in page["items"]}
    assert list(by_id) == ["sink", "robot", "pm"]
    robot, pm, sink = by_id["robot"], by_id["pm"], by_id["sink"]
    assert robot["kind"] == "dingtalk_robot" and robot["rate_limit_source"] == "kind"
    assert robot["rates"] == [{"rate": "20/60s", "limit": 20, "per": 60.0, "used": 0}]
    assert pm["rate_limit_source"] == "config" and pm["rates"][0]["limit"] == 5
    assert sink["rates"] == [] and sink["rate_limit_source"] == "kind"
    assert sink["circuit"] == "closed" and sink["paused"] is False
    assert sink["windows"]["5m"] == {
        "attempts": 0,
        "delivered": 0,
        "failed": 0,
        "success_rate": None,
        "p50_ms": None,
        "p99_ms": None,
    }
    assert api.ok("GET", "/targets/robot") == robot


def test_recent_windows_and_totals_count_attempts(api: Api) -> None:
    ids = [api.event()[1] for _ in range(4)]
    sink = [
        i for pair in ids for i in pair if api.redis.hget(keys.delivery(i), "target") == b"sink"
    ]
    for delivery_id in sink[:3]:
        record = {"n": 1, "started_at": time.time(), "duration_ms": 40.0, "outcome": "delivered"}
        api.runtime.store.finish_delivered(delivery_id, record, token="")
    api.kill(sink[3])
    target = api.ok("GET", "/targets/sink")
    window = target["windows"]["1h"]
    assert window["attempts"] == 4 and window["delivered"] == 3 and window["failed"] == 1
    assert window["success_rate"] == 0.75
    assert 25 < window["p50_ms"] <= 50 and window["p99_ms"] is not None
    assert target["windows"]["5m"] == window
    assert target["outcomes"]["delivered"] == 3 and target["outcomes"]["dead"] == 1
    assert target["latency"]["count"] == 4


def test_pause_resume_and_reset_change_the_gate_and_are_audited(api: Api) -> None:
    paused = api.ok("POST", "/targets/sink/pause")
    assert paused["paused"] is True and paused["id"] == "sink"
    gate = TargetGate(api.redis)
    assert (
        gate.admit("sink", "d", rates=[], circuit=CircuitPolicy(), probe_ttl=1).reason == "paused"
    )
    assert api.ok("POST", "/targets/sink/resume")["paused"] is False
    assert gate.admit("sink", "d", rates=[], circuit=CircuitPolicy(), probe_ttl=1).admitted
    api.redis.hset(keys.target_state("sink"), mapping={"state": "open", "open_until": 9e12})
    assert api.ok("GET", "/targets/sink")["circuit"] == "open"
    assert api.ok("POST", "/targets/sink/reset")["circuit"] == "closed"
    entries = [(e["action"], e["target"], e["outcome"]) for e in api.audit()]
    assert entries == [("reset", "sink", "ok"), ("resume", "sink", "ok"), ("pause", "sink", "ok")]
    assert all(e["actor"] == api.key_ids["admin"] and e["remote_addr"] == ADDR for e in api.audit())


def test_unknown_targets_are_404(api: Api) -> None:
    assert api.get("/targets/nope").status_code == 404
    for action in ("pause", "resume", "reset"):
        assert api.post(f"/targets/nope/{action}").status_code == 404
    assert {(e["action"], e["outcome"]) for e in api.audit()} == {
        ("pause", "failed"),
        ("resume", "failed"),
        ("reset", "failed"),
    }
    assert api.redis.exists(keys.target_state("nope")) == 0
