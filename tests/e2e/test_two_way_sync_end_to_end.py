"""Two-way sync, the whole loop: a Feishu thread creates a Jira issue; ``done`` in the
thread closes it; Jira's webhooks for that close and its comment come back and the
thread hears nothing more; a person reopening, closing and editing the issue in Jira
is told in the thread, a burst of edits as one message."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from relay.state import keys
from tests.conftest import wait_for
from tests.e2e.chats import ADA_OPEN_ID, VERIFY
from tests.e2e.chats import FEISHU_BOT as BOT
from tests.e2e.chats import feishu_message as message
from tests.e2e.chats import feishu_post as post
from tests.pipeline_support import all_delivered as delivered
from tests.pm.feishu_fake import APP_ID, APP_SECRET, FakeIm, FeishuAuth
from tests.pm.jira_fake import ADA, API_TOKEN, BOB, EMAIL, FakeJira

HOOK_SECRET = "jira-webhook-secret-for-the-e2e-test"
RELAY_ACCOUNT = "557058:relay-bot-account"
COALESCE = "3s"  # wide enough that six posts in a row land in one window
RESOLUTION_CLEARED = {"field": "resolution", "fieldtype": "jira", "from": "10000",
                      "fromString": "Done", "to": None, "toString": None}  # fmt: skip


def config(jira: FakeJira, feishu_base: str) -> dict[str, Any]:
    return {
        "sources": [
            {"id": "team", "kind": "feishu", "verification_token": VERIFY, "bot_open_id": BOT},
            {"id": "jira-in", "kind": "jira", "secrets": [HOOK_SECRET]},
        ],
        "targets": [
            {"id": "jira", "kind": "jira", "base_url": jira.base, "email": EMAIL,
             "api_token": API_TOKEN, "project": "OPS", "allow_private": True, "timeout": "2s",
             "confirm": {"target": "thread", "on": ["created"]},
             "updates": {"coalesce": COALESCE}},
            {"id": "thread", "kind": "feishu_app", "app_id": APP_ID, "app_secret": APP_SECRET,
             "api_base": feishu_base, "mode": "reply", "allow_private": True},
        ],
        "routes": [{"source": "team", "targets": ["jira"]}],
        "people": {"ada": {"name": "Ada", "feishu": ADA_OPEN_ID, "jira": ADA}},
    }  # fmt: skip


def jira_hook(
    client: FlaskClient,
    jira: FakeJira,
    key: str,
    event: str,
    *,
    user: tuple[str, str],
    items: list[dict[str, str]] | None = None,
    comment: str | None = None,
) -> str:
    """POST a Jira webhook about ``key`` as Jira sends it (body shape of Atlassian's
    webhook docs), signed with the secret; the accepted event's id."""
    issue = jira.issues[key]
    fields = issue["fields"]
    status = fields["status"]
    body: dict[str, Any] = {
        "timestamp": 1765000000000,
        "webhookEvent": event,
        "user": {"accountId": user[0], "displayName": user[1]},
        "issue": {
            "id": issue["id"],
            "self": f"{jira.base}/rest/api/3/issue/{issue['id']}",
            "key": key,
            "fields": {
                "summary": fields["summary"],
                "status": {"name": status["name"], "statusCategory": status["statusCategory"]},
                "project": {"key": "OPS"},
                "assignee": fields.get("assignee"),
            },
        },
    }
    if items is not None:
        body["issue_event_type_name"] = "issue_generic"
        body["changelog"] = {"id": "10500", "items": items}
    if comment is not None:
        body["comment"] = {
            "id": uuid.uuid4().hex[:8],
            "body": comment,
            "author": {"accountId": user[0], "displayName": user[1]},
        }
    raw = json.dumps(body).encode()
    signature = hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    response = client.post(
        "/hooks/jira-in",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature": f"sha256={signature}",
            "X-Atlassian-Webhook-Identifier": uuid.uuid4().hex,
        },
    )
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    return str(response.get_json()["event_id"])


def fanned_out(redis_client: redis.Redis, event_id: str) -> bool:
    status = redis_client.hget(keys.event(event_id), "status")
    return status in (b"routed", b"unrouted")


def status_change(old: str, new: str) -> dict[str, str]:
    ids = {"To Do": "10000", "In Progress": "3", "Done": "10001"}
    return {"field": "status", "fieldtype": "jira", "from": ids[old], "fromString": old,
            "to": ids[new], "toString": new}  # fmt: skip


@pytest.fixture
def jira(threaded_httpserver: HTTPServer) -> FakeJira:
    return FakeJira(threaded_httpserver)


