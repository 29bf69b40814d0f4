"""Canary secrets never reach Redis, attempt records, logs, CLI output or error bodies."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.cli import main
from relay.state import keys
from tests.conftest import TEST_SECRET, wait_for
from tests.pipeline_support import EVENT, signed_post


def all_redis_bytes(client: redis.Redis) -> bytes:
    chunks = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            chunks.append(client.get(key) or b"")
        elif kind == b"hash":
            chunks += [k + v for k, v in client.hgetall(key).items()]
        elif kind == b"list":
            items = client.lrange(key, 0, -1)
            chunks += items
            for item in items:  # kombu messages carry a base64 body
                try:
                    chunks.append(base64.b64decode(json.loads(item)["body"]))
                except (ValueError, KeyError, TypeError):
                    pass
        elif kind == b"zset":
            chunks += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"set":
            chunks += list(client.smembers(key))
        chunks.append(key)
    return b"\n".join(chunks)


def test_canary_secrets_stay_out_of_everything(
    write_config: Callable[..., Path],
    client_for: Callable[[Path], FlaskClient],
    relay_processes: Callable[..., Any],
    httpserver: HTTPServer,
    redis_client: redis.Redis,
    capsys: Any,
) -> None:
    canary_token = "canary" + secrets.token_hex(12)
    outbound = "whsec_" + base64.b64encode(b"outbound-canary-" + secrets.token_bytes(16)).decode()

    def echoing_failure(request: Request) -> Response:
        # A hostile or buggy endpoint that echoes what it got, including the token.
        return Response(f"bad token {request.args.get('token')} {request.headers}", status=500)

    httpserver.expect_request("/in", method="POST").respond_with_handler(echoing_failure)
    env = {"CANARY_TOKEN": canary_token, "OUT_SECRET": outbound, "OPS_SECRET": TEST_SECRET}
    path = write_config(
        {
            "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": ["${OPS_SECRET}"]}],
            "targets": [
                {
                    "id": "sink",
                    "kind": "webhook",
                    "allow_private": True,
                    "url": httpserver.url_for("/in") + "?token=${CANARY_TOKEN}",
                    "secret": "${OUT_SECRET}",
                    "retry": {"max_attempts": 2, "backoff_base": "0.1s"},
                }
            ],
            "routes": [{"source": "ops", "targets": ["sink"]}],
        }
    )
    os.environ.update(env)  # the app in this process resolves ${...} too
    try:
        client = client_for(path)
        procs = relay_processes(path, **env)
        event_id = signed_post(client, EVENT).get_json()["event_id"]
        wait_for(lambda: redis_client.zcard(keys.DLQ) == 1, timeout=30)
        [delivery_id] = [m.decode() for m in redis_client.zrange(keys.DLQ, 0, -1)]
        bad = client.post("/hooks/ops", data=b"{}", headers={"content-type": "application/json"})
        runner = CliRunner()
        results = [
            runner.invoke(main, args, env=procs.env)
            for args in (
                ["dlq", "ls"],
                ["dlq", "show", delivery_id, "--json"],
                ["events", "show", event_id, "--json"],
                ["check", str(path)],
            )
        ]
    finally:
        for name in env:
            os.environ.pop(name, None)
    procs.stop_all()

    # Each command shows what it should, so "no secret in it" is not true of an error.
    assert [r.exit_code for r in results] == [0, 0, 0, 0], [r.output for r in results]
    outputs = [r.output for r in results]
    assert delivery_id in outputs[0]
    assert json.loads(outputs[1])["id"] == delivery_id
    assert [d["id"] for d in json.loads(outputs[2])["deliveries"]] == [delivery_id]
    assert bad.status_code == 401
    attempts = [json.loads(a) for a in redis_client.lrange(keys.attempts(delivery_id), 0, -1)]
    assert attempts and all("[redacted]" in a["response"] for a in attempts)
    haystacks = {
        "redis": all_redis_bytes(redis_client).decode("utf-8", "replace"),
        "worker log": procs.log("worker"),
        "scheduler log": procs.log("scheduler"),
        "cli": "\n".join(outputs),
        "error body": bad.get_data(as_text=True),
        "captured": "".join(capsys.readouterr()),
    }
    for canary in (canary_token, outbound, TEST_SECRET):
        for where, text in haystacks.items():
            assert canary not in text, f"a secret leaked into the {where}"
