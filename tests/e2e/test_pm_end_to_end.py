"""A DingTalk group assigns a task by @mention: through the real receiver, a real
worker and scheduler, to a loopback DingTalk to-do API; the confirmation goes back
into the group through the message's session webhook, as a chained delivery."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.intake.sources.dingtalk_robot import sample_message
from relay.state import keys
from tests.conftest import wait_for
from tests.pm.dingtalk_fake import APP_KEY, APP_SECRET, OPERATOR, FakeDingTalkTodo

ROBOT_SECRET = "robot-secret-for-the-e2e-test-0123456789"


class Sessions:
    """DingTalk's session webhook: what the robot posted back into the group."""

    def __init__(self, server: HTTPServer) -> None:
        self.posted: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.url = server.url_for("/robot/sendBySession?session=s1")
        server.expect_request("/robot/sendBySession", method="POST").respond_with_handler(
            self.handle
        )

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.posted.append(json.loads(request.get_data()))
        return Response(json.dumps({"errcode": 0, "errmsg": "ok"}), mimetype="application/json")


def test_a_dingtalk_message_becomes_one_todo_for_the_mentioned_person_and_a_reply(
    httpserver: HTTPServer,
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    redis_client: redis.Redis,
) -> None:
    todo = FakeDingTalkTodo(httpserver, users={OPERATOR, "union_zhangsan"})
    sessions = Sessions(httpserver)
    base = httpserver.url_for("").rstrip("/")
    config = {
        "sources": [
            {"id": "dt", "kind": "dingtalk_robot", "app_secret": ROBOT_SECRET,
             "session_hosts": [base]},
        ],
        "targets": [
            {"id": "todo", "kind": "dingtalk_todo", "app_key": APP_KEY,
             "app_secret": APP_SECRET, "operator": OPERATOR, "api_base": base,
             "allow_private": True, "timezone": "Asia/Shanghai",
             "confirm": {"target": "answer"}},
            {"id": "answer", "kind": "dingtalk_app", "mode": "reply", "msgtype": "text",
             "allow_private": True, "session_hosts": ["127.0.0.1", "localhost"]},
        ],
        "routes": [{"source": "dt", "when": {"mentions_bot": True}, "targets": ["todo"]}],
        "people": {"zhangsan": {"name": "张三", "dingtalk": "staff_zs",
                                "dingtalk_union": "union_zhangsan"}},
    }  # fmt: skip
    path = write_config(config)
    relay_processes(path)
    client = client_for(path)

    body = sample_message(int(time.time() * 1000))
    bot = body["chatbotUserId"]
    body.update(
        text={"content": "@机器人 任务 修复登录超时 @张三 截止:12-10"},
        atUsers=[{"dingtalkId": bot}, {"dingtalkId": "$:LWCP_v1:$zs", "staffId": "staff_zs"}],
        isInAtList=True,
        sessionWebhook=sessions.url,
    )
    sample = (
        client.application.extensions["relay"]
        .sources["dt"]
        .sample(json.dumps(body, ensure_ascii=False).encode())
    )
    response = client.post("/hooks/dt", data=sample.body, headers=sample.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]

    wait_for(lambda: sessions.posted, timeout=40)
    [created] = todo.tasks.values()
    assert created["subject"] == "修复登录超时"
    assert created["executorIds"] == ["union_zhangsan"]
    assert created["dueTime"] > 0
    [posted] = sessions.posted
    assert "修复登录超时" in posted["text"]["content"]
    assert "已创建" in posted["text"]["content"]

    # both deliveries (the task and its confirmation) are recorded and delivered
    ids = {i.decode() for i in redis_client.smembers(keys.event_deliveries(event_id))}
    assert len(ids) == 2
    statuses = {redis_client.hget(keys.delivery(i), "status") for i in ids}
    assert statuses == {b"delivered"}
    # the event shows its task
    links = redis_client.hgetall(keys.event_tasks(event_id))
    assert json.loads(links[b"todo"])["id"] == next(iter(todo.tasks))
