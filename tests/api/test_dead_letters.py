"""``/api/v1/dead-letters``: list and filter, replay and purge one or many, all audited."""

from __future__ import annotations

import pytest

from relay.state import keys
from tests.api.conftest import ADDR, Api

T0 = 1_750_000_000.0
QUEUE = keys.deliver_queue("webhook")


@pytest.fixture
def dead(api: Api) -> dict[str, str]:
    """Four dead letters: two of sink (ops), one of robot (ops), one of pm (chat)."""
    made = {}
    for name, source, text, at in (
        ("sink1", "ops", "Disk full", T0 + 1),
        ("sink2", "ops", "cpu hot", T0 + 2),
        ("pm", "chat", "DISK again", T0 + 3),
    ):
        for delivery_id in api.event(source, text=text)[1]:
            target = (api.redis.hget(keys.delivery(delivery_id), "target") or b"").decode()
            if target == "robot":
                if "robot" not in made:
                    made["robot"] = delivery_id
                    api.kill(delivery_id, dead_at=T0 + 4)
                continue
            made[name] = delivery_id
            api.kill(delivery_id, dead_at=at)
    return made


def _ids(api: Api, **params: object) -> list[str]:
    return [item["id"] for item in api.items("/dead-letters", **params)]


def test_newest_first_with_filters(api: Api, dead: dict[str, str]) -> None:
    assert _ids(api) == [dead[k] for k in ("robot", "pm", "sink2", "sink1")]
    assert _ids(api, target="sink") == [dead["sink2"], dead["sink1"]]
    assert _ids(api, source="chat") == [dead["pm"]]
    assert _ids(api, since=T0 + 2, until=T0 + 3) == [dead["pm"], dead["sink2"]]
    # robot's dead letter is of the same event as sink1's ("Disk full")
    assert _ids(api, q="disk") == [dead["robot"], dead["pm"], dead["sink1"]]
    assert _ids(api, q="disk", source="ops") == [dead["robot"], dead["sink1"]]
    page = api.ok("GET", "/dead-letters", limit=3)
    rest = api.ok("GET", "/dead-letters", limit=3, cursor=page["next_cursor"])
    assert [d["id"] for d in page["items"] + rest["items"]] == _ids(api)
    item = page["items"][0]
    assert item["status"] == "dead" and item["dead_at"] == T0 + 4
    assert item["dead_reason"] == "permanent failure" and item["last_error"] == "HTTP 410"


def test_replay_one_keeps_the_delivery_id(api: Api, dead: dict[str, str]) -> None:
    delivery_id = dead["sink1"]
    before = api.redis.llen(QUEUE)
    tried = api.ok("GET", f"/deliveries/{delivery_id}")["attempts"]
    body = api.ok("POST", f"/dead-letters/{delivery_id}/replay", scope="replay")
    assert body == {"delivery_id": delivery_id, "replayed": True}
    detail = api.ok("GET", f"/deliveries/{delivery_id}")
    # the attempts made stay counted; the retry policy starts over (attempt_base)
    assert detail["status"] == "queued" and detail["replays"] == 1 and detail["attempts"] == tried
    assert api.redis.zscore(keys.DLQ, delivery_id) is None
    assert api.redis.llen(QUEUE) == before + 1
    assert delivery_id.encode() in api.redis.lindex(QUEUE, 0)
    [entry] = api.audit("replay")
    assert entry["actor"] == api.key_ids["replay"] and entry["target"] == delivery_id
    assert entry["outcome"] == "ok" and entry["remote_addr"] == ADDR


def test_replaying_what_is_not_dead_is_404_and_audited(api: Api, dead: dict[str, str]) -> None:
    api.ok("POST", f"/dead-letters/{dead['pm']}/replay")
    again = api.post(f"/dead-letters/{dead['pm']}/replay")
    assert again.status_code == 404 and again.get_json()["error"] == "not_found"
    assert api.post("/dead-letters/dlv_nope/replay").status_code == 404
    outcomes = [(e["target"], e["outcome"]) for e in api.audit("replay")]
    assert outcomes == [("dlv_nope", "failed"), (dead["pm"], "failed"), (dead["pm"], "ok")]


def test_bulk_replay_dry_run_then_for_real(api: Api, dead: dict[str, str]) -> None:
    assert api.ok("POST", "/dead-letters/replay", dry_run=True, target="sink") == {"count": 2}
    assert api.redis.zcard(keys.DLQ) == 4 and api.audit("replay.bulk") == []
    body = api.ok("POST", "/dead-letters/replay", scope="replay", target="sink")
    assert body == {"count": 2, "replayed": 2}
    assert _ids(api) == [dead["robot"], dead["pm"]]
    [entry] = api.audit("replay.bulk")
    assert entry["target"] == "target=sink" and entry["detail"] == "replayed 2 of 2"
    assert api.ok("POST", "/dead-letters/replay") == {"count": 2, "replayed": 2}
    assert _ids(api) == []


def test_purge_one(api: Api, dead: dict[str, str]) -> None:
    body = api.ok("POST", f"/dead-letters/{dead['sink1']}/purge")
    assert body == {"delivery_id": dead["sink1"], "purged": True}
    assert api.get(f"/deliveries/{dead['sink1']}").status_code == 404
    assert api.redis.exists(keys.attempts(dead["sink1"])) == 0
    assert api.post(f"/dead-letters/{dead['sink1']}/purge").status_code == 404
    assert [(e["outcome"]) for e in api.audit("purge")] == ["failed", "ok"]


def test_purge_does_not_touch_live_deliveries(api: Api) -> None:
    _, ids = api.event()
    assert api.post(f"/dead-letters/{ids[0]}/purge").status_code == 404
    assert api.ok("GET", f"/deliveries/{ids[0]}")["status"] == "queued"


def test_bulk_purge_needs_confirmation(api: Api, dead: dict[str, str]) -> None:
    missing = api.post("/dead-letters/purge", target="sink")
    assert missing.status_code == 422
    assert missing.get_json()["error"] == "confirmation_required"
    assert api.post("/dead-letters/purge", confirm=False).status_code == 400
    assert api.ok("POST", "/dead-letters/purge", confirm=True, dry_run=True) == {"count": 4}
    assert api.redis.zcard(keys.DLQ) == 4
    body = api.ok("POST", "/dead-letters/purge", confirm=True, source="ops", q="disk")
    assert body == {"count": 2, "purged": 2}
    assert _ids(api) == [dead["pm"], dead["sink2"]]
    [entry] = api.audit("purge.bulk")
    assert entry["target"] == "source=ops q=disk" and entry["detail"] == "purged 2 of 2"
    assert entry["actor"] == api.key_ids["admin"]


def test_a_misspelt_filter_never_widens_a_bulk_action(api: Api, dead: dict[str, str]) -> None:
    response = api.post("/dead-letters/purge", confirm=True, tagret="sink")
    assert response.status_code == 400 and response.get_json()["error"] == "unknown_parameter"
    assert api.redis.zcard(keys.DLQ) == 4