@pytest.fixture
def im(threaded_httpserver: HTTPServer) -> FakeIm:
    return FakeIm(threaded_httpserver, FeishuAuth(threaded_httpserver))


def texts(im: FakeIm) -> list[str]:
    return [json.loads(sent["content"])["text"] for sent in im.sent]


def test_changes_in_jira_reach_the_thread_once_and_the_relays_own_never_echo(
    jira: FakeJira,
    im: FakeIm,
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    feishu_base = threaded_httpserver.url_for("").rstrip("/")
    path = write_config(config(jira, feishu_base))
    relay_processes(path)
    client = client_for(path)

    first = message("@_user_1 task Fix the login timeout @_user_2")
    root = first["event"]["message"]["message_id"]
    created = post(client, first)
    wait_for(lambda: len(im.sent) == 1, timeout=40)
    [issue] = jira.issues.values()
    key = issue["key"]
    assert im.sent[0]["path"] == f"/open-apis/im/v1/messages/{root}/reply"
    assert wait_for(lambda: delivered(redis_client, created), timeout=20)

    # Jira reports the creation the relay made: an echo
    echo_created = jira_hook(client, jira, key, "jira:issue_created", user=(RELAY_ACCOUNT, "relay"))
    # ``done`` in the thread closes the issue and comments on it (with the relay's marker)
    closing = post(client, message("done", root=root))
    wait_for(lambda: delivered(redis_client, closing), timeout=40)
    assert jira.status_of(key) == "Done"
    [relay_comment] = jira.comments[key]
    marker = _marker_of(relay_comment)
    echoes = [
        echo_created,
        jira_hook(client, jira, key, "jira:issue_updated", user=(RELAY_ACCOUNT, "relay"),
                  items=[status_change("To Do", "Done")]),
        jira_hook(client, jira, key, "comment_created", user=(RELAY_ACCOUNT, "relay"),
                  comment=f"Closed by Grace in Ops\n\n{marker}"),
    ]  # fmt: skip
    for event_id in echoes:
        wait_for(lambda event_id=event_id: fanned_out(redis_client, event_id), timeout=20)
    assert all(not redis_client.smembers(keys.event_deliveries(e)) for e in echoes)
    # every echo is still linked to the task, so its event page shows which one
    assert json.loads(redis_client.hget(keys.event_tasks(echoes[1]), "jira") or b"{}")["key"] == key

    # a person reopens it in Jira: the thread hears it once
    jira.issues[key]["fields"]["status"] = jira.status("To Do")
    reopened = jira_hook(client, jira, key, "jira:issue_updated", user=(BOB, "Bob"),
                         items=[status_change("Done", "To Do"), RESOLUTION_CLEARED])  # fmt: skip
    wait_for(lambda: len(im.sent) == 2, timeout=40)
    assert wait_for(lambda: delivered(redis_client, reopened), timeout=20)
    assert texts(im)[1].startswith(f"{key} reopened by Bob")
    assert im.sent[1]["path"] == f"/open-apis/im/v1/messages/{root}/reply"

    # a burst of edits, a comment and a close by a person: one message tells them all
    burst = [
        jira_hook(client, jira, key, "jira:issue_updated", user=(BOB, "Bob"),
                  items=[{"field": field, "fieldtype": "jira", "fromString": "a", "toString": "b"}])
        for field in ("summary", "priority", "labels", "duedate")
    ]  # fmt: skip
    burst.append(jira_hook(client, jira, key, "comment_created", user=(BOB, "Bob"),
                           comment="fixed in #123"))  # fmt: skip
    jira.issues[key]["fields"]["status"] = jira.status("Done")
    burst.append(jira_hook(client, jira, key, "jira:issue_updated", user=(BOB, "Bob"),
                           items=[status_change("To Do", "Done")]))  # fmt: skip
    wait_for(lambda: len(im.sent) == 3, timeout=40)
    for event_id in burst:
        assert wait_for(lambda event_id=event_id: delivered(redis_client, event_id), timeout=20)
    told = texts(im)[2]
    assert f"{key} updated by Bob (summary, priority, labels, duedate)" in told
    assert f"{key} closed by Bob" in told
    assert f"Bob commented on {key}: fixed in #123" in told
    leaders = {m for e in burst for m in redis_client.smembers(keys.event_deliveries(e))}
    assert len(leaders) == 1  # every event of the burst points at the one message
    assert len(im.sent) == 3


def _marker_of(comment: dict[str, Any]) -> str:
    """The relay's hidden marker in a comment it posted (ADF text)."""
    text = json.dumps(comment)
    start = text.index("group-relay:")
    return text[start : start + len("group-relay:") + 24]
