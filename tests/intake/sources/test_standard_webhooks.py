"""``standard_webhooks`` source: the official vector, rotation, a bad-input matrix and dedupe.

Everything past the vector goes through the real receiver (Flask test client) and a
real Redis, so "401, never 500" and "one enqueue" are checked where they matter.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import standardwebhooks
from flask import Flask
from flask.testing import FlaskClient

from relay import signing
from relay.errors import Unauthorized
from relay.intake.sources import standard_webhooks as sw
from relay.state import keys
from tests.conftest import TEST_SECRET
from tests.intake.sources.support import (
    Headers,
    Mutation,
    assert_refused,
    assert_repeated_header_refused,
    build_source,
    flip,
    inbound,
    stored_event,
    tamper,
)
from tests.intake.sources.support import sign_standard_webhook as sign

V_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
V_TS = 1614265330
V_BODY = b'{"test": 2432232314}'
V_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
EVENT = {
    "type": "message.created",
    "data": {"group": {"id": "g1", "name": "Ops"}, "sender": {"id": "u1"}, "text": "hi"},
}
SOURCES: list[dict[str, Any]] = [
    {"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET, OTHER_SECRET]}
]


def source(**options: Any) -> sw.StandardWebhooksSource:
    entry = {"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET], **options}
    return build_source(sw.StandardWebhooksSource, entry)


def post(client: FlaskClient, body: bytes, headers: dict[str, str] | Headers) -> Any:
    return client.post("/hooks/ops", data=body, headers=headers)


def queued_args(message: bytes) -> list[str]:
    """The task arguments of one Celery message on a queue list (protocol v2, base64 body)."""
    args: list[str] = json.loads(base64.b64decode(json.loads(message)["body"]))[0]
    return args


# -- the official vector -----------------------------------------------------------------


def test_vector_signing() -> None:
    key = signing.decode_secret(TEST_SECRET)
    assert signing.signature(key, V_ID, V_TS, V_BODY) == V_SIG
    assert signing.sign_header([key], V_ID, str(V_TS), V_BODY) == V_SIG
    assert signing.matches([key], V_ID, str(V_TS), V_BODY, V_SIG)


def test_vector_agrees_with_reference_library() -> None:
    from datetime import UTC, datetime

    reference = standardwebhooks.Webhook(TEST_SECRET)
    assert reference.sign(V_ID, datetime.fromtimestamp(V_TS, tz=UTC), V_BODY.decode()) == V_SIG


@pytest.mark.parametrize("skew", [0, 299, -299])
def test_vector_verifies_at_pinned_time(monkeypatch: pytest.MonkeyPatch, skew: int) -> None:
    monkeypatch.setattr(sw.time, "time", lambda: V_TS + skew)
    headers = {"webhook-id": V_ID, "webhook-timestamp": str(V_TS), "webhook-signature": V_SIG}
    source().verify(inbound(headers, V_BODY))


@pytest.mark.parametrize("skew", [301, -301])
def test_vector_outside_window(monkeypatch: pytest.MonkeyPatch, skew: int) -> None:
    monkeypatch.setattr(sw.time, "time", lambda: V_TS + skew)
    headers = {"webhook-id": V_ID, "webhook-timestamp": str(V_TS), "webhook-signature": V_SIG}
    with pytest.raises(Unauthorized) as caught:
        source().verify(inbound(headers, V_BODY))
    assert caught.value.code == "stale_timestamp"


def test_vector_with_large_tolerance() -> None:
    headers = {"webhook-id": V_ID, "webhook-timestamp": str(V_TS), "webhook-signature": V_SIG}
    source(tolerance="100000d").verify(inbound(headers, V_BODY))


def test_sample_verifies_with_reference_library() -> None:
    sample = source().sample()
    standardwebhooks.Webhook(TEST_SECRET).verify(sample.body, sample.headers)


# -- rotation --------------------------------------------------------------------------------


@pytest.mark.parametrize("secrets", [(TEST_SECRET,), (OTHER_SECRET,), (OTHER_SECRET, TEST_SECRET)])
def test_rotation_any_configured_secret(
    client: FlaskClient, redis_client: redis.Redis, secrets: tuple[str, ...]
) -> None:
    body = json.dumps(EVENT).encode()
    response = post(client, body, sign(body, secrets=secrets))
    assert response.status_code == 202
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_rotation_header_with_several_entries(client: FlaskClient) -> None:
    body = json.dumps(EVENT).encode()
    headers = sign(body)
    unknown = "whsec_" + base64.b64encode(b"x" * 32).decode()
    stale = sign(body, secrets=(unknown,))["webhook-signature"]
    headers["webhook-signature"] = f"v1a,abc {stale} garbage {headers['webhook-signature']}"
    assert post(client, body, headers).status_code == 202


def test_unknown_secret_only(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps(EVENT).encode()
    unknown = "whsec_" + base64.b64encode(b"y" * 32).decode()
    response = post(client, body, sign(body, secrets=(unknown,)))
    assert_refused(response, 401, "invalid_signature", redis_client)


# -- the bad-input matrix ------------------------------------------------------------------


def _flip_signature(header: str) -> str:
    raw = bytearray(base64.b64decode(header[3:]))
    raw[5] ^= 0x80
    return "v1," + base64.b64encode(bytes(raw)).decode()


NOW = int(time.time())
MATRIX: dict[str, tuple[Mutation, int, str | None]] = {
    "body bit flip": (tamper(body=lambda b: flip(b, 3)), 401, "invalid_signature"),
    "body last byte flip": (tamper(body=lambda b: flip(b, len(b) - 1)), 401, "invalid_signature"),
    "body appended": (tamper(body=lambda b: b + b" "), 401, "invalid_signature"),
    "timestamp changed": (
        tamper(webhook_timestamp=lambda t: str(int(t) - 1)),
        401,
        "invalid_signature",
    ),
    "signature bit flip": (tamper(webhook_signature=_flip_signature), 401, "invalid_signature"),
    "id changed": (tamper(webhook_id=lambda i: i + "x"), 401, "invalid_signature"),
    "stale timestamp": (tamper(webhook_timestamp=str(NOW - 3600)), 401, "stale_timestamp"),
    "future timestamp": (tamper(webhook_timestamp=str(NOW + 3600)), 401, "stale_timestamp"),
    "timestamp in ms": (tamper(webhook_timestamp=str(NOW * 1000)), 401, "invalid_timestamp"),
    "timestamp not digits": (tamper(webhook_timestamp="yesterday"), 401, "invalid_timestamp"),
    "timestamp negative": (tamper(webhook_timestamp="-5"), 401, "invalid_timestamp"),
    "timestamp unicode digits": (tamper(webhook_timestamp="١٢٣"), 401, "invalid_timestamp"),
    "missing id": (tamper(webhook_id=None), 401, "missing_signature"),
    "missing timestamp": (tamper(webhook_timestamp=None), 401, "missing_signature"),
    "missing signature": (tamper(webhook_signature=None), 401, "missing_signature"),
    "empty signature": (tamper(webhook_signature=""), 401, "missing_signature"),
    # WSGI folds a repeated header into one "a, b" value: an id that no longer matches the
    # signature, a timestamp that is not a number, a list of wrong signatures.
    "duplicate id": (tamper(webhook_id=lambda v: [v, v]), 401, "invalid_signature"),
    "duplicate timestamp": (
        tamper(webhook_timestamp=lambda v: [v, v]),
        401,
        "invalid_timestamp",
    ),
    "duplicate bad signature": (
        tamper(webhook_signature=lambda v: [_flip_signature(v)] * 2),
        401,
        "invalid_signature",
    ),
    "sig v1": (tamper(webhook_signature="v1"), 401, "invalid_signature"),
    "sig v1 comma": (tamper(webhook_signature="v1,"), 401, "invalid_signature"),
    "sig no version": (tamper(webhook_signature=",abc"), 401, "invalid_signature"),
    "sig v2": (tamper(webhook_signature="v2,xxx"), 401, "invalid_signature"),
    "sig v1a": (tamper(webhook_signature=lambda s: "v1a" + s[2:]), 401, "invalid_signature"),
    "sig non base64": (tamper(webhook_signature="v1,!!!not*base64!!!"), 401, "invalid_signature"),
    "sig very long": (tamper(webhook_signature="v1," + "A" * 8000), 401, "invalid_signature"),
    "sig many entries": (
        tamper(webhook_signature=" ".join(["v1,AAAA"] * 500)),
        401,
        "invalid_signature",
    ),
    "sig latin-1": (tamper(webhook_signature="v1,ünïcødé=="), 401, "invalid_signature"),
    "sig spaces only": (tamper(webhook_signature="   "), 401, "invalid_signature"),
    "sig upper version": (
        tamper(webhook_signature=lambda s: "V1" + s[2:]),
        401,
        "invalid_signature",
    ),
}


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_matrix(client: FlaskClient, redis_client: redis.Redis, name: str) -> None:
    mutate, status, code = MATRIX[name]
    body = json.dumps(EVENT).encode()
    headers, body = mutate(sign(body, msg_id="msg_matrix"), body)
    assert_refused(post(client, body, headers), status, code, redis_client)
    assert not redis_client.exists(keys.dedupe("ops", "msg_matrix"))


@pytest.mark.parametrize("name", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_duplicate_header_seen_by_source_is_400(name: str) -> None:
    """Where a server keeps repeated headers apart, the source refuses them with a 400."""
    assert_repeated_header_refused(source(), sign(V_BODY), name, V_BODY)


def test_duplicated_valid_signature_header(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Folded to "v1,x, v1,x", it reads as a list holding a valid entry: queued once."""
    body = json.dumps(EVENT).encode()
    headers, body = tamper(webhook_signature=lambda v: [v, v])(sign(body, msg_id="msg_twice"), body)
    response = post(client, body, headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    event_id = response.get_json()["event_id"]
    [message] = redis_client.lrange(keys.FANOUT_QUEUE, 0, -1)
    assert queued_args(message) == [event_id]
    assert redis_client.get(keys.dedupe("ops", "msg_twice")) == event_id.encode()
    record = stored_event(redis_client, event_id)
    assert record["id"] == event_id and record["text"] == "hi"


def test_timestamp_with_superscript_digit(client: FlaskClient, redis_client: redis.Redis) -> None:
    """Byte 0xB2 in the header arrives as '²' (latin-1): a 401, not a crash in int()."""
    body = json.dumps(EVENT).encode()
    headers = sign(body)
    headers["webhook-timestamp"] = headers["webhook-timestamp"][:-1] + "²"
    assert_refused(post(client, body, headers), 401, "invalid_timestamp", redis_client)


def test_unicode_header_outside_latin1_is_refused(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    """Such bytes reach WSGI as latin-1 mojibake; the test client passes str through."""
    body = json.dumps(EVENT).encode()
    headers = sign(body)
    headers["webhook-signature"] = "v1,✓☃"
    assert_refused(post(client, body, headers), 401, "invalid_signature", redis_client)


# -- acceptance and dedupe ---------------------------------------------------------------------


def test_valid_request_is_queued_once(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps(EVENT).encode()
    response = post(client, body, sign(body, msg_id="msg_ok"))
    assert response.status_code == 202
    event_id = response.get_json()["event_id"]
    assert event_id.startswith("evt_")
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1
    assert redis_client.get(keys.dedupe("ops", "msg_ok")) == event_id.encode()
    ttl = redis_client.ttl(keys.dedupe("ops", "msg_ok"))
    assert 3 * 86400 - 60 < ttl <= 3 * 86400
    record = stored_event(redis_client, event_id)
    assert record["type"] == "message.created" and record["group"]["id"] == "g1"


def test_same_id_five_times(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps(EVENT).encode()
    first = post(client, body, sign(body, msg_id="msg_dup"))
    assert first.status_code == 202
    original = first.get_json()["event_id"]
    for _ in range(4):
        again = post(client, body, sign(body, msg_id="msg_dup"))  # fresh timestamp, as resent
        assert again.status_code == 200
        assert again.get_json() == {"event_id": original, "duplicate": True}
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_same_id_concurrently(app: Flask, redis_client: redis.Redis) -> None:
    body = json.dumps(EVENT).encode()
    barrier = threading.Barrier(5)

    def send(_: int) -> tuple[int, dict[str, Any]]:
        client = app.test_client()
        headers = sign(body, msg_id="msg_race")
        barrier.wait()
        response = post(client, body, headers)
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(send, range(5)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 200, 200, 202]
    assert len({body["event_id"] for _, body in results}) == 1
    assert sum(1 for _, body in results if body.get("duplicate")) == 4
    assert redis_client.llen(keys.FANOUT_QUEUE) == 1


def test_different_ids_are_different_events(client: FlaskClient, redis_client: redis.Redis) -> None:
    body = json.dumps(EVENT).encode()
    ids = {
        post(client, body, sign(body, msg_id=f"msg_{i}")).get_json()["event_id"] for i in range(3)
    }
    assert len(ids) == 3
    assert redis_client.llen(keys.FANOUT_QUEUE) == 3


def test_sample_is_accepted(app: Flask, client: FlaskClient) -> None:
    sample = app.extensions["relay"].sources["ops"].sample()
    assert post(client, sample.body, sample.headers).status_code == 202
