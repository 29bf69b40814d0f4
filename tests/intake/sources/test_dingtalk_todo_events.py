"""``dingtalk_events`` source, to-do (待办) events: ``todo_task_*`` pushes become
``task.*`` events about the to-do's ``taskId``.

Signatures are computed here with ``hashlib`` directly; messages are sealed with
``MsgCrypt``, which ``test_msgcrypt.py`` checks against the official vectors. Every
push goes through the real receiver on the suite's Redis.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import uuid
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from relay.intake.sources.msgcrypt import MsgCrypt
from relay.state import keys
from tests.intake.sources.support import FUZZ, any_json, fuzz_json, stored_event

TOKEN = "mryue"
AES_KEY = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7"
OWNER = "ding6ccabc44d2c8d38b"
RELAY = "relayUnionIdOfTheTodoOperator"
SOURCES: list[dict[str, Any]] = [
    {
        "id": "dte",
        "kind": "dingtalk_events",
        "token": TOKEN,
        "aes_key": AES_KEY,
        "owner_key": OWNER,
        "relay_accounts": [RELAY],
    },
]
_counter = itertools.count()

# The HTTP-push examples of DingTalk's to-do events, verbatim:
# https://open.dingtalk.com/document/development/event-todo-task-create
CREATE = {
    "EventType": "todo_task_create",
    "EventTime": 1663143335567,
    "CorpId": "ding9f50b15bxxxx16741",
    "BizId": "1663**35567",
    "eventId": "c7c7120f2c07419**ebdba0318c8",
    "bizTag": "certify_todo",
    "taskId": "task98cd5581178bfc6f123800dxxx",
    "UnionIdList": ["QWRGux2l4MuiSa0vxxxEiE"],
}
# https://open.dingtalk.com/document/development/event-todo-task-update
UPDATE = {
    "EventType": "todo_task_update",
    "EventTime": 1663143335567,
    "CorpId": "ding9f50b15bxxxx16741",
    "BizId": "1663**35567",
    "eventId": "c7c7120f2c07419**ebdba0318c8",
    "bizTag": "certify_todo",
    "taskId": "task15cbab1097xxxxxxxxd45",
    "UnionIdList": ["QWRGux2l4MuiSa0vxxxEiE"],
}
# https://open.dingtalk.com/document/development/event-todo-task-delete
DELETE = {
    "EventType": "todo_task_delete",
    "EventTime": 1663143335567,
    "CorpId": "ding9f50b15bxxxx16741",
    "BizId": "1663**35567",
    "eventId": "c7c7120f2c07419**ebdba0318c8",
    "taskId": "task98cd5581178bfc6f123800dxxx",
    "UnionIdList": ["QWRGux2l4MuiSa0vxxxEiE"],
}


def push(event: dict[str, Any] | bytes, *, owner: str = OWNER) -> tuple[dict[str, str], bytes]:
    """The query and body DingTalk sends for ``event``: sealed for ``owner`` and signed."""
    plain = event if isinstance(event, bytes) else json.dumps(event, ensure_ascii=False).encode()
    encrypt = MsgCrypt(AES_KEY, owner).encrypt(plain)
    stamp, nonce = str(int(time.time() * 1000)), f"n{next(_counter)}"
    digest = hashlib.sha1("".join(sorted([TOKEN, stamp, nonce, encrypt])).encode()).hexdigest()
    query = {"msg_signature": digest, "timestamp": stamp, "nonce": nonce}
    return query, json.dumps({"encrypt": encrypt}).encode()


def send(client: FlaskClient, event: dict[str, Any] | bytes, **seal: Any) -> Any:
    query, body = push(event, **seal)
    return client.post(
        "/hooks/dte", query_string=query, data=body, headers={"Content-Type": "application/json"}
    )


def with_id(event: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``event`` with its own ``eventId`` (the official examples share one)."""
    return {**event, "eventId": f"evt-{next(_counter)}", **fields}


def accepted(client: FlaskClient, redis_client: redis.Redis, event: dict[str, Any]) -> Any:
    """Post ``event``; DingTalk's encrypted success map comes back and the event is stored."""
    response = send(client, event)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert MsgCrypt(AES_KEY, OWNER).decrypt(answer["encrypt"]) == b"success"
    assert "X-Relay-Duplicate" not in response.headers
    return stored_event(redis_client, response.headers["X-Relay-Event-Id"])


# -- the official examples -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "type_", "status", "changes"),
    [
        (CREATE, "task.created", None, []),
        (UPDATE, "task.updated", None, []),
        (DELETE, "task.updated", "deleted", ["deleted"]),
    ],
)
def test_official_examples(
    client: FlaskClient,
    redis_client: redis.Redis,
    example: dict[str, Any],
    type_: str,
    status: str | None,
    changes: list[str],
) -> None:
    event = accepted(client, redis_client, example)
    assert event["type"] == type_
    task = event["task"]
    assert task["tool"] == "dingtalk_todo"
    assert task["key"] == task["id"] == example["taskId"]
    assert task["status"] == status and task["changes"] == changes
    assert task["title"] is None and task["url"] is None and task["comment"] is None
    # UnionIdList is everyone on the to-do, not the actor nor the executors
    assert task["actor"] is None and task["assignees"] == [] and event["sender"] is None
    assert task["by_relay"] is False
    assert event["occurred_at"].startswith("2022-09-14T08:15:35.567")
    assert event["raw"] == example
    assert redis_client.get(keys.dedupe("dte", example["eventId"]))


