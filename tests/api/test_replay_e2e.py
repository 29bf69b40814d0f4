"""With a real worker: a dead letter replayed through the API reaches the target again
under the same delivery id, and the API shows every attempt and the target's numbers."""

from __future__ import annotations

from typing import Any

from relay.state.apikeys import ApiKeys
from tests.conftest import wait_for
from tests.pipeline_support import EVENT, signed_post


def test_a_replayed_dead_letter_is_delivered_under_its_id(pipeline: Any, redis_client: Any) -> None:
    client, sink, _ = pipeline([(410, {})])  # permanent: dead at once; then 200
    _, token = ApiKeys(redis_client).create("ops", "replay")
    auth = {"Authorization": f"Bearer {token}"}

    def api(method: str, path: str) -> Any:
        response = client.open("/api/v1" + path, method=method, headers=auth)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    event_id = signed_post(client, EVENT).get_json()["event_id"]
    [dead] = wait_for(lambda: api("GET", "/dead-letters")["items"], timeout=30)
    assert dead["event_id"] == event_id and dead["target"] == "sink"
    assert api("POST", "/dead-letters/replay?dry_run=true") == {"count": 1}
    assert api("POST", f"/dead-letters/{dead['id']}/replay")["replayed"] is True
    wait_for(lambda: api("GET", f"/deliveries/{dead['id']}")["status"] == "delivered", timeout=30)

    assert sink.ids() == [dead["id"], dead["id"]]  # same idempotency key both times
    detail = api("GET", f"/events/{event_id}")
    [delivery] = detail["deliveries"]
    assert delivery["replays"] == 1
    outcomes = [(a["n"], a["outcome"], a["status"]) for a in delivery["attempts_log"]]
    assert outcomes == [(1, "failed", 410), (2, "delivered", 200)]
    assert all(a["duration_ms"] is not None for a in delivery["attempts_log"])
    sink_state = api("GET", "/targets/sink")
    assert sink_state["windows"]["5m"]["attempts"] == 2
    assert sink_state["windows"]["5m"]["success_rate"] == 0.5
    assert api("GET", "/dead-letters")["items"] == []
