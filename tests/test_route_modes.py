"""Shadow and test routes end to end: the real receiver, a real worker and scheduler, and
loopback HTTP servers standing in for the chat platforms.

One event matches three routes: a live one to a webhook sink, a shadow one to a DingTalk
robot whose URL carries its access_token, and a test one whose test target replaces the
robot. The robot must receive nothing, its delivery must hold the exact request it would
have received with the token and the signature masked, and the token must appear nowhere
an operator can look: Redis, the API, the dashboard.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer

from relay.state import keys
from relay.state.apikeys import ApiKeys
from tests.conftest import TEST_SECRET, Sink, wait_for
from tests.pipeline_support import EVENT, all_delivered, signed_post

pytestmark = pytest.mark.timeout(120)

TOKEN = "dt0ken7c1a9e5b3f8d2a6c4e0b7f9a1d3c5e"  # the robot's access_token: never to be seen
ROBOT_SECRET = "SECa5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b7"


def route_config(sink: Sink, server: HTTPServer) -> dict[str, Any]:
    robot_url = server.url_for("/robot/send") + f"?access_token={TOKEN}"
    return {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": [
            {"id": "sink", "kind": "webhook", "url": sink.url, "allow_private": True},
            {
                "id": "robot",
                "kind": "dingtalk_robot",
                "url": robot_url,
                "secret": ROBOT_SECRET,
                "allow_private": True,
            },
            {
                "id": "test_group",
                "kind": "webhook",
                "url": server.url_for("/test-group"),
                "allow_private": True,
            },
        ],
        "routes": [
            {"source": "ops", "targets": ["sink"]},
            {"source": "ops", "mode": "shadow", "targets": ["robot"]},
            {"source": "ops", "mode": "test", "targets": ["robot"], "test_targets": ["test_group"]},
        ],
    }


def redis_text(client: redis.Redis) -> str:
    """Every key and value in Redis as one text, to search for what must not be there."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        parts.append(key.decode(errors="replace"))
        if kind == "string":
            parts.append(repr(client.get(key)))
        elif kind == "hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == "list":
            parts.append(repr(client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.append(repr(client.smembers(key)))
        elif kind == "zset":
            parts.append(repr(client.zrange(key, 0, -1)))
        elif kind == "stream":
            parts.append(repr(client.xrange(key)))
    return "\n".join(parts)


@pytest.fixture
def routed(
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    relay_processes: Callable[..., Any],
    httpserver: HTTPServer,
    redis_client: redis.Redis,
) -> Iterator[tuple[Flask, Sink, str]]:
    """The three routes running; one event relayed through all of them."""
    sink = Sink(httpserver, [])
    httpserver.expect_request("/test-group", method="POST").respond_with_data("ok")
    path = write_config(route_config(sink, httpserver))
    app = make_app(path)
    relay_processes(path)
    response = signed_post(app.test_client(), EVENT)
    assert response.status_code == 202, response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]
    wait_for(lambda: all_delivered(redis_client, event_id), timeout=40)
    yield app, sink, event_id


def _deliveries(redis_client: redis.Redis, event_id: str) -> dict[str, dict[str, str]]:
    """The event's delivery records by target."""
    found = {}
    for member in redis_client.smembers(keys.event_deliveries(event_id)):
        fields = redis_client.hgetall(keys.delivery(member.decode()))
        record = {k.decode(): v.decode() for k, v in fields.items()}
        found[record["target"]] = {**record, "id": member.decode()}
    return found


def test_shadow_route_records_the_request_and_sends_nothing(
    routed: tuple[Flask, Sink, str], httpserver: HTTPServer, redis_client: redis.Redis
) -> None:
    _, sink, event_id = routed
    deliveries = _deliveries(redis_client, event_id)
    assert set(deliveries) == {"sink", "robot", "test_group"}
    paths = [request.path for request, _ in httpserver.log]
    assert "/robot/send" not in paths  # the shadow robot was never called
    assert len(sink.arrivals) == 1 and paths.count("/test-group") == 1

    robot = deliveries["robot"]
    assert robot["mode"] == "shadow" and robot["status"] == "delivered"
    assert "mode" not in deliveries["sink"]  # live records stay as they were
    assert deliveries["test_group"]["mode"] == "test"
    [request] = json.loads(robot["captured"])
    assert request["method"] == "POST"
    url = request["url"]
    assert url.startswith(httpserver.url_for("/robot/send") + "?access_token=[redacted]&")
    assert "&timestamp=" in url and url.endswith("&sign=[redacted]")
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["content-type"].startswith("application/json")
    assert headers["user-agent"].startswith("group-relay/")
    body = json.loads(request["body"])
    assert body["msgtype"] == "markdown" and "hi" in body["markdown"]["text"]
    assert request["size"] == len(request["body"].encode())

    [attempt] = [json.loads(a) for a in redis_client.lrange(keys.attempts(robot["id"]), 0, -1)]
    assert attempt["outcome"] == "delivered" and '"dry_run":true' in attempt["response"]

    dumped = redis_text(redis_client)
    assert TOKEN not in dumped and ROBOT_SECRET not in dumped


def test_api_and_dashboard_show_shadow_deliveries_beside_real_ones(
    routed: tuple[Flask, Sink, str], redis_client: redis.Redis
) -> None:
    app, _, event_id = routed
    _, token = ApiKeys(redis_client).create("reader", "read")
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}

    def api(path: str, **query: str) -> Any:
        response = client.get("/api/v1" + path, headers=auth, query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert TOKEN not in response.get_data(as_text=True)
        return response.get_json()

    event = api(f"/events/{event_id}")
    modes = {d["target"]: d["mode"] for d in event["deliveries"]}
    assert modes == {"sink": "live", "robot": "shadow", "test_group": "test"}
    [robot] = [d for d in event["deliveries"] if d["target"] == "robot"]
    assert "access_token=[redacted]" in robot["captured"][0]["url"]
    assert all(d["captured"] is None for d in event["deliveries"] if d["target"] != "robot")

    shadow = api("/deliveries", mode="shadow")["items"]
    assert [(d["target"], d["mode"]) for d in shadow] == [("robot", "shadow")]
    detail = api(f"/deliveries/{shadow[0]['id']}")
    assert detail["captured"][0]["method"] == "POST"
    live = api("/deliveries", mode="live")["items"]
    assert [d["target"] for d in live] == ["sink"]
    refused = client.get("/api/v1/deliveries", headers=auth, query_string={"mode": "dry"})
    assert refused.status_code == 400 and refused.get_json()["error"] == "invalid_parameter"

    page = client.get("/dashboard/login")
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    login = client.post("/dashboard/login", data={"key": token, "csrf_token": csrf})
    assert login.status_code == 302
    html = client.get(f"/dashboard/events/{event_id}").get_data(as_text=True)
    assert "shadow · not sent" in html and "What it would have sent" in html
    assert "access_token=[redacted]&amp;timestamp=" in html
    listing = client.get("/dashboard/deliveries", query_string={"mode": "shadow"})
    text = listing.get_data(as_text=True)
    assert listing.status_code == 200 and "shadow · not sent" in text
    assert shadow[0]["id"] in text and "test_group" not in text.split("<tbody>")[1]
    for shown in (html, text):
        assert TOKEN not in shown and ROBOT_SECRET not in shown
    bad = client.get("/dashboard/deliveries", query_string={"mode": "dry"})
    assert bad.status_code == 400 and "mode must be one of" in bad.get_data(as_text=True)
