"""Lanes of ordered delivery, step by step against a real Redis and the real scripts.

Each event is accepted by the intake script and fanned out by the fan-out script, with
the lane fields fan-out gives an ordered delivery; each delivery is claimed as a worker
claims it (``Store.begin``), then asks its lane (``Lanes.admit_many``), and finishes
through the store's own finish and dead-letter scripts. ``now`` is passed in, so a hold
running out needs no sleep.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import redis
import yaml

from relay.config.loader import load_config
from relay.config.models import RouteConfig, RouteMode, TargetConfig
from relay.errors import ConfigError
from relay.events import GroupEvent, Party
from relay.state import keys
from relay.state.deliveries import Begun, Store
from relay.state.lanes import (
    DEFAULT_HOLD,
    FANOUT_RECHECK,
    HELD,
    Joining,
    LaneClaim,
    Lanes,
    LaneVerdict,
    ordering_hold,
)
from relay.state.lifecycle import DeliveryRecord
from relay.state.outbox import Outbox
from tests.conftest import TEST_SECRET

QUEUE = "relay.deliver.webhook"
HOLD = 60.0
ORDERED = TargetConfig(id="sink", kind="webhook", ordering="per_group", ordering_hold=HOLD)
ROUTE = RouteConfig(source="ops", targets=["sink"])


class Relay:
    """The intake, fan-out, claim, lane and finish steps of one target, by hand."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.outbox = Outbox(client, lease=60, retention=3600)
        self.store = Store(client, retention=3600)
        self.lanes = Lanes(client)
        self.begun: dict[str, Begun] = {}

    def accept(self, group: str | None, text: str = "") -> GroupEvent:
        event = GroupEvent(
            source="ops", group=Party(id=group) if group else None, text=text or group
        )
        assert (
            self.outbox.accept_event(
                "ops", event.id, event.to_json(), dedupe_key=None, dedupe_ttl=60
            )
            is None
        )
        return event

    def fan_out(
        self, event: GroupEvent, route: RouteConfig = ROUTE, target: TargetConfig = ORDERED
    ) -> str:
        """The event's one delivery to ``target``, fanned out as the workers do."""
        record = self.store.event(event.id)
        assert record is not None
        lanes = Joining(self.redis, event, record["received_at"], record["status"])
        delivery = DeliveryRecord.new(
            id=f"dlv_{target.id}_{event.id}",
            event_id=event.id,
            source="ops",
            target=target.id,
            route=0,
            queue=QUEUE,
            now=time.time(),
        )
        fields = delivery.to_fields() | lanes.fields(route, target)
        self.outbox.fan_out(event.id, [(fields, QUEUE)])
        return str(delivery.id)

    def admit(self, delivery_id: str, now: float | None = None, hold: float = HOLD) -> LaneVerdict:
        """Claim the delivery, then ask its lane."""
        token = uuid.uuid4().hex
        if self.field(delivery_id, "status") == "scheduled":
            self.come_due(delivery_id)  # its message comes when it is due
        begun = self.store.begin(delivery_id, token, 30.0, time.time() + 30)
        assert begun.verdict == "run", begun.verdict
        self.begun[delivery_id] = begun
        claim = LaneClaim(delivery_id, token, begun.attempt - 1, hold)
        return self.lanes.admit_many([claim], time.time() if now is None else now)[0]

    def deliver(self, delivery_id: str) -> None:
        self.store.finish_delivered(delivery_id, {"n": 1}, token=self.begun[delivery_id].token)

    def retry(self, delivery_id: str, due: float) -> None:
        token = self.begun[delivery_id].token
        self.store.finish_retry(delivery_id, {"n": 1, "error": "HTTP 500"}, due, token=token)

    def kill(self, delivery_id: str) -> None:
        token = self.begun[delivery_id].token
        self.store.finish_dead(delivery_id, {"n": 1}, "permanent failure", "{}", token=token)

    def come_due(self, delivery_id: str) -> None:
        """A scheduled delivery whose time came (as the scheduler finds it)."""
        self.redis.hset(keys.delivery(delivery_id), "next_at", f"{time.time():.6f}")

    def lane(self, delivery_id: str) -> list[str]:
        return self.lanes.lane_of(delivery_id)

    def field(self, delivery_id: str, name: str) -> str | None:
        value = self.redis.hget(keys.delivery(delivery_id), name)
        return value.decode() if value is not None else None

    def due(self, delivery_id: str) -> float | None:
        return self.redis.zscore(keys.SCHEDULE, delivery_id)

    def breaks(self, reason: str) -> int:
        return int(self.redis.hget(keys.STATS_TARGETS, f"sink|order_break|{reason}") or 0)


@pytest.fixture
def relay(redis_client: redis.Redis) -> Relay:
    return Relay(redis_client)


