"""Two-way sync, the whole loop, for Feishu Tasks and DingTalk to-dos: a chat message
creates the task, the tool's events for the relay's own changes come back and are not
told, and a change a person makes in the tool is told once where the task was born.

Both tools' events say little (which task, rarely what or who), so what is told is
the default template's "someone"; the relay's own changes are known by the counts it
kept before making them. Requests are sealed and signed here with ``hashlib`` and
``cryptography`` directly (DingTalk's with ``MsgCrypt``, checked against the official
vectors in ``tests/intake/sources/test_msgcrypt.py``), and go through the real
receiver, real workers and scheduler, to loopback fakes of the tools and chats.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from relay.intake.sources.dingtalk_robot import sample_message
from relay.intake.sources.msgcrypt import MsgCrypt
from relay.state import keys
from relay.templates import render
from tests.conftest import wait_for
from tests.pm import dingtalk_fake
from tests.pm.dingtalk_fake import OPERATOR, FakeDingTalkTodo, FakeGroupRobot
from tests.pm.feishu_fake import APP_ID, APP_SECRET, FakeFeishuTasks, FakeIm
from workers.pm.updates import DEFAULT_TEMPLATE, summarise

COALESCE = "2s"  # wide enough that a few posts in a row land in one window
_stamps = itertools.count(int(time.time() * 1000))


def delivered(redis_client: redis.Redis, event_id: str) -> bool:
    ids = redis_client.smembers(keys.event_deliveries(event_id))
    return bool(ids) and all(
        redis_client.hget(keys.delivery(i.decode()), "status") == b"delivered" for i in ids
    )


def fanned_out(redis_client: redis.Redis, event_id: str) -> bool:
    status = redis_client.hget(keys.event(event_id), "status")
    return status in (b"routed", b"unrouted")


def assert_echoes(redis_client: redis.Redis, event_ids: list[str], tool: str, key: str) -> None:
    """Each event was fanned out, made no delivery, and is still linked to its task."""
    for event_id in event_ids:
        assert wait_for(partial(fanned_out, redis_client, event_id), timeout=20)
        assert not redis_client.smembers(keys.event_deliveries(event_id)), event_id
        linked = json.loads(redis_client.hget(keys.event_tasks(event_id), tool) or b"{}")
        assert linked.get("key") == key, event_id


def leaders(redis_client: redis.Redis, event_ids: list[str]) -> set[bytes]:
    return {m for e in event_ids for m in redis_client.smembers(keys.event_deliveries(e))}


# -- Feishu: a thread, Feishu Tasks, task events on the same app's event URL -----------------

VERIFY = "feishu-verification-token-e2e"
ENC_KEY = "e2eFeishuEncryptKey0123"
BOT = "ou_bot0000000000000000000000000000"
ADA = "ou_7d8a6e6df7621556ce0d21922b676706"
GRACE = "ou_84aad35d084aa403a838cf73ee18467"
CHAT = "oc_5ad11d72b830411d72b836c20"


def feishu_config(base: str) -> dict[str, Any]:
    return {
        "sources": [{"id": "team", "kind": "feishu", "verification_token": VERIFY,
                     "encrypt_key": ENC_KEY, "app_id": APP_ID, "bot_open_id": BOT}],
        "targets": [
            {"id": "tasks", "kind": "feishu_task", "app_id": APP_ID, "app_secret": APP_SECRET,
             "api_base": base, "allow_private": True, "timeout": "2s",
             "confirm": {"target": "thread", "on": ["created"]},
             "updates": {"coalesce": COALESCE}},
            {"id": "thread", "kind": "feishu_app", "app_id": APP_ID, "app_secret": APP_SECRET,
             "api_base": base, "mode": "reply", "allow_private": True},
        ],
        # the task events arrive on the same source: only messages are commands
        "routes": [{"source": "team", "when": {"type": ["message.created"]},
                    "targets": ["tasks"]}],
        "people": {"ada": {"name": "Ada", "feishu": ADA}},
    }  # fmt: skip


def envelope(event_type: str, event: dict[str, Any]) -> dict[str, Any]:
    """A v2 event as Feishu sends it, each with its own id and a later time."""
    return {
        "schema": "2.0",
        "header": {
            "event_id": uuid.uuid4().hex,
            "event_type": event_type,
            "create_time": str(next(_stamps)),
            "token": VERIFY,
            "app_id": APP_ID,
            "tenant_key": "2ca1d211f64f6438",
        },
        "event": event,
    }


def chat(text: str, *, root: str = "") -> dict[str, Any]:
    """Grace's group text message; ``@_user_1`` is the bot, ``@_user_2`` Ada. Shapes of
    https://open.feishu.cn/document/uAjLw4CM/ukTMukTMukTM/reference/im-v1/message/events/receive"""
    now = str(next(_stamps))
    mentions: list[dict[str, Any]] = [
        {"key": "@_user_1", "id": {"open_id": BOT}, "name": "relay", "tenant_key": "t"},
        {"key": "@_user_2", "id": {"open_id": ADA}, "name": "Ada", "tenant_key": "t"},
    ]
    return envelope(
        "im.message.receive_v1",
        {
            "sender": {"sender_id": {"open_id": GRACE}, "sender_type": "user"},
            "message": {
                "message_id": f"om_{uuid.uuid4().hex}",
                "root_id": root,
                "parent_id": root,
                "create_time": now,
                "chat_id": CHAT,
                "chat_type": "group",
                "message_type": "text",
                "content": json.dumps({"text": text}),
                "mentions": [m for m in mentions if m["key"] in text],
            },
        },
    )


