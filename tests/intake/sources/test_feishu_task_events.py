"""``feishu`` source, task events: Task v1 and v2 changes become ``task.*`` events.

Requests are sealed and signed here with ``cryptography``/``hashlib`` directly and
posted to the real receiver on the suite's Redis, so the whole path is exercised: the
signature, decryption, token and app checks, the mapping and dedupe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st

from relay.state import keys
from tests.intake.sources.support import (
    FUZZ,
    any_json,
    fuzz_json,
    post,
    signed_sample,
    stored_event,
)
from workers.pm.feishu_task import _task_ref

# The example of "Task information changes" (task.task.updated_v1), verbatim:
# https://open.feishu.cn/document/server-docs/task-v1/task/events/updated
# (also open.larkoffice.com/document/uAjLw4CM/ukTMukTMukTM/reference/task-v1/task/events/updated)
OFFICIAL_UPDATED: dict[str, Any] = {
    "schema": "2.0",
    "header": {
        "event_id": "5e3702a84e847582be8db7fb73283c02",
        "event_type": "task.task.updated_v1",
        "create_time": "1608725989000",
        "token": "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV",
        "app_id": "cli_9f5343c580712544",
        "tenant_key": "2ca1d211f64f6438",
    },
    "event": {"task_id": "626cf808-4c26-4f27-9da8-01f2eb73d717", "obj_type": 1},
}
OFFICIAL_TOKEN: str = OFFICIAL_UPDATED["header"]["token"]
OFFICIAL_APP: str = OFFICIAL_UPDATED["header"]["app_id"]

TOKEN = "v3rification-T0ken"
ENC_KEY = "kx8Jm2Qp0sLw9eRt"
APP_ID = "cli_a1b2c3d4e5f60708"
GUID = "83912691-2e43-47fc-94a4-d512e03984fa"
RELAY = "ou_relay0000000000000000000000001"
PERSON = "ou_person000000000000000000000001"
SOURCES: list[dict[str, Any]] = [
    {
        "id": "fs",
        "kind": "feishu",
        "verification_token": TOKEN,
        "encrypt_key": ENC_KEY,
        "app_id": APP_ID,
        "relay_accounts": [RELAY],
    },
    {
        "id": "official",
        "kind": "feishu",
        "verification_token": OFFICIAL_TOKEN,
        "encrypt_key": ENC_KEY,
        "app_id": OFFICIAL_APP,
    },
    {"id": "plain", "kind": "feishu", "verification_token": TOKEN},
]


# -- building requests independently of the module ----------------------------------------


def seal(plaintext: bytes) -> str:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    iv = os.urandom(16)
    key = hashlib.sha256(ENC_KEY.encode()).digest()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(padded) + enc.finalize()).decode()


def sealed(payload: dict[str, Any], nonce: str = "n0nce") -> tuple[bytes, dict[str, str]]:
    """An encrypted, signed request as Feishu sends it with an Encrypt Key."""
    body = json.dumps({"encrypt": seal(json.dumps(payload).encode())}).encode()
    stamp = str(int(time.time()))
    digest = hashlib.sha256((stamp + nonce + ENC_KEY).encode() + body).hexdigest()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Lark-Request-Timestamp": stamp,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": digest,
    }
    return body, headers


def v2(event_type: str, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "header": {
            "event_id": event_id or uuid.uuid4().hex,
            "event_type": event_type,
            "create_time": "1700000000123",
            "token": TOKEN,
            "app_id": APP_ID,
            "tenant_key": "2ca1d211f64f6438",
        },
        "event": event,
    }


def accepted(
    client: FlaskClient, redis_client: redis.Redis, payload: dict[str, Any], source_id: str = "fs"
) -> dict[str, Any]:
    """Post ``payload`` sealed and signed, expect Feishu's 200 and return the stored event."""
    response = post(client, source_id, *sealed(payload))
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["msg"] == "success" and "duplicate" not in answer
    return stored_event(redis_client, answer["event_id"])


def assert_task(
    event: dict[str, Any], type_: str, *, changes: list[str], status: str | None = None
) -> dict[str, Any]:
    assert event["type"] == type_, event
    task = event["task"]
    assert task["tool"] == "feishu_task"
    assert task["changes"] == changes and task["status"] == status
    assert task["title"] is None and task["url"] is None and task["comment"] is None
    return dict(task)