def test_only_the_head_goes_and_a_delivered_head_wakes_the_next(relay: Relay) -> None:
    first, second = relay.accept("g"), relay.accept("g")
    d1, d2 = relay.fan_out(first), relay.fan_out(second)
    assert relay.lane(d1) == [d1, d2]

    held = relay.admit(d2)  # the later one is claimed first: held behind the head
    assert not held.go and held.blocker == d1
    assert relay.field(d2, "status") == "scheduled" and relay.field(d2, "waiting") == HELD
    assert relay.field(d2, "attempts") == "0"  # the claim's attempt is given back
    assert relay.redis.get(keys.lock(d2)) is None
    assert relay.redis.zscore(keys.INFLIGHT, f"deliver:{d2}") is None
    assert held.until == pytest.approx(relay.due(d2)) and held.until > time.time() + HOLD - 5

    going = relay.admit(d1)
    assert going.go and going.broke is None
    assert (going.next_id, going.next_queue) == (d2, QUEUE)  # what the worker hands over to
    relay.deliver(d1)
    assert relay.lane(d2) == [d2]
    assert (relay.due(d2) or 0) <= time.time()  # woken by the finish: due now
    assert relay.outbox.release_due(d2, QUEUE, time.time())
    assert relay.admit(d2).go


def test_other_groups_targets_and_unordered_deliveries_do_not_wait(relay: Relay) -> None:
    g1, g2, h1 = relay.accept("g"), relay.accept("g"), relay.accept("h")
    d_g1, d_g2, d_h1 = relay.fan_out(g1), relay.fan_out(g2), relay.fan_out(h1)
    other = TargetConfig(id="other", kind="webhook", ordering="per_group")
    d_other = relay.fan_out(g2, RouteConfig(source="ops", targets=["other"]), other)
    plain = relay.fan_out(g2, ROUTE, TargetConfig(id="plain", kind="webhook"))
    assert relay.field(plain, "lane") is None
    assert not relay.admit(d_g2).go  # behind g1
    assert relay.admit(d_h1).go  # another group
    assert relay.admit(d_other).go  # the same group, another target: another lane
    assert relay.admit(plain).go  # not ordered
    assert relay.admit(d_g1).go


def test_events_without_a_group_and_shadow_routes_join_no_lane(relay: Relay) -> None:
    event = relay.accept(None, "no group")
    assert Joining(relay.redis, event, time.time(), "queued").fields(ROUTE, ORDERED) == {}
    grouped = relay.accept("g")
    shadow = RouteConfig(source="ops", targets=["sink"], mode=RouteMode.SHADOW)
    assert Joining(relay.redis, grouped, time.time(), "queued").fields(shadow, ORDERED) == {}
    assert Joining(relay.redis, grouped, time.time(), "queued").fields(ROUTE, ORDERED) == {
        "lane": keys.lane("sink", "ops", "g")
    }


def test_a_head_waits_for_an_earlier_events_fan_out(relay: Relay) -> None:
    first, second = relay.accept("g"), relay.accept("g")
    d2 = relay.fan_out(second)  # a worker fanned out the later event first
    waiting = relay.admit(d2)
    assert not waiting.go and waiting.blocker is None  # not behind a delivery: a fan-out
    assert waiting.until is not None and waiting.until <= time.time() + FANOUT_RECHECK + 1
    d1 = relay.fan_out(first)
    assert relay.lane(d1) == [d1, d2]  # the earlier one went to the front
    assert relay.admit(d1).go
    assert relay.admit(d2).blocker == d1


def test_a_fan_out_lost_for_longer_than_the_hold_is_not_waited_for(relay: Relay) -> None:
    lost, later = relay.accept("g"), relay.accept("g")
    d2 = relay.fan_out(later)
    assert not relay.admit(d2).go
    assert relay.admit(d2, now=time.time() + HOLD + 1).go  # its fan-out never came
    relay.retry(d2, time.time() + 30)  # it began, and will retry

    d1 = relay.fan_out(lost)  # the lost fan-out, redone at last: noted, and after d2
    assert json.loads(relay.field(d1, "lane_broke") or "{}") == {"reason": "late_fanout"}
    assert relay.lane(d1) == [d2, d1]
    assert relay.admit(d1).blocker == d2
    assert relay.admit(d2).go
    relay.deliver(d2)
    late = relay.admit(d1)
    assert late.go and late.broke == {"reason": "late_fanout"}
    assert relay.breaks("late_fanout") == 1


def test_a_head_that_holds_its_lane_too_long_leaves_it(relay: Relay) -> None:
    events = [relay.accept("g") for _ in range(3)]
    d1, d2, d3 = (relay.fan_out(e) for e in events)
    assert relay.admit(d1).go
    relay.retry(d1, time.time() + 3600)  # failing for a long time
    held = relay.admit(d2)
    assert not held.go and held.blocker == d1 and held.until is not None

    released = relay.admit(d2, now=held.until + 0.001)  # the hold ran out
    assert released.go
    assert released.broke is not None and released.broke["reason"] == "hold"
    assert released.broke["skipped"] == d1 and released.broke["held_s"] >= HOLD
    assert relay.breaks("hold") == 1
    assert relay.lane(d2) == [d2, d3]  # the rest keep their order
    assert relay.admit(d3).blocker == d2
    assert relay.admit(d1).go  # out of its lane: it retries on its own
    relay.deliver(d1)
    assert relay.lane(d2) == [d2, d3]  # and leaving nothing behind


