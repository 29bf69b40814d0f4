"""An event's tasks (what project-management targets created or did for it) show in
the API's event detail and on the dashboard's event page, with a link to the tool."""

from __future__ import annotations

from relay.state.tasks import TaskLinks
from tests.api.conftest import Api


def link(redis_client: object, event_id: str, url: str) -> None:
    TaskLinks(redis_client, retention=3600).link(  # type: ignore[arg-type]
        target_id="pm",
        task={"key": "OPS-12", "id": "10012", "url": url, "title": "Fix <login>"},
        event_id=event_id,
        source_id="ops",
        group_id="g1",
        message_id="m1",
        created=True,
    )


def test_the_api_lists_an_events_tasks(api: Api) -> None:
    event_id, _ = api.event()
    assert api.ok("GET", f"/events/{event_id}")["tasks"] == []
    link(api.redis, event_id, "https://acme.atlassian.net/browse/OPS-12")
    [task] = api.ok("GET", f"/events/{event_id}")["tasks"]
    assert task == {
        "target": "pm",
        "key": "OPS-12",
        "url": "https://acme.atlassian.net/browse/OPS-12",
        "title": "Fix <login>",
        "created": True,
    }