# -- the official example --------------------------------------------------------------------


def test_official_updated_example(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = accepted(client, redis_client, OFFICIAL_UPDATED, "official")
    task = assert_task(event, "task.updated", changes=["details"])
    assert task["key"] == task["id"] == "626cf808-4c26-4f27-9da8-01f2eb73d717"
    assert task["actor"] is None and task["by_relay"] is False
    assert event["occurred_at"].startswith("2020-12-23T12:19:49")
    assert event["text"] == "626cf808-4c26-4f27-9da8-01f2eb73d717 updated"
    assert event["raw"]["event"] == OFFICIAL_UPDATED["event"]
    assert event["raw"]["header"]["token"] != OFFICIAL_TOKEN  # the secret is not stored
    assert redis_client.get(keys.dedupe("official", "5e3702a84e847582be8db7fb73283c02"))


def test_the_id_is_what_the_task_target_records(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """The ``feishu_task`` target records ``key`` = the code Feishu shows and ``id`` = the
    guid; the worker looks a task up by key, then by id, so the id must be the guid."""
    recorded = _task_ref({"task": {"guid": GUID, "task_id": "t6272302"}})
    event = accepted(client, redis_client, v2("task.task.updated_v1", {"task_id": GUID}))
    assert event["task"]["id"] == recorded.id == GUID


# -- task.task.updated_v1 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj_type", "type_", "changes", "status"),
    [
        (1, "task.updated", ["details"], None),
        (2, "task.assigned", ["assignees"], None),
        (3, "task.updated", ["followers"], None),
        (4, "task.updated", ["reminders"], None),
        (5, "task.closed", ["status"], "done"),
        (6, "task.reopened", ["status"], "todo"),
        (7, "task.updated", ["deleted"], "deleted"),
        (99, "task.updated", [], None),
        ("5", "task.updated", [], None),  # a string is not the documented int
        (True, "task.updated", [], None),  # nor is a boolean, though True == 1
        (None, "task.updated", [], None),
        ([5], "task.updated", [], None),
    ],
)
def test_updated_v1(
    client: FlaskClient,
    redis_client: redis.Redis,
    obj_type: Any,
    type_: str,
    changes: list[str],
    status: str | None,
) -> None:
    payload = v2("task.task.updated_v1", {"task_id": GUID, "obj_type": obj_type})
    task = assert_task(
        accepted(client, redis_client, payload), type_, changes=changes, status=status
    )
    assert task["key"] == task["id"] == GUID


# -- task.task.comment.updated_v1 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj_type", "type_"),
    [(1, "task.commented"), (2, "task.commented"), (3, "task.updated"), (4, "task.updated")],
)
def test_comment_updated_v1(
    client: FlaskClient, redis_client: redis.Redis, obj_type: int, type_: str
) -> None:
    """Created and replied comments are ``task.commented``; edits and deletions updates.
    The event carries the comment's id, not its text."""
    event = {
        "task_id": GUID,
        "comment_id": "6937231762296684564",
        "parent_id": "",
        "obj_type": obj_type,
    }
    stored = accepted(client, redis_client, v2("task.task.comment.updated_v1", event))
    task = assert_task(stored, type_, changes=["comment"])
    assert task["key"] == GUID and stored["raw"]["event"]["comment_id"] == "6937231762296684564"


# -- task.task.update_tenant_v1 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("object_type", "action", "type_", "changes", "status"),
    [
        ("task", "create", "task.created", [], None),
        ("task", "update", "task.updated", [], None),
        ("task", "delete", "task.updated", ["deleted"], "deleted"),
        ("collaborator", "create", "task.assigned", ["assignees"], None),
        ("collaborator", "delete", "task.assigned", ["assignees"], None),
        ("follower", "update", "task.updated", ["followers"], None),
        ("reminder", "update", "task.updated", [], None),
        (["task"], "create", "task.updated", [], None),
    ],
)
def test_update_tenant_v1(
    client: FlaskClient,
    redis_client: redis.Redis,
    object_type: Any,
    action: str,
    type_: str,
    changes: list[str],
    status: str | None,
) -> None:
    event = {
        "user_id_list": {"user_id_list": [{"open_id": PERSON, "union_id": "on_x", "user_id": "x"}]},
        "task_id": GUID,
        "object_type": object_type,
        "event_type": action,
    }
    stored = accepted(client, redis_client, v2("task.task.update_tenant_v1", event))
    task = assert_task(stored, type_, changes=changes, status=status)
    # the users the change concerns are not who made it, nor the assignees
    assert task["actor"] is None and task["assignees"] == []


