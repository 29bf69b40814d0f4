"""Canary secrets: no API answer, audit entry or access-log line ever shows a secret
the config pulled from the environment, even when records in Redis hold one (a target
that echoed its token, an event whose text quotes a secret, an operator pasting one
into a URL)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from relay.state import keys
from tests.api.conftest import Api, api_config


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "CANARY_TOKEN": "canary" + secrets.token_hex(12),
        "OUT_SECRET": "whsec_"
        + base64.b64encode(b"out-canary-" + secrets.token_bytes(16)).decode(),
        "OPS_SECRET": "whsec_"
        + base64.b64encode(b"ops-canary-" + secrets.token_bytes(16)).decode(),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_no_answer_shows_a_configured_secret(
    make_api: Callable[..., Api], canaries: dict[str, str], capsys: Any
) -> None:
    config = api_config()
    config["sources"][0]["secrets"] = ["${OPS_SECRET}"]
    config["targets"][0].update(
        url="http://127.0.0.1:9/in?token=${CANARY_TOKEN}", secret="${OUT_SECRET}"
    )
    api = make_api(config)
    token, out, ops = canaries["CANARY_TOKEN"], canaries["OUT_SECRET"], canaries["OPS_SECRET"]
    leaky = f"token {token} secret {out} signing {ops}"
    event_id, (first, second) = api.event(text=leaky, group=token)
    api.attempt(
        first,
        1,
        response=f"echo: {leaky}",
        error=f"HTTP 500 from /in?token={token}",
        request={"url": f"http://127.0.0.1:9/in?token={token}", "auth": out},
    )
    api.kill(second)
    api.redis.hset(keys.delivery(second), "last_error", leaky)
    api.redis.hset(keys.delivery(first), "waiting", "paused")

    bodies = []
    # Each answer as it should be: a 404 or 400 here is the detail that quotes the request.
    calls: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/events", {}, 200),
        ("GET", "/events", {"q": token}, 200),
        ("GET", f"/events/{event_id}", {}, 200),
        ("GET", "/deliveries", {}, 200),
        ("GET", f"/deliveries/{first}", {}, 200),
        ("GET", f"/deliveries/{second}", {}, 200),
        ("GET", "/dead-letters", {}, 200),
        ("GET", "/dead-letters", {"q": "secret"}, 200),
        ("GET", "/queues", {}, 200),
        ("GET", "/targets", {}, 200),
        ("GET", "/targets/sink", {}, 200),
        ("GET", "/sources", {}, 200),
        ("GET", f"/events/{token}", {}, 404),
        ("GET", "/events", {"since": token}, 400),
        ("POST", f"/dead-letters/{token}/replay", {}, 404),
        ("POST", f"/targets/{out}/pause", {}, 404),
        ("POST", "/dead-letters/purge", {"confirm": True, "q": token}, 200),
        ("POST", "/dead-letters/replay", {"dry_run": True}, 200),
        ("GET", "/openapi.json", {}, 200),
    ]
    for method, path, params, status in calls:
        response = api.call(method, path, **params)
        assert response.status_code == status, (method, path, response.get_data(as_text=True))
        bodies.append(response.get_data(as_text=True))
    api.call("GET", "/events", token=f"Bearer rk_{token}")
    bodies.append(api.get("/audit", limit=500).get_data(as_text=True))

    shown = "\n".join(bodies)
    assert "[redacted]" in shown
    assert json.loads(bodies[1])["items"] == []  # a search for a secret finds nothing
    logs = capsys.readouterr().err
    for canary in canaries.values():
        assert canary not in shown, "a secret leaked into an API answer"
        assert canary not in logs, "a secret leaked into the access log"