def feishu_post(client: FlaskClient, payload: dict[str, Any]) -> str:
    """POST ``payload`` encrypted and signed as Feishu does with an Encrypt Key: AES-256-CBC
    under SHA-256 of the key, and ``X-Lark-Signature`` = SHA-256 of timestamp, nonce, key
    and raw body. https://open.feishu.cn/document/ukTMukTMukTM/uYDNxYjL2QTM24iN0EjN/event-subscription-configure-/encrypt-key-encryption-configuration-case"""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(json.dumps(payload).encode()) + padder.finalize()
    iv = os.urandom(16)
    cipher = Cipher(algorithms.AES(hashlib.sha256(ENC_KEY.encode()).digest()), modes.CBC(iv))
    sealed = iv + cipher.encryptor().update(padded)
    body = json.dumps({"encrypt": base64.b64encode(sealed).decode()}).encode()
    stamp, nonce = str(int(time.time())), uuid.uuid4().hex
    response = client.post(
        "/hooks/team",
        data=body,
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "X-Lark-Request-Timestamp": stamp,
            "X-Lark-Request-Nonce": nonce,
            "X-Lark-Signature": hashlib.sha256(
                (stamp + nonce + ENC_KEY).encode() + body
            ).hexdigest(),
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert "duplicate" not in answer
    return str(answer["event_id"])


def completed(guid: str, obj_type: int) -> dict[str, Any]:
    """``task.task.updated_v1`` (5 completed, 6 un-completed), as in the example of
    https://open.feishu.cn/document/server-docs/task-v1/task/events/updated"""
    return envelope("task.task.updated_v1", {"task_id": guid, "obj_type": obj_type})


def commented(guid: str, comment_id: str) -> dict[str, Any]:
    """``task.task.comment.updated_v1`` for a new comment (obj_type 1): ids, no text."""
    event = {"task_id": guid, "comment_id": comment_id, "parent_id": "", "obj_type": 1}
    return envelope("task.task.comment.updated_v1", event)


def changed(guid: str, *commits: str) -> dict[str, Any]:
    """``task.task.update_user_access_v2``: the task and the kinds of change made."""
    return envelope("task.task.update_user_access_v2", {"task_guid": guid, "event_types": commits})


def texts(im: FakeIm) -> list[str]:
    return [json.loads(sent["content"])["text"] for sent in im.sent]


def test_feishu_task_changes_reach_the_thread_once_and_the_relays_own_never_echo(
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    feishu = FakeFeishuTasks(threaded_httpserver, users={ADA})
    im = FakeIm(threaded_httpserver, feishu.auth)  # one app: tasks and messages
    path = write_config(feishu_config(feishu.base))
    relay_processes(path)
    client = client_for(path)

    first = chat("@_user_1 task Fix the login timeout @_user_2")
    root = first["event"]["message"]["message_id"]
    created = feishu_post(client, first)
    wait_for(lambda: len(im.sent) == 1, timeout=40)
    [task] = feishu.tasks.values()
    guid, code = task["guid"], task["task_id"]  # the relay knows it by its code
    assert task["summary"] == "Fix the login timeout"
    assert task["members"] == [{"id": ADA, "type": "user", "role": "assignee"}]
    assert im.sent[0]["path"] == f"/open-apis/im/v1/messages/{root}/reply"
    assert wait_for(lambda: delivered(redis_client, created), timeout=20)

    # Feishu reports the creation the relay made: told by the confirmation already
    echoes = [feishu_post(client, changed(guid, "task_create"))]
    # ``done`` in the thread completes the task and comments (with the relay's marker)
    closing = feishu_post(client, chat("done", root=root))
    assert wait_for(lambda: delivered(redis_client, closing), timeout=40)
    assert feishu.tasks[guid]["status"] == "done"
    [comment] = feishu.comments
    assert "group-relay:" in comment["content"]
    # ... and Feishu reports both: the relay's own, so nothing is told
    echoes.append(feishu_post(client, completed(guid, 5)))
    echoes.append(feishu_post(client, commented(guid, comment["id"])))
    assert_echoes(redis_client, echoes, "tasks", code)
    assert len(im.sent) == 1

    # a person un-completes it in Feishu: the thread hears it once
    feishu.set_completed(guid, False)
    reopened = feishu_post(client, completed(guid, 6))
    wait_for(lambda: len(im.sent) == 2, timeout=40)
    assert wait_for(lambda: delivered(redis_client, reopened), timeout=20)
    assert texts(im)[1] == f"{code} reopened by someone [todo]"
    assert im.sent[1]["path"] == f"/open-apis/im/v1/messages/{root}/reply"

    # a person renames it, completes it and comments: one message tells all three
    feishu.set_completed(guid, True)
    burst = [
        feishu_post(client, changed(guid, "task_summary_update")),
        feishu_post(client, completed(guid, 5)),
        feishu_post(client, commented(guid, "7197020628442939999")),
    ]
    wait_for(lambda: len(im.sent) == 3, timeout=40)
    for event_id in burst:
        assert wait_for(partial(delivered, redis_client, event_id), timeout=20)
    told = texts(im)[2].splitlines()
    assert told[:2] == [f"{code} updated by someone (title)", f"{code} closed by someone [done]"]
    # Feishu sends the comment's id, not its text (see the test below for what follows)
    assert len(told) == 3 and told[2].startswith(f"someone commented on {code}")
    assert im.sent[2]["path"] == f"/open-apis/im/v1/messages/{root}/reply"
    assert len(leaders(redis_client, burst)) == 1
    assert len(im.sent) == 3


@pytest.mark.parametrize(
    ("language", "expected"),
    [("en", "someone commented on t100001"), ("zh", "有人 评论了 t100001")],
)
def test_a_comment_told_without_its_text_says_no_none(language: str, expected: str) -> None:
    """What the burst above tells for Feishu's comment event (and any tool's event that
    names a comment but not its text)."""
    change = {
        "action": "commented",
        "key": "t100001",
        "url": None,
        "title": None,
        "status": None,
        "actor": None,
        "assignees": [],
        "comment": None,
        "fields": ["comment"],
        "at": "2026-12-06T00:00:00+00:00",
        "event_id": "e1",
    }
    told = render(DEFAULT_TEMPLATE, updates=summarise([change]), task=change, language=language)
    assert told.rstrip("：: ") == expected and "None" not in told


# -- DingTalk: a robot's group, to-dos, to-do events on the app's event subscription ----------

ROBOT_SECRET = "robot-secret-for-the-e2e-test-0123456789"
EVENT_TOKEN = "mryue"
# the AES key of DingTalk's own example (43 characters)
AES_KEY = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7"
GROUP = sample_message(0)["conversationId"]
ZHANGSAN = "union_zhangsan"
_nonces = itertools.count()


def dingtalk_config(base: str) -> dict[str, Any]:
    app = {"app_key": dingtalk_fake.APP_KEY, "app_secret": dingtalk_fake.APP_SECRET,
           "api_base": base, "allow_private": True}  # fmt: skip
    return {
        "sources": [
            {"id": "dt", "kind": "dingtalk_robot", "app_secret": ROBOT_SECRET},
            {"id": "dte", "kind": "dingtalk_events", "token": EVENT_TOKEN, "aes_key": AES_KEY,
             "owner_key": dingtalk_fake.APP_KEY, "relay_accounts": [OPERATOR]},
        ],
        "targets": [
            {"id": "todo", "kind": "dingtalk_todo", **app, "operator": OPERATOR,
             "timezone": "Asia/Shanghai", "confirm": {"target": "group", "on": ["created"]},
             "updates": {"coalesce": COALESCE}},
            # DingTalk has no threads and a sessionWebhook expires: the group, by its id
            {"id": "group", "kind": "dingtalk_app", "mode": "group", **app,
             "open_conversation_id": GROUP, "msgtype": "text"},
        ],
        "routes": [{"source": "dt", "when": {"mentions_bot": True}, "targets": ["todo"]}],
        "people": {"zhangsan": {"name": "张三", "dingtalk": "staff_zs",
                                "dingtalk_union": ZHANGSAN}},
    }  # fmt: skip


def robot_post(client: FlaskClient, text: str, *, mention: bool = False) -> str:
    """A group message @-ing the robot, signed as DingTalk signs its callbacks: headers
    ``timestamp`` (ms) and ``sign`` = base64 HMAC-SHA256 of "timestamp\\nsecret" under
    the app secret."""
    now = int(time.time() * 1000)
    body = sample_message(now)
    bot = body["chatbotUserId"]
    at = [{"dingtalkId": "$:LWCP_v1:$zs", "staffId": "staff_zs"}] if mention else []
    body.update(text={"content": text}, atUsers=[{"dingtalkId": bot}, *at], isInAtList=True)
    stamp = str(now)
    digest = hmac.new(ROBOT_SECRET.encode(), f"{stamp}\n{ROBOT_SECRET}".encode(), hashlib.sha256)
    response = client.post(
        "/hooks/dt",
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "timestamp": stamp,
            "sign": base64.b64encode(digest.digest()).decode(),
        },
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(response.get_json()["event_id"])


def todo_push(client: FlaskClient, event_type: str, task_id: str) -> str:
    """A to-do event as DingTalk's HTTP push sends it: the shape of the examples of
    https://open.dingtalk.com/document/development/event-todo-task-update, sealed for the
    app key and signed (``msg_signature`` = SHA-1 of the sorted token, timestamp, nonce
    and ciphertext)."""
    stamp = next(_stamps)
    event = {
        "EventType": event_type,
        "EventTime": stamp,
        "CorpId": "dingsamplecorp",
        "BizId": str(stamp),
        "eventId": uuid.uuid4().hex,
        "bizTag": "certify_todo",
        "taskId": task_id,
        "UnionIdList": [OPERATOR, ZHANGSAN],
    }
    sealed = MsgCrypt(AES_KEY, dingtalk_fake.APP_KEY).encrypt(json.dumps(event).encode())
    nonce = f"n{next(_nonces)}"
    parts = sorted([EVENT_TOKEN, str(stamp), nonce, sealed])
    query = {
        "msg_signature": hashlib.sha1("".join(parts).encode()).hexdigest(),
        "timestamp": str(stamp),
        "nonce": nonce,
    }
    response = client.post(
        "/hooks/dte",
        query_string=query,
        data=json.dumps({"encrypt": sealed}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = MsgCrypt(AES_KEY, dingtalk_fake.APP_KEY).decrypt(response.get_json()["encrypt"])
    assert answer == b"success"
    return str(response.headers["X-Relay-Event-Id"])


def said(robot: FakeGroupRobot) -> list[str]:
    return [sent["msgParam"]["content"] for sent in robot.sent]


@pytest.fixture
def dingtalk(
    threaded_httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> tuple[FlaskClient, FakeDingTalkTodo, FakeGroupRobot, str]:
    """The relay running, and a to-do made from the group: its confirmation told there."""
    todo = FakeDingTalkTodo(threaded_httpserver, users={OPERATOR, ZHANGSAN})
    robot = FakeGroupRobot(threaded_httpserver, todo, {GROUP})
    path = write_config(dingtalk_config(todo.base))
    relay_processes(path)
    client = client_for(path)
    created = robot_post(client, "任务 修复登录超时 @张三", mention=True)
    wait_for(lambda: len(robot.sent) == 1, timeout=40)
    [task] = todo.tasks.values()
    assert task["subject"] == "修复登录超时" and task["executorIds"] == [ZHANGSAN]
    assert robot.sent[0]["openConversationId"] == GROUP
    assert "修复登录超时" in said(robot)[0]
    assert wait_for(lambda: delivered(redis_client, created), timeout=20)
    return client, todo, robot, str(task["id"])


def test_dingtalk_todo_changes_by_a_person_reach_the_group_once(
    dingtalk: tuple[FlaskClient, FakeDingTalkTodo, FakeGroupRobot, str],
    redis_client: redis.Redis,
) -> None:
    client, todo, robot, task_id = dingtalk

    # DingTalk reports the creation the relay made: told by the confirmation already
    assert_echoes(redis_client, [todo_push(client, "todo_task_create", task_id)], "todo", task_id)
    assert len(robot.sent) == 1

    # a person ticks the to-do in DingTalk; nothing of the relay's is pending: told once
    todo.set_done(task_id, True)
    ticked = todo_push(client, "todo_task_update", task_id)
    wait_for(lambda: len(robot.sent) == 2, timeout=40)
    assert wait_for(lambda: delivered(redis_client, ticked), timeout=20)
    assert robot.sent[1]["openConversationId"] == GROUP
    assert said(robot)[1] == f"{task_id} 已由 有人 更新"  # the task was asked for in Chinese

    # a person edits it twice in a row: one message
    burst = [todo_push(client, "todo_task_update", task_id) for _ in range(2)]
    wait_for(lambda: len(robot.sent) == 3, timeout=40)
    for event_id in burst:
        assert wait_for(partial(delivered, redis_client, event_id), timeout=20)
    assert said(robot)[2] == f"{task_id} 已由 有人 更新"
    assert len(leaders(redis_client, burst)) == 1
    assert len(robot.sent) == 3


def test_dingtalk_todo_closed_from_the_group_comes_back_and_is_not_told(
    dingtalk: tuple[FlaskClient, FakeDingTalkTodo, FakeGroupRobot, str],
    redis_client: redis.Redis,
) -> None:
    client, todo, robot, task_id = dingtalk
    # robot callbacks carry no reply reference: the group names the to-do
    closing = robot_post(client, f"完成 {task_id}")
    assert wait_for(lambda: delivered(redis_client, closing), timeout=40)
    assert todo.tasks[task_id]["done"] is True
    assert "group-relay:" in todo.tasks[task_id]["description"]
    # the close and the comment (appended to the description) are two updates, neither
    # saying what changed: both the relay's own
    echoes = [todo_push(client, "todo_task_update", task_id) for _ in range(2)]
    assert_echoes(redis_client, echoes, "todo", task_id)
    assert len(robot.sent) == 1
