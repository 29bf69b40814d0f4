"""A Slack thread creates a GitHub issue; ``assign @bob`` in the thread adds Bob; each
step is confirmed in the thread through a Slack target (``in_thread``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from relay.state import keys
from tests.conftest import wait_for
from tests.e2e.chats import SIGNING, SlackApi
from tests.e2e.chats import SLACK_BOB as BOB
from tests.e2e.chats import SLACK_BOT as BOT
from tests.e2e.chats import slack_message as message
from tests.e2e.chats import slack_post as post
from tests.pm.github_fake import REPO, TOKEN, FakeGitHub


def delivered(redis_client: redis.Redis, event_id: str, count: int) -> bool:
    ids = redis_client.smembers(keys.event_deliveries(event_id))
    return len(ids) == count and all(
        redis_client.hget(keys.delivery(i.decode()), "status") == b"delivered" for i in ids
    )


def test_a_slack_thread_creates_a_github_issue_and_assigns_bob(
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    github = FakeGitHub(threaded_httpserver)
    slack = SlackApi(threaded_httpserver)
    config = {
        "sources": [{"id": "slack", "kind": "slack", "signing_secret": SIGNING,
                     "bot_user_id": BOT}],
        "targets": [
            {"id": "issues", "kind": "github_issues", "api_base": github.base, "token": TOKEN,
             "repo": REPO, "allow_private": True,
             "confirm": {"target": "thread", "on": ["created", "assigned"]}},
            {"id": "thread", "kind": "slack", "token": "xoxb-1-2-relaytest",
             "channel": "C0OPSROOM", "api_base": slack.base, "in_thread": True,
             "allow_private": True},
        ],
        "routes": [{"source": "slack", "targets": ["issues"]}],
        "people": {"bob": {"name": "bob", "slack": BOB, "github": "bob"}},
    }  # fmt: skip
    path = write_config(config)
    relay_processes(path)
    client = client_for(path)

    first, root_ts = message(f"<@{BOT}> task Fix the flaky CI job #bug")
    created = post(client, first)
    wait_for(lambda: delivered(redis_client, created, 2), timeout=40)
    [issue] = github.issues.values()
    assert issue["title"] == "Fix the flaky CI job"
    assert "bug" in [label["name"] for label in issue["labels"]]

    reply, _ = message(f"assign <@{BOB}|bob>", thread_ts=root_ts)
    assigning = post(client, reply)
    wait_for(lambda: delivered(redis_client, assigning, 2), timeout=40)
    assert [a["login"] for a in issue["assignees"]] == ["bob"]
    assert len(github.issues) == 1

    assert [p["thread_ts"] for p in slack.posted] == [root_ts, root_ts]
    assert f"#{issue['number']}" in slack.posted[0]["text"]
