"""State changes: replay, purge, pause/resume/reset; CSRF and scope refusals change nothing."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from relay.dashboard import csrf
from relay.state.gate import TargetGate
from tests.dashboard.conftest import ADDR, Dash, csrf_of

DL = "/dashboard/dead-letters"


def _paused(dash: Dash, target: str = "sink") -> bool:
    return bool(TargetGate(dash.redis).status(target)["paused"])


def _flashes(client: FlaskClient, path: str = DL) -> str:
    return client.get(path).get_data(as_text=True)


# every state-changing form: (path, form fields, scope it needs)
def _actions(delivery_id: str) -> list[tuple[str, dict[str, Any], str]]:
    return [
        (f"{DL}/replay", {"id": delivery_id}, "replay"),
        (f"{DL}/replay", {"all": "1"}, "replay"),
        (f"{DL}/purge", {"id": delivery_id, "confirm": "1"}, "admin"),
        (f"{DL}/purge", {"all": "1", "confirm": "1"}, "admin"),
        ("/dashboard/targets/sink/pause", {}, "admin"),
        ("/dashboard/targets/sink/reset", {}, "admin"),
    ]


@pytest.mark.parametrize("scope", ["read", "replay"])
def test_a_smaller_scope_sees_pages_but_its_posts_get_403_and_are_audited(
    dash: Dash, scope: str
) -> None:
    delivery_id = dash.dead()
    client = dash.login(scope)
    for page in ("/dashboard/", "/dashboard/events", DL, "/dashboard/targets",
                 f"/dashboard/deliveries/{delivery_id}", f"{DL}/bulk/replay"):  # fmt: skip
        assert client.get(page).status_code == 200, page
    refused = [a for a in _actions(delivery_id) if a[2] == "admin" or scope == "read"]
    for path, form, needed in refused:
        response = dash.post(client, path, form, page=DL)
        assert response.status_code == 403, path
        assert f"the {needed} scope" in response.get_data(as_text=True)
        assert dash.status(delivery_id) == "dead" and not _paused(dash)
    denied = dash.audit("auth.denied")
    assert len(denied) == len(refused)
    for entry in denied:
        assert entry["actor"] == dash.key_ids[scope]
        assert entry["outcome"] == "denied" and entry["remote_addr"] == ADDR
        assert entry["target"].startswith("POST /dashboard/")
    resume = dash.post(client, "/dashboard/targets/sink/resume", page=DL)
    assert resume.status_code == 403


def test_the_audit_page_needs_admin_like_the_api(dash: Dash) -> None:
    response = dash.login("replay").get("/dashboard/audit")
    assert response.status_code == 403
    [entry] = dash.audit("auth.denied")
    assert entry["target"] == "GET /audit" and entry["actor"] == dash.key_ids["replay"]
    assert dash.login("admin").get("/dashboard/audit").status_code == 200


def test_a_post_without_or_with_a_bad_csrf_token_changes_nothing(
    dash: Dash, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery_id = dash.dead()
    client = dash.login("admin")
    other = dash.login("admin")  # another session: its tokens are not valid here
    foreign = csrf_of(other.get(DL).get_data(as_text=True))
    mine = csrf_of(client.get(DL).get_data(as_text=True))
    tampered = mine[:-2] + ("AA" if not mine.endswith("AA") else "BB")
    tokens: list[str | None] = [None, "", "not-a-token", foreign, tampered]
    for path, form, _ in _actions(delivery_id):
        for token in tokens:
            data = dict(form) if token is None else {**form, "csrf_token": token}
            response = client.post(path, data=data)
            assert response.status_code == 400, (path, token)
            assert dash.status(delivery_id) == "dead" and not _paused(dash)
    monkeypatch.setattr(csrf, "MAX_AGE", -1)  # every token is now too old
    response = client.post(f"{DL}/replay", data={"id": delivery_id, "csrf_token": mine})
    assert response.status_code == 400 and dash.status(delivery_id) == "dead"
    failed = dash.audit("csrf.failed")
    assert len(failed) == len(_actions(delivery_id)) * len(tokens) + 1
    assert {e["actor"] for e in failed} == {dash.key_ids["admin"]}
    assert not dash.audit("replay") and not dash.audit("purge") and not dash.audit("pause")


def test_replay_selected_says_what_happened_and_links_the_deliveries(dash: Dash) -> None:
    first, second = dash.dead(), dash.dead()
    _, [alive] = dash.event()
    client = dash.login("replay")
    response = dash.post(
        client, f"{DL}/replay", {"id": [first, second, alive], "next": f"{DL}?target=sink"}, page=DL
    )
    assert response.status_code == 302
    assert response.headers["Location"].startswith(f"{DL}?target=sink&replayed=")
    html = _flashes(client, response.headers["Location"])
    assert "replayed 2 of 3; 1 were no longer dead" in html
    assert f'href="/dashboard/deliveries/{first}"' in html
    assert dash.status(first) == dash.status(second) == "queued"
    entries = dash.audit("replay")
    assert {(e["target"], e["outcome"]) for e in entries} == {
        (first, "ok"), (second, "ok"), (alive, "failed")
    }  # fmt: skip
    assert all(e["actor"] == dash.key_ids["replay"] and e["remote_addr"] == ADDR for e in entries)


def test_replaying_every_match_shows_a_dry_run_count_first(dash: Dash) -> None:
    sink = [dash.dead(), dash.dead()]
    pm = dash.dead(source="chat")
    client = dash.login("replay")
    page = client.get(f"{DL}/bulk/replay?target=sink")
    html = page.get_data(as_text=True)
    assert "Replay 2 dead letters?" in html
    assert all(dash.status(i) == "dead" for i in [*sink, pm])  # a dry run changes nothing
    response = client.post(
        f"{DL}/replay", data={"all": "1", "target": "sink", "csrf_token": csrf_of(html)}
    )
    assert response.status_code == 302
    assert "replayed 2 of 2; 0 were no longer dead" in _flashes(client)
    assert [dash.status(i) for i in sink] == ["queued", "queued"] and dash.status(pm) == "dead"
    [entry] = dash.audit("replay.bulk")
    assert entry["target"] == "target=sink" and entry["actor"] == dash.key_ids["replay"]


def test_purge_asks_for_confirmation_first(dash: Dash) -> None:
    doomed, kept = dash.dead(), dash.dead(source="chat")
    client = dash.login("admin")
    ask = dash.post(client, f"{DL}/purge", {"id": doomed}, page=DL)
    assert ask.status_code == 200
    html = ask.get_data(as_text=True)
    assert "Purge 1 dead letter?" in html and doomed in html
    assert dash.status(doomed) == "dead"
    done = client.post(
        f"{DL}/purge", data={"id": doomed, "confirm": "1", "csrf_token": csrf_of(html)}
    )
    assert done.status_code == 302
    assert "purged 1 of 1; 0 were no longer dead" in _flashes(client)
    assert dash.status(doomed) is None and dash.status(kept) == "dead"

    every = client.get(f"{DL}/bulk/purge?source=chat").get_data(as_text=True)
    assert "Purge 1 dead letter?" in every and dash.status(kept) == "dead"
    client.post(
        f"{DL}/purge",
        data={"all": "1", "source": "chat", "confirm": "1", "csrf_token": csrf_of(every)},
    )
    assert dash.status(kept) is None
    assert [e["action"] for e in dash.audit()][:2] == ["purge.bulk", "purge"]


def test_selecting_nothing_or_a_bad_filter_is_explained(dash: Dash) -> None:
    client = dash.login("admin")
    response = dash.post(client, f"{DL}/replay", {}, page=DL)
    assert response.status_code == 302
    assert "Select at least one dead letter" in _flashes(client)
    bad = dash.post(client, f"{DL}/replay", {"all": "1", "since": "yesterday-ish"}, page=DL)
    assert bad.status_code == 400 and "neither Unix seconds nor an ISO 8601" in bad.get_data(
        as_text=True
    )


def test_pause_resume_and_reset_a_target(dash: Dash) -> None:
    client = dash.login("admin")
    response = dash.post(client, "/dashboard/targets/sink/pause", page="/dashboard/targets")
    assert response.status_code == 302 and _paused(dash)
    html = _flashes(client, "/dashboard/targets")
    assert "sink: paused" in html and "Resume" in html
    dash.post(client, "/dashboard/targets/sink/resume", page="/dashboard/targets")
    assert not _paused(dash)
    dash.redis.hset("relay:target:sink:state", mapping={"state": "open", "consecutive": 5})
    dash.post(client, "/dashboard/targets/sink/reset", page="/dashboard/targets")
    assert TargetGate(dash.redis).status("sink")["circuit"] == "closed"
    missing = dash.post(client, "/dashboard/targets/nope/pause", page="/dashboard/targets")
    assert missing.status_code == 404
    assert [(e["action"], e["target"], e["outcome"]) for e in dash.audit()][:4] == [
        ("pause", "nope", "failed"),
        ("reset", "sink", "ok"),
        ("resume", "sink", "ok"),
        ("pause", "sink", "ok"),
    ]