def test_a_head_parked_by_its_target_or_never_tried_keeps_its_lane(relay: Relay) -> None:
    events = [relay.accept("g") for _ in range(2)]
    d1, d2 = (relay.fan_out(e) for e in events)
    late = time.time() + HOLD + 1
    waiting = relay.admit(d2, now=late)  # d1 is still queued: nothing says it fails
    assert not waiting.go and waiting.blocker == d1
    assert waiting.until == pytest.approx(late + min(HOLD, 60), abs=0.01)
    assert relay.admit(d1).go
    relay.retry(d1, time.time())
    relay.admit(d1)  # its retry: the target is paused now, as for every delivery to it
    relay.store.park(d1, time.time() + 3600, "paused", attempts=2, token=relay.begun[d1].token)
    assert relay.admit(d2, now=late).blocker == d1  # order is kept through the pause
    assert relay.breaks("hold") == 0


def test_the_hold_counts_from_when_the_head_began_to_hold_the_next_back(relay: Relay) -> None:
    events = [relay.accept("g") for _ in range(3)]
    d1, d2, d3 = (relay.fan_out(e) for e in events)
    relay.admit(d1)
    relay.retry(d1, time.time() + 3600)
    late = time.time() + HOLD + 1
    assert relay.admit(d2, now=late).go  # d1 held d2 back too long: d1 leaves
    relay.retry(d2, time.time() + 3600)  # d2 fails too: it holds d3 back from then on
    assert relay.admit(d3, now=late + 1).blocker == d2
    assert relay.admit(d3, now=late + HOLD + 1).go


def test_a_dead_letter_releases_the_next_and_a_replay_goes_outside_the_lane(
    relay: Relay,
) -> None:
    events = [relay.accept("g") for _ in range(3)]
    d1, d2, d3 = (relay.fan_out(e) for e in events)
    assert not relay.admit(d2).go
    assert relay.admit(d1).go
    relay.kill(d1)
    assert relay.lane(d2) == [d2, d3]
    assert (relay.due(d2) or 0) <= time.time()
    assert relay.outbox.release_due(d2, QUEUE, time.time())
    released = relay.admit(d2)
    assert released.go and released.broke == {"reason": "dead_letter", "skipped": d1}
    assert relay.breaks("dead_letter") == 1

    assert relay.outbox.replay(d1, QUEUE)
    assert relay.admit(d1).go  # sent as soon as its target takes it, d2 running or not
    assert relay.lane(d2) == [d2, d3]


def test_members_that_are_done_or_gone_do_not_hold_a_lane(relay: Relay) -> None:
    events = [relay.accept("g") for _ in range(3)]
    d1, d2, d3 = (relay.fan_out(e) for e in events)
    relay.redis.delete(keys.delivery(d1))  # purged or expired
    relay.redis.hset(keys.delivery(d2), "status", "delivered")  # done, its leave lost
    assert relay.admit(d3).go
    assert relay.lane(d3) == [d3]


def test_the_hold_comes_from_the_route_then_the_target() -> None:
    plain = TargetConfig(id="t", kind="webhook")
    assert ordering_hold(ROUTE, plain) is None
    assert ordering_hold(ROUTE, ORDERED) == HOLD
    ordered_route = RouteConfig(source="ops", targets=["t"], ordering="per_group")
    assert ordering_hold(ordered_route, plain) == DEFAULT_HOLD
    timed = RouteConfig(source="ops", targets=["t"], ordering="per_group", ordering_hold="5s")
    assert ordering_hold(timed, ORDERED) == 5.0


def test_a_wrong_ordering_is_named_by_its_key(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
                "targets": [
                    {
                        "id": "sink",
                        "kind": "webhook",
                        "url": "https://example.com/in",
                        "ordering": "per_user",
                        "ordering_hold": "-1s",
                    }
                ],
                "routes": [{"source": "ops", "targets": ["sink"], "ordering": "sorted"}],
            }
        )
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = "\n".join(caught.value.problems)
    assert "targets[0].ordering" in problems and "per_group" in problems
    assert "targets[0].ordering_hold" in problems
    assert "routes[0].ordering" in problems


def test_the_scheduler_moves_the_fan_out_mark_over_routed_events_only(relay: Relay) -> None:
    events = [relay.accept("g") for _ in range(4)]
    relay.fan_out(events[0])
    assert relay.lanes.advance_mark(100)  # no mark yet: nothing to keep near
    assert relay.redis.get(keys.FANNED_OUT) is None

    relay.redis.set(keys.FANNED_OUT, "0")  # what the first ordered delivery leaves
    assert not relay.lanes.advance_mark(100)  # stops before events[1], still queued
    assert float(relay.redis.get(keys.FANNED_OUT) or 0) == relay.store.received_at(events[0].id)
    for event in events[1:]:
        relay.fan_out(event)
    assert not relay.lanes.advance_mark(2)  # two at a time
    assert relay.lanes.advance_mark(2)
    assert float(relay.redis.get(keys.FANNED_OUT) or 0) == relay.store.received_at(events[3].id)