def test_the_id_is_what_the_todo_target_records(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The ``dingtalk_todo`` target records the to-do's id as both key and id."""
    event = accepted(client, redis_client, with_id(UPDATE, taskId="OPEN_TASK_0a1b2c"))
    assert event["task"]["key"] == event["task"]["id"] == "OPEN_TASK_0a1b2c"
    assert event["text"] == "OPEN_TASK_0a1b2c updated"


# -- shapes --------------------------------------------------------------------------------------


def test_older_capitalised_fields_are_read(client: FlaskClient, redis_client: redis.Redis) -> None:
    pushed = {"EventType": "todo_task_update", "TaskId": "taskCapital", "EventId": "evt-cap"}
    event = accepted(client, redis_client, pushed)
    assert event["type"] == "task.updated" and event["task"]["key"] == "taskCapital"


def test_lower_case_event_type_is_read(client: FlaskClient, redis_client: redis.Redis) -> None:
    pushed = {"eventType": "todo_task_create", "taskId": "taskLower", "eventId": "evt-low"}
    assert accepted(client, redis_client, pushed)["type"] == "task.created"


@pytest.mark.parametrize("task_id", [None, "", "  ", 42, ["task1"], "t" * 257])
def test_a_todo_event_without_a_usable_task_id_is_custom(
    client: FlaskClient, redis_client: redis.Redis, task_id: Any
) -> None:
    """Still queued and answered, never lost: the push is kept as ``custom``."""
    pushed = with_id(UPDATE, taskId=task_id)
    event = accepted(client, redis_client, pushed)
    assert event["type"] == "custom" and event["task"] is None
    assert event["raw"]["EventType"] == "todo_task_update"


def test_other_events_are_unchanged(client: FlaskClient, redis_client: redis.Redis) -> None:
    pushed = {"EventType": "todo_task_finished", "taskId": "task1", "eventId": "evt-other"}
    assert accepted(client, redis_client, pushed)["type"] == "custom"
    member = {"EventType": "chat_quit", "eventId": "evt-quit", "operator": "u1", "chatId": "c1"}
    assert accepted(client, redis_client, member)["type"] == "member.left"


# -- the actor and echoes --------------------------------------------------------------------------


def test_an_operator_union_id_is_the_actor(client: FlaskClient, redis_client: redis.Redis) -> None:
    """DingTalk documents no operator on to-do events; one sent as ``operatorUnionId`` (as
    group events name theirs) is the actor."""
    event = accepted(client, redis_client, with_id(UPDATE, operatorUnionId="someoneElse"))
    assert event["task"]["actor"] == {"id": "someoneElse", "name": None} == event["sender"]
    assert event["task"]["by_relay"] is False


def test_a_change_by_a_relay_account_is_an_echo(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    event = accepted(client, redis_client, with_id(UPDATE, operatorUnionId=RELAY))
    assert event["task"]["by_relay"] is True


# -- verification first, and resends -------------------------------------------------------------


def test_a_todo_event_sealed_for_another_app_is_refused(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    response = send(client, with_id(CREATE), owner="dingotherappkey")
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_owner_key"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_a_forged_todo_event_is_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    query, body = push(with_id(CREATE))
    query["msg_signature"] = "0" * 40
    response = client.post(
        "/hooks/dte", query_string=query, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_signature"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_resends_are_duplicates(client: FlaskClient, redis_client: redis.Redis) -> None:
    pushed = with_id(UPDATE)
    first = send(client, pushed)
    original = first.headers["X-Relay-Event-Id"]
    for _ in range(2):  # sealed and signed afresh each time, with the same eventId
        again = send(client, pushed)
        assert again.status_code == 200
        assert again.headers["X-Relay-Event-Id"] == original
        assert again.headers["X-Relay-Duplicate"] == "true"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    send(client, with_id(UPDATE))
    assert redis_client.llen(keys.FANOUT_QUEUE) == 2


# -- property test: any to-do push is kept ---------------------------------------------------------

json_values = any_json(text=12, width=3, leaves=10)
todo_pushes = st.fixed_dictionaries(
    {"EventType": st.sampled_from(["todo_task_create", "todo_task_update", "todo_task_delete"])},
    optional={
        "taskId": st.one_of(st.text(max_size=300), json_values),
        "EventTime": st.one_of(st.integers(), json_values),
        "UnionIdList": json_values,
        "bizTag": json_values,
        "operatorUnionId": st.one_of(st.just(RELAY), st.text(max_size=300), json_values),
    },
)


@FUZZ
@given(pushed=todo_pushes)
def test_any_todo_push_is_kept(
    fuzz_app: Flask, fuzz_client: FlaskClient, pushed: dict[str, Any]
) -> None:
    pushed = {**pushed, "eventId": uuid.uuid4().hex}  # a fresh push, not a resend
    query, body = push(pushed)
    response = fuzz_client.post(
        "/hooks/dte", query_string=query, data=body, headers={"Content-Type": "application/json"}
    )
    fuzz_json(response)
    assert response.status_code == 200, response.get_data(as_text=True)
    client = redis.Redis.from_url(fuzz_app.extensions["relay"].settings.redis_url)
    try:
        event = stored_event(client, response.headers["X-Relay-Event-Id"])
    finally:
        client.close()
    task_id = pushed.get("taskId")
    if isinstance(task_id, str) and task_id.strip() and len(task_id) <= 256:
        assert event["type"] in ("task.created", "task.updated")
        assert event["task"]["key"] == event["task"]["id"] == task_id
        assert event["task"]["by_relay"] is (pushed.get("operatorUnionId") == RELAY)
    else:
        assert event["type"] == "custom" and event["task"] is None
