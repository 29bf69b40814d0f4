"""Two-way sync's pieces on the suite's Redis: which ``task.*`` events become one reply
in the task's thread, which are echoes of the relay's own changes, how a burst of
changes becomes one message."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from relay.config.loader import load_config
from relay.events import GroupEvent, Party, TaskChange
from relay.settings import Settings
from relay.state import keys
from relay.state.tasks import Bursts, Echoes, TaskLinks
from workers.context import WorkerContext
from workers.pm import updates
from workers.targets.base import DeliveryContext

JIRA = "https://acme.atlassian.net"
ROOT = "om_root_message"


def config(**jira_options: Any) -> dict[str, Any]:
    return {
        "sources": [
            {"id": "team", "kind": "feishu", "verification_token": "v", "bot_open_id": "ou_bot"},
            {"id": "jira-in", "kind": "jira", "secrets": ["s"]},
        ],
        "targets": [
            {"id": "jira", "kind": "jira", "base_url": JIRA, "email": "bot@acme.example",
             "api_token": "t", "project": "OPS", "confirm": {"target": "thread"},
             **jira_options},
            {"id": "thread", "kind": "feishu_app", "app_id": "cli_a", "app_secret": "x",
             "mode": "reply"},
            {"id": "room", "kind": "feishu_app", "app_id": "cli_a", "app_secret": "x",
             "chat_id": "oc_room"},
        ],
        "routes": [{"source": "team", "targets": ["jira"]}],
    }  # fmt: skip


@pytest.fixture
def context_for(
    make_settings: Callable[..., Settings], write_config: Callable[..., Path]
) -> Callable[..., WorkerContext]:
    def make(**jira_options: Any) -> WorkerContext:
        path = write_config(config(**jira_options))
        return WorkerContext(make_settings(config=path), load_config(path))

    return make


def created_from_chat(client: redis.Redis, key: str = "OPS-12", language: str = "en") -> None:
    """Link ``key`` to a Feishu message, as the jira target does when it creates it."""
    TaskLinks(client, retention=3600, link_retention=86400).link(
        target_id="jira",
        task={"key": key, "id": "10012", "url": f"{JIRA}/browse/{key}", "title": "Fix it"},
        event_id="evt_chat",
        source_id="team",
        group_id="oc_team",
        message_id=ROOT,
        created=True,
        thread={"task_key": key, "source_kind": "feishu", "root": None, "language": language},
    )


def task_event(
    type: str = "task.closed", key: str = "OPS-12", *, by_relay: bool = False, **change: Any
) -> GroupEvent:
    return GroupEvent(
        source="jira-in",
        type=type,  # type: ignore[arg-type]
        task=TaskChange(
            **{
                "tool": "jira",
                "key": key,
                "id": "10012",
                "url": f"{JIRA}/browse/{key}",
                "actor": Party(id="bob-account", name="Bob"),
                "by_relay": by_relay,
                **change,
            }
        ),
    )


def test_a_persons_change_becomes_one_reply_in_the_tasks_thread(
    context_for: Callable[..., WorkerContext], redis_client: redis.Redis
) -> None:
    ctx = context_for()
    created_from_chat(redis_client)
    event = task_event(status="Done")
    [(fields, queue)] = updates.plan(ctx, event, now=1000.0)
    assert (fields["target"], fields["event_id"], queue) == (
        "thread",
        event.id,
        "relay.deliver.notify",
    )
    stored = json.loads(fields["vars"])
    assert stored["vars"]["thread"] == {
        "source_kind": "feishu", "group": "oc_team", "message_id": ROOT, "root": None,
        "reply": None,
    }  # fmt: skip
    assert stored["vars"]["burst"] == {"target": "jira", "key": "OPS-12", "until": 1005.0}
    # the reply goes to the task's chat message, not to the tool's event
    context = DeliveryContext(
        delivery_id=fields["id"], attempt=1, event_json=event.to_json(), timeout=5,
        source_kind="jira", vars=stored["vars"],
    )  # fmt: skip
    assert (context.thread.message_id, context.thread.source_kind) == (ROOT, "feishu")
    linked = TaskLinks(redis_client, retention=60).of_event(event.id)
    assert linked["jira"]["key"] == "OPS-12"


@pytest.mark.parametrize(
    "event",
    [
        task_event(by_relay=True),  # the source saw the relay's marker or account
        task_event("task.created"),  # the relay created it; the confirmation told it
        task_event(key="OPS-99"),  # not a task the relay created
        task_event(url="https://other.atlassian.net/browse/OPS-12"),  # another site's OPS-12
    ],
    ids=["marked", "created", "unknown-task", "other-site"],
)
def test_echoes_and_strangers_are_not_told(
    context_for: Callable[..., WorkerContext], redis_client: redis.Redis, event: GroupEvent
) -> None:
    ctx = context_for()
    created_from_chat(redis_client)
    assert updates.plan(ctx, event, now=1000.0) == []


def test_a_change_the_relay_counted_is_an_echo_once(
    context_for: Callable[..., WorkerContext], redis_client: redis.Redis
) -> None:
    ctx = context_for()
    created_from_chat(redis_client)
    Echoes(redis_client, ttl=600).expect("jira", "OPS-12", "closed")
    assert updates.plan(ctx, task_event(), now=1000.0) == []  # the relay's close
    assert len(updates.plan(ctx, task_event(), now=1000.0)) == 1  # a person's, later


def test_updates_off_or_not_wanted_tell_nothing(
    context_for: Callable[..., WorkerContext], redis_client: redis.Redis
) -> None:
    created_from_chat(redis_client)
    assert updates.plan(context_for(updates=False), task_event(), now=1.0) == []
    only_closes = context_for(updates={"on": ["closed"]})
    assert updates.plan(only_closes, task_event("task.commented", comment="hi"), now=1.0) == []
    elsewhere = context_for(updates={"target": "room"})
    [(fields, _)] = updates.plan(elsewhere, task_event(), now=1.0)
    assert fields["target"] == "room"


def test_a_burst_joins_the_first_changes_delivery_until_it_runs(
    context_for: Callable[..., WorkerContext], redis_client: redis.Redis
) -> None:
    ctx = context_for()
    created_from_chat(redis_client)
    first = task_event("task.updated", changes=["summary"])
    [(fields, _)] = updates.plan(ctx, first, now=1000.0)
    leader = fields["id"]
    later = [
        task_event("task.updated", changes=["priority"]),
        task_event("task.commented", comment="fixed in #123"),
        task_event("task.closed", status="Done"),
    ]
    for event in later:
        assert updates.plan(ctx, event, now=1001.0) == []
        assert redis_client.smembers(keys.event_deliveries(event.id)) == {leader.encode()}
    variables = json.loads(fields["vars"])["vars"]
    assert updates.waiting(variables, now=1001.0) == 4.0
    assert updates.waiting(variables, now=1006.0) == 0.0
    told = updates.gathered(ctx, leader, variables)
    lines = {line["action"]: line for line in told["updates"]}
    assert lines["updated"]["fields"] == ["summary", "priority"]
    assert lines["commented"]["comment"] == "fixed in #123"
    assert lines["closed"]["status"] == "Done"
    # a retry of the same delivery tells the same; a change from now on starts anew
    assert updates.gathered(ctx, leader, variables)["updates"] == told["updates"]
    [(next_fields, _)] = updates.plan(ctx, task_event("task.reopened"), now=1010.0)
    assert next_fields["id"] != leader


def test_the_default_message_follows_the_commands_language(
    context_for: Callable[..., WorkerContext], redis_client: redis.Redis
) -> None:
    ctx = context_for()
    created_from_chat(redis_client, language="zh")
    event = task_event(status="Done")
    [(fields, _)] = updates.plan(ctx, event, now=1000.0)
    stored = json.loads(fields["vars"])
    variables = {**stored["vars"], **updates.gathered(ctx, fields["id"], stored["vars"])}
    context = DeliveryContext(
        delivery_id=fields["id"], attempt=1, event_json=event.to_json(), timeout=5,
        vars=variables,
    )  # fmt: skip
    text = context.render(stored["template"])
    assert text == f"OPS-12 已由 Bob 关闭 [Done]\n{JIRA}/browse/OPS-12"


def test_echo_counts_never_go_below_zero(redis_client: redis.Redis) -> None:
    echoes = Echoes(redis_client, ttl=60)
    assert echoes.consume("jira", "OPS-1", "closed") is False
    assert echoes.consume("jira", "OPS-1", "closed") is False
    echoes.expect("jira", "OPS-1", "closed")
    assert echoes.consume("jira", "OPS-1", "closed") is True
    assert echoes.consume("jira", "OPS-1", "closed") is False


def test_a_repeated_join_is_counted_once(redis_client: redis.Redis) -> None:
    bursts = Bursts(redis_client, retention=60)
    assert bursts.join("jira", "OPS-1", "dlv_a", "evt_1", '{"at": "1"}', ttl=60) == "dlv_a"
    assert bursts.join("jira", "OPS-1", "dlv_a", "evt_1", '{"at": "1"}', ttl=60) == "dlv_a"
    assert bursts.join("jira", "OPS-1", "dlv_b", "evt_2", '{"at": "2"}', ttl=60) == "dlv_a"
    assert bursts.close("jira", "OPS-1", "dlv_a") == [{"at": "1"}, {"at": "2"}]
    assert bursts.join("jira", "OPS-1", "dlv_c", "evt_3", '{"at": "3"}', ttl=60) == "dlv_c"
