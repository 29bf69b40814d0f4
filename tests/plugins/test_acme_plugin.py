"""A source kind from a package of its own relays events like a built-in one.

The example plugin (``examples/group-relay-acme-source``) is built and installed beside
the relay; the receiver (gunicorn, as production runs it), a Celery worker and the
scheduler are started with it on their path. Events signed the way Acme Chat signs them
(computed here from the documented scheme, not by the plugin) go through verification,
dedupe and the queue to a loopback sink; refusals carry the plugin's own status codes and
headers; ``relay send`` signs with the plugin's ``sample``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests
from pytest_httpserver import HTTPServer

from relay.state import keys
from tests.conftest import RelayProcesses, Sink, wait_for
from tests.pipeline_support import all_delivered
from tests.plugins.support import plugin_env, relay_cli
from tests.web_support import Gunicorn

SECRET = "acme-e2e-canary-secret-7c1d9a"


def acme_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    stamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "Acme-Timestamp": stamp,
        "Acme-Signature": "sha256=" + mac.hexdigest(),
    }


def acme_event(event_id: str, text: str) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "type": "message.posted",
            "created_at": int(time.time()),
            "room": {"id": "room-ops", "name": "Ops"},
            "user": {"id": "u-ada", "name": "Ada"},
            "message": {"id": f"m-{event_id}", "text": text, "mentions": [{"id": "u-bot"}]},
        }
    ).encode()


def test_an_acme_event_goes_through_the_receiver_and_a_worker_to_the_sink(
    acme_site: Path,
    write_config: Callable[..., Path],
    relay_processes: Callable[..., RelayProcesses],
    threaded_httpserver: HTTPServer,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    sink = Sink(threaded_httpserver, [])
    config: dict[str, Any] = {
        "sources": [
            {
                "id": "acme-ops",
                "kind": "acme",
                "signing_secrets": ["${ACME_SECRET}"],
                "bot_user_id": "u-bot",
            }
        ],
        "targets": [{"id": "sink", "kind": "webhook", "url": sink.url, "allow_private": True}],
        "routes": [{"source": "acme-ops", "targets": ["sink"]}],
    }
    path = write_config(config, "acme.yaml")
    env = plugin_env(acme_site, ACME_SECRET=SECRET)
    procs = relay_processes(path, PYTHONPATH=env["PYTHONPATH"], ACME_SECRET=SECRET)
    (tmp_path / "web").mkdir()
    web = Gunicorn(
        tmp_path / "web",
        redis_url,
        RELAY_CONFIG=str(path),
        RELAY_LOG_LEVEL="INFO",
        PYTHONPATH=env["PYTHONPATH"],
        ACME_SECRET=SECRET,
    )
    hook = f"http://127.0.0.1:{web.port}/hooks/acme-ops"
    try:
        check = {"type": "endpoint.verification", "challenge": "c-42"}
        body = json.dumps(check).encode()
        answer = requests.post(hook, data=body, headers=acme_headers(body), timeout=30)
        assert (answer.status_code, answer.json()) == (200, {"challenge": "c-42"})

        body = acme_event("ev-plugin-1", "deploy finished")
        first = requests.post(hook, data=body, headers=acme_headers(body), timeout=30)
        assert first.status_code == 200, first.text
        event_id = first.json()["event_id"]
        assert first.json() == {"ok": True, "event_id": event_id}

        wait_for(lambda: all_delivered(redis_client, event_id), timeout=60)
        (_, arrived), *_ = sink.arrivals
        delivered = json.loads(arrived.get_data())
        assert delivered["id"] == event_id and delivered["source"] == "acme-ops"
        assert delivered["type"] == "message.created" and delivered["text"] == "deploy finished"
        assert delivered["group"] == {"id": "room-ops", "name": "Ops"}
        assert delivered["mentions_bot"] is True and delivered["raw"]["id"] == "ev-plugin-1"

        # Acme's retry of the same event: answered as a duplicate, never queued again.
        again = requests.post(hook, data=body, headers=acme_headers(body), timeout=30)
        assert again.status_code == 200
        assert again.json() == {"ok": True, "event_id": event_id, "duplicate": True}

        forged = requests.post(hook, data=body, headers=acme_headers(body, "guess"), timeout=30)
        assert forged.status_code == 401
        assert forged.json()["error"] == "invalid_signature"
        assert "Acme-No-Retry" not in forged.headers  # Acme retries once the secret is fixed

        junk = b'{"type": "message.posted"}'
        refused = requests.post(hook, data=junk, headers=acme_headers(junk), timeout=30)
        assert refused.status_code == 400
        assert refused.json()["error"] == "missing_event_id"
        assert refused.headers["Acme-No-Retry"] == "1"

        sent = relay_cli(
            "send", "acme-ops", "--url", f"http://127.0.0.1:{web.port}", "--config", str(path),
            env=env, cwd=tmp_path,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert "-> 200" in sent.stdout
        second = json.loads(sent.stdout.splitlines()[-1])["event_id"]
        wait_for(lambda: all_delivered(redis_client, second), timeout=60)
    finally:
        web.stop()
        procs.stop_all()

    assert sorted(json.loads(r.get_data())["id"] for _, r in sink.arrivals) == sorted(
        [event_id, second]
    ), "each event once: the duplicate was not relayed"
    assert redis_client.scard(keys.event_deliveries(event_id)) == 1
    logs = web.log() + procs.log("worker") + procs.log("scheduler")
    assert "intake.accepted" in web.log()  # the log was written, and holds no secret
    assert SECRET not in logs
