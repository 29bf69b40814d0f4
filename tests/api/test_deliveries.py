"""``/api/v1/deliveries``: filters, pagination inside and across events, detail."""

from __future__ import annotations

import pytest

from relay.state import keys
from tests.api.conftest import Api

T0 = 1_750_000_000.0


@pytest.fixture
def seeded(api: Api) -> dict[str, list[str]]:
    """Three events: ops (sink + robot), chat (pm), ops (sink + robot), oldest first."""
    made: dict[str, list[str]] = {}
    for name, source, at in (("a", "ops", T0 + 1), ("b", "chat", T0 + 2), ("c", "ops", T0 + 3)):
        made[name] = api.event(source, received_at=at)[1]
        for delivery_id in made[name]:
            target = api.redis.hget(keys.delivery(delivery_id), "target")
            made[f"{name}.{target.decode() if target else ''}"] = [delivery_id]
    api.kill(made["a.sink"][0])
    return made


def _ids(api: Api, **params: object) -> list[str]:
    return [item["id"] for item in api.items("/deliveries", **params)]


def test_newest_event_first_then_by_id(api: Api, seeded: dict[str, list[str]]) -> None:
    assert _ids(api) == seeded["c"] + seeded["b"] + seeded["a"]


@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_pages_of_any_size_split_events_cleanly(
    api: Api, seeded: dict[str, list[str]], limit: int
) -> None:
    pages = [api.ok("GET", "/deliveries", limit=limit)]
    while pages[-1]["next_cursor"]:
        pages.append(api.ok("GET", "/deliveries", limit=limit, cursor=pages[-1]["next_cursor"]))
    seen = [d["id"] for p in pages for d in p["items"]]
    assert seen == seeded["c"] + seeded["b"] + seeded["a"]
    assert all(len(p["items"]) <= limit for p in pages)


def test_filters(api: Api, seeded: dict[str, list[str]]) -> None:
    sink_a, sink_c = seeded["a.sink"][0], seeded["c.sink"][0]
    assert _ids(api, source="chat") == seeded["b"]
    assert _ids(api, target="sink") == [sink_c, sink_a]
    assert _ids(api, status="dead") == [sink_a]
    assert _ids(api, status="queued", target="sink") == [sink_c]
    assert _ids(api, event_id=api.ok("GET", f"/deliveries/{sink_a}")["event_id"]) == seeded["a"]
    assert _ids(api, event_id="evt_nope") == []
    assert _ids(api, since=T0 + 2) == seeded["c"] + seeded["b"]
    assert _ids(api, until=T0 + 2) == seeded["b"] + seeded["a"]
    assert _ids(api, since=T0 + 2, until=T0 + 2) == seeded["b"]


def test_one_event_pages_by_delivery(api: Api, seeded: dict[str, list[str]]) -> None:
    event_id = api.ok("GET", f"/deliveries/{seeded['c'][0]}")["event_id"]
    first = api.ok("GET", "/deliveries", event_id=event_id, limit=1)
    second = api.ok("GET", "/deliveries", event_id=event_id, limit=1, cursor=first["next_cursor"])
    assert [d["id"] for d in first["items"] + second["items"]] == seeded["c"]
    rest = api.ok("GET", "/deliveries", event_id=event_id, cursor=second["next_cursor"])
    assert rest["items"] == [] and rest["next_cursor"] is None


def test_detail_has_attempts_and_the_event(api: Api, seeded: dict[str, list[str]]) -> None:
    delivery_id = seeded["c.sink"][0]
    api.attempt(delivery_id, 1)
    detail = api.ok("GET", f"/deliveries/{delivery_id}")
    assert detail["id"] == delivery_id and detail["target"] == "sink"
    assert detail["status"] == "queued" and detail["route"] == 0
    assert [a["n"] for a in detail["attempts_log"]] == [1]
    assert detail["event"]["id"] == detail["event_id"] and detail["event"]["text"] == "hello"


def test_a_dead_letter_shows_its_event_copy_after_the_event_expired(
    api: Api, seeded: dict[str, list[str]]
) -> None:
    dead = seeded["a.sink"][0]
    event_id = api.ok("GET", f"/deliveries/{dead}")["event_id"]
    api.redis.delete(keys.event(event_id))
    detail = api.ok("GET", f"/deliveries/{dead}")
    assert detail["status"] == "dead" and detail["dead_reason"] == "permanent failure"
    assert detail["event"]["id"] == event_id
    assert detail["attempts_log"][-1]["status"] == 410


def test_unknown_delivery_is_404(api: Api) -> None:
    assert api.get("/deliveries/dlv_nope").status_code == 404


def test_damaged_records_never_make_a_500(api: Api, seeded: dict[str, list[str]]) -> None:
    delivery_id = seeded["c.sink"][0]
    api.redis.rpush(keys.attempts(delivery_id), b"{not json", b"[1, 2]", b"\xff\xfe")
    api.redis.hset(keys.delivery(delivery_id), mapping={"attempts": "many", "route": "x"})
    event_id = api.ok("GET", f"/deliveries/{delivery_id}")["event_id"]
    api.redis.hset(keys.event(event_id), "data", b"\xff{broken")
    detail = api.ok("GET", f"/deliveries/{delivery_id}")
    assert detail["attempts_log"] == [] and detail["attempts"] == 0 and detail["route"] is None
    assert detail["event"] is None
    assert api.get(f"/events/{event_id}").status_code == 404
    assert event_id not in [e["id"] for e in api.items("/events")]
    assert delivery_id in [d["id"] for d in api.items("/deliveries")]
