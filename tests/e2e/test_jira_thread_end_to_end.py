"""A Feishu group creates a Jira issue assigned by accountId; ``done`` in the message's
thread closes it and comments; a worker killed between create and record, a
create whose answer is lost and a ledger deleted mid-run each end with one issue."""

from __future__ import annotations

import json
import signal
import time
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
from tests.pm.jira_fake import ADA, API_TOKEN, EMAIL, FakeJira


def config(jira: FakeJira) -> dict[str, Any]:
    return {
        "sources": [{"id": "team", "kind": "feishu", "verification_token": VERIFY,
                     "bot_open_id": BOT}],
        "targets": [{"id": "jira", "kind": "jira", "base_url": jira.base, "email": EMAIL,
                     "api_token": API_TOKEN, "project": "OPS", "allow_private": True,
                     "timeout": "1s", "retry": {"max_attempts": 6, "backoff_base": "0.2s"}}],
        "routes": [{"source": "team", "targets": ["jira"]}],
        "people": {"ada": {"name": "Ada", "feishu": ADA_OPEN_ID, "jira": ADA}},
    }  # fmt: skip


@pytest.fixture
def jira(threaded_httpserver: HTTPServer) -> FakeJira:
    return FakeJira(threaded_httpserver)


def test_a_feishu_thread_creates_assigns_and_closes_a_jira_issue(
    jira: FakeJira,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    path = write_config(config(jira))
    relay_processes(path)
    client = client_for(path)
    first = message("@_user_1 task Fix the login timeout @_user_2 #bug")
    created_event = post(client, first)
    wait_for(lambda: delivered(redis_client, created_event), timeout=40)
    [issue] = jira.issues.values()
    assert issue["fields"]["summary"] == "Fix the login timeout"
    assert issue["fields"]["assignee"]["accountId"] == ADA
    assert "bug" in issue["fields"]["labels"]

    ordinary = post(client, message("I am done for today"))
    wait_for(lambda: delivered(redis_client, ordinary), timeout=40)
    assert jira.status_of(issue["key"]) != "Done"

    root = first["event"]["message"]["message_id"]
    closing = post(client, message("done", root=root))
    wait_for(lambda: delivered(redis_client, closing), timeout=40)
    assert jira.status_of(issue["key"]) == "Done"
    [comment] = jira.comments[issue["key"]]
    assert "Closed by" in json.dumps(comment)
    assert len(jira.issues) == 1
    tasks = redis_client.hgetall(keys.event_tasks(created_event))
    assert json.loads(tasks[b"jira"])["key"] == issue["key"]


def test_a_lost_answer_and_a_deleted_ledger_still_make_one_issue(
    jira: FakeJira,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    jira.after_create = "timeout"  # the issue exists; the relay sees no answer
    path = write_config(config(jira))
    relay_processes(path)
    client = client_for(path)
    event_id = post(client, message("@_user_1 task Lost answer"))
    wait_for(lambda: jira.issues, timeout=30)
    [delivery_id] = wait_for(lambda: redis_client.smembers(keys.event_deliveries(event_id)))
    redis_client.delete(keys.ledger(delivery_id.decode()))  # lost mid-run as well
    jira.after_create = None
    wait_for(lambda: delivered(redis_client, event_id), timeout=40)
    assert len(jira.issues) == 1


def test_a_worker_killed_between_create_and_record_makes_one_issue(
    jira: FakeJira,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    jira.after_create = "timeout"
    jira.delay = 30.0  # the worker waits for the answer when it is killed
    path = write_config(config(jira))
    procs = relay_processes(path, RELAY_HTTP_TIMEOUT="5")
    client = client_for(path)
    event_id = post(client, message("@_user_1 task Killed mid-create"))
    wait_for(lambda: jira.issues, timeout=30)
    worker = procs.procs["worker"]
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    jira.after_create = None
    time.sleep(0.2)
    procs.start_worker("worker2")
    wait_for(lambda: delivered(redis_client, event_id), timeout=60)
    assert len(jira.issues) == 1
