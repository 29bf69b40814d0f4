"""Canary secrets never appear on any dashboard page (see tests/test_secrets.py).

Every configured secret (from ``${...}`` in the config) and the dashboard's own signing
key is a random canary. Records carry them where real ones end up: the event text (a
user pasted a token), an attempt's answer and error (an endpoint echoed its URL), a
delivery's last error. Every page must show none of them, redacted where the data is
read (``relay.admin.ops``), not by the page's last-resort mask, which must stay silent.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from relay.state.apikeys import ApiKeys
from tests.dashboard.conftest import Dash, csrf_of


def test_no_configured_secret_appears_on_any_page(
    write_config: Callable[..., Path],
    make_app: Callable[..., Flask],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    canaries = {
        "IN_SECRET": "whsec_" + base64.b64encode(b"in-canary-" + secrets.token_bytes(18)).decode(),
        "OUT_SECRET": "outcanary" + secrets.token_hex(12),
        "URL_TOKEN": "urlcanary" + secrets.token_hex(12),
    }
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    signing_key = "keycanary" + secrets.token_hex(16)
    path = write_config(
        {
            "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": ["${IN_SECRET}"]}],
            "targets": [
                {
                    "id": "sink",
                    "kind": "webhook",
                    "allow_private": True,
                    "url": "http://127.0.0.1:9/in?token=${URL_TOKEN}",
                    "secret": "${OUT_SECRET}",
                }
            ],
            "routes": [{"source": "ops", "targets": ["sink"]}],
        }
    )
    app = make_app(path, secret_key=signing_key)
    dash = Dash(app, app.extensions["relay"], redis_client)
    _, token = ApiKeys(redis_client).create("canary", "admin")
    dash.tokens["admin"] = token
    out, url_token = canaries["OUT_SECRET"], canaries["URL_TOKEN"]

    event_id, [dead_id] = dash.event(text=f"here is the key {out} oops")
    echoed = f"403 for http://127.0.0.1:9/in?token={url_token} signed with {out}"
    dash.runtime.store.add_attempt(
        dead_id, {"n": 1, "outcome": "failed", "status": 403, "error": echoed, "response": echoed}
    )
    dash.runtime.store.finish_dead(
        dead_id,
        {"n": 2, "outcome": "failed", "error": echoed},
        f"gave up: {echoed}",
        "{}",
        token="",
    )
    _, [replayed_id] = dash.event(text=f"second {url_token}")
    dash.kill(replayed_id)

    client = dash.client()
    bad_login = client.post(
        "/dashboard/login",
        data={"key": out, "csrf_token": csrf_of(client.get("/dashboard/login").get_data(True))},
    )
    pages = {"failed login": bad_login.get_data(as_text=True)}
    client = dash.login("admin")
    replay = dash.post(
        client, "/dashboard/dead-letters/replay", {"id": replayed_id}, page="/dashboard/"
    )
    pages["replay result"] = client.get(replay.headers["Location"]).get_data(as_text=True)
    for page in (
        "/dashboard/login",
        "/dashboard/",
        "/dashboard/events",
        "/dashboard/events?q=key",
        f"/dashboard/events/{event_id}",
        f"/dashboard/deliveries/{dead_id}",
        f"/dashboard/deliveries/{replayed_id}",
        "/dashboard/dead-letters",
        "/dashboard/dead-letters?q=oops",
        "/dashboard/dead-letters/bulk/replay",
        "/dashboard/dead-letters/bulk/purge",
        "/dashboard/targets",
        "/dashboard/audit",
        "/dashboard/events/evt_missing",
    ):
        pages[page] = client.get(page).get_data(as_text=True)
    pages["purge confirm"] = dash.post(
        client, "/dashboard/dead-letters/purge", {"id": dead_id}, page="/dashboard/"
    ).get_data(as_text=True)
    assert "[redacted]" in pages[f"/dashboard/deliveries/{dead_id}"]
    assert "here is the key [redacted] oops" in pages[f"/dashboard/events/{event_id}"]

    every = [*canaries.values(), signing_key, token]
    for where, html in pages.items():
        for canary in every:
            assert canary not in html, f"a secret reached the page {where!r}"
    assert "dashboard.secret_masked" not in "".join(capsys.readouterr())  # redacted at the source

    # An operator who types a secret into a filter does not get it echoed back either
    # (the page's last-resort mask catches what is not a record).
    typed = [
        f"/dashboard/events?q={out}",
        f"/dashboard/events?since={url_token}",
        f"/dashboard/dead-letters?q={out}",
        f"/dashboard/audit?action={out}",
    ]
    for page in typed:
        html = client.get(page).get_data(as_text=True)
        for canary in every:
            assert canary not in html, f"a secret reached the page {page!r}"
    assert "dashboard.secret_masked" in "".join(capsys.readouterr())  # the mask did that