# -- task.task.update_user_access_v2 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("commits", "type_", "changes", "status"),
    [
        (["task_create"], "task.created", [], None),
        (["task_create", "task_assignees_update"], "task.created", [], None),
        (["task_deleted"], "task.updated", ["deleted"], "deleted"),
        (["task_assignees_update"], "task.assigned", ["assignees"], None),
        (
            ["task_summary_update", "task_assignees_update", "task_summary_update"],
            "task.assigned",
            ["title", "assignees"],
            None,
        ),
        # v2 says the completion changed, not which way: an update of the status
        (["task_completed_update"], "task.updated", ["status"], None),
        (
            ["task_desc_update", "task_start_due_update", "task_reminders_update"],
            "task.updated",
            ["description", "due", "reminders"],
            None,
        ),
        (["task_followers_update", "something_new", 7], "task.updated", ["followers"], None),
        ([], "task.updated", [], None),
    ],
)
def test_update_user_access_v2(
    client: FlaskClient,
    redis_client: redis.Redis,
    commits: list[Any],
    type_: str,
    changes: list[str],
    status: str | None,
) -> None:
    event = {"task_guid": GUID, "event_types": commits}
    stored = accepted(client, redis_client, v2("task.task.update_user_access_v2", event))
    task = assert_task(stored, type_, changes=changes, status=status)
    assert task["key"] == task["id"] == GUID


def test_v2_reads_task_guid_not_task_id(client: FlaskClient, redis_client: redis.Redis) -> None:
    event = {"task_id": "t6272302", "task_guid": GUID, "event_types": ["task_summary_update"]}
    stored = accepted(client, redis_client, v2("task.task.update_user_access_v2", event))
    assert stored["task"]["key"] == GUID


# -- events that name no usable task are kept, as custom -----------------------------------------


@pytest.mark.parametrize(
    ("event_type", "event"),
    [
        ("task.task.updated_v1", {"obj_type": 5}),
        ("task.task.updated_v1", {"task_id": "", "obj_type": 5}),
        ("task.task.updated_v1", {"task_id": 12345, "obj_type": 5}),
        ("task.task.updated_v1", {"task_id": "x" * 257, "obj_type": 5}),
        ("task.task.update_user_access_v2", {"task_id": GUID, "event_types": ["task_create"]}),
        ("task.task.comment.updated_v1", {"comment_id": "1", "obj_type": 1}),
    ],
)
def test_task_event_without_a_task_is_custom(
    client: FlaskClient, redis_client: redis.Redis, event_type: str, event: dict[str, Any]
) -> None:
    stored = accepted(client, redis_client, v2(event_type, event))
    assert stored["type"] == "custom" and stored["task"] is None
    assert stored["raw"]["header"]["event_type"] == event_type


def test_other_task_events_are_custom(client: FlaskClient, redis_client: redis.Redis) -> None:
    stored = accepted(client, redis_client, v2("task.tasklist.updated_v2", {"task_id": GUID}))
    assert stored["type"] == "custom" and stored["task"] is None


# -- the actor and echoes ----------------------------------------------------------------------


def test_operator_is_the_actor(client: FlaskClient, redis_client: redis.Redis) -> None:
    """No documented task event names its operator; when one does (as other v2 events do,
    in ``operator_id``), its open_id is the actor and the event's sender."""
    event = {"task_id": GUID, "obj_type": 5, "operator_id": {"open_id": PERSON, "user_id": "u1"}}
    stored = accepted(client, redis_client, v2("task.task.updated_v1", event))
    assert stored["task"]["actor"] == {"id": PERSON, "name": None} == stored["sender"]
    assert stored["task"]["by_relay"] is False


