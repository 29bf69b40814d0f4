"""A source's inbound rate limit: over it → 429 with Retry-After, shared across apps,
and only authentic requests spend it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import redis
from flask import Flask

from relay.config.kinds import source_kinds
from relay.config.loader import parse_config
from relay.state import keys
from tests.conftest import TEST_SECRET

CONFIG = {
    "sources": [
        {"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET], "rate_limit": "3/min"}
    ]
}


def signed(n: int) -> tuple[bytes, dict[str, str]]:
    source = source_kinds()["standard_webhooks"](parse_config(CONFIG).sources["ops"])
    sample = source.sample(json.dumps({"type": "custom", "n": n}).encode())
    return sample.body, sample.headers


def test_over_the_limit_is_429_and_two_apps_share_it(
    write_config: Callable[..., Path], make_app: Callable[..., Flask], redis_client: redis.Redis
) -> None:
    path = write_config(CONFIG)
    first, second = make_app(path).test_client(), make_app(path).test_client()  # two web processes
    for n, client in enumerate([first, second, first]):
        body, headers = signed(n)
        assert client.post("/hooks/ops", data=body, headers=headers).status_code == 202
    body, headers = signed(3)
    refused = second.post("/hooks/ops", data=body, headers=headers)
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "rate_limited"
    assert "3/60s" in refused.get_json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 62
    assert redis_client.llen(keys.FANOUT_QUEUE) == 3
    assert not redis_client.exists(keys.dedupe("ops", headers["webhook-id"]))  # a retry is new


def test_forged_requests_do_not_spend_the_budget(
    write_config: Callable[..., Path], make_app: Callable[..., Flask]
) -> None:
    client = make_app(write_config(CONFIG)).test_client()
    for n in range(10):
        body, headers = signed(n)
        headers["webhook-signature"] = "v1,AAAA"
        assert client.post("/hooks/ops", data=body, headers=headers).status_code == 401
    body, headers = signed(99)
    assert client.post("/hooks/ops", data=body, headers=headers).status_code == 202


def test_a_bad_rate_is_a_config_error() -> None:
    import pytest

    from relay.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": [{**CONFIG["sources"][0], "rate_limit": "lots"}]})
    assert caught.value.problems == [
        "sources[0].rate_limit[0]: 'lots' is not a rate such as 20/min, 5/s or 100/10m"
    ]
