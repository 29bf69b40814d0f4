"""The read-only pages: what each shows, filters, paging, errors and response headers."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from relay.dashboard.pages import CHART_MINUTES, PAGE_SIZE
from tests.dashboard.conftest import Dash, dash_config


def test_overview_shows_queues_rates_dead_letters_and_target_health(dash: Dash) -> None:
    dash.dead()
    dash.event(source="chat")
    html = dash.login("read").get("/dashboard/").get_data(as_text=True)
    assert "relay.fanout" in html and "relay.deliver.webhook" in html
    assert re.search(r"dead letters</a></td><td class=\"num\"><strong>1</strong>", html)
    for target in ("sink", "pm"):
        assert f">{target}</a>" in html
    charts = re.findall(r'class="spark" data-points="([0-9,]+)"', html)
    assert len(charts) == 4  # received, delivered, failed, dead
    assert all(len(points.split(",")) == CHART_MINUTES for points in charts)
    received = [int(n) for n in charts[0].split(",")]
    assert received[-1] == 2  # both events arrived this minute
    assert "2 in the last 60 min" in html  # the numbers show without JavaScript
    assert 'data-refresh="10"' in html


def test_events_filter_search_and_page(dash: Dash) -> None:
    for n in range(PAGE_SIZE + 3):
        dash.event(text=f"deploy {n} done")
    dash.event(source="chat", text="Lunch? Needle in here")
    client = dash.login("read")
    first = client.get("/dashboard/events?source=ops").get_data(as_text=True)
    assert first.count("/dashboard/events/evt_") == 2 * PAGE_SIZE  # time and text link
    older = re.search(r'rel="next" href="([^"]+)"', first)
    assert older is not None
    second = client.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert second.count("/dashboard/events/evt_") == 2 * 3
    found = client.get("/dashboard/events?q=needle").get_data(as_text=True)
    assert "Lunch? Needle in here" in found and "deploy" not in found
    assert 'value="needle"' in found  # the form keeps its state


def test_bad_filters_answer_400_with_the_reason(dash: Dash) -> None:
    client = dash.login("read")
    for path, reason in (
        ("/dashboard/events?since=last+tuesday", "since:"),
        ("/dashboard/events?cursor=zzz", "cursor:"),
        ("/dashboard/dead-letters?until=2024-13-01", "until:"),
        ("/dashboard/events?q=" + "x" * 300, "longer than"),
    ):
        response = client.get(path)
        assert response.status_code == 400, path
        assert reason in response.get_data(as_text=True), path


def test_an_event_shows_its_deliveries_attempts_and_payload(dash: Dash) -> None:
    event_id, [delivery_id] = dash.event(text="<b>bold</b> & risky")
    dash.runtime.store.add_attempt(
        delivery_id,
        {
            "n": 1,
            "outcome": "retry",
            "status": 503,
            "duration_ms": 1500.0,
            "error": "HTTP 503",
            "response": "busy",
        },  # fmt: skip
    )
    dash.kill(delivery_id)
    client = dash.login("replay")
    html = client.get(f"/dashboard/events/{event_id}").get_data(as_text=True)
    assert f'id="d-{delivery_id}"' in html and 'class="side-by-side"' in html
    assert "HTTP 503" in html and "1.50 s" in html and "HTTP 410" in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; risky" in html and "<b>bold</b>" not in html
    assert '<pre class="payload">' in html and "message.created" in html
    assert ">Replay</button>" in html  # a dead delivery offers replay to a replay key
    read = dash.login("read").get(f"/dashboard/events/{event_id}").get_data(as_text=True)
    assert ">Replay</button>" not in read
    delivery = client.get(f"/dashboard/deliveries/{delivery_id}").get_data(as_text=True)
    assert "permanent failure" in delivery and event_id in delivery


def test_an_attempt_sent_out_of_order_says_which_delivery_it_went_ahead_of(dash: Dash) -> None:
    (_, [stuck]), (_, [released]) = dash.event(), dash.event()
    dash.runtime.store.add_attempt(
        released,
        {"n": 1, "outcome": "delivered", "status": 200, "duration_ms": 3.0,
         "order_break": {"reason": "hold", "skipped": stuck, "held_s": 600.24}},
    )  # fmt: skip
    client = dash.login("read")
    html = client.get(f"/dashboard/deliveries/{released}").get_data(as_text=True)
    assert "out of order: sent ahead of" in html and "after 600.2 s held" in html
    assert f'href="/dashboard/deliveries/{stuck}"' in html
    plain = client.get(f"/dashboard/deliveries/{stuck}").get_data(as_text=True)
    assert "out of order" not in plain


def test_unknown_records_and_pages_answer_404_in_html(dash: Dash) -> None:
    client = dash.login("read")
    for path in ("/dashboard/events/evt_nope", "/dashboard/deliveries/dlv_nope",
                 "/dashboard/no-such-page", "/dashboard/dead-letters/bulk/explode"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.content_type.startswith("text/html")


def test_dead_letters_filter_by_target(dash: Dash) -> None:
    sink, pm = dash.dead(), dash.dead(source="chat")
    client = dash.login("read")
    html = client.get("/dashboard/dead-letters?target=pm").get_data(as_text=True)
    assert pm in html and sink not in html
    assert "Replay selected" not in html  # a read key gets no buttons, only the rows
    assert "Your key has the read scope" in html


def test_pages_carry_strict_headers(dash: Dash) -> None:
    client = dash.login("read")
    response = client.get("/dashboard/")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert "<script>" not in html and " style=" not in html  # nothing inline
    for asset in ("dashboard.css", "dashboard.js"):
        static = dash.client().get(f"/dashboard/static/{asset}")  # no login needed
        assert static.status_code == 200
        static.close()


def test_redis_away_answers_503_in_html(
    write_config: Callable[..., Path], make_app: Callable[..., Flask]
) -> None:
    app = make_app(
        write_config(dash_config()), redis_url="redis://127.0.0.1:1/0", redis_timeout=0.2
    )
    response = app.test_client().get("/dashboard/login")
    assert response.status_code == 503
    assert "Redis is unreachable" in response.get_data(as_text=True)