def test_change_by_a_relay_account_is_an_echo(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    event = {"task_id": GUID, "obj_type": 5, "operator_id": {"open_id": RELAY}}
    stored = accepted(client, redis_client, v2("task.task.updated_v1", event))
    assert stored["type"] == "task.closed" and stored["task"]["by_relay"] is True


def test_relay_accounts_are_per_source(client: FlaskClient, redis_client: redis.Redis) -> None:
    payload = v2("task.task.updated_v1", {"task_id": GUID, "operator_id": {"open_id": RELAY}})
    body = json.dumps(payload).encode()
    response = post(client, "plain", body, {"Content-Type": "application/json"})
    assert response.status_code == 200
    stored = stored_event(redis_client, response.get_json()["event_id"])
    assert stored["task"]["by_relay"] is False  # "plain" names no relay accounts


# -- verification still comes first, and resends are dropped --------------------------------------


def test_a_forged_task_event_is_refused(client: FlaskClient, redis_client: redis.Redis) -> None:
    body, headers = sealed(v2("task.task.updated_v1", {"task_id": GUID, "obj_type": 5}))
    headers["X-Lark-Signature"] = "0" * 64
    response = post(client, "fs", body, headers)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_signature"
    assert redis_client.llen(keys.FANOUT_QUEUE) == 0


def test_a_task_event_of_another_app_is_refused(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    payload = v2("task.task.updated_v1", {"task_id": GUID, "obj_type": 5})
    payload["header"]["app_id"] = "cli_other"
    response = post(client, "fs", *sealed(payload))
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_app_id"


def test_resends_are_duplicates(client: FlaskClient, redis_client: redis.Redis) -> None:
    payload = v2("task.task.updated_v1", {"task_id": GUID, "obj_type": 5})
    first = post(client, "fs", *sealed(payload)).get_json()
    for i in range(2):  # a resend is sealed and signed afresh, with the same event_id
        again = post(client, "fs", *sealed(payload, nonce=f"retry-{i}"))
        assert again.status_code == 200
        assert again.get_json() == {
            "msg": "success",
            "event_id": first["event_id"],
            "duplicate": True,
        }
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    other = post(
        client, "fs", *sealed(v2("task.task.updated_v1", {"task_id": GUID, "obj_type": 6}))
    )
    assert "duplicate" not in other.get_json() and redis_client.llen(keys.FANOUT_QUEUE) == 2


# -- property test: any task event is kept, never refused after verification ----------------------

json_values = any_json(text=12, width=3, leaves=10)
task_ids = st.one_of(st.just(GUID), st.text(max_size=300), json_values)
task_events = st.builds(
    lambda event_type, event: v2(event_type, event),
    st.sampled_from(
        [
            "task.task.updated_v1",
            "task.task.comment.updated_v1",
            "task.task.update_tenant_v1",
            "task.task.update_user_access_v2",
        ]
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "task_id": task_ids,
            "task_guid": task_ids,
            "obj_type": st.one_of(st.integers(-2, 9), json_values),
            "object_type": st.one_of(st.sampled_from(["task", "collaborator"]), json_values),
            "event_type": st.one_of(st.sampled_from(["create", "delete"]), json_values),
            "event_types": st.one_of(
                st.lists(st.sampled_from(["task_create", "task_deleted", "task_assignees_update"])),
                json_values,
            ),
            "operator_id": st.one_of(
                st.fixed_dictionaries({}, optional={"open_id": task_ids}), json_values
            ),
            "comment_id": json_values,
        },
    ),
)


@FUZZ
@given(payload=task_events)
def test_any_task_event_is_kept(
    fuzz_app: Flask, fuzz_client: FlaskClient, payload: dict[str, Any]
) -> None:
    headers, body = signed_sample(fuzz_app, "fs", json.dumps(payload).encode())
    response = fuzz_client.post("/hooks/fs", data=body, headers=headers)
    answer = fuzz_json(response, "event_id")
    assert response.status_code == 200, answer
    redis_client = redis.Redis.from_url(fuzz_app.extensions["relay"].settings.redis_url)
    try:
        stored = stored_event(redis_client, answer["event_id"])
    finally:
        redis_client.close()
    field = "task_guid" if payload["header"]["event_type"].endswith("_v2") else "task_id"
    named = payload["event"].get(field)
    if isinstance(named, str) and 0 < len(named) <= 256:
        assert stored["type"].startswith("task.") and stored["task"]["tool"] == "feishu_task"
        assert stored["task"]["key"] == stored["task"]["id"] == named
    else:
        assert stored["type"] == "custom" and stored["task"] is None
