"""After a replay the dead-letter page follows what it sent again, without a browser.

Right after a bulk replay the listing is empty while the replayed deliveries run, and
some die again a moment later; the page it redirects to must say what was replayed and
where each one is now, on every reload (no JavaScript needed), until all have settled.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlencode, urlsplit

from flask.testing import FlaskClient

from tests.dashboard.conftest import Dash, csrf_of

DL = "/dashboard/dead-letters"
_PANEL = re.compile(r'<section class="card replayed".*?</section>', re.S)


def _panel(client: FlaskClient, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    found = _PANEL.search(response.get_data(as_text=True))
    assert found, "the page shows no replayed panel"
    return found.group(0)


def _row(panel: str, delivery_id: str) -> str:
    found = re.search(
        rf"<tr>\s*<td[^>]*><a[^>]*><code>{re.escape(delivery_id)}</code>.*?</tr>", panel, re.S
    )
    assert found, f"{delivery_id} is not in the panel"
    return found.group(0)


def _bulk_replay(dash: Dash, client: FlaskClient, **filters: str) -> str:
    """Replay every match as the confirmation page does; where it redirects."""
    html = client.get(f"{DL}/bulk/replay", query_string=filters).get_data(as_text=True)
    response = client.post(
        f"{DL}/replay",
        data={
            "all": "1",
            "confirm": "1",
            **filters,
            "next": f"{DL}?{urlencode(filters)}" if filters else DL,  # as the page sets it
            "csrf_token": csrf_of(html),
        },
    )
    assert response.status_code == 302
    return response.headers["Location"]


def _delivered(dash: Dash, delivery_id: str) -> None:
    """Finish a delivery as a worker does when the target accepts it."""
    attempt = {
        "n": 2,
        "started_at": time.time(),
        "duration_ms": 4.0,
        "outcome": "delivered",
        "status": 200,
    }
    dash.runtime.store.finish_delivered(delivery_id, attempt, token="")


def test_a_bulk_replay_shows_what_it_replayed_and_where_each_is_now(dash: Dash) -> None:
    first, second, third = dash.dead(), dash.dead(), dash.dead()
    other = dash.dead(source="chat")  # another target: not replayed, not shown
    client = dash.login("replay")
    url = _bulk_replay(dash, client, target="sink")
    assert urlsplit(url).path == DL and parse_qs(urlsplit(url).query)["target"] == ["sink"]

    page = client.get(url).get_data(as_text=True)
    assert "replayed 3 of 3; 0 were no longer dead" in page
    panel = _panel(client, url)
    assert "Replayed 3" in panel and "3 queued" in panel and other not in panel
    for delivery_id in (first, second, third):
        assert f'href="/dashboard/deliveries/{delivery_id}"' in _row(panel, delivery_id)
        assert ">queued<" in _row(panel, delivery_id)
    assert 'data-refresh="3"' in page  # still moving: the live-refresh script follows it
    assert "No dead letter matches now" in page

    # a moment later: one delivered, one dead again, one still queued
    _delivered(dash, first)
    dash.kill(second)
    page = client.get(url).get_data(as_text=True)
    panel = _panel(client, url)
    assert "1 queued" in panel and "1 delivered" in panel and "1 dead again" in panel
    assert ">delivered<" in _row(panel, first) and ">dead again<" in _row(panel, second)
    assert "HTTP 410" in _row(panel, second)  # why it died again
    listing = page[page.index('id="live-listing"') :]
    assert second in listing and first not in listing  # the dead-again one is listed again

    _delivered(dash, third)
    page = client.get(url).get_data(as_text=True)
    assert "All settled." in _panel(client, url) and "data-refresh" not in page  # no more polling


def test_replaying_selected_dead_letters_follows_only_those_sent_again(dash: Dash) -> None:
    dead = dash.dead()
    _, [alive] = dash.event()
    client = dash.login("replay")
    token = csrf_of(client.get(DL).get_data(as_text=True))
    response = client.post(
        f"{DL}/replay", data={"id": [dead, alive], "next": f"{DL}?target=sink", "csrf_token": token}
    )
    url = response.headers["Location"]
    panel = _panel(client, url)
    assert "Replayed 1 of 2" in panel and dead in panel and alive not in panel
    hide = re.search(r'<a href="([^"]+)">hide</a>', panel)
    assert hide and hide.group(1) == f"{DL}?target=sink"  # the same listing, unfollowed
    assert 'class="card replayed"' not in client.get(hide.group(1)).get_data(as_text=True)


def test_a_read_key_sees_the_panel_of_a_shared_link(dash: Dash) -> None:
    delivery_id = dash.dead()
    url = _bulk_replay(dash, dash.login("replay"))
    panel = _panel(dash.login("read"), url)
    assert delivery_id in panel


def test_an_unknown_or_expired_batch_is_just_the_listing(dash: Dash) -> None:
    delivery_id = dash.dead()
    client = dash.login("read")
    for batch in ("nope", "x" * 24, "../../etc", "a" * 500):
        response = client.get(DL, query_string={"replayed": batch})
        html = response.get_data(as_text=True)
        assert response.status_code == 200 and 'class="card replayed"' not in html
        assert delivery_id in html


def test_replaying_one_from_its_own_page_goes_back_to_that_page(dash: Dash) -> None:
    delivery_id = dash.dead()
    client = dash.login("replay")
    here = f"/dashboard/deliveries/{delivery_id}"
    response = dash.post(client, f"{DL}/replay", {"id": delivery_id, "next": here}, page=here)
    assert response.headers["Location"] == here  # that page shows the status itself


def test_time_filters_say_what_they_take_and_accept_how_long_ago(dash: Dash) -> None:
    dash.dead()
    client = dash.login("read")
    for path in ("/dashboard/events", DL):
        html = client.get(path).get_data(as_text=True)
        since = re.search(r'<label[^>]*>([^<]*)<input name="since"[^>]*placeholder="([^"]+)"', html)
        assert since, f"{path}: the since field has no label and placeholder"
        assert since.group(1).strip() in ("Since", "Died since")
        assert since.group(2).startswith("e.g. ")  # never mistaken for a value
        assert "how long ago" in html
    recent = client.get("/dashboard/events", query_string={"since": "1h"})
    assert recent.status_code == 200 and "hello" in recent.get_data(as_text=True)
    old = client.get("/dashboard/events", query_string={"until": "1h"}).get_data(as_text=True)
    assert "No event matches" in old  # received just now: not before an hour ago
    died = client.get(DL, query_string={"since": "15m"}).get_data(as_text=True)
    assert "hello" not in client.get(DL, query_string={"until": "15m"}).get_data(as_text=True)
    assert "No dead letter matches" not in died
    bad = client.get("/dashboard/events", query_string={"since": "1 hour"})
    assert bad.status_code == 400 and "neither Unix seconds nor an ISO 8601 time" in bad.get_data(
        as_text=True
    )
