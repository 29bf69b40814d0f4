"""``/api/v1/sources``, ``/api/v1/queues`` and ``/api/v1/audit``."""

from __future__ import annotations

from relay.state import keys
from relay.state.audit import AuditLog
from tests.api.conftest import Api
from tests.pipeline_support import EVENT, signed_post


def test_sources_count_accepted_duplicates_and_refusals(api: Api) -> None:
    signed_post(api.client, EVENT, msg_id="msg_1")
    signed_post(api.client, EVENT, msg_id="msg_1")  # a resend
    signed_post(api.client, EVENT)
    bad = api.client.post("/hooks/ops", data=b"{}", headers={"content-type": "application/json"})
    assert bad.status_code == 401
    bad.close()  # refusals are counted once the answer has gone out
    api.client.post("/hooks/nowhere", data=b"{}").close()
    page = api.ok("GET", "/sources")
    assert page["next_cursor"] is None
    by_id = {s["id"]: s for s in page["items"]}
    ops = by_id["ops"]
    assert ops["kind"] == "standard_webhooks"
    assert ops["accepted"] == 2 and ops["duplicates"] == 1
    assert sum(ops["rejected"].values()) == ops["rejected_total"] == 1
    assert by_id["chat"] == {
        "id": "chat",
        "kind": "standard_webhooks",
        "accepted": 0,
        "duplicates": 0,
        "rejected": {},
        "rejected_total": 0,
    }
    assert by_id["(unknown)"]["kind"] is None and by_id["(unknown)"]["rejected_total"] == 1


def test_queues_show_depths_schedule_in_flight_and_dead_letters(api: Api) -> None:
    _, ids = api.event()
    api.event(fan_out=False)
    api.kill(ids[0])
    api.redis.zadd(keys.SCHEDULE, {ids[1]: 1.0})  # due long ago
    queues = api.ok("GET", "/queues")
    assert queues["queues"][keys.FANOUT_QUEUE] == 2
    # the event's two webhook deliveries travel in one task message
    assert queues["queues"][keys.deliver_queue("webhook")] == 1
    assert set(queues["queues"]) == set(keys.ALL_QUEUES)
    assert queues["scheduled"] == 1 and queues["scheduled_due"] == 1
    assert queues["schedule_lag_seconds"] > 1_000_000
    assert queues["dead_letters"] == 1 and queues["in_flight"] >= 1


def test_audit_lists_newest_first_filters_and_pages(api: Api) -> None:
    log = AuditLog(api.redis)
    for i in range(5):
        log.record("key.create", actor="cli", target=f"k{i}")
    api.ok("POST", "/targets/sink/pause")
    entries = api.ok("GET", "/audit")["items"]
    assert [e["action"] for e in entries] == ["pause"] + ["key.create"] * 5
    assert [e["target"] for e in api.ok("GET", "/audit", actor="cli")["items"]] == [
        f"k{i}" for i in range(4, -1, -1)
    ]
    assert api.ok("GET", "/audit", action="pause")["items"][0]["actor"] == api.key_ids["admin"]
    first = api.ok("GET", "/audit", limit=4)
    second = api.ok("GET", "/audit", limit=4, cursor=first["next_cursor"])
    assert [e["id"] for e in first["items"] + second["items"]] == [e["id"] for e in entries]
    assert second["next_cursor"] is None
    assert api.ok("GET", "/audit", cursor="0-0") == {"items": [], "next_cursor": None}
