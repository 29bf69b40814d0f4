"""``/api/v1/events``: every filter, cursor pagination, detail with deliveries and attempts."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from relay.admin import listings
from relay.admin.views import RESPONSE_CAP
from relay.state import keys
from tests.api.conftest import Api

T0 = 1_750_000_000.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def seeded(api: Api) -> dict[str, str]:
    ids = {
        "disk": api.event("ops", text="Disk FULL on db1", group="g1", received_at=T0 + 10)[0],
        "join": api.event("ops", type="member.joined", text=None, group="g2", received_at=T0 + 20)[
            0
        ],
        "file": api.event("chat", type="file.shared", text="report.pdf", received_at=T0 + 30)[0],
        "raw": api.event("chat", text="disk is fine", fan_out=False, received_at=T0 + 40)[0],
    }
    return ids


def _ids(api: Api, **params: object) -> list[str]:
    return [item["id"] for item in api.items("/events", **params)]


def test_newest_first_with_a_summary(api: Api, seeded: dict[str, str]) -> None:
    assert _ids(api) == [seeded[k] for k in ("raw", "file", "join", "disk")]
    first = api.ok("GET", "/events")["items"][-1]
    assert first == {
        "id": seeded["disk"],
        "source": "ops",
        "type": "message.created",
        "status": "routed",
        "delivery_status": "waiting",  # its two deliveries are queued
        "received_at": T0 + 10,
        "occurred_at": first["occurred_at"],
        "group": {"id": "g1", "name": "Group g1"},
        "sender": {"id": "u1", "name": "Ann"},
        "text": "Disk FULL on db1",
        "files": 0,
    }


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"source": "chat"}, ["raw", "file"]),
        ({"type": "member.joined"}, ["join"]),
        ({"group": "g2"}, ["join"]),
        ({"status": "queued"}, ["raw"]),
        ({"status": "routed", "source": "chat"}, ["file"]),
        ({"q": "disk"}, ["raw", "disk"]),
        ({"q": "DISK full"}, ["disk"]),
        ({"q": "nothing like it"}, []),
        ({"since": T0 + 20}, ["raw", "file", "join"]),
        ({"until": T0 + 20}, ["join", "disk"]),
        ({"since": int(T0 + 15), "until": int(T0 + 35)}, ["file", "join"]),
        ({"since": _iso(T0 + 15), "until": _iso(T0 + 35)}, ["file", "join"]),
        ({"since": "2025-06-15T17:06:55+02:00"}, ["raw", "file", "join"]),  # T0 + 15
        ({"since": _iso(T0 + 31)}, ["raw"]),
        ({"since": "2025-06-16"}, []),
        ({"source": "ops", "q": "disk", "group": "g1", "type": "message.created"}, ["disk"]),
    ],
)
def test_filters(
    api: Api, seeded: dict[str, str], params: dict[str, Any], expected: list[str]
) -> None:
    assert _ids(api, **params) == [seeded[k] for k in expected]


def test_pages_follow_the_cursor_without_gaps_or_repeats(api: Api) -> None:
    made = [api.event(received_at=T0 + i)[0] for i in range(7)]
    first = api.ok("GET", "/events", limit=3)
    assert [e["id"] for e in first["items"]] == made[::-1][:3]
    api.event(received_at=T0 + 100)  # a newer event does not shift the pages
    second = api.ok("GET", "/events", limit=3, cursor=first["next_cursor"])
    third = api.ok("GET", "/events", limit=3, cursor=second["next_cursor"])
    seen = [e["id"] for page in (first, second, third) for e in page["items"]]
    assert seen == made[::-1]
    assert third["next_cursor"] is None


def test_equal_receive_times_still_page_exactly(api: Api) -> None:
    made = {api.event(received_at=T0)[0] for _ in range(5)}
    pages = [api.ok("GET", "/events", limit=2)]
    while pages[-1]["next_cursor"]:
        pages.append(api.ok("GET", "/events", limit=2, cursor=pages[-1]["next_cursor"]))
    seen = [e["id"] for p in pages for e in p["items"]]
    assert sorted(seen) == sorted(made) and len(seen) == 5


def test_a_sparse_filter_returns_short_pages_with_a_cursor(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listings, "SCAN_BUDGET", 3)
    monkeypatch.setattr("relay.admin.query.BATCH", 3)
    wanted = api.event("chat", received_at=T0)[0]
    for i in range(7):
        api.event("ops", received_at=T0 + 1 + i)
    page = api.ok("GET", "/events", source="chat")
    assert page["items"] == [] and page["next_cursor"]
    assert _ids(api, source="chat") == [wanted]


def test_detail_shows_deliveries_and_every_attempt(api: Api) -> None:
    event_id, ids = api.event()
    [sink] = [i for i in ids if api.redis.hget(keys.delivery(i), "target") == b"sink"]
    api.attempt(sink, 1, response="x" * (RESPONSE_CAP + 100))
    api.attempt(sink, 2, outcome="delivered", status=200, response="ok", error=None)
    detail = api.ok("GET", f"/events/{event_id}")
    assert detail["id"] == event_id and detail["event"]["text"] == "hello"
    by_target = {d["target"]: d for d in detail["deliveries"]}
    assert set(by_target) == {"sink", "robot"} and by_target["robot"]["attempts_log"] == []
    first, second = by_target["sink"]["attempts_log"]
    assert first["n"] == 1 and first["status"] == 503 and first["duration_ms"] == 12.5
    assert first["error"] == "HTTP 503" and first["outcome"] == "retry"
    assert len(first["response"]) == RESPONSE_CAP + 1 and first["response"].endswith("…")
    assert first["request"] == {"target": "sink", "kind": "webhook", "idempotency_key": sink}
    assert second["outcome"] == "delivered" and second["error"] is None


def test_unknown_event_is_404(api: Api) -> None:
    response = api.get("/events/evt_nope")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


@pytest.mark.parametrize(
    "params, code",
    [
        ({"limit": 0}, "invalid_parameter"),
        ({"limit": 501}, "invalid_parameter"),
        ({"limit": "ten"}, "invalid_parameter"),
        ({"since": "yesterday"}, "invalid_parameter"),
        ({"since": "2024-02-30"}, "invalid_parameter"),
        ({"until": "1e12"}, "invalid_parameter"),
        ({"cursor": "not-a-cursor"}, "invalid_parameter"),
        ({"type": "message.deleted"}, "invalid_parameter"),
        ({"status": "lost"}, "invalid_parameter"),
        ({"sauce": "ops"}, "unknown_parameter"),
        ({"source": ""}, "invalid_parameter"),
    ],
)
def test_bad_parameters_are_400(api: Api, params: dict[str, Any], code: str) -> None:
    response = api.get("/events", **params)
    assert response.status_code == 400
    assert response.get_json()["error"] == code


def test_a_repeated_parameter_is_400(api: Api) -> None:
    response = api.client.get(
        "/api/v1/events?source=a&source=b",
        headers={"Authorization": f"Bearer {api.tokens['read']}"},
    )
    assert response.status_code == 400


def test_listing_is_quick_enough_to_be_usable(api: Api) -> None:
    for i in range(300):
        api.event(received_at=T0 + i, fan_out=False)
    started = time.perf_counter()
    assert len(api.items("/events", limit=500)) == 300
    assert time.perf_counter() - started < 10
