"""The Feishu tenant-token cache and body-code classification, against the loopback
fake of Feishu's token endpoint (``tests.pm.feishu_fake``) and the suite's own Redis."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from relay.errors import PermanentDeliveryError, RetryableDeliveryError, TargetThrottled
from tests.pm.feishu_fake import APP_ID, APP_SECRET, FeishuAuth, answer
from tests.workers.support import assert_hidden
from workers.net.feishu_auth import (
    TenantTokens,
    TokenRejected,
    bearer,
    feishu_data,
    feishu_error,
    with_token,
)
from workers.net.http import guarded_pool, send
from workers.net.shared_tokens import EARLY


@pytest.fixture
def state(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def auth(threaded_httpserver: HTTPServer) -> FeishuAuth:
    fake = FeishuAuth(threaded_httpserver)

    def echo(request: Request) -> Response:  # any API: checks the token like Feishu
        refused = fake.refusal(request)
        return refused or answer(200, 0, data={"echo": request.args.get("n", "")})

    threaded_httpserver.expect_request("/open-apis/test/echo").respond_with_handler(echo)
    return fake


def tokens_for(fake: FeishuAuth, secret: str = APP_SECRET) -> TenantTokens:
    return TenantTokens(fake.base, APP_ID, secret, allow_private=True)


def echo(fake: FeishuAuth, token: str, n: str = "1") -> dict[str, Any]:
    response = send(
        guarded_pool(True),
        "GET",
        f"{fake.base}/open-apis/test/echo?n={n}",
        timeout=5,
        headers=bearer(token),
    )
    return feishu_data(response, "echo refused")


def test_one_fetch_serves_every_worker_through_redis(auth: FeishuAuth, state: redis.Redis) -> None:
    first, second = tokens_for(auth), tokens_for(auth)  # two workers, one app
    token = first.get(state, 5)
    assert second.get(state, 5) == token
    assert auth.fetches == 1
    [key] = state.keys("relay:feishu:token:*")
    assert state.get(key) == token.encode()
    assert auth.expire - EARLY - 5 <= state.ttl(key) <= auth.expire - EARLY
    assert echo(auth, token) == {"echo": "1"}


def test_a_short_lived_token_is_kept_for_half_its_life(
    auth: FeishuAuth, state: redis.Redis
) -> None:
    auth.expire = 400
    tokens_for(auth).get(state, 5)
    [key] = state.keys("relay:feishu:token:*")
    assert 190 <= state.ttl(key) <= 200


def test_a_rejected_token_is_replaced_once_for_everyone(
    auth: FeishuAuth, state: redis.Redis
) -> None:
    worker_a, worker_b = tokens_for(auth), tokens_for(auth)
    old = worker_a.get(state, 5)
    auth.expire_all()  # Feishu revoked it early
    with pytest.raises(TokenRejected, match="99991663"):
        echo(auth, old)
    new = worker_a.get(state, 5, rejected=old)
    assert new != old
    assert worker_b.get(state, 5, rejected=old) == new  # b sees a's replacement
    assert auth.fetches == 2
    assert echo(auth, new) == {"echo": "1"}


def test_with_token_refetches_once_and_repeats_the_call(
    auth: FeishuAuth, state: redis.Redis
) -> None:
    tokens = tokens_for(auth)
    tokens.get(state, 5)
    auth.expire_all()
    seen: list[str] = []

    def call(token: str) -> dict[str, Any]:
        seen.append(token)
        return echo(auth, token, n=str(len(seen)))

    assert with_token(tokens, state, 5, call) == {"echo": "2"}
    assert len(set(seen)) == 2 and auth.fetches == 2


def test_a_token_refused_twice_waits_for_a_retry(auth: FeishuAuth, state: redis.Redis) -> None:
    tokens = tokens_for(auth)

    def call(token: str) -> dict[str, Any]:
        auth.expire_all()  # whatever token is sent, Feishu refuses it
        return echo(auth, token)

    with pytest.raises(TokenRejected) as info:
        with_token(tokens, state, 5, call)
    assert isinstance(info.value, RetryableDeliveryError)
    assert auth.fetches == 2


def test_concurrent_workers_fetch_once(auth: FeishuAuth, state: redis.Redis) -> None:
    auth.delay = 0.3
    got: list[str] = []

    def worker() -> None:
        got.append(tokens_for(auth).get(state, 5))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and len(set(got)) == 1
    assert auth.fetches == 1
    assert not state.keys("relay:feishu:token:*:lock")


def test_without_redis_the_token_is_cached_in_the_process(auth: FeishuAuth) -> None:
    tokens = tokens_for(auth)
    token = tokens.get(None, 5)
    assert tokens.get(None, 5) == token
    assert tokens.get(None, 5, rejected=token) != token
    assert auth.fetches == 2


def test_wrong_credentials_are_permanent_and_never_shown(auth: FeishuAuth) -> None:
    wrong = "not-the-secret-Hh7Jj8Kk9Ll0"
    with pytest.raises(PermanentDeliveryError, match="10014.*check app_id and app_secret") as info:
        tokens_for(auth, wrong).get(None, 5)
    assert_hidden(info.value, wrong, APP_SECRET)
    assert wrong not in repr(tokens_for(auth, wrong))


def test_token_endpoint_trouble_is_retryable(auth: FeishuAuth) -> None:
    auth.fetch_answers.append(Response("<html>bad gateway</html>", 502))
    with pytest.raises(RetryableDeliveryError, match="HTTP 502") as info:
        tokens_for(auth).get(None, 5)
    assert type(info.value) is RetryableDeliveryError
    auth.fetch_answers.append(
        answer(429, 99991400, "request trigger frequency limit", **{"x-ogw-ratelimit-reset": "9"})
    )
    with pytest.raises(TargetThrottled) as throttled:
        tokens_for(auth).get(None, 5)
    assert throttled.value.retry_after == 9
    assert tokens_for(auth).get(None, 5).startswith("t-")


def body(code: int, msg: str = "m") -> dict[str, Any]:
    return {"code": code, "msg": msg, "error": {"log_id": "2023"}}


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (99991663, 400, TokenRejected),
        (99991664, 400, TokenRejected),
        (99991668, 401, TokenRejected),
        (99991677, 400, TokenRejected),
        (99991400, 400, TargetThrottled),  # older APIs answer the frequency limit with 400
        (1061045, 400, TargetThrottled),  # Drive: "retry later"
        (1500, 200, RetryableDeliveryError),
        (1470500, 500, RetryableDeliveryError),
        (1470400, 400, PermanentDeliveryError),
        (99991672, 403, PermanentDeliveryError),
        (230002, 200, PermanentDeliveryError),
    ],
)
def test_feishu_error_classifies_body_codes(code: int, status: int, kind: type[Exception]) -> None:
    error = feishu_error(body(code, "what Feishu said"), "Feishu refused", status=status)
    assert type(error) is kind
    assert str(code) in str(error) and "what Feishu said" in str(error)
    assert str(error).startswith("Feishu refused")


def test_feishu_error_waits_as_feishu_says() -> None:
    error = feishu_error(body(99991400), "x", status=429, headers={"x-ogw-ratelimit-reset": "52"})
    assert isinstance(error, TargetThrottled) and error.retry_after == 52
    assert feishu_error(body(99991400), "x").retry_after == 5.0  # type: ignore[attr-defined]
    custom = feishu_error(body(1234567), "x", busy={1234567})
    assert type(custom) is RetryableDeliveryError
    scope = feishu_error(body(99991672, "Access denied. One of [task:task:write]"), "x")
    assert "publish a new app version" in str(scope)
    assert json.loads(scope.excerpt or "{}")["code"] == 99991672
