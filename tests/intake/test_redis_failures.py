"""Redis trouble at intake, the API and the poller: fast 503s, no retried writes, and a
resend after a lost answer is a duplicate, never a second event.

Each test runs its own ``redis-server`` (never the suite's shared one, which these tests
would stop), and where an answer must be lost after the write is applied, a loopback TCP
proxy in front of it that forwards commands but drops the replies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.cli.embedded import EmbeddedRedis
from relay.config.loader import parse_config
from relay.context import WebContext
from relay.intake.poller import Poller, PollRetryLater
from relay.settings import Settings
from relay.state import keys
from relay.state.apikeys import ApiKeys
from relay.state.connection import RedisStalled, caller_client, gate_of, redis_client
from tests.conftest import TEST_SECRET, wait_for
from tests.intake.sources.support import sign_standard_webhook as sign

EVENT = {"type": "message.created", "data": {"group": {"id": "g1"}, "text": "hi"}}
CONFIG = {"sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}]}


class ReplyDroppingProxy:
    """A loopback TCP proxy to Redis; while ``drop_replies`` is set, commands still reach
    Redis (and are applied) but its replies never reach the client: an answer lost."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop_replies = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if not (replies and self.drop_replies.is_set()):
                    sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):  # one side closed: close the pair, as a proxy does
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "own-redis", appendonly=False).start()
    yield server
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
def proxy(own_redis: EmbeddedRedis) -> Iterator[ReplyDroppingProxy]:
    found = ReplyDroppingProxy(own_redis.port)
    yield found
    found.close()


def stall(server: EmbeddedRedis) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)


def resume(server: EmbeddedRedis) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGCONT)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    body: dict[str, Any] = response.get_json()
    return body


# -- the clients ------------------------------------------------------------------------------


