"""The dashboard's event page shows the tasks the event created, linked to the tool."""

from __future__ import annotations

from tests.api.test_event_tasks import link
from tests.dashboard.conftest import Dash


def test_the_event_page_links_the_task_and_never_a_script_url(dash: Dash) -> None:
    event_id, _ = dash.event()
    link(dash.redis, event_id, "https://acme.atlassian.net/browse/OPS-12")
    page = dash.login().get(f"/dashboard/events/{event_id}").get_data(as_text=True)
    assert 'href="https://acme.atlassian.net/browse/OPS-12"' in page
    assert "Fix &lt;login&gt;" in page
    other, _ = dash.event()
    link(dash.redis, other, "javascript:alert(1)")
    page = dash.login().get(f"/dashboard/events/{other}").get_data(as_text=True)
    assert "javascript:" not in page
    assert "<code>OPS-12</code>" in page
