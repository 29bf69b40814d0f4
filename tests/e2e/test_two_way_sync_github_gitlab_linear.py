"""Two-way sync, the whole loop, for GitHub (a Slack thread), GitLab (a Telegram reply)
and Linear (a Feishu thread): a chat message creates the task; the group's follow-up
acts on it; the tool's webhooks reporting the relay's own create, close and comment
tell the chat nothing; a person's changes in the tool are told once, as a reply to
the message the task was born from.

The webhooks are signed and shaped as each tool sends them (the payloads of the
source's own tests, filled in from the fake's state)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from relay.intake.sources.telegram import sample_update
from relay.state import keys
from tests.conftest import wait_for
from tests.e2e.chats import (
    ADA_OPEN_ID,
    FEISHU_BOT,
    SIGNING,
    SLACK_BOT,
    VERIFY,
    SlackApi,
    feishu_message,
    feishu_post,
    slack_message,
    slack_post,
)
from tests.e2e.chats import SLACK_BOB as BOB_SLACK
from tests.pm.feishu_fake import APP_ID, APP_SECRET, FakeIm, FeishuAuth
from tests.pm.github_fake import REPO, TOKEN, FakeGitHub
from tests.pm.gitlab_fake import PROJECT_ID, PROJECT_PATH, FakeGitLab
from tests.pm.gitlab_fake import TOKEN as GITLAB_TOKEN
from tests.pm.gitlab_fake import USERS as GITLAB_USERS
from tests.pm.linear_fake import API_KEY, ENG_ID, USERS, FakeLinear
from tests.workers.test_telegram_target import GROUP, FakeBotAPI
from tests.workers.test_telegram_target import TOKEN as BOT_TOKEN


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def settled(redis_client: redis.Redis, event_id: str) -> bool:
    """The event went through fan-out (with or without deliveries)."""
    status = redis_client.hget(keys.event(event_id), "status")
    return status in (b"routed", b"unrouted")


def delivered(redis_client: redis.Redis, event_id: str) -> bool:
    ids = redis_client.smembers(keys.event_deliveries(event_id))
    return bool(ids) and all(
        redis_client.hget(keys.delivery(i.decode()), "status") == b"delivered" for i in ids
    )


def assert_no_echo(redis_client: redis.Redis, event_ids: list[str]) -> None:
    """Each event was fanned out and linked to its task, and made no delivery."""
    for event_id in event_ids:
        assert wait_for(partial(settled, redis_client, event_id), timeout=20)
    for event_id in event_ids:
        assert not redis_client.smembers(keys.event_deliveries(event_id)), event_id
        assert redis_client.exists(keys.event_tasks(event_id)), event_id


# -- GitHub, told in a Slack thread ---------------------------------------------------------

GITHUB_SECRET = "github-webhook-secret-for-the-e2e-test"


def github_hook(
    client: FlaskClient, github: FakeGitHub, number: int, event: str, action: str, *,
    sender: str, **extra: Any,
) -> str:  # fmt: skip
    """POST an ``issues``/``issue_comment`` webhook about issue ``number`` as GitHub sends
    it (X-Hub-Signature-256 over the body, X-GitHub-Event, X-GitHub-Delivery; payload
    shape of octokit/webhooks' examples, as in tests/intake/sources/test_github.py)."""
    issue = github.issues[number]
    payload = {
        "action": action,
        "issue": {
            "url": issue["url"], "html_url": issue["html_url"], "id": issue["id"],
            "node_id": issue["node_id"], "number": number, "title": issue["title"],
            "user": {"login": issue["user"]["login"], "type": "User"},
            "labels": issue["labels"], "state": issue["state"],
            "state_reason": issue["state_reason"],
            "assignees": [{**a, "type": "User"} for a in issue["assignees"]],
            "body": issue["body"], "created_at": issue["created_at"], "updated_at": now_iso(),
        },
        **extra,
        "repository": {"full_name": REPO, "name": REPO.split("/")[1], "private": True},
        "sender": {"login": sender, "type": "User"},
    }  # fmt: skip
    raw = json.dumps(payload).encode()
    digest = hmac.new(GITHUB_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    response = client.post(
        "/hooks/github-in",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/044aadd",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": f"sha256={digest}",
        },
    )
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    return str(response.get_json()["event_id"])


def github_comment(text: str, login: str) -> dict[str, Any]:
    return {"id": 492700400 + len(text), "user": {"login": login, "type": "User"},
            "created_at": now_iso(), "updated_at": now_iso(), "body": text}  # fmt: skip


def test_github_changes_reach_the_slack_thread_once_and_the_relays_own_never_echo(
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    github = FakeGitHub(threaded_httpserver)
    slack = SlackApi(threaded_httpserver)
    config = {
        "sources": [
            {"id": "slack", "kind": "slack", "signing_secret": SIGNING, "bot_user_id": SLACK_BOT},
            {"id": "github-in", "kind": "github", "secrets": [GITHUB_SECRET]},
        ],
        "targets": [
            {"id": "issues", "kind": "github_issues", "api_base": github.base, "token": TOKEN,
             "repo": REPO, "allow_private": True, "timeout": "2s",
             "confirm": {"target": "thread", "on": ["created"]},
             "updates": {"coalesce": "1s"}},
            {"id": "thread", "kind": "slack", "token": "xoxb-1-2-relaytest",
             "channel": "C0OPSROOM", "api_base": slack.base, "in_thread": True,
             "allow_private": True},
        ],
        "routes": [{"source": "slack", "targets": ["issues"]}],
        "people": {"bob": {"name": "bob", "slack": BOB_SLACK, "github": "bob"}},
    }  # fmt: skip
    path = write_config(config)
    relay_processes(path)
    client = client_for(path)

    # (1) a message in the channel creates the issue, assigned to Bob; confirmed in thread
    first, root_ts = slack_message(f"<@{SLACK_BOT}> task Fix the flaky CI job <@{BOB_SLACK}|bob>")
    created = slack_post(client, first)
    wait_for(lambda: len(slack.posted) == 1, timeout=40)
    assert wait_for(lambda: delivered(redis_client, created), timeout=20)
    [issue] = github.issues.values()
    number, url = issue["number"], issue["html_url"]
    assert [a["login"] for a in issue["assignees"]] == ["bob"]
    assert slack.posted[0]["thread_ts"] == root_ts
    assert slack.posted[0]["text"].startswith(f"Created #{number}: Fix the flaky CI job")

    # GitHub reports the relay's create and its assignment of Bob (one hook per assignee)
    echoes = [
        github_hook(client, github, number, "issues", "opened", sender="relay-bot"),
        github_hook(client, github, number, "issues", "assigned", sender="relay-bot",
                    assignee={"login": "bob", "type": "User"}),
    ]  # fmt: skip
    # (2) ``done`` in the thread closes the issue and comments, with the relay's marker
    reply, _ = slack_message("done", thread_ts=root_ts)
    closing = slack_post(client, reply)
    assert wait_for(lambda: delivered(redis_client, closing), timeout=40)
    assert (issue["state"], issue["state_reason"]) == ("closed", "completed")
    [relay_comment] = github.comments[number]
    assert relay_comment["body"].startswith("Closed by")
    # (3) GitHub reports that close and that comment: echoes, not told
    echoes += [
        github_hook(client, github, number, "issues", "closed", sender="relay-bot"),
        github_hook(client, github, number, "issue_comment", "created", sender="relay-bot",
                    comment=github_comment(relay_comment["body"], "relay-bot")),
    ]  # fmt: skip
    assert_no_echo(redis_client, echoes)
    assert len(slack.posted) == 1

    # (4) Bob reopens the issue on GitHub: told once, in the thread
    issue["state"], issue["state_reason"] = "open", "reopened"
    reopened = github_hook(client, github, number, "issues", "reopened", sender="bob")
    wait_for(lambda: len(slack.posted) == 2, timeout=40)
    assert wait_for(lambda: delivered(redis_client, reopened), timeout=20)
    assert slack.posted[1]["thread_ts"] == root_ts

    # ... and comments on it: told once, in the thread
    commented = github_hook(client, github, number, "issue_comment", "created", sender="bob",
                            comment=github_comment("fixed in #123", "bob"))  # fmt: skip
    wait_for(lambda: len(slack.posted) == 3, timeout=40)
    assert wait_for(lambda: delivered(redis_client, commented), timeout=20)
    assert slack.posted[2]["thread_ts"] == root_ts
    time.sleep(1.5)  # a second message would come within a coalesce window
    assert len(slack.posted) == 3
    assert len(github.issues) == 1
    # the default template's text: the change, then the issue's link on a line of its own
    assert [posted["text"] for posted in slack.posted[1:]] == [
        f"#{number} reopened by bob [open (reopened)]\n{url}",
        f"bob commented on #{number}: fixed in #123\n{url}",
    ]


# -- Linear, told in a Feishu thread --------------------------------------------------------

LINEAR_SECRET = "lin_wh_e2e0c7a5b3d1f9e7c5a3b1d9f7e5c3a1b9d7f5e3"
RELAY_USER = {"id": "u-relay", "name": "group-relay"}  # the user of the relay's API key
BOB_LINEAR = USERS["u-bob"]


def linear_hook(
    client: FlaskClient, kind: str, action: str, data: dict[str, Any], *,
    actor: dict[str, str], updated_from: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    """POST a Linear data-change webhook as Linear sends it: envelope and headers of
    https://linear.app/developers/webhooks (as in tests/intake/sources/test_linear.py),
    ``Linear-Signature`` the hex HMAC-SHA256 of the body."""
    body: dict[str, Any] = {
        "action": action,
        "actor": {**actor, "type": "user"},
        "createdAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
        "url": data.get("url") or data["issue"]["url"],
        "type": kind,
        "organizationId": "9b1d3f5a-7c9e-4b1d-8f3a-5c7e9b1d3f5a",
        "webhookId": "2f4a6c8e-0b2d-4f6a-9c8e-1d3f5b7a9c0e",
        "webhookTimestamp": int(time.time() * 1000),
    }
    if updated_from is not None:
        body["updatedFrom"] = updated_from
    raw = json.dumps(body, separators=(",", ":")).encode()
    response = client.post(
        "/hooks/linear-in",
        data=raw,
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Linear-Webhook",
            "Linear-Delivery": str(uuid.uuid4()),
            "Linear-Event": kind,
            "Linear-Signature": hmac.new(LINEAR_SECRET.encode(), raw, hashlib.sha256).hexdigest(),
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(response.get_json()["event_id"])


def linear_issue(issue: dict[str, Any]) -> dict[str, Any]:
    """``data`` of an Issue payload (IssueWebhookPayload) from the fake's issue."""
    team, state, assignee = issue["team"], issue["state"], issue["assignee"]
    return {
        "id": issue["id"], "identifier": issue["identifier"],
        "number": int(issue["identifier"].rsplit("-", 1)[1]), "title": issue["title"],
        "description": issue["description"], "priority": issue["priority"], "url": issue["url"],
        "updatedAt": now_iso(), "stateId": state["id"],
        "state": {"id": state["id"], "name": state["name"], "type": state["type"]},
        "teamId": team["id"], "team": {"id": team["id"], "key": team["key"], "name": team["name"]},
        "assigneeId": assignee["id"] if assignee else None, "assignee": assignee,
        "labelIds": [],
    }  # fmt: skip


def linear_comment(issue: dict[str, Any], text: str, user: dict[str, str]) -> dict[str, Any]:
    """``data`` of a Comment payload (CommentWebhookPayload) on the fake's issue."""
    return {
        "id": str(uuid.uuid4()), "body": text, "createdAt": now_iso(), "issueId": issue["id"],
        "issue": {"id": issue["id"], "identifier": issue["identifier"], "title": issue["title"],
                  "url": issue["url"], "teamId": issue["team"]["id"]},
        "userId": user["id"], "user": user,
    }  # fmt: skip


def linear_state(issue: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in issue["team"]["states"]["nodes"] if s["name"] == name)


def test_linear_changes_reach_the_feishu_thread_once_and_the_relays_own_never_echo(
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    linear = FakeLinear(threaded_httpserver)
    im = FakeIm(threaded_httpserver, FeishuAuth(threaded_httpserver))
    feishu_base = threaded_httpserver.url_for("").rstrip("/")
    config = {
        "sources": [
            {"id": "team", "kind": "feishu", "verification_token": VERIFY,
             "bot_open_id": FEISHU_BOT},
            {"id": "linear-in", "kind": "linear", "secrets": [LINEAR_SECRET]},
        ],
        "targets": [
            {"id": "linear", "kind": "linear", "api_key": API_KEY, "team_id": ENG_ID,
             "api_base": linear.base, "allow_private": True, "timeout": "2s",
             "confirm": {"target": "thread", "on": ["created"]},
             "updates": {"coalesce": "3s"}},
            {"id": "thread", "kind": "feishu_app", "app_id": APP_ID, "app_secret": APP_SECRET,
             "api_base": feishu_base, "mode": "reply", "allow_private": True},
        ],
        "routes": [{"source": "team", "targets": ["linear"]}],
        "people": {"ada": {"name": "Ada", "feishu": ADA_OPEN_ID, "linear": "u-ada"}},
    }  # fmt: skip
    path = write_config(config)
    relay_processes(path)
    client = client_for(path)

    # (1) a group message creates the issue, assigned to Ada; confirmed in its thread
    first = feishu_message("@_user_1 task Fix the login timeout @_user_2")
    root = first["event"]["message"]["message_id"]
    created = feishu_post(client, first)
    wait_for(lambda: len(im.sent) == 1, timeout=40)
    assert wait_for(lambda: delivered(redis_client, created), timeout=20)
    [issue] = linear.issues.values()
    key, url = issue["identifier"], issue["url"]
    assert issue["assignee"] == USERS["u-ada"]
    assert im.sent[0]["path"] == f"/open-apis/im/v1/messages/{root}/reply"

    # Linear reports the relay's create
    echoes = [linear_hook(client, "Issue", "create", linear_issue(issue), actor=RELAY_USER)]
    # (2) ``done`` in the thread moves the issue to Done and comments, with the marker
    todo = issue["state"]
    closing = feishu_post(client, feishu_message("done", root=root))
    assert wait_for(lambda: delivered(redis_client, closing), timeout=40)
    assert issue["state"]["type"] == "completed"
    [relay_comment] = linear.comments.values()
    assert relay_comment["body"].startswith("Closed by")
    # (3) Linear reports that move and that comment: echoes, not told
    done_at = now_iso()
    echoes += [
        linear_hook(client, "Issue", "update", {**linear_issue(issue), "completedAt": done_at},
                    actor=RELAY_USER,
                    updated_from={"stateId": todo["id"], "updatedAt": done_at,
                                  "completedAt": None}),
        linear_hook(client, "Comment", "create",
                    linear_comment(issue, relay_comment["body"], RELAY_USER), actor=RELAY_USER),
    ]  # fmt: skip
    assert_no_echo(redis_client, echoes)
    assert len(im.sent) == 1

    # (4) Bob reopens the issue in Linear and comments: one message in the thread
    done = issue["state"]
    issue["state"] = linear_state(issue, "Todo")
    told = [
        linear_hook(client, "Issue", "update", linear_issue(issue), actor=BOB_LINEAR,
                    updated_from={"stateId": done["id"], "updatedAt": done_at,
                                  "completedAt": done_at}),
        linear_hook(client, "Comment", "create",
                    linear_comment(issue, "fixed in #123", BOB_LINEAR), actor=BOB_LINEAR),
    ]  # fmt: skip
    wait_for(lambda: len(im.sent) == 2, timeout=40)
    for event_id in told:
        assert wait_for(partial(delivered, redis_client, event_id), timeout=20)
    assert json.loads(im.sent[1]["content"])["text"] == (
        f"{key} reopened by Bob Builder [Todo]\n"
        f"Bob Builder commented on {key}: fixed in #123\n{url}"
    )
    assert im.sent[1]["path"] == f"/open-apis/im/v1/messages/{root}/reply"
    time.sleep(1.5)
    assert len(im.sent) == 2
    assert len(linear.issues) == 1


# -- GitLab, told as a Telegram reply -------------------------------------------------------

GITLAB_SECRET = "gitlab-webhook-secret-token-for-the-e2e-test"
TELEGRAM_SECRET = "telegram-webhook-secret_for-the-e2e-test"
TELEGRAM_BOT = "relay_bot"
RELAY_GITLAB = {"id": 99, "name": "group-relay", "username": "relay-bot"}  # the token's user
BOB_GITLAB = GITLAB_USERS[8]


def telegram_message(text: str, *, reply_to: dict[str, Any] | None = None) -> dict[str, Any]:
    """A supergroup text update as Telegram sends it, its @-mentions as entities; a
    reply carries the message it answers in ``reply_to_message``."""
    update = sample_update(TELEGRAM_BOT)
    message = update["message"]
    message["chat"]["id"] = GROUP
    message["text"] = text
    message["entities"] = [
        {"type": "mention", "offset": text.index(word), "length": len(word)}
        for word in text.split()
        if word.startswith("@")
    ]
    if reply_to is not None:
        message["reply_to_message"] = reply_to
    return update


def telegram_post(client: FlaskClient, update: dict[str, Any]) -> str:
    sample = (
        client.application.extensions["relay"].sources["tg"].sample(json.dumps(update).encode())
    )
    response = client.post("/hooks/tg", data=sample.body, headers=sample.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(response.get_json()["event_id"])


def gitlab_hook(client: FlaskClient, hook: str, body: dict[str, Any]) -> str:
    """POST a GitLab webhook with the delivery headers GitLab documents
    (https://docs.gitlab.com/user/project/integrations/webhooks/#delivery-headers)."""
    response = client.post(
        "/hooks/gitlab-in",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "User-Agent": "GitLab/18.0.0",
            "X-Gitlab-Event": hook,
            "X-Gitlab-Instance": "https://gitlab.example.com",
            "X-Gitlab-Webhook-UUID": "02affd2d-2cba-4033-917d-ec22d5dc4b38",
            "X-Gitlab-Event-UUID": str(uuid.uuid4()),
            "Idempotency-Key": str(uuid.uuid4()),
            "X-Gitlab-Token": GITLAB_SECRET,
        },
    )
    assert response.status_code in (200, 202), response.get_data(as_text=True)
    return str(response.get_json()["event_id"])


def gitlab_project() -> dict[str, Any]:
    return {"id": PROJECT_ID, "name": "ops", "path_with_namespace": PROJECT_PATH,
            "web_url": f"https://gitlab.example.com/{PROJECT_PATH}"}  # fmt: skip


def gitlab_issue_hook(
    issue: dict[str, Any], action: str, user: dict[str, Any], changes: dict[str, Any]
) -> dict[str, Any]:
    """An Issue Hook about the fake's issue (the shape of GitLab's documented example,
    https://docs.gitlab.com/user/project/integrations/webhook_events/#work-item-events)."""
    assignees = issue["assignees"]
    return {
        "object_kind": "issue", "event_type": "issue",
        "user": {**user, "email": "[REDACTED]"}, "project": gitlab_project(),
        "object_attributes": {
            "id": issue["id"], "iid": issue["iid"], "title": issue["title"],
            "description": issue["description"], "state": issue["state"], "action": action,
            "assignee_ids": [a["id"] for a in assignees], "project_id": PROJECT_ID,
            "created_at": issue["created_at"], "updated_at": now_iso(),
            "updated_by_id": user["id"], "url": issue["web_url"], "type": "Issue",
        },
        "assignees": [{"id": a["id"], "name": a["name"], "username": a["username"]}
                      for a in assignees],
        "labels": [{"title": name} for name in issue["labels"]],
        "changes": {"updated_at": {"previous": issue["created_at"], "current": now_iso()},
                    **changes},
    }  # fmt: skip


def gitlab_note_hook(issue: dict[str, Any], note: str, user: dict[str, Any]) -> dict[str, Any]:
    """A Note Hook on the fake's issue (GitLab's "Comment on an issue" example)."""
    note_id = 1241 + len(note)
    return {
        "object_kind": "note", "event_type": "note",
        "user": {**user, "email": "[REDACTED]"}, "project_id": PROJECT_ID,
        "project": gitlab_project(),
        "object_attributes": {
            "id": note_id, "internal": False, "note": note, "noteable_type": "Issue",
            "author_id": user["id"], "created_at": now_iso(), "updated_at": now_iso(),
            "project_id": PROJECT_ID, "noteable_id": issue["id"], "system": False,
            "action": "create", "url": f"{issue['web_url']}#note_{note_id}",
        },
        "issue": {
            "id": issue["id"], "iid": issue["iid"], "title": issue["title"],
            "assignee_ids": [a["id"] for a in issue["assignees"]],
            "description": issue["description"], "state": issue["state"],
            "project_id": PROJECT_ID, "url": issue["web_url"],
        },
    }  # fmt: skip


def test_gitlab_changes_reach_the_telegram_message_once_and_the_relays_own_never_echo(
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    gitlab = FakeGitLab(threaded_httpserver)
    bot = FakeBotAPI(threaded_httpserver)
    config = {
        "sources": [
            {"id": "tg", "kind": "telegram", "secret_token": TELEGRAM_SECRET,
             "bot_username": TELEGRAM_BOT},
            {"id": "gitlab-in", "kind": "gitlab", "secrets": [GITLAB_SECRET]},
        ],
        "targets": [
            {"id": "issues", "kind": "gitlab_issues", "base_url": gitlab.base,
             "token": GITLAB_TOKEN, "project": PROJECT_PATH, "allow_private": True,
             "timeout": "2s", "confirm": {"target": "chat", "on": ["created"]},
             "updates": {"coalesce": "1s"}},
            {"id": "chat", "kind": "telegram", "bot_token": BOT_TOKEN, "chat_id": GROUP,
             "api_base": bot.api_base, "reply": True, "allow_private": True},
        ],
        "routes": [{"source": "tg", "targets": ["issues"]}],
        "people": {"bob": {"name": "Bob", "telegram": "@bob_builder", "gitlab": "8"}},
    }  # fmt: skip
    path = write_config(config)
    relay_processes(path)
    client = client_for(path)

    # (1) a group message creates the issue, assigned to Bob; confirmed as a reply to it
    first = telegram_message(f"@{TELEGRAM_BOT} task Fix the deploy script @bob_builder")
    root = first["message"]["message_id"]
    created = telegram_post(client, first)
    wait_for(lambda: len(bot.messages) == 1, timeout=40)
    assert wait_for(lambda: delivered(redis_client, created), timeout=20)
    [issue] = gitlab.issues.values()
    key, url = f"#{issue['iid']}", issue["web_url"]
    assert [a["username"] for a in issue["assignees"]] == ["bob"]
    assert bot.messages[0]["reply_parameters"]["message_id"] == root
    assert bot.messages[0]["plain"].startswith(f"Created {key}: Fix the deploy script")

    # GitLab reports the relay's create
    echoes = [gitlab_hook(client, "Issue Hook", gitlab_issue_hook(issue, "open", RELAY_GITLAB, {}))]
    # (2) ``done``, as a reply to the message, closes the issue and comments on it
    closing = telegram_post(client, telegram_message("done", reply_to=first["message"]))
    assert wait_for(lambda: delivered(redis_client, closing), timeout=40)
    assert issue["state"] == "closed"
    [relay_note] = gitlab.notes[issue["iid"]]
    assert relay_note["body"].startswith("Closed by")
    # (3) GitLab reports that close and that note: echoes, not told
    closed = {"state_id": {"previous": 1, "current": 2}}
    echoes += [
        gitlab_hook(client, "Issue Hook", gitlab_issue_hook(issue, "close", RELAY_GITLAB, closed)),
        gitlab_hook(client, "Note Hook", gitlab_note_hook(issue, relay_note["body"], RELAY_GITLAB)),
    ]  # fmt: skip
    assert_no_echo(redis_client, echoes)
    assert len(bot.messages) == 1

    # (4) Bob reopens the issue in GitLab: told once, as a reply to the message
    issue["state"] = "opened"
    reopened_hook = gitlab_issue_hook(
        issue, "reopen", BOB_GITLAB, {"state_id": {"previous": 2, "current": 1}}
    )
    reopened = gitlab_hook(client, "Issue Hook", reopened_hook)
    wait_for(lambda: len(bot.messages) == 2, timeout=40)
    assert wait_for(lambda: delivered(redis_client, reopened), timeout=20)
    assert bot.messages[1]["plain"] == f"{key} reopened by bob [opened]\n{url}"
    assert bot.messages[1]["reply_parameters"]["message_id"] == root

    # ... and comments on it: told once, as a reply to the message
    note = gitlab_note_hook(issue, "fixed in !17", BOB_GITLAB)
    commented = gitlab_hook(client, "Note Hook", note)
    wait_for(lambda: len(bot.messages) == 3, timeout=40)
    assert wait_for(lambda: delivered(redis_client, commented), timeout=20)
    assert bot.messages[2]["plain"] == f"bob commented on {key}: fixed in !17\n{url}"
    assert bot.messages[2]["reply_parameters"]["message_id"] == root
    time.sleep(1.5)
    assert len(bot.messages) == 3
    assert len(gitlab.issues) == 1