def test_callers_get_a_client_without_retries_or_nested_health_checks(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(redis_timeout=1.5)
    kwargs = caller_client(settings).get_connection_kwargs()
    assert kwargs["socket_timeout"] == 1.5 and kwargs["socket_connect_timeout"] == 1.5
    assert kwargs["health_check_interval"] == 0
    assert kwargs["retry"].get_retries() == 0
    runtime = WebContext.build(settings, parse_config(CONFIG))
    assert gate_of(runtime.redis) is not None  # intake, API, dashboard, CLI and poller
    background = redis_client(settings).get_connection_kwargs()
    assert background["retry"].get_retries() == 2 and gate_of(redis_client(settings)) is None


def test_a_stall_costs_one_caller_the_timeout_and_the_rest_nothing(
    own_redis: EmbeddedRedis, make_settings: Callable[..., Settings]
) -> None:
    client = caller_client(make_settings(redis_url=own_redis.url, redis_timeout=0.3))
    check = redis.Redis.from_url(own_redis.url)
    client.ping()
    stall(own_redis)
    with pytest.raises(redis.TimeoutError):
        client.incr("n")  # sent, applied once Redis resumes, answer never read
    with pytest.raises(RedisStalled):
        client.incr("n")  # not sent at all: the callers after the first fail at once
    with pytest.raises(RedisStalled):
        client.get("n")
    resume(own_redis)
    wait_for(lambda: _answers(client), timeout=10)
    assert check.get("n") == b"1"  # the timed-out write was applied once: never retried
    gate = gate_of(client)
    assert gate is not None and not gate.open


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except RedisStalled:
        return False


# -- intake: the answer lost after the write -------------------------------------------------


def test_write_applied_answer_lost_then_the_resend_is_a_duplicate(
    proxy: ReplyDroppingProxy,
    own_redis: EmbeddedRedis,
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
) -> None:
    client = make_app(write_config(CONFIG), redis_url=proxy.url, redis_timeout=0.5).test_client()
    check = redis.Redis.from_url(own_redis.url)
    body = json.dumps(EVENT).encode()
    headers = sign(body, msg_id="msg_lost")
    assert (
        client.post("/hooks/ops", data=body, headers=sign(body, msg_id="warm")).status_code == 202
    )

    proxy.drop_replies.set()
    lost = client.post("/hooks/ops", data=body, headers=headers)
    error = error_of(lost, 503)
    assert error["error"] == "unavailable" and "duplicate" in error["detail"]
    assert int(lost.headers["Retry-After"]) > 0
    events = {e.decode() for e in check.zrange(keys.EVENTS, 0, -1)}
    [stored] = events - {_id_of(check, "warm")}  # the lost answer's event was applied
    assert _id_of(check, "msg_lost") == stored

    proxy.drop_replies.clear()
    resend = wait_for(lambda: _not_503(client.post("/hooks/ops", data=body, headers=headers)))
    assert resend.status_code == 200
    assert resend.get_json() == {"event_id": stored, "duplicate": True}
    assert check.zcard(keys.EVENTS) == 2 and check.llen(keys.FANOUT_QUEUE) == 2  # never twice
    check.close()


def _id_of(check: redis.Redis, msg_id: str) -> str:
    value = check.get(keys.dedupe("ops", msg_id))
    assert value is not None
    return value.decode()


def _not_503(response: Any) -> Any:
    return None if response.status_code == 503 else response


# -- the API and the poller ------------------------------------------------------------------


def test_api_answers_503_while_redis_stalls(
    own_redis: EmbeddedRedis, write_config: Callable[..., Path], make_app: Callable[..., Flask]
) -> None:
    app = make_app(write_config(CONFIG), redis_url=own_redis.url, redis_timeout=0.3)
    runtime: WebContext = app.extensions["relay"]
    _, token = ApiKeys(runtime.redis).create("ops", "read")
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/events", headers=auth).status_code == 200
    stall(own_redis)
    for _ in range(3):  # the first waits for the timeout, the others fail at once
        response = client.get("/api/v1/events", headers=auth)
        error = error_of(response, 503)
        assert error["error"] == "unavailable" and "did not answer within 0.3s" in error["detail"]
        assert int(response.headers["Retry-After"]) > 0
    page = client.get("/dashboard/login")
    assert page.status_code == 503 and "Retry-After" in page.headers
    assert "Redis is unreachable" in page.get_data(as_text=True)
    resume(own_redis)
    wait_for(lambda: client.get("/api/v1/events", headers=auth).status_code == 200, timeout=10)


BOT_TOKEN = "7000000001:AAFD39kkdpWt3ywyRZergyOLMaJhac60qc"


def _update(update_id: int) -> dict[str, Any]:
    chat = {"id": -100777, "title": "Ops", "type": "supergroup"}
    sender = {"id": 42, "is_bot": False, "first_name": "Ada"}
    message = {"message_id": update_id, "from": sender, "chat": chat, "date": 1700000000}
    return {"update_id": update_id, "message": {**message, "text": f"message {update_id}"}}


def test_poller_backs_off_while_redis_stalls_and_queues_each_update_once(
    own_redis: EmbeddedRedis, httpserver: HTTPServer, make_settings: Callable[..., Settings]
) -> None:
    updates = [_update(1)]

    def get_updates(request: Request) -> Response:
        offset = int(request.args.get("offset", "0"))
        batch = [u for u in updates if u["update_id"] >= offset]
        return Response(json.dumps({"ok": True, "result": batch}), content_type="application/json")

    httpserver.expect_request(f"/bot{BOT_TOKEN}/getUpdates").respond_with_handler(get_updates)
    source = {"id": "tg", "kind": "telegram", "bot_token": BOT_TOKEN, "poll_timeout": 1,
              "api_base": httpserver.url_for("/").rstrip("/"), "allow_private": True}  # fmt: skip
    settings = make_settings(redis_url=own_redis.url, redis_timeout=0.3)
    runtime = WebContext.build(settings, parse_config({"sources": [source]}))
    poller = Poller(runtime.intake, "tg", backoff_base=0.05, backoff_cap=0.2)
    check = redis.Redis.from_url(own_redis.url)
    try:
        assert poller.poll_once() == 1  # the intake script is loaded; the offset saved
        updates += [_update(2), _update(3)]
        stall(own_redis)
        with pytest.raises(PollRetryLater) as first:
            poller.poll_once()  # update 2's write is sent; its answer never comes
        with pytest.raises(PollRetryLater) as second:
            poller.poll_once()  # refused at once, without asking Redis
        for info in (first, second):
            assert "unavailable" in info.value.reason and info.value.delay > 0
        assert "moments ago" in second.value.reason
        assert poller.offset == 2  # update 2 not confirmed to Telegram
        resume(own_redis)
        queued = wait_for(lambda: _poll(poller), timeout=10)
        assert queued == [1]  # update 2 was applied after all: now a duplicate; 3 is new
        assert check.zcard(keys.EVENTS) == 3 and check.llen(keys.FANOUT_QUEUE) == 3
        assert check.get(keys.poll_offset("tg")) == b"4"
    finally:
        resume(own_redis)
        poller.close()
        check.close()


def _poll(poller: Poller) -> list[int] | None:
    try:
        return [poller.poll_once()]
    except PollRetryLater:
        return None
